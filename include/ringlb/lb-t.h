/* Balancer state, one per pool per worker: nothing here is shared between cores. */
#ifndef RINGLB_LB_T_H
#define RINGLB_LB_T_H

#include <ringlb/api.h>

struct rlb_pool_cfg;
struct rlb_maglev;

/* What one worker's balancer knows of a backend right now. Written by that
 * worker only (between picks), read by the algorithm on every pick. */
struct rlb_lb_backend {
    uint32_t weight;   /* effective: configured weight, scaled during slow start; 0 = not eligible
                          (down by health check, ejected by this worker, draining) */
    uint32_t inflight; /* requests this worker has sent there and not yet finished */
};

struct rlb_lb_state {
    const struct rlb_lb_ops *ops;
    const struct rlb_pool_cfg *pool;
    uint32_t num_backends;
    struct rlb_lb_backend *be;    /* num_backends entries, allocated by rlb_lb_init */
    uint64_t rng;                 /* per-worker xorshift state (p2c); seeded by rlb_lb_init */
    uint32_t rr_cursor;           /* round-robin tie breaking (leastconn) */
    uint32_t max_weight;          /* p2c: largest effective weight, kept by update */
    int64_t *current;             /* lb_wrr: current weights */
    const struct rlb_maglev *table; /* lb_hash: the lookup table in use (not owned unless own_table) */
    struct rlb_maglev *own_table;   /* lb_hash: a table built by init, freed by destroy */
};

/* Per pick: what the request brings. */
struct rlb_lb_pick_ctx {
    const uint64_t *exclude; /* bit i set: backend i was already tried by this request; may be NULL */
    uint64_t hash;           /* lb_hash: XXH3 of the configured key */
};

struct rlb_lb_ops {
    const char *name;
    int (*init)(struct rlb_lb_state *st);
    /* Returns an eligible backend (weight > 0) not set in ctx->exclude, or -1. */
    int (*pick)(struct rlb_lb_state *st, const struct rlb_lb_pick_ctx *ctx);
    /* Weights or eligibility in st->be changed (health, ejection, slow start).
     * Called between requests; may be NULL. */
    void (*update)(struct rlb_lb_state *st);
    void (*destroy)(struct rlb_lb_state *st);
};

/* Requests try a backend at most once each; this bounds the exclusion set. */
#define RLB_LB_MAX_EXCLUDE_WORDS 16
#define RLB_LB_MAX_BACKENDS (RLB_LB_MAX_EXCLUDE_WORDS * 64)

#endif
