#ifndef RINGLB_TIMER_H
#define RINGLB_TIMER_H

#include <ringlb/timer-t.h>

struct rlb_conn;

/* One list per duration: <durations_ms>[i] for list i (index 0 unused). Returns 0 or -ENOMEM. */
int rlb_timers_init(struct rlb_timers *t, const uint32_t *durations_ms, uint32_t num_lists);
void rlb_timers_destroy(struct rlb_timers *t);

/* (Re)arms the timer of connection <slot> of the table <base> on <list>
 * (an enum rlb_timer_kind, or RLB_TIMER_POOL_IDLE + pool index). */
void rlb_timer_arm(struct rlb_timers *t, struct rlb_conn *base, uint32_t slot, uint32_t list);
void rlb_timer_cancel(struct rlb_timers *t, struct rlb_conn *base, uint32_t slot);

/* Removes and returns the slot of one expired timer (its list in <list>), or RLB_SLOT_NONE. */
uint32_t rlb_timer_pop_expired(struct rlb_timers *t, struct rlb_conn *base, uint32_t *list);

/* Milliseconds until the earliest deadline (0 if past), or -1 with no timer armed. */
int64_t rlb_timer_next_ms(const struct rlb_timers *t, const struct rlb_conn *base);

uint64_t rlb_now_ms(void);

#endif
