/* Smooth weighted round-robin, the algorithm nginx documents: each pick adds
 * every backend's weight to its current weight, takes the largest, and
 * subtracts the total from the winner. Weights 5,1,1 give a a b a c a a,
 * spreading the heavy backend instead of bursting it. Weights are the
 * effective ones (st->be), so slow start and ejections need nothing more. */
#include <ringlb/config-t.h>
#include <ringlb/lb.h>

#include <errno.h>
#include <stdlib.h>

static int wrr_init(struct rlb_lb_state *st)
{
    st->current = calloc(st->num_backends ? st->num_backends : 1, sizeof(*st->current));
    return st->current ? 0 : -ENOMEM;
}

static int wrr_pick(struct rlb_lb_state *st, const struct rlb_lb_pick_ctx *ctx)
{
    int best = -1;
    int64_t total = 0;
    for (uint32_t i = 0; i < st->num_backends; i++) {
        if (!rlb_lb_eligible(st, ctx, i))
            continue;
        st->current[i] += st->be[i].weight;
        total += st->be[i].weight;
        if (best < 0 || st->current[i] > st->current[best])
            best = (int)i;
    }
    if (best >= 0)
        st->current[best] -= total;
    return best;
}

static void wrr_destroy(struct rlb_lb_state *st)
{
    free(st->current);
    st->current = NULL;
}

const struct rlb_lb_ops rlb_lb_wrr_ops = {
    .name = "round_robin",
    .init = wrr_init,
    .pick = wrr_pick,
    .destroy = wrr_destroy,
};
