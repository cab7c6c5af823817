#include <ringlb/timer.h>
#include <ringlb/worker-t.h>

#include <errno.h>
#include <stdlib.h>
#include <time.h>

uint64_t rlb_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int rlb_timers_init(struct rlb_timers *t, const uint32_t *durations_ms, uint32_t num_lists)
{
    t->lists = calloc(num_lists, sizeof(*t->lists));
    if (!t->lists)
        return -ENOMEM;
    t->num_lists = num_lists;
    for (uint32_t k = 0; k < num_lists; k++) {
        t->lists[k].head = t->lists[k].tail = RLB_SLOT_NONE;
        t->lists[k].duration_ms = durations_ms[k];
    }
    t->now_ms = rlb_now_ms();
    return 0;
}

void rlb_timers_destroy(struct rlb_timers *t)
{
    free(t->lists);
    t->lists = NULL;
    t->num_lists = 0;
}

void rlb_timer_cancel(struct rlb_timers *t, struct rlb_conn *base, uint32_t slot)
{
    struct rlb_timer_node *n = &base[slot].timer;
    if (n->list == RLB_TIMER_NONE)
        return;
    struct rlb_timer_list *l = &t->lists[n->list];
    if (n->prev != RLB_SLOT_NONE)
        base[n->prev].timer.next = n->next;
    else
        l->head = n->next;
    if (n->next != RLB_SLOT_NONE)
        base[n->next].timer.prev = n->prev;
    else
        l->tail = n->prev;
    n->list = RLB_TIMER_NONE;
    n->prev = n->next = RLB_SLOT_NONE;
}

void rlb_timer_arm(struct rlb_timers *t, struct rlb_conn *base, uint32_t slot, uint32_t list)
{
    rlb_timer_cancel(t, base, slot);
    struct rlb_timer_list *l = &t->lists[list];
    struct rlb_timer_node *n = &base[slot].timer;
    n->list = (uint16_t)list;
    n->deadline_ms = t->now_ms + l->duration_ms;
    n->next = RLB_SLOT_NONE;
    n->prev = l->tail;
    if (l->tail != RLB_SLOT_NONE)
        base[l->tail].timer.next = slot;
    else
        l->head = slot;
    l->tail = slot;
}

uint32_t rlb_timer_pop_expired(struct rlb_timers *t, struct rlb_conn *base, uint32_t *list)
{
    for (uint32_t k = 1; k < t->num_lists; k++) {
        uint32_t s = t->lists[k].head;
        if (s != RLB_SLOT_NONE && base[s].timer.deadline_ms <= t->now_ms) {
            *list = k;
            rlb_timer_cancel(t, base, s);
            return s;
        }
    }
    return RLB_SLOT_NONE;
}

int64_t rlb_timer_next_ms(const struct rlb_timers *t, const struct rlb_conn *base)
{
    int64_t best = -1;
    for (uint32_t k = 1; k < t->num_lists; k++) {
        uint32_t s = t->lists[k].head;
        if (s == RLB_SLOT_NONE)
            continue;
        int64_t d = (int64_t)base[s].timer.deadline_ms - (int64_t)t->now_ms;
        if (d < 0)
            d = 0;
        if (best < 0 || d < best)
            best = d;
    }
    return best;
}
