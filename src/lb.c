#include <ringlb/lb.h>

#include <string.h>

/* Every algorithm is listed here, by hand, so that one grep finds them all. */
static const struct {
    const char *name;
    enum rlb_balance balance;
    const struct rlb_lb_ops *ops;
} algorithms[] = {
    {"round_robin", RLB_BALANCE_WRR, &rlb_lb_wrr_ops},
    {"rr", RLB_BALANCE_WRR, &rlb_lb_wrr_ops},
};

const struct rlb_lb_ops *rlb_lb_ops_for(enum rlb_balance balance)
{
    for (size_t i = 0; i < RLB_ARRAY_SIZE(algorithms); i++)
        if (algorithms[i].balance == balance)
            return algorithms[i].ops;
    return &rlb_lb_wrr_ops;
}

int rlb_lb_balance_from_name(const char *name, enum rlb_balance *out)
{
    for (size_t i = 0; i < RLB_ARRAY_SIZE(algorithms); i++)
        if (strcmp(algorithms[i].name, name) == 0) {
            *out = algorithms[i].balance;
            return 0;
        }
    return -1;
}

int rlb_lb_init(struct rlb_lb_state *st, const struct rlb_pool_cfg *pool)
{
    memset(st, 0, sizeof(*st));
    st->ops = rlb_lb_ops_for(pool->balance);
    st->pool = pool;
    return st->ops->init(st, pool);
}

void rlb_lb_destroy(struct rlb_lb_state *st)
{
    if (st->ops)
        st->ops->destroy(st);
    memset(st, 0, sizeof(*st));
}
