#include <criterion/criterion.h>
#include <ringlb/maglev.h>

#include <errno.h>
#include <string.h>

#define M RLB_MAGLEV_DEFAULT_SIZE
#define MAX_N 100

static struct rlb_backend_cfg backends[MAX_N];

/* Maglev hashes the address text, so every backend needs its own. */
static void name_backends(void)
{
    memset(backends, 0, sizeof(backends));
    for (int i = 0; i < MAX_N; i++)
        snprintf(backends[i].addr.text, sizeof(backends[i].addr.text), "10.0.0.%d:80", i);
}

TestSuite(maglev, .init = name_backends);

static void build(struct rlb_maglev *m, const uint32_t *weights, uint32_t n)
{
    cr_assert_eq(rlb_maglev_build(m, M, backends, weights, n), 0);
    cr_assert_eq(m->size, M);
}

/* Largest relative error, over the backends, between the entries owned and the weight share of the table. */
static double share_error(const uint32_t *weights, uint32_t n)
{
    struct rlb_maglev m;
    build(&m, weights, n);
    uint32_t count[MAX_N] = {0};
    uint64_t total = 0;
    for (uint32_t i = 0; i < n; i++)
        total += weights[i];
    for (uint32_t e = 0; e < M; e++) {
        cr_assert_lt(m.entry[e], n);
        count[m.entry[e]]++;
    }
    double worst = 0;
    for (uint32_t i = 0; i < n; i++) {
        double want = (double)M * weights[i] / (double)total;
        double err = (count[i] > want ? count[i] - want : want - count[i]) / want;
        cr_expect_leq(err, 0.01, "backend %u: %u entries, weight share %.1f", i, count[i], want);
        if (err > worst)
            worst = err;
    }
    rlb_maglev_free(&m);
    return worst;
}

Test(maglev, equal_weights_share_the_table)
{
    uint32_t w[MAX_N];
    for (int i = 0; i < MAX_N; i++)
        w[i] = 1;
    double e10 = share_error(w, 10), e100 = share_error(w, 100);
    fprintf(stderr, "maglev: max share error, equal weights: N=10 %.4f%%, N=100 %.4f%%\n", e10 * 100, e100 * 100);
}

Test(maglev, mixed_weights_share_the_table)
{
    double e4 = share_error((uint32_t[]){1, 2, 3, 4}, 4);
    uint32_t w[MAX_N];
    for (int i = 0; i < MAX_N; i++)
        w[i] = (uint32_t)(i % 10 + 1);
    double e100 = share_error(w, 100);
    double skew = share_error((uint32_t[]){1000, 1, 1, 1, 1, 1, 1, 1}, 8);
    fprintf(stderr, "maglev: max share error, weights 1,2,3,4 %.4f%%; 1..10 x 10 %.4f%%; 1000,1 x 7 %.4f%%\n",
            e4 * 100, e100 * 100, skew * 100);
}

/* Takes backend <gone> out of <n> and back: its entries all move, few others do, and the way back is exact. */
static void remove_and_restore(uint32_t n, uint32_t gone, uint32_t *worst_extra)
{
    uint32_t w[MAX_N];
    for (uint32_t i = 0; i < n; i++)
        w[i] = 1;
    struct rlb_maglev before, without, after;
    build(&before, w, n);
    w[gone] = 0;
    build(&without, w, n);
    uint32_t extra = 0;
    for (uint32_t e = 0; e < M; e++) {
        cr_assert_neq(without.entry[e], gone);
        if (before.entry[e] != gone && before.entry[e] != without.entry[e])
            extra++;
    }
    cr_expect_leq(extra, M / 100, "N=%u, backend %u removed: %u other entries changed", n, gone, extra);
    if (extra > *worst_extra)
        *worst_extra = extra;
    w[gone] = 1;
    build(&after, w, n);
    cr_expect_eq(memcmp(before.entry, after.entry, M * sizeof(*before.entry)), 0);
    rlb_maglev_free(&before);
    rlb_maglev_free(&without);
    rlb_maglev_free(&after);
}

Test(maglev, removal_moves_little_else)
{
    static const uint32_t sizes[] = {10, 100};
    for (size_t s = 0; s < RLB_ARRAY_SIZE(sizes); s++) {
        uint32_t n = sizes[s], worst = 0;
        /* A few backends, not all of them: each removal is two builds. */
        for (uint32_t gone = 0; gone < n; gone += n / 5 + 1)
            remove_and_restore(n, gone, &worst);
        fprintf(stderr, "maglev: N=%u, one backend removed: worst extra disruption %u entries (%.3f%% of %u)\n", n,
                worst, 100.0 * worst / M, M);
    }
}

Test(maglev, same_input_same_table)
{
    uint32_t w[] = {3, 1, 4, 1, 5, 9, 2, 6};
    struct rlb_maglev a, b;
    build(&a, w, 8);
    build(&b, w, 8);
    cr_expect_eq(memcmp(a.entry, b.entry, M * sizeof(*a.entry)), 0);
    rlb_maglev_free(&a);
    rlb_maglev_free(&b);
}

Test(maglev, identity_is_the_address)
{
    /* Backend 1 with another address: its permutation changes, so its entries do too. */
    uint32_t w[] = {1, 1, 1};
    struct rlb_maglev a, b;
    build(&a, w, 3);
    snprintf(backends[1].addr.text, sizeof(backends[1].addr.text), "10.9.9.9:80");
    build(&b, w, 3);
    cr_expect_neq(memcmp(a.entry, b.entry, M * sizeof(*a.entry)), 0);
    rlb_maglev_free(&a);
    rlb_maglev_free(&b);
}

Test(maglev, bad_sizes_rejected)
{
    uint32_t w[] = {1, 1};
    static const uint32_t bad[] = {0, 1, 4, 100, 65536, 65535, 1000000};
    for (size_t i = 0; i < RLB_ARRAY_SIZE(bad); i++) {
        struct rlb_maglev m = {.size = 7};
        cr_expect_eq(rlb_maglev_build(&m, bad[i], backends, w, 2), -EINVAL, "size %u", bad[i]);
        cr_expect_null(m.entry);
        rlb_maglev_free(&m);
    }
    /* Rejected before the arrays are read, so two entries do here. */
    struct rlb_maglev m;
    cr_expect_eq(rlb_maglev_build(&m, M, backends, w, 65536), -EINVAL, "65536 backends");
}

Test(maglev, small_prime_sizes)
{
    uint32_t w[] = {1, 1, 1};
    static const uint32_t sizes[] = {2, 3, 5, 13, 251};
    for (size_t s = 0; s < RLB_ARRAY_SIZE(sizes); s++) {
        struct rlb_maglev m;
        cr_assert_eq(rlb_maglev_build(&m, sizes[s], backends, w, 3), 0);
        for (uint32_t e = 0; e < m.size; e++)
            cr_expect_lt(m.entry[e], 3);
        rlb_maglev_free(&m);
    }
}

Test(maglev, is_prime)
{
    static const uint32_t primes[] = {2, 3, 5, 251, 65537, 655373, 4294967291u};
    static const uint32_t composites[] = {0, 1, 4, 9, 65535, 65536, 65539 * 3, 4294967295u, 65521u * 65521u};
    for (size_t i = 0; i < RLB_ARRAY_SIZE(primes); i++)
        cr_expect(rlb_maglev_is_prime(primes[i]), "%u", primes[i]);
    for (size_t i = 0; i < RLB_ARRAY_SIZE(composites); i++)
        cr_expect_not(rlb_maglev_is_prime(composites[i]), "%u", composites[i]);
}

Test(maglev, no_backend_present)
{
    uint32_t w[] = {0, 0, 0};
    struct rlb_maglev m;
    build(&m, w, 3);
    for (uint32_t e = 0; e < M; e++)
        cr_assert_eq(m.entry[e], RLB_MAGLEV_NONE);
    rlb_maglev_free(&m);
    build(&m, w, 0);
    for (uint32_t e = 0; e < M; e++)
        cr_assert_eq(m.entry[e], RLB_MAGLEV_NONE);
    rlb_maglev_free(&m);
}

Test(maglev, absent_backend_owns_nothing)
{
    uint32_t w[] = {1, 0, 1, 1};
    struct rlb_maglev m;
    build(&m, w, 4);
    for (uint32_t e = 0; e < M; e++)
        cr_assert(m.entry[e] == 0 || m.entry[e] == 2 || m.entry[e] == 3);
    rlb_maglev_free(&m);
}
