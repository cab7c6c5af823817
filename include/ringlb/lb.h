#ifndef RINGLB_LB_H
#define RINGLB_LB_H

#include <ringlb/config-t.h>
#include <ringlb/lb-t.h>

extern const struct rlb_lb_ops rlb_lb_wrr_ops;
extern const struct rlb_lb_ops rlb_lb_leastconn_ops;
extern const struct rlb_lb_ops rlb_lb_p2c_ops;
extern const struct rlb_lb_ops rlb_lb_hash_ops;

/* The algorithm behind <balance>. */
const struct rlb_lb_ops *rlb_lb_ops_for(enum rlb_balance balance);
/* Name to algorithm, for the config loader and the one-line mode. Returns 0 or -1. */
int rlb_lb_balance_from_name(const char *name, enum rlb_balance *out);
/* The canonical name of <balance>, for messages and docs. */
const char *rlb_lb_balance_name(enum rlb_balance balance);

/* Allocates st->be with every backend at its configured weight and nothing in
 * flight, then runs the algorithm's init. <table> (may be NULL) is a Maglev
 * table shared read-only with other workers, for hash pools. */
int rlb_lb_init(struct rlb_lb_state *st, const struct rlb_pool_cfg *pool, const struct rlb_maglev *table);
void rlb_lb_destroy(struct rlb_lb_state *st);

static inline int rlb_lb_pick(struct rlb_lb_state *st, const struct rlb_lb_pick_ctx *ctx)
{
    return st->ops->pick(st, ctx);
}

static inline void rlb_lb_update(struct rlb_lb_state *st)
{
    if (st->ops->update)
        st->ops->update(st);
}

static inline bool rlb_lb_excluded(const uint64_t *exclude, uint32_t i)
{
    return exclude && (exclude[i / 64] >> (i % 64)) & 1;
}

/* Eligible for this pick: has weight now and was not tried by this request. */
static inline bool rlb_lb_eligible(const struct rlb_lb_state *st, const struct rlb_lb_pick_ctx *ctx, uint32_t i)
{
    return st->be[i].weight > 0 && !rlb_lb_excluded(ctx ? ctx->exclude : NULL, i);
}

/* xorshift64*: per-worker randomness for p2c, no shared state, no syscalls. */
static inline uint64_t rlb_lb_random(struct rlb_lb_state *st)
{
    uint64_t x = st->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    st->rng = x;
    return x * 0x2545F4914F6CDD1Dull;
}

#endif
