#include <ringlb/lb.h>

#include <errno.h>
#include <string.h>
#include <time.h>

/* Every algorithm is listed here, by hand, so that one grep finds them all.
 * The first name of each is its canonical one. */
static const struct {
    const char *name;
    enum rlb_balance balance;
    const struct rlb_lb_ops *ops;
} algorithms[] = {
    {"round_robin", RLB_BALANCE_WRR, &rlb_lb_wrr_ops},
    {"rr", RLB_BALANCE_WRR, &rlb_lb_wrr_ops},
    {"least_conn", RLB_BALANCE_LEASTCONN, &rlb_lb_leastconn_ops},
    {"leastconn", RLB_BALANCE_LEASTCONN, &rlb_lb_leastconn_ops},
    {"p2c", RLB_BALANCE_P2C, &rlb_lb_p2c_ops},
    {"hash", RLB_BALANCE_HASH, &rlb_lb_hash_ops},
    {"maglev", RLB_BALANCE_HASH, &rlb_lb_hash_ops},
};

const struct rlb_lb_ops *rlb_lb_ops_for(enum rlb_balance balance)
{
    for (size_t i = 0; i < RLB_ARRAY_SIZE(algorithms); i++)
        if (algorithms[i].balance == balance)
            return algorithms[i].ops;
    return &rlb_lb_wrr_ops;
}

const char *rlb_lb_balance_name(enum rlb_balance balance)
{
    for (size_t i = 0; i < RLB_ARRAY_SIZE(algorithms); i++)
        if (algorithms[i].balance == balance)
            return algorithms[i].name;
    return "?";
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

int rlb_lb_init(struct rlb_lb_state *st, const struct rlb_pool_cfg *pool, const struct rlb_maglev *table)
{
    memset(st, 0, sizeof(*st));
    st->ops = rlb_lb_ops_for(pool->balance);
    st->pool = pool;
    st->num_backends = pool->num_backends;
    st->table = table;
    st->be = calloc(pool->num_backends ? pool->num_backends : 1, sizeof(*st->be));
    if (!st->be)
        return -ENOMEM;
    for (uint32_t i = 0; i < pool->num_backends; i++)
        st->be[i].weight = pool->backends[i].weight;
    /* Seeded per state so that workers do not draw the same pairs in step. */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    st->rng = ((uint64_t)ts.tv_nsec ^ ((uint64_t)(uintptr_t)st << 16) ^ 0x9E3779B97F4A7C15ull) | 1;
    int rc = st->ops->init(st);
    if (rc < 0) {
        free(st->be);
        st->be = NULL;
    }
    return rc;
}

void rlb_lb_destroy(struct rlb_lb_state *st)
{
    if (st->ops)
        st->ops->destroy(st);
    free(st->be);
    memset(st, 0, sizeof(*st));
}
