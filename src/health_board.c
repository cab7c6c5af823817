#include <ringlb/health_board.h>
#include <ringlb/log.h>
#include <ringlb/worker-t.h>
#include <ringlb/worker.h>

#include <errno.h>
#include <string.h>
#include <unistd.h>

static struct rlb_maglev *build_table(const struct rlb_health_board *hb, uint32_t p)
{
    const struct rlb_pool_cfg *pool = &hb->cfg->pools[p];
    struct rlb_maglev *m = calloc(1, sizeof(*m));
    uint32_t *weights = calloc(pool->num_backends, sizeof(*weights));
    if (!m || !weights)
        goto fail;
    for (uint32_t b = 0; b < pool->num_backends; b++)
        weights[b] = atomic_load_explicit(&hb->down[hb->pool_base[p] + b], memory_order_relaxed)
                         ? 0
                         : pool->backends[b].weight;
    if (rlb_maglev_build(m, pool->hash.table_size, pool->backends, weights, pool->num_backends) != 0)
        goto fail;
    free(weights);
    return m;
fail:
    free(weights);
    free(m);
    return NULL;
}

int rlb_health_board_init(struct rlb_health_board *hb, const struct rlb_config *cfg)
{
    memset(hb, 0, sizeof(*hb));
    hb->cfg = cfg;
    uint32_t total = 0;
    hb->pool_base = calloc(cfg->num_pools, sizeof(*hb->pool_base));
    hb->tables = calloc(cfg->num_pools, sizeof(*hb->tables));
    if (!hb->pool_base || !hb->tables)
        return -ENOMEM;
    for (uint32_t p = 0; p < cfg->num_pools; p++) {
        hb->pool_base[p] = total;
        total += cfg->pools[p].num_backends;
    }
    hb->down = calloc(total ? total : 1, sizeof(*hb->down));
    if (!hb->down)
        return -ENOMEM;
    for (uint32_t p = 0; p < cfg->num_pools; p++) {
        if (cfg->pools[p].balance != RLB_BALANCE_HASH)
            continue;
        struct rlb_maglev *m = build_table(hb, p);
        if (!m)
            return -ENOMEM;
        atomic_store_explicit(&hb->tables[p], m, memory_order_relaxed);
    }
    return 0;
}

void rlb_health_board_attach(struct rlb_health_board *hb, struct rlb_worker *workers, uint32_t n)
{
    hb->workers = workers;
    hb->num_workers = n;
}

static void reclaim(struct rlb_health_board *hb)
{
    uint64_t oldest = UINT64_MAX;
    for (uint32_t i = 0; i < hb->num_workers; i++) {
        uint64_t seen = atomic_load_explicit(&hb->workers[i].health_seen, memory_order_acquire);
        if (seen < oldest)
            oldest = seen;
    }
    struct rlb_retired_table **pp = &hb->retired;
    while (*pp) {
        struct rlb_retired_table *r = *pp;
        if (r->generation <= oldest) {
            *pp = r->next;
            rlb_maglev_free(r->table);
            free(r->table);
            free(r);
        } else {
            pp = &r->next;
        }
    }
}

void rlb_health_board_set(struct rlb_health_board *hb, uint32_t pool, uint32_t backend, bool down)
{
    atomic_store_explicit(&hb->down[hb->pool_base[pool] + backend], down ? 1 : 0, memory_order_relaxed);
    uint64_t gen = atomic_load_explicit(&hb->generation, memory_order_relaxed) + 1;
    if (hb->cfg->pools[pool].balance == RLB_BALANCE_HASH) {
        /* Built here, on the checker's thread: workers only swap a pointer. */
        struct rlb_maglev *m = build_table(hb, pool);
        struct rlb_retired_table *r = calloc(1, sizeof(*r));
        if (m && r) {
            r->table = atomic_exchange_explicit(&hb->tables[pool], m, memory_order_release);
            r->generation = gen;
            r->next = hb->retired;
            hb->retired = r;
        } else {
            /* The old table stays: hashing still skips the backend, it only
             * loses Maglev's minimal disruption until the next change. */
            rlb_log_warn("health: out of memory rebuilding the hash table of pool %s", hb->cfg->pools[pool].name);
            if (m)
                rlb_maglev_free(m);
            free(m);
            free(r);
        }
    }
    atomic_store_explicit(&hb->generation, gen, memory_order_release);
    for (uint32_t i = 0; i < hb->num_workers; i++)
        rlb_worker_wake(&hb->workers[i]);
    reclaim(hb);
}

void rlb_health_board_destroy(struct rlb_health_board *hb)
{
    hb->num_workers = 0;
    reclaim(hb);
    for (uint32_t p = 0; hb->tables && p < hb->cfg->num_pools; p++) {
        struct rlb_maglev *m = atomic_load_explicit(&hb->tables[p], memory_order_relaxed);
        if (m) {
            rlb_maglev_free(m);
            free(m);
        }
    }
    free(hb->tables);
    free(hb->pool_base);
    free(hb->down);
    memset(hb, 0, sizeof(*hb));
}
