/* Connection timers. Every timer of one kind has the same duration, so
 * appending on (re)arm keeps each kind's list sorted by deadline: arming,
 * cancelling and expiring are all O(1), with no heap and no wheel. */
#ifndef RINGLB_TIMER_T_H
#define RINGLB_TIMER_T_H

#include <ringlb/api.h>

#define RLB_SLOT_NONE UINT32_MAX

enum rlb_timer_kind {
    RLB_TIMER_NONE = 0,
    RLB_TIMER_CLIENT_HEADER,
    RLB_TIMER_CLIENT_KEEPALIVE,
    RLB_TIMER_BODY_IDLE,
    RLB_TIMER_UPSTREAM_CONNECT,
    RLB_TIMER_UPSTREAM_RESPONSE,
    RLB_TIMER_LINGER,
    RLB_TIMER_CACHE_WAIT, /* waiting for another request's fetch of the same key */
    RLB_TIMER_POOL_IDLE, /* pool p uses list RLB_TIMER_POOL_IDLE + p: each pool has its own duration */
    /* Not a list of its own: TLS listener l uses list RLB_TIMER_POOL_IDLE + num_pools + l. */
    RLB_TIMER_TLS_HANDSHAKE = 0xffff,
};

struct rlb_timer_node {
    uint32_t prev;
    uint32_t next;
    uint64_t deadline_ms;
    uint16_t list; /* RLB_TIMER_NONE when not armed */
};

struct rlb_timer_list {
    uint32_t head;
    uint32_t tail;
    uint32_t duration_ms;
};

struct rlb_timers {
    struct rlb_timer_list *lists;
    uint32_t num_lists;
    uint64_t now_ms; /* cached once per loop turn */
};

#endif
