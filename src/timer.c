#include <ringlb/timer.h>
#include <ringlb/worker-t.h>

#include <time.h>

uint64_t rlb_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void rlb_timers_init(struct rlb_timers *t, const uint32_t durations_ms[RLB_TIMER__COUNT])
{
    for (int k = 0; k < RLB_TIMER__COUNT; k++) {
        t->lists[k].head = t->lists[k].tail = RLB_SLOT_NONE;
        t->lists[k].duration_ms = durations_ms[k];
    }
    t->now_ms = rlb_now_ms();
}

void rlb_timer_cancel(struct rlb_timers *t, struct rlb_conn *base, uint32_t slot)
{
    struct rlb_timer_node *n = &base[slot].timer;
    if (n->kind == RLB_TIMER_NONE)
        return;
    struct rlb_timer_list *l = &t->lists[n->kind];
    if (n->prev != RLB_SLOT_NONE)
        base[n->prev].timer.next = n->next;
    else
        l->head = n->next;
    if (n->next != RLB_SLOT_NONE)
        base[n->next].timer.prev = n->prev;
    else
        l->tail = n->prev;
    n->kind = RLB_TIMER_NONE;
    n->prev = n->next = RLB_SLOT_NONE;
}

void rlb_timer_arm(struct rlb_timers *t, struct rlb_conn *base, uint32_t slot, enum rlb_timer_kind kind)
{
    rlb_timer_cancel(t, base, slot);
    struct rlb_timer_list *l = &t->lists[kind];
    struct rlb_timer_node *n = &base[slot].timer;
    n->kind = (uint8_t)kind;
    n->deadline_ms = t->now_ms + l->duration_ms;
    n->next = RLB_SLOT_NONE;
    n->prev = l->tail;
    if (l->tail != RLB_SLOT_NONE)
        base[l->tail].timer.next = slot;
    else
        l->head = slot;
    l->tail = slot;
}

uint32_t rlb_timer_pop_expired(struct rlb_timers *t, struct rlb_conn *base, enum rlb_timer_kind *kind)
{
    for (int k = 1; k < RLB_TIMER__COUNT; k++) {
        uint32_t s = t->lists[k].head;
        if (s != RLB_SLOT_NONE && base[s].timer.deadline_ms <= t->now_ms) {
            *kind = (enum rlb_timer_kind)k;
            rlb_timer_cancel(t, base, s);
            return s;
        }
    }
    return RLB_SLOT_NONE;
}

int64_t rlb_timer_next_ms(const struct rlb_timers *t, const struct rlb_conn *base)
{
    int64_t best = -1;
    for (int k = 1; k < RLB_TIMER__COUNT; k++) {
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
