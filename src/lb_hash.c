/* Consistent hashing through a Maglev table: the request's key hash selects an entry, the entry names the
 * backend. In the server the table comes from the health board, which rebuilds it without the backends the
 * checker holds down (true Maglev disruption); a state without one builds its own from the configured weights.
 * When the entry's backend is unusable for this pick (ejected by this worker, down but not yet rebuilt away,
 * or already tried), the pick walks on to the following entries and takes the first usable one. Entries are spread over the table by the permutations, so the keys of an unavailable backend
 * scatter over all the others, and every other key keeps its backend.
 *
 * Bounded load (consistent hashing with bounded loads, Mirrokni, Thorup and Zadimoghaddam, SODA 2018): with
 * hash.bounded_load = c percent, a backend is passed over while it already carries its capacity, its weighted
 * share of c% of the requests in flight on this worker once this one is added. The sums behind that share cost
 * one pass over the pool per pick, paid only by pools that enable it: rlb_lb_state has no field for this
 * algorithm to keep them in, and one pass gives the weight total and the in-flight total together. */
#include <ringlb/api.h>
#include <ringlb/lb.h>
#include <ringlb/maglev.h>

#include <errno.h>

/* Entries tried before asking whether any backend can be taken at all. Most picks stop at the first entry;
 * this bounds what a pick costs when none can (every backend down or tried), which otherwise walks the table. */
#define HASH_QUICK_STEPS 32

struct load {
    uint32_t percent; /* hash.bounded_load; 0: unbounded */
    uint64_t weight;  /* sum of effective weights of the backends with weight */
    uint64_t inflight; /* their requests in flight, before this one */
};

static int hash_init(struct rlb_lb_state *st)
{
    if (st->table)
        return 0;
    const struct rlb_pool_cfg *pool = st->pool;
    struct rlb_maglev *m = malloc(sizeof(*m));
    uint32_t *weights = malloc((pool->num_backends ? pool->num_backends : 1) * sizeof(*weights));
    if (!m || !weights) {
        free(m);
        free(weights);
        return -ENOMEM;
    }
    /* Configured weights, not effective ones: the table stays the same whatever the health, and the walk in
     * pick() handles the backends that cannot be used right now. */
    for (uint32_t i = 0; i < pool->num_backends; i++)
        weights[i] = pool->backends[i].weight;
    uint32_t size = pool->hash.table_size ? pool->hash.table_size : RLB_MAGLEV_DEFAULT_SIZE;
    int ret = rlb_maglev_build(m, size, pool->backends, weights, pool->num_backends);
    free(weights);
    if (ret < 0) {
        free(m);
        return ret;
    }
    st->own_table = m;
    st->table = m;
    return 0;
}

/* Also rejects RLB_MAGLEV_NONE and an index from a table built for a larger pool. */
static bool usable(const struct rlb_lb_state *st, const struct rlb_lb_pick_ctx *ctx, uint32_t b)
{
    return b < st->num_backends && rlb_lb_eligible(st, ctx, b);
}

/* Capacity test, Mirrokni et al.'s ceil(c * (m + 1) / n) weighted: b may take one more request while
 * inflight_b < c/100 * (inflight + 1) * weight_b / weight. The strict comparison is that ceiling, so
 * after the pick inflight_b <= ceil(c/100 * share_b * inflight) holds, and for c >= 100 some backend with
 * weight is always under its capacity (the capacities add up to more than the requests in flight). */
static bool under_capacity(const struct rlb_lb_state *st, const struct load *load, uint32_t b)
{
    /* Within 64 bits: weights <= 1000 over at most RLB_LB_MAX_BACKENDS backends keep the weight sum under 2^20,
     * and the requests in flight on one worker (bounded by its connections) stay far below 2^32. */
    return (uint64_t)st->be[b].inflight * 100 * load->weight <
           (uint64_t)load->percent * (load->inflight + 1) * st->be[b].weight;
}

static bool acceptable(const struct rlb_lb_state *st, const struct rlb_lb_pick_ctx *ctx, const struct load *load,
                       uint32_t b)
{
    return usable(st, ctx, b) && (!load->percent || under_capacity(st, load, b));
}

/* The long walk: after HASH_QUICK_STEPS entries found nothing. One pass over the pool settles whether the walk
 * can succeed: if no backend is usable, -1 at once; if none is under capacity, the bound is dropped and the walk
 * takes the first usable entry (then the entry's own backend, or the next usable one, exactly as without
 * bounded load). Either way at most <size> entries are walked. */
static int walk_slow(const struct rlb_lb_state *st, const struct rlb_lb_pick_ctx *ctx, struct load *load,
                     uint32_t start)
{
    const struct rlb_maglev *m = st->table;
    bool any_usable = false, any_under = false;
    for (uint32_t b = 0; b < st->num_backends && !any_under; b++) {
        if (!usable(st, ctx, b))
            continue;
        any_usable = true;
        any_under = !load->percent || under_capacity(st, load, b);
    }
    if (!any_usable)
        return -1;
    if (!any_under)
        load->percent = 0;
    int first_usable = -1;
    uint32_t e = start;
    for (uint32_t k = 0; k < m->size; k++) {
        uint32_t b = m->entry[e];
        if (acceptable(st, ctx, load, b))
            return (int)b;
        if (first_usable < 0 && usable(st, ctx, b))
            first_usable = (int)b;
        e = e + 1 < m->size ? e + 1 : 0;
    }
    /* Only when the backends under capacity own no entry (a table smaller than the pool), or none is usable. */
    return first_usable;
}

static int hash_pick(struct rlb_lb_state *st, const struct rlb_lb_pick_ctx *ctx)
{
    const struct rlb_maglev *m = st->table;
    struct load load = {.percent = st->pool->hash.bounded_load};
    if (load.percent) {
        for (uint32_t i = 0; i < st->num_backends; i++) {
            if (st->be[i].weight == 0)
                continue;
            load.weight += st->be[i].weight;
            load.inflight += st->be[i].inflight;
        }
    }
    /* A NULL context (no key) still gets a backend, always the same one. */
    uint32_t start = (uint32_t)((ctx ? ctx->hash : 0) % m->size), e = start;
    uint32_t quick = m->size < HASH_QUICK_STEPS ? m->size : HASH_QUICK_STEPS;
    for (uint32_t k = 0; k < quick; k++) {
        uint32_t b = m->entry[e];
        if (acceptable(st, ctx, &load, b))
            return (int)b;
        e = e + 1 < m->size ? e + 1 : 0;
    }
    /* From the key's own entry again: if walk_slow() drops the bound, the first usable entry may be among those
     * already passed. */
    return walk_slow(st, ctx, &load, start);
}

static void hash_destroy(struct rlb_lb_state *st)
{
    if (st->own_table) {
        rlb_maglev_free(st->own_table);
        free(st->own_table);
        st->own_table = NULL;
    }
    st->table = NULL;
}

const struct rlb_lb_ops rlb_lb_hash_ops = {
    .name = "hash",
    .init = hash_init,
    .pick = hash_pick,
    .destroy = hash_destroy,
};
