/* io_uring set-up with feature probing, SQE acquisition, user_data packing. */
#ifndef RINGLB_RING_H
#define RINGLB_RING_H

#include <liburing.h>
#include <ringlb/api.h>

enum rlb_op {
    RLB_OP_NONE = 0,
    RLB_OP_ACCEPT,  /* index: listener */
    RLB_OP_RECV,    /* index: connection slot; a client's, buffers from RLB_BUF_GROUP_CLIENT */
    RLB_OP_RECV_UP, /* an upstream connection's, buffers from RLB_BUF_GROUP_UPSTREAM */
    RLB_OP_SEND,
    RLB_OP_CONNECT,
    RLB_OP_CANCEL,  /* completion ignored */
    RLB_OP_WAKE,    /* eventfd read: the main thread wants attention */
    RLB_OP_POLL,    /* readiness of a connection whose bytes move by splice(2) */
};

/* user_data = op (8 bits) | slot index (24 bits) | slot generation (32 bits).
 * Never a pointer: a completion arriving after its slot was reused carries
 * the old generation and is dropped. */
static inline uint64_t rlb_ud(enum rlb_op op, uint32_t index, uint32_t gen)
{
    return ((uint64_t)op << 56) | ((uint64_t)(index & 0xffffff) << 32) | gen;
}
static inline enum rlb_op rlb_ud_op(uint64_t ud) { return (enum rlb_op)(ud >> 56); }
static inline uint32_t rlb_ud_index(uint64_t ud) { return (uint32_t)(ud >> 32) & 0xffffff; }
static inline uint32_t rlb_ud_gen(uint64_t ud) { return (uint32_t)ud; }

#define RLB_MAX_SLOTS 0xffffff

/* Creates a ring with the best flags this kernel accepts (SINGLE_ISSUER,
 * DEFER_TASKRUN, else COOP_TASKRUN, else none) and a CQ four times the SQ.
 * Must be called by the thread that will submit. Returns 0 or -errno. */
int rlb_ring_init(struct io_uring *ring, unsigned entries, unsigned *flags_used);

/* Checks the opcodes ringlb needs; returns 0 or -ENOTSUP naming the first missing one in <missing>. */
int rlb_ring_probe(struct io_uring *ring, const char **missing);

/* What a worker's ring does, for the cost figures the benchmarks report. */
struct rlb_ring_counters {
    uint64_t enters; /* io_uring_enter calls: one per loop turn, plus flushes of a full SQ */
    uint64_t sqes;   /* operations posted */
};

/* An SQE, submitting first when the SQ is full. Never NULL. */
struct io_uring_sqe *rlb_ring_sqe(struct io_uring *ring, struct rlb_ring_counters *counters);

#endif
