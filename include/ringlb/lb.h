#ifndef RINGLB_LB_H
#define RINGLB_LB_H

#include <ringlb/config-t.h>
#include <ringlb/lb-t.h>

extern const struct rlb_lb_ops rlb_lb_wrr_ops;

/* The algorithm configured for <pool>. */
const struct rlb_lb_ops *rlb_lb_ops_for(enum rlb_balance balance);
/* Name to algorithm, for the config loader and the one-line mode. Returns 0 or -1. */
int rlb_lb_balance_from_name(const char *name, enum rlb_balance *out);

int rlb_lb_init(struct rlb_lb_state *st, const struct rlb_pool_cfg *pool);
void rlb_lb_destroy(struct rlb_lb_state *st);

static inline int rlb_lb_pick(struct rlb_lb_state *st, const uint64_t *exclude)
{
    return st->ops->pick(st, exclude);
}

static inline bool rlb_lb_excluded(const uint64_t *exclude, uint32_t i)
{
    return exclude && (exclude[i / 64] >> (i % 64)) & 1;
}

#endif
