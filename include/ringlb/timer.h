#ifndef RINGLB_TIMER_H
#define RINGLB_TIMER_H

#include <ringlb/timer-t.h>

struct rlb_conn;

void rlb_timers_init(struct rlb_timers *t, const uint32_t durations_ms[RLB_TIMER__COUNT]);

/* (Re)arms <node> (stored in the slot table <base> at index <slot>) for its kind's duration. */
void rlb_timer_arm(struct rlb_timers *t, struct rlb_conn *base, uint32_t slot, enum rlb_timer_kind kind);
void rlb_timer_cancel(struct rlb_timers *t, struct rlb_conn *base, uint32_t slot);

/* Removes and returns the slot of one expired timer (its kind in <kind>), or RLB_SLOT_NONE. */
uint32_t rlb_timer_pop_expired(struct rlb_timers *t, struct rlb_conn *base, enum rlb_timer_kind *kind);

/* Milliseconds until the earliest deadline (0 if past), or -1 with no timer armed. */
int64_t rlb_timer_next_ms(const struct rlb_timers *t, const struct rlb_conn *base);

uint64_t rlb_now_ms(void);

#endif
