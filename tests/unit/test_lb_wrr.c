#include <criterion/criterion.h>
#include <ringlb/config.h>
#include <ringlb/lb.h>

#include <string.h>

static struct rlb_pool_cfg make_pool(struct rlb_backend_cfg *be, const uint32_t *weights, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        memset(&be[i], 0, sizeof(be[i]));
        be[i].weight = weights[i];
    }
    return (struct rlb_pool_cfg){.name = "p", .balance = RLB_BALANCE_WRR, .backends = be, .num_backends = n};
}

static void sequence(const uint32_t *weights, uint32_t n, const char *expected)
{
    struct rlb_backend_cfg be[8];
    struct rlb_pool_cfg pool = make_pool(be, weights, n);
    struct rlb_lb_state st;
    cr_assert_eq(rlb_lb_init(&st, &pool, NULL), 0);
    size_t len = strlen(expected);
    char got[64] = "";
    for (size_t i = 0; i < len; i++) {
        int b = rlb_lb_pick(&st, NULL);
        cr_assert(b >= 0);
        got[i] = (char)('a' + b);
    }
    cr_expect_str_eq(got, expected);
    rlb_lb_destroy(&st);
}

Test(lb_wrr, nginx_reference_5_1_1)
{
    /* The sequence nginx documents for smooth weighted round-robin. */
    sequence((uint32_t[]){5, 1, 1}, 3, "aabacaa" "aabacaa");
}

Test(lb_wrr, equal_weights_alternate)
{
    sequence((uint32_t[]){1, 1}, 2, "abababab");
    sequence((uint32_t[]){1, 1, 1}, 3, "abcabcabc");
}

Test(lb_wrr, weights_2_1)
{
    sequence((uint32_t[]){2, 1}, 2, "abaaba");
}

Test(lb_wrr, single_backend)
{
    sequence((uint32_t[]){7}, 1, "aaaa");
}

Test(lb_wrr, shares_match_weights_over_a_cycle)
{
    uint32_t weights[] = {3, 7, 1, 9};
    struct rlb_backend_cfg be[4];
    struct rlb_pool_cfg pool = make_pool(be, weights, 4);
    struct rlb_lb_state st;
    rlb_lb_init(&st, &pool, NULL);
    int counts[4] = {0};
    for (int i = 0; i < 20 * 100; i++)
        counts[rlb_lb_pick(&st, NULL)]++;
    for (int i = 0; i < 4; i++)
        cr_expect_eq(counts[i], (int)weights[i] * 100, "backend %d: %d picks", i, counts[i]);
    rlb_lb_destroy(&st);
}

Test(lb_wrr, exclusion_skips_backends)
{
    uint32_t weights[] = {5, 1, 1};
    struct rlb_backend_cfg be[3];
    struct rlb_pool_cfg pool = make_pool(be, weights, 3);
    struct rlb_lb_state st;
    rlb_lb_init(&st, &pool, NULL);
    uint64_t exclude[RLB_LB_MAX_EXCLUDE_WORDS] = {1}; /* backend 0 */
    for (int i = 0; i < 10; i++) {
        int b = rlb_lb_pick(&st, &(struct rlb_lb_pick_ctx){.exclude = exclude});
        cr_expect(b == 1 || b == 2);
    }
    exclude[0] = 7;
    cr_expect_eq(rlb_lb_pick(&st, &(struct rlb_lb_pick_ctx){.exclude = exclude}), -1);
    rlb_lb_destroy(&st);
}

Test(lb, names)
{
    enum rlb_balance b;
    cr_expect_eq(rlb_lb_balance_from_name("round_robin", &b), 0);
    cr_expect_eq(b, RLB_BALANCE_WRR);
    cr_expect_eq(rlb_lb_balance_from_name("bogus", &b), -1);
}
