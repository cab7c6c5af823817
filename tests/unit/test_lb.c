/* least_conn, p2c and hash (Maglev) picks; round-robin has test_lb_wrr.c. */
#include <criterion/criterion.h>
#include <ringlb/config.h>
#include <ringlb/lb.h>
#include <ringlb/maglev.h>

#include <string.h>

#define MAX_N 100

static struct rlb_backend_cfg backends[MAX_N];

/* Distinct address texts: the hash algorithm's table is built from them. */
static struct rlb_pool_cfg make_pool(enum rlb_balance balance, const uint32_t *weights, uint32_t n)
{
    cr_assert_leq(n, MAX_N);
    for (uint32_t i = 0; i < n; i++) {
        memset(&backends[i], 0, sizeof(backends[i]));
        snprintf(backends[i].addr.text, sizeof(backends[i].addr.text), "10.0.0.%u:80", i);
        backends[i].weight = weights[i];
    }
    return (struct rlb_pool_cfg){.name = "p", .balance = balance, .backends = backends, .num_backends = n};
}

static void init(struct rlb_lb_state *st, const struct rlb_pool_cfg *pool)
{
    cr_assert_eq(rlb_lb_init(st, pool, NULL), 0);
    /* rlb_lb_init seeds from the clock; a fixed seed keeps p2c's draws, and these tests, reproducible. */
    st->rng = 0x9E3779B97F4A7C15ull;
}

static const uint32_t ones[MAX_N] = {[0 ... MAX_N - 1] = 1};

/* splitmix64's finaliser: spreads a counter over 64 bits, as XXH3 of distinct keys would. */
static uint64_t mix(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static int pick(struct rlb_lb_state *st, const uint64_t *exclude, uint64_t hash)
{
    return rlb_lb_pick(st, &(struct rlb_lb_pick_ctx){.exclude = exclude, .hash = hash});
}

/* Picks as letters; with <hold>, each pick stays in flight (never completes). */
static void sequence(struct rlb_lb_state *st, bool hold, const char *expected)
{
    char got[64] = "";
    size_t len = strlen(expected);
    cr_assert_lt(len, sizeof(got));
    for (size_t i = 0; i < len; i++) {
        int b = pick(st, NULL, 0);
        cr_assert_geq(b, 0);
        got[i] = (char)('a' + b);
        if (hold)
            st->be[b].inflight++;
    }
    cr_expect_str_eq(got, expected);
}

Test(lb, names_include_hash)
{
    enum rlb_balance b;
    cr_expect_eq(rlb_lb_balance_from_name("hash", &b), 0);
    cr_expect_eq(b, RLB_BALANCE_HASH);
    cr_expect_eq(rlb_lb_balance_from_name("maglev", &b), 0);
    cr_expect_eq(b, RLB_BALANCE_HASH);
    cr_expect_eq(rlb_lb_ops_for(RLB_BALANCE_HASH), &rlb_lb_hash_ops);
    cr_expect_str_eq(rlb_lb_balance_name(RLB_BALANCE_HASH), "hash");
    cr_expect_eq(rlb_lb_balance_from_name("least_conn", &b), 0);
    cr_expect_eq(b, RLB_BALANCE_LEASTCONN);
    cr_expect_eq(rlb_lb_balance_from_name("p2c", &b), 0);
    cr_expect_eq(b, RLB_BALANCE_P2C);
}

/* ---- least_conn ---- */

Test(lb_leastconn, idle_ties_go_round_robin)
{
    struct rlb_pool_cfg pool = make_pool(RLB_BALANCE_LEASTCONN, ones, 3);
    struct rlb_lb_state st;
    init(&st, &pool);
    sequence(&st, false, "abcabcabc");
    rlb_lb_destroy(&st);
}

Test(lb_leastconn, held_requests_spread_evenly)
{
    struct rlb_pool_cfg pool = make_pool(RLB_BALANCE_LEASTCONN, ones, 3);
    struct rlb_lb_state st;
    init(&st, &pool);
    sequence(&st, true, "abcabcabc");
    cr_expect_eq(st.be[0].inflight, 3);
    cr_expect_eq(st.be[1].inflight, 3);
    cr_expect_eq(st.be[2].inflight, 3);
    rlb_lb_destroy(&st);
}

Test(lb_leastconn, least_loaded_wins)
{
    struct rlb_pool_cfg pool = make_pool(RLB_BALANCE_LEASTCONN, ones, 3);
    struct rlb_lb_state st;
    init(&st, &pool);
    st.be[0].inflight = 5;
    st.be[1].inflight = 2;
    st.be[2].inflight = 3;
    cr_expect_eq(pick(&st, NULL, 0), 1);
    cr_expect_eq(pick(&st, NULL, 0), 1); /* nothing changed: still the least loaded, whatever the cursor */
    st.be[1].inflight = 4;
    cr_expect_eq(pick(&st, NULL, 0), 2);
    st.be[0].inflight = 0;
    cr_expect_eq(pick(&st, NULL, 0), 0);
    rlb_lb_destroy(&st);
}

Test(lb_leastconn, weights_scale_the_load)
{
    struct rlb_pool_cfg pool = make_pool(RLB_BALANCE_LEASTCONN, (uint32_t[]){2, 1}, 2);
    struct rlb_lb_state st;
    init(&st, &pool);
    /* (inflight + 1) / weight: a at 2 in flight is 3/2, b at 1 is 2/1. */
    st.be[0].inflight = 2;
    st.be[1].inflight = 1;
    cr_expect_eq(pick(&st, NULL, 0), 0);
    /* a at 4: 5/2 > 2/1. */
    st.be[0].inflight = 4;
    cr_expect_eq(pick(&st, NULL, 0), 1);
    rlb_lb_destroy(&st);
}

Test(lb_leastconn, weights_2_1_held)
{
    struct rlb_pool_cfg pool = make_pool(RLB_BALANCE_LEASTCONN, (uint32_t[]){2, 1}, 2);
    struct rlb_lb_state st;
    init(&st, &pool);
    /* Two for a, one for b, ties to whichever the cursor reaches first. */
    sequence(&st, true, "abaabaabaab");
    rlb_lb_destroy(&st);
}

Test(lb_leastconn, skips_excluded_and_down)
{
    struct rlb_pool_cfg pool = make_pool(RLB_BALANCE_LEASTCONN, ones, 4);
    struct rlb_lb_state st;
    init(&st, &pool);
    st.be[1].weight = 0;
    st.be[3].inflight = 10;
    uint64_t exclude[RLB_LB_MAX_EXCLUDE_WORDS] = {1}; /* backend 0 */
    for (int i = 0; i < 5; i++)
        cr_expect_eq(pick(&st, exclude, 0), 2); /* 1 is down, 3 is busier */
    exclude[0] = 1 | 4;
    cr_expect_eq(pick(&st, exclude, 0), 3);
    exclude[0] = 1 | 4 | 8;
    cr_expect_eq(pick(&st, exclude, 0), -1);
    exclude[0] = 0xf;
    cr_expect_eq(pick(&st, exclude, 0), -1);
    st.be[0].weight = st.be[2].weight = st.be[3].weight = 0;
    cr_expect_eq(pick(&st, NULL, 0), -1);
    rlb_lb_destroy(&st);
}

/* ---- p2c ---- */

Test(lb_p2c, never_ineligible)
{
    struct rlb_pool_cfg pool = make_pool(RLB_BALANCE_P2C, ones, 5);
    struct rlb_lb_state st;
    init(&st, &pool);
    st.be[1].weight = 0;
    rlb_lb_update(&st);
    uint64_t exclude[RLB_LB_MAX_EXCLUDE_WORDS] = {1u << 3};
    for (int i = 0; i < 10000; i++) {
        int b = pick(&st, exclude, 0);
        cr_assert(b == 0 || b == 2 || b == 4, "picked %d", b);
    }
    /* Only one left: it is taken, whatever its load. */
    exclude[0] = 1 | 8 | 16;
    st.be[2].inflight = 1000;
    for (int i = 0; i < 100; i++)
        cr_assert_eq(pick(&st, exclude, 0), 2);
    exclude[0] = 0x1f;
    cr_expect_eq(pick(&st, exclude, 0), -1);
    rlb_lb_destroy(&st);
}

Test(lb_p2c, loaded_backend_never_wins)
{
    /* The two draws are distinct, so with three backends at least one of them is idle and beats backend 0. */
    struct rlb_pool_cfg pool = make_pool(RLB_BALANCE_P2C, ones, 3);
    struct rlb_lb_state st;
    init(&st, &pool);
    st.be[0].inflight = 100;
    int count[3] = {0};
    for (int i = 0; i < 10000; i++)
        count[pick(&st, NULL, 0)]++;
    cr_expect_eq(count[0], 0);
    cr_expect_gt(count[1], 4000);
    cr_expect_gt(count[2], 4000);
    rlb_lb_destroy(&st);
}

Test(lb_p2c, idle_equal_weights_spread_evenly)
{
    /* Idle and equal: every comparison ties and the first (uniform) draw is kept. */
    struct rlb_pool_cfg pool = make_pool(RLB_BALANCE_P2C, ones, 4);
    struct rlb_lb_state st;
    init(&st, &pool);
    enum { PICKS = 100000 };
    int count[4] = {0};
    for (int i = 0; i < PICKS; i++)
        count[pick(&st, NULL, 0)]++;
    for (int i = 0; i < 4; i++)
        cr_expect(count[i] > PICKS / 4 * 0.97 && count[i] < PICKS / 4 * 1.03, "backend %d: %d picks", i, count[i]);
    rlb_lb_destroy(&st);
}

Test(lb_p2c, idle_weighted_follow_the_weights)
{
    /* Idle: both draws tie on load, the first (weighted) draw is kept, so an
     * idle pool is shared by weight, not handed to the heaviest backend. */
    static const uint32_t w[] = {1, 2, 3, 4};
    struct rlb_pool_cfg pool = make_pool(RLB_BALANCE_P2C, w, 4);
    struct rlb_lb_state st;
    init(&st, &pool);
    enum { PICKS = 100000 };
    int count[4] = {0};
    for (int i = 0; i < PICKS; i++)
        count[pick(&st, NULL, 0)]++;
    for (int i = 0; i < 4; i++) {
        double share = (double)count[i] / PICKS, want = w[i] / 10.0;
        cr_expect(share > want - 0.03 && share < want + 0.03, "backend %d: %.3f, want %.1f", i, share, want);
    }
    rlb_lb_destroy(&st);
}

/* Shares under a sustained load of <concurrency> requests in flight, each equally likely to finish next, as a
 * worker sees it. Returns the picks per backend in <count>. */
static void p2c_under_load(const uint32_t *weights, uint32_t n, uint32_t concurrency, int picks, int *count)
{
    struct rlb_pool_cfg pool = make_pool(RLB_BALANCE_P2C, weights, n);
    struct rlb_lb_state st;
    init(&st, &pool);
    uint32_t total = 0;
    for (int k = 0; k < picks; k++) {
        if (total == concurrency) {
            uint32_t x = (uint32_t)(mix((uint64_t)k) % total);
            for (uint32_t i = 0; i < n; i++) {
                if (x < st.be[i].inflight) {
                    st.be[i].inflight--;
                    break;
                }
                x -= st.be[i].inflight;
            }
            total--;
        }
        int b = pick(&st, NULL, 0);
        count[b]++;
        st.be[b].inflight++;
        total++;
    }
    rlb_lb_destroy(&st);
}

Test(lb_p2c, loaded_shares_follow_weights)
{
    /* Not when idle: two idle backends of different weights compare (0 + 1) / weight, so the heavier always wins
     * and a pool of weights 1,2,3,4 that never has a request in flight sends nothing to the first. Under load the
     * in-flight counts settle in proportion to the weights, and so do the shares. */
    uint32_t weights[] = {1, 2, 3, 4};
    enum { PICKS = 100000 };
    int count[4] = {0};
    p2c_under_load(weights, 4, 400, PICKS, count);
    for (int i = 0; i < 4; i++) {
        double want = PICKS * weights[i] / 10.0;
        cr_expect(count[i] > want * 0.97 && count[i] < want * 1.03, "backend %d: %d picks, %.0f expected", i,
                  count[i], want);
    }
}

/* ---- hash ---- */

Test(lb_hash, same_key_same_backend)
{
    struct rlb_pool_cfg pool = make_pool(RLB_BALANCE_HASH, ones, 10);
    struct rlb_lb_state a, b;
    init(&a, &pool);
    init(&b, &pool); /* another worker, its own table: the same, since built from the same addresses */
    for (uint64_t k = 0; k < 10000; k++) {
        int first = pick(&a, NULL, mix(k));
        cr_assert_geq(first, 0);
        cr_assert_eq(pick(&a, NULL, mix(k)), first);
        cr_assert_eq(pick(&b, NULL, mix(k)), first);
    }
    rlb_lb_destroy(&a);
    rlb_lb_destroy(&b);
}

Test(lb_hash, shared_table)
{
    struct rlb_pool_cfg pool = make_pool(RLB_BALANCE_HASH, ones, 10);
    struct rlb_maglev m;
    cr_assert_eq(rlb_maglev_build(&m, 251, backends, ones, 10), 0);
    struct rlb_lb_state st;
    cr_assert_eq(rlb_lb_init(&st, &pool, &m), 0);
    cr_expect_null(st.own_table);
    for (uint64_t k = 0; k < 1000; k++)
        cr_assert_eq(pick(&st, NULL, mix(k)), (int)rlb_maglev_lookup(&m, mix(k)));
    rlb_lb_destroy(&st);
    rlb_maglev_free(&m); /* still ours: destroy left it alone */
}

Test(lb_hash, table_size_from_config)
{
    struct rlb_pool_cfg pool = make_pool(RLB_BALANCE_HASH, ones, 3);
    struct rlb_lb_state st;
    init(&st, &pool);
    cr_expect_eq(st.table->size, RLB_MAGLEV_DEFAULT_SIZE);
    rlb_lb_destroy(&st);
    pool.hash.table_size = 1009;
    init(&st, &pool);
    cr_expect_eq(st.table->size, 1009);
    rlb_lb_destroy(&st);
    pool.hash.table_size = 1000;
    cr_expect_lt(rlb_lb_init(&st, &pool, NULL), 0);
}

Test(lb_hash, keys_spread_by_weight)
{
    uint32_t weights[] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 3};
    struct rlb_pool_cfg pool = make_pool(RLB_BALANCE_HASH, weights, 12);
    struct rlb_lb_state st;
    init(&st, &pool);
    enum { KEYS = 150000 };
    int count[12] = {0};
    for (uint64_t k = 0; k < KEYS; k++)
        count[pick(&st, NULL, mix(k))]++;
    for (int i = 0; i < 12; i++) {
        double want = KEYS * weights[i] / 15.0;
        cr_expect(count[i] > want * 0.95 && count[i] < want * 1.05, "backend %d: %d keys, %.0f expected", i,
                  count[i], want);
    }
    rlb_lb_destroy(&st);
}

/* Backend 3 unavailable (down, or tried already by this request): its keys go elsewhere, no other key moves. */
static void only_its_keys_move(bool by_exclusion)
{
    struct rlb_pool_cfg pool = make_pool(RLB_BALANCE_HASH, ones, 10);
    struct rlb_lb_state st;
    init(&st, &pool);
    enum { KEYS = 20000 };
    static int before[KEYS];
    for (uint64_t k = 0; k < KEYS; k++)
        before[k] = pick(&st, NULL, mix(k));
    uint64_t exclude[RLB_LB_MAX_EXCLUDE_WORDS] = {0};
    if (by_exclusion)
        exclude[0] = 1u << 3;
    else
        st.be[3].weight = 0;
    int moved_to[10] = {0}, moved = 0;
    for (uint64_t k = 0; k < KEYS; k++) {
        int b = pick(&st, exclude, mix(k));
        if (before[k] == 3) {
            cr_assert(b >= 0 && b != 3);
            moved_to[b]++;
            moved++;
        } else {
            cr_assert_eq(b, before[k], "key %lu moved from %d to %d", (unsigned long)k, before[k], b);
        }
    }
    /* Scattered over the others, not dumped on one neighbour. */
    for (int i = 0; i < 10; i++)
        if (i != 3)
            cr_expect(moved_to[i] > moved / 9 / 2, "backend %d took %d of %d moved keys", i, moved_to[i], moved);
    rlb_lb_destroy(&st);
}

Test(lb_hash, down_backend_keys_move_alone)
{
    only_its_keys_move(false);
}

Test(lb_hash, excluded_backend_keys_move_alone)
{
    only_its_keys_move(true);
}

Test(lb_hash, one_backend_left)
{
    /* Every walk is long here (99 of 100 backends down): the pick takes the slow path and still finds it. */
    struct rlb_pool_cfg pool = make_pool(RLB_BALANCE_HASH, ones, 100);
    struct rlb_lb_state st;
    init(&st, &pool);
    for (uint32_t i = 0; i < 100; i++)
        st.be[i].weight = i == 57;
    for (uint64_t k = 0; k < 2000; k++)
        cr_assert_eq(pick(&st, NULL, mix(k)), 57);
    uint64_t exclude[RLB_LB_MAX_EXCLUDE_WORDS] = {0};
    exclude[57 / 64] = 1ull << (57 % 64);
    cr_expect_eq(pick(&st, exclude, 1), -1);
    st.be[57].weight = 0;
    cr_expect_eq(pick(&st, NULL, 1), -1);
    rlb_lb_destroy(&st);
}

Test(lb_hash, no_backends)
{
    struct rlb_pool_cfg pool = make_pool(RLB_BALANCE_HASH, ones, 0);
    struct rlb_lb_state st;
    init(&st, &pool);
    cr_expect_eq(pick(&st, NULL, 12345), -1);
    rlb_lb_destroy(&st);
}

/* After every pick, every backend b holds at most ceil(c/100 * T * w_b / W) requests, T in flight in all and W
 * the weight total: inflight_b * 100 * W < c * T * w_b + 100 * W. Requests are held, never completed. */
static void check_bounded(const uint32_t *weights, uint32_t n, uint32_t percent, bool hot_key)
{
    struct rlb_pool_cfg pool = make_pool(RLB_BALANCE_HASH, weights, n);
    pool.hash.bounded_load = percent;
    struct rlb_lb_state st;
    init(&st, &pool);
    uint64_t W = 0;
    for (uint32_t i = 0; i < n; i++)
        W += weights[i];
    uint32_t own = 0; /* picks that went to the key's own backend */
    for (uint64_t t = 1; t <= 10000; t++) {
        uint64_t h = hot_key ? 42 : mix(t);
        int b = pick(&st, NULL, h);
        cr_assert_geq(b, 0);
        own += (uint32_t)b == rlb_maglev_lookup(st.table, h);
        st.be[b].inflight++;
        for (uint32_t i = 0; i < n; i++)
            cr_assert_lt((uint64_t)st.be[i].inflight * 100 * W, (uint64_t)percent * t * weights[i] + 100 * W,
                         "after %lu picks, backend %u holds %u", (unsigned long)t, i, st.be[i].inflight);
    }
    fprintf(stderr, "lb_hash: bounded_load %u%%, %s, %u backends: %u of 10000 picks on the key's own backend\n",
            percent, hot_key ? "one hot key" : "spread keys", n, own);
    if (!hot_key)
        cr_expect_gt(own, 5000); /* the bound only diverts the overflow */
    rlb_lb_destroy(&st);
}

Test(lb_hash, bounded_load_spread_keys)
{
    check_bounded(ones, 10, 125, false);
}

Test(lb_hash, bounded_load_hot_key)
{
    /* Unbounded, one key would send all 10,000 to one backend. */
    check_bounded(ones, 10, 125, true);
}

Test(lb_hash, bounded_load_weighted)
{
    check_bounded((uint32_t[]){1, 2, 3, 4, 1, 2, 3, 4}, 8, 125, false);
    check_bounded((uint32_t[]){1, 2, 3, 4, 1, 2, 3, 4}, 8, 150, true);
}

Test(lb_hash, bounded_load_falls_back_when_all_full)
{
    /* Backend 1 excluded, backend 0 above its capacity: over the bound is better than no backend. */
    struct rlb_pool_cfg pool = make_pool(RLB_BALANCE_HASH, ones, 2);
    pool.hash.bounded_load = 125;
    struct rlb_lb_state st;
    init(&st, &pool);
    st.be[0].inflight = 10;
    uint64_t exclude[RLB_LB_MAX_EXCLUDE_WORDS] = {2};
    for (uint64_t k = 0; k < 100; k++)
        cr_assert_eq(pick(&st, exclude, mix(k)), 0);
    /* Without the exclusion, backend 1 is under capacity and takes every key. */
    for (uint64_t k = 0; k < 100; k++)
        cr_assert_eq(pick(&st, NULL, mix(k)), 1);
    rlb_lb_destroy(&st);
}
