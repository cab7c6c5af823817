/* lb_bench: cost of one balancer pick (smooth weighted round-robin) as the pool grows.
 *
 * Usage: lb_bench [--iterations N]    (default 1000000 picks per batch; run pinned: taskset -c 1 lb_bench)
 *
 * The pool is built in memory with weights 1..10 repeating, so the picks walk the whole weighted sequence rather
 * than a degenerate equal-weight one. Timing as in parse_bench: CLOCK_MONOTONIC around a batch, best of 5. A second
 * row per size passes an exclusion bitmap with backend 0 set, the path a retry after a failed connect takes. */
#include "bench_args.h"
#include <ringlb/api.h>
#include <ringlb/config-t.h>
#include <ringlb/lb.h>

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <time.h>

#define BATCHES 5

static uint64_t sink; /* every pick is folded in here and printed, so no pick is dead code */

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static uint64_t run_picks(struct rlb_lb_state *st, const uint64_t *exclude, uint64_t iterations)
{
    uint64_t acc = 0;
    for (uint64_t i = 0; i < iterations; i++)
        acc += (uint64_t)rlb_lb_pick(st, &(struct rlb_lb_pick_ctx){.exclude = exclude});
    return acc;
}

static double time_picks(struct rlb_lb_state *st, const uint64_t *exclude, uint64_t iterations)
{
    sink += run_picks(st, exclude, iterations / 10 + 1);
    double best = 0;
    for (int b = 0; b < BATCHES; b++) {
        double t0 = now_ns();
        sink += run_picks(st, exclude, iterations);
        double t = (now_ns() - t0) / (double)iterations;
        if (b == 0 || t < best)
            best = t;
    }
    return best;
}

/* Over one full cycle of total_weight picks, smooth WRR gives every backend exactly its weight, and never the
 * excluded one. A fast pick that broke this would be a meaningless figure. */
static int check_distribution(struct rlb_lb_state *st, const struct rlb_pool_cfg *pool, const uint64_t *exclude)
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

int main(int argc, char **argv)
{
    uint64_t iterations = 1000000;
    int bad = bench_parse_iterations("lb_bench", argc, argv, &iterations);
    if (bad)
        return bad;

    static const uint32_t sizes[] = {2, 16, 256};
    printf("lb_bench: smooth weighted round-robin, weights 1..10, %" PRIu64 " picks per batch, best of %d\n\n",
           iterations, BATCHES);
    printf("| backends | exclusion | ns/pick | picks/s | ns/backend |\n");
    printf("|---:|---|---:|---:|---:|\n");
    for (size_t s = 0; s < RLB_ARRAY_SIZE(sizes); s++) {
        uint32_t n = sizes[s];
        struct rlb_backend_cfg *backends = calloc(n, sizeof(*backends));
        if (!backends) {
            perror("lb_bench");
            return 1;
        }
        for (uint32_t i = 0; i < n; i++)
            backends[i].weight = i % 10 + 1;
        struct rlb_pool_cfg pool = {
            .name = "bench",
            .balance = RLB_BALANCE_WRR,
            .backends = backends,
            .num_backends = n,
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
            if (check_distribution(&st, &pool, variants[v]) < 0) {
                fprintf(stderr, "lb_bench: %u backends: picks do not follow the weights\n", n);
                return 1;
            }
            double ns = time_picks(&st, variants[v], iterations);
            printf("| %u | %s | %.1f | %.0f | %.2f |\n", n, variants[v] ? "backend 0 excluded" : "none", ns,
                   1e9 / ns, ns / n);
            rlb_lb_destroy(&st);
        }
        free(backends);
    }
    printf("\n# checksum %" PRIu64 "\n", sink);
    return 0;
}
