/* Balancer state, one per pool per worker: nothing here is shared between cores. */
#ifndef RINGLB_LB_T_H
#define RINGLB_LB_T_H

#include <ringlb/api.h>

struct rlb_pool_cfg;

struct rlb_lb_state {
    const struct rlb_lb_ops *ops;
    const struct rlb_pool_cfg *pool;
    uint32_t num_backends;
    int64_t *current; /* lb_wrr: current weights */
    int64_t total_weight;
};

struct rlb_lb_ops {
    const char *name;
    int (*init)(struct rlb_lb_state *st, const struct rlb_pool_cfg *pool);
    /* Returns a backend index not set in <exclude> (bit i: backend i), or -1. */
    int (*pick)(struct rlb_lb_state *st, const uint64_t *exclude);
    void (*destroy)(struct rlb_lb_state *st);
};

/* Requests try a backend at most once each; this bounds the exclusion set. */
#define RLB_LB_MAX_EXCLUDE_WORDS 16
#define RLB_LB_MAX_BACKENDS (RLB_LB_MAX_EXCLUDE_WORDS * 64)

#endif
