/* Power of two choices: draw two different eligible backends at random
 * (weighted), keep the one with fewer requests in flight per unit of weight.
 * O(1) per pick at any pool size, and it avoids the herd that a strict
 * least-loaded choice causes when many workers see the same stale picture. */
#include <ringlb/lb.h>

static void p2c_update(struct rlb_lb_state *st)
{
    st->max_weight = 0;
    for (uint32_t i = 0; i < st->num_backends; i++)
        if (st->be[i].weight > st->max_weight)
            st->max_weight = st->be[i].weight;
}

static int p2c_init(struct rlb_lb_state *st)
{
    p2c_update(st);
    return 0;
}

/* One weighted draw among eligible backends other than <skip>, by a few
 * random probes with rejection by weight, falling back to a scan when the
 * eligible set is sparse. */
static int draw(struct rlb_lb_state *st, const struct rlb_lb_pick_ctx *ctx, uint32_t max_weight, int skip)
{
    uint32_t n = st->num_backends;
    for (int probe = 0; probe < 8; probe++) {
        uint64_t r = rlb_lb_random(st);
        uint32_t i = (uint32_t)(((r >> 32) * n) >> 32);
        if ((int)i == skip || !rlb_lb_eligible(st, ctx, i))
            continue;
        if ((uint32_t)(((r & 0xffffffffu) * max_weight) >> 32) < st->be[i].weight)
            return (int)i;
    }
    uint64_t total = 0;
    for (uint32_t i = 0; i < n; i++)
        if ((int)i != skip && rlb_lb_eligible(st, ctx, i))
            total += st->be[i].weight;
    if (total == 0)
        return -1;
    uint64_t target = rlb_lb_random(st) % total;
    for (uint32_t i = 0; i < n; i++) {
        if ((int)i == skip || !rlb_lb_eligible(st, ctx, i))
            continue;
        if (target < st->be[i].weight)
            return (int)i;
        target -= st->be[i].weight;
    }
    return -1;
}

static int p2c_pick(struct rlb_lb_state *st, const struct rlb_lb_pick_ctx *ctx)
{
    uint32_t max_weight = st->max_weight;
    int a = draw(st, ctx, max_weight, -1);
    if (a < 0)
        return -1;
    int b = draw(st, ctx, max_weight, a);
    if (b < 0)
        return a;
    /* In flight per unit of weight; a tie (both idle, say) keeps the first
     * draw, which was weighted, so idle pools still follow the weights. */
    uint64_t la = (uint64_t)st->be[a].inflight * st->be[b].weight;
    uint64_t lb = (uint64_t)st->be[b].inflight * st->be[a].weight;
    return lb < la ? b : a;
}

static void p2c_destroy(struct rlb_lb_state *st)
{
    (void)st;
}

const struct rlb_lb_ops rlb_lb_p2c_ops = {
    .name = "p2c",
    .init = p2c_init,
    .pick = p2c_pick,
    .update = p2c_update,
    .destroy = p2c_destroy,
};
