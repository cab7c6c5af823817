/* Weighted least connections, counted per worker: the backend with the
 * fewest requests in flight from this worker relative to its weight. With
 * SO_REUSEPORT spreading clients evenly over workers, each worker's count
 * tracks the process-wide one without any shared write. Ties go round-robin
 * from a cursor, so an idle pool is still spread instead of always taking
 * backend 0. */
#include <ringlb/lb.h>

static int leastconn_init(struct rlb_lb_state *st)
{
    st->rr_cursor = 0;
    return 0;
}

static int leastconn_pick(struct rlb_lb_state *st, const struct rlb_lb_pick_ctx *ctx)
{
    uint32_t n = st->num_backends;
    int best = -1;
    uint64_t best_load = 0, best_weight = 1;
    uint32_t start = st->rr_cursor;
    for (uint32_t k = 0; k < n; k++) {
        uint32_t i = start + k < n ? start + k : start + k - n;
        if (!rlb_lb_eligible(st, ctx, i))
            continue;
        /* (inflight+1)/weight compared by cross-multiplying: no division, no rounding. */
        uint64_t load = (uint64_t)st->be[i].inflight + 1, weight = st->be[i].weight;
        if (best < 0 || load * best_weight < best_load * weight) {
            best = (int)i;
            best_load = load;
            best_weight = weight;
        }
    }
    if (best >= 0)
        st->rr_cursor = (uint32_t)best + 1 < n ? (uint32_t)best + 1 : 0;
    return best;
}

static void leastconn_destroy(struct rlb_lb_state *st)
{
    (void)st;
}

const struct rlb_lb_ops rlb_lb_leastconn_ops = {
    .name = "least_conn",
    .init = leastconn_init,
    .pick = leastconn_pick,
    .destroy = leastconn_destroy,
};
