/* lb_bench: cost of one balancer pick, per algorithm, as the pool grows; and of building a Maglev table.
 *
 * Usage: lb_bench [--iterations N]    (default 1000000 picks per batch; run pinned: taskset -c 1 lb_bench)
 *
 * Every algorithm (round_robin, least_conn, p2c, hash, and hash with bounded_load 125) is timed at 2, 16 and 256
 * backends. The pool is built in memory with weights 1..10 repeating, so the picks walk a weighted sequence rather
 * than a degenerate equal-weight one. Timing as in parse_bench: CLOCK_MONOTONIC around a batch, best of 5. A second
 * row per size passes an exclusion bitmap with backend 0 set, the path a retry after a failed connect takes.
 *
 * The picks run as a worker makes them: each picked backend gets one more request in flight, and with 4 requests
 * per backend in flight the oldest one finishes (a FIFO, i.e. every request lasts the same number of picks). That
 * keeps least_conn and p2c comparing real, unequal counts instead of all zeros, and charges every algorithm the
 * same bookkeeping. Hash picks get a different key hash each (a counter through a mixer), as distinct clients do.
 *
 * Then the Maglev table build, at the default size 65537, for the same pools (best of 5, in ms). */
#include "bench_args.h"
#include <ringlb/api.h>
#include <ringlb/config-t.h>
#include <ringlb/lb.h>
#include <ringlb/maglev.h>

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <time.h>

#define BATCHES 5
#define INFLIGHT_PER_BACKEND 4

static uint64_t sink; /* every pick is folded in here and printed, so no pick is dead code */
static uint64_t key;  /* hash picks: a new key per pick, across batches too */

/* Requests in flight, oldest first. */
struct inflight {
    uint32_t *backend;
    uint32_t cap, head, len;
};

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* splitmix64's finaliser: consecutive counters become unrelated 64-bit hashes, like XXH3 of distinct keys. */
static inline uint64_t mix(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static uint64_t run_picks(struct rlb_lb_state *st, struct inflight *q, const uint64_t *exclude, uint64_t iterations)
{
    uint64_t acc = 0;
    for (uint64_t i = 0; i < iterations; i++) {
        int b = rlb_lb_pick(st, &(struct rlb_lb_pick_ctx){.exclude = exclude, .hash = mix(key++)});
        acc += (uint64_t)b;
        if (rlb_unlikely(b < 0))
            continue;
        if (q->len == q->cap) {
            st->be[q->backend[q->head]].inflight--;
            q->backend[q->head] = (uint32_t)b;
            q->head = q->head + 1 < q->cap ? q->head + 1 : 0;
        } else {
            uint32_t tail = q->head + q->len < q->cap ? q->head + q->len : q->head + q->len - q->cap;
            q->backend[tail] = (uint32_t)b;
            q->len++;
        }
        st->be[b].inflight++;
    }
    return acc;
}

static double time_picks(struct rlb_lb_state *st, struct inflight *q, const uint64_t *exclude, uint64_t iterations)
{
    sink += run_picks(st, q, exclude, iterations / 10 + 1);
    double best = 0;
    for (int b = 0; b < BATCHES; b++) {
        double t0 = now_ns();
        sink += run_picks(st, q, exclude, iterations);
        double t = (now_ns() - t0) / (double)iterations;
        if (b == 0 || t < best)
            best = t;
    }
    return best;
}

/* Over one full cycle of total_weight picks, smooth WRR gives every backend exactly its weight, and never the
 * excluded one. A fast pick that broke this would be a meaningless figure. */
static int check_wrr(struct rlb_lb_state *st, const struct rlb_pool_cfg *pool, const uint64_t *exclude)
{
    uint32_t n = pool->num_backends;
    uint64_t *count = calloc(n, sizeof(*count));
    if (!count)
        return -1;
    int64_t total = 0;
    for (uint32_t i = 0; i < n; i++)
        if (!rlb_lb_excluded(exclude, i))
            total += pool->backends[i].weight;
    int ret = 0;
    for (int64_t k = 0; k < total; k++) {
        int b = rlb_lb_pick(st, &(struct rlb_lb_pick_ctx){.exclude = exclude});
        if (b < 0 || (uint32_t)b >= n || rlb_lb_excluded(exclude, (uint32_t)b)) {
            ret = -1;
            break;
        }
        count[b]++;
    }
    for (uint32_t i = 0; ret == 0 && i < n; i++)
        if (count[i] != (rlb_lb_excluded(exclude, i) ? 0 : pool->backends[i].weight))
            ret = -1;
    free(count);
    return ret;
}

/* The others have no exact cycle to check. What must hold: a backend in range and not excluded, every backend
 * used over many picks, and for hash the same backend for the same key. The picks are held in flight meanwhile:
 * p2c on an idle pool prefers the heavier of its two draws and would never use a lightest backend. */
static int check_picks(struct rlb_lb_state *st, const struct rlb_pool_cfg *pool, const uint64_t *exclude)
{
    uint32_t n = pool->num_backends;
    bool *seen = calloc(n, sizeof(*seen));
    if (!seen)
        return -1;
    int ret = 0;
    for (uint64_t k = 0; k < 200ull * n && ret == 0; k++) {
        struct rlb_lb_pick_ctx ctx = {.exclude = exclude, .hash = mix(k)};
        int b = rlb_lb_pick(st, &ctx);
        if (b < 0 || (uint32_t)b >= n || rlb_lb_excluded(exclude, (uint32_t)b))
            ret = -1;
        else if (pool->balance == RLB_BALANCE_HASH && !pool->hash.bounded_load && rlb_lb_pick(st, &ctx) != b)
            ret = -1;
        else {
            seen[b] = true;
            st->be[b].inflight++;
        }
    }
    for (uint32_t i = 0; i < n; i++)
        st->be[i].inflight = 0;
    for (uint32_t i = 0; ret == 0 && i < n; i++)
        if (seen[i] == rlb_lb_excluded(exclude, i))
            ret = -1;
    free(seen);
    return ret;
}

static double time_maglev_build(const struct rlb_pool_cfg *pool, const uint32_t *weights)
{
    double best = 0;
    for (int b = 0; b < BATCHES; b++) {
        struct rlb_maglev m;
        double t0 = now_ns();
        int ret = rlb_maglev_build(&m, RLB_MAGLEV_DEFAULT_SIZE, pool->backends, weights, pool->num_backends);
        double t = now_ns() - t0;
        if (ret < 0) {
            fprintf(stderr, "lb_bench: rlb_maglev_build: %s\n", strerror(-ret));
            exit(1);
        }
        sink += m.entry[sink % m.size];
        rlb_maglev_free(&m);
        if (b == 0 || t < best)
            best = t;
    }
    return best / 1e6;
}

static const struct {
    const char *name;
    enum rlb_balance balance;
    uint32_t bounded_load;
} algorithms[] = {
    {"round_robin", RLB_BALANCE_WRR, 0},
    {"least_conn", RLB_BALANCE_LEASTCONN, 0},
    {"p2c", RLB_BALANCE_P2C, 0},
    {"hash", RLB_BALANCE_HASH, 0},
    {"hash, bounded 125%", RLB_BALANCE_HASH, 125},
};

static const uint32_t sizes[] = {2, 16, 256};

int main(int argc, char **argv)
{
    uint64_t iterations = 1000000;
    int bad = bench_parse_iterations("lb_bench", argc, argv, &iterations);
    if (bad)
        return bad;

    struct rlb_backend_cfg *pools[RLB_ARRAY_SIZE(sizes)];
    for (size_t s = 0; s < RLB_ARRAY_SIZE(sizes); s++) {
        pools[s] = calloc(sizes[s], sizeof(*pools[s]));
        if (!pools[s]) {
            perror("lb_bench");
            return 1;
        }
        /* Distinct addresses: the hash table is built from them. */
        for (uint32_t i = 0; i < sizes[s]; i++) {
            pools[s][i].weight = i % 10 + 1;
            snprintf(pools[s][i].addr.text, sizeof(pools[s][i].addr.text), "10.0.%u.%u:8080", i / 256, i % 256);
        }
    }

    printf("lb_bench: weights 1..10, %d requests in flight per backend, %" PRIu64 " picks per batch, best of %d\n\n",
           INFLIGHT_PER_BACKEND, iterations, BATCHES);
    printf("| algorithm | backends | exclusion | ns/pick | picks/s | ns/backend |\n");
    printf("|---|---:|---|---:|---:|---:|\n");
    for (size_t a = 0; a < RLB_ARRAY_SIZE(algorithms); a++) {
        for (size_t s = 0; s < RLB_ARRAY_SIZE(sizes); s++) {
            uint32_t n = sizes[s];
            struct rlb_pool_cfg pool = {
                .name = "bench",
                .balance = algorithms[a].balance,
                .backends = pools[s],
                .num_backends = n,
                .hash = {.bounded_load = algorithms[a].bounded_load},
            };
            uint64_t exclude[RLB_LB_MAX_EXCLUDE_WORDS] = {1}; /* backend 0 */
            const uint64_t *variants[] = {NULL, exclude};
            for (size_t v = 0; v < RLB_ARRAY_SIZE(variants); v++) {
                struct rlb_lb_state st;
                int ret = rlb_lb_init(&st, &pool, NULL);
                if (ret < 0) {
                    fprintf(stderr, "lb_bench: rlb_lb_init: %s\n", strerror(-ret));
                    return 1;
                }
                int checked = pool.balance == RLB_BALANCE_WRR ? check_wrr(&st, &pool, variants[v])
                                                              : check_picks(&st, &pool, variants[v]);
                if (checked < 0) {
                    fprintf(stderr, "lb_bench: %s, %u backends: wrong picks\n", algorithms[a].name, n);
                    return 1;
                }
                struct inflight q = {.cap = INFLIGHT_PER_BACKEND * n};
                q.backend = calloc(q.cap, sizeof(*q.backend));
                if (!q.backend) {
                    perror("lb_bench");
                    return 1;
                }
                double ns = time_picks(&st, &q, variants[v], iterations);
                printf("| %s | %u | %s | %.1f | %.0f | %.2f |\n", algorithms[a].name, n,
                       variants[v] ? "backend 0 excluded" : "none", ns, 1e9 / ns, ns / n);
                free(q.backend);
                rlb_lb_destroy(&st);
            }
        }
    }

    printf("\nMaglev table build, %u entries, best of %d:\n\n", RLB_MAGLEV_DEFAULT_SIZE, BATCHES);
    printf("| backends | weights | ms |\n");
    printf("|---:|---|---:|\n");
    for (size_t s = 0; s < RLB_ARRAY_SIZE(sizes); s++) {
        uint32_t n = sizes[s];
        uint32_t *weights = malloc(n * sizeof(*weights));
        if (!weights) {
            perror("lb_bench");
            return 1;
        }
        struct rlb_pool_cfg pool = {.backends = pools[s], .num_backends = n};
        for (uint32_t i = 0; i < n; i++)
            weights[i] = 1;
        printf("| %u | equal | %.2f |\n", n, time_maglev_build(&pool, weights));
        for (uint32_t i = 0; i < n; i++)
            weights[i] = pools[s][i].weight;
        printf("| %u | 1..10 | %.2f |\n", n, time_maglev_build(&pool, weights));
        free(weights);
    }
    for (size_t s = 0; s < RLB_ARRAY_SIZE(sizes); s++)
        free(pools[s]);
    printf("\n# checksum %" PRIu64 "\n", sink);
    return 0;
}
