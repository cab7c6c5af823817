#include <criterion/criterion.h>
#include <ringlb/timer.h>
#include <ringlb/worker-t.h>

#include <string.h>

static struct rlb_conn conns[8];
static struct rlb_timers t;

static void setup(void)
{
    memset(conns, 0, sizeof(conns));
    for (int i = 0; i < 8; i++)
        conns[i].timer.prev = conns[i].timer.next = RLB_SLOT_NONE;
    uint32_t d[] = {0, 100, 1000, 50};
    cr_assert_eq(rlb_timers_init(&t, d, 4), 0);
    t.now_ms = 10000;
}

static void teardown(void)
{
    rlb_timers_destroy(&t);
}

TestSuite(timer, .init = setup, .fini = teardown);

static uint32_t pop(uint32_t *list)
{
    return rlb_timer_pop_expired(&t, conns, list);
}

Test(timer, expires_in_deadline_order_per_list)
{
    uint32_t list;
    rlb_timer_arm(&t, conns, 0, 1); /* 10100 */
    t.now_ms += 10;
    rlb_timer_arm(&t, conns, 1, 1); /* 10110 */
    rlb_timer_arm(&t, conns, 2, 3); /* 10060 */
    cr_expect_eq(rlb_timer_next_ms(&t, conns), 50);
    cr_expect_eq(pop(&list), RLB_SLOT_NONE);
    t.now_ms = 10060;
    cr_expect_eq(pop(&list), 2);
    cr_expect_eq(list, 3);
    cr_expect_eq(pop(&list), RLB_SLOT_NONE);
    t.now_ms = 10200;
    cr_expect_eq(pop(&list), 0);
    cr_expect_eq(pop(&list), 1);
    cr_expect_eq(list, 1);
    cr_expect_eq(pop(&list), RLB_SLOT_NONE);
    cr_expect_eq(rlb_timer_next_ms(&t, conns), -1);
}

Test(timer, rearm_moves_to_the_back_and_cancel_removes)
{
    uint32_t list;
    rlb_timer_arm(&t, conns, 0, 1);
    rlb_timer_arm(&t, conns, 1, 1);
    rlb_timer_arm(&t, conns, 2, 1);
    t.now_ms += 50;
    rlb_timer_arm(&t, conns, 0, 1); /* re-armed later: now last */
    rlb_timer_cancel(&t, conns, 1);
    cr_expect_eq(conns[1].timer.list, RLB_TIMER_NONE);
    rlb_timer_cancel(&t, conns, 1); /* twice is harmless */
    t.now_ms += 1000;
    cr_expect_eq(pop(&list), 2);
    cr_expect_eq(pop(&list), 0);
    cr_expect_eq(pop(&list), RLB_SLOT_NONE);
}

Test(timer, moving_between_lists)
{
    uint32_t list;
    rlb_timer_arm(&t, conns, 5, 2);
    rlb_timer_arm(&t, conns, 5, 3);
    cr_expect_eq(conns[5].timer.list, 3);
    cr_expect_eq(t.lists[2].head, RLB_SLOT_NONE);
    t.now_ms += 60;
    cr_expect_eq(pop(&list), 5);
    cr_expect_eq(list, 3);
}
