/* Receive buffers (an io_uring provided-buffer ring), the spans received into
 * them, and the per-connection send queues that gather slices of them. */
#ifndef RINGLB_BUF_T_H
#define RINGLB_BUF_T_H

#include <ringlb/api.h>
#include <sys/socket.h>
#include <sys/uio.h>

#define RLB_BUF_NONE (-1)

/* Two provided-buffer groups: what clients send and what backends send
 * never compete for the same buffers, so a crowd of requests cannot take
 * every buffer and leave the responses that would free them nowhere to land. */
enum rlb_buf_group_id {
    RLB_BUF_GROUP_CLIENT = 0,
    RLB_BUF_GROUP_UPSTREAM = 1,
    RLB_BUF_GROUPS
};

/* A span received into buffer <bid>. One per ring buffer, indexed by bid:
 * a recv fills exactly one buffer, so the buffer id is also the node id of
 * the connection input queue it is linked into. */
struct rlb_seg {
    uint32_t off;
    uint32_t len;
    int32_t next; /* next bid in the same input queue, RLB_BUF_NONE at the tail */
};

struct rlb_buf_group {
    struct io_uring_buf_ring *ring; /* shared with the kernel */
    char *mem;                      /* count * size bytes */
    uint32_t count;
    uint32_t size;
    uint32_t mask;
    uint32_t base;         /* global id of this group's buffer 0 */
    uint32_t in_ring;      /* buffers the kernel may fill right now */
    uint32_t pending_adds; /* returned since the last io_uring_buf_ring_advance */
    size_t ring_bytes;     /* mapping size of <ring> */
};

struct rlb_bufs {
    struct rlb_buf_group groups[RLB_BUF_GROUPS];
    uint32_t ring_ids;     /* ids below this are ring buffers; linear ids follow */
    uint16_t *refs;        /* per global id */
    struct rlb_seg *segs;  /* per global id, ring and linear */

    /* Linear buffers hold a message head that arrived in several receives,
     * so the parser can still work in place on contiguous bytes. */
    char **linear;
    uint32_t linear_cap;
    uint32_t linear_size;
    int32_t *linear_next_free;
    int32_t linear_free;

    /* Ids below RLB_BUF_NONE are stored cache entries sent by reference (see cache.h). */
    struct rlb_cache *cache;
};

#define RLB_OUTQ_PIECES 64
#define RLB_OUTQ_ARENA 768

/* Bytes waiting to be sent on one socket: slices of receive buffers (each
 * holding a reference), static strings, or small generated strings in the
 * arena. At most one send is in flight per queue, covering pieces
 * [head, head + inflight). */
struct rlb_outq {
    struct iovec iov[RLB_OUTQ_PIECES];
    int32_t bid[RLB_OUTQ_PIECES];
    uint16_t head;
    uint16_t tail;
    uint16_t inflight;
    uint32_t arena_used;
    uint64_t queued_bytes;
    struct msghdr msg;
    struct rlb_outq *next_free;
    char arena[RLB_OUTQ_ARENA];
};

struct rlb_outq_pool {
    struct rlb_outq *free;
    uint32_t allocated;
    struct rlb_zc_hold *free_holds;
};

/* References kept on the buffers of one zero-copy send until the kernel's
 * notification says it no longer reads them: the send's own completion
 * comes earlier and only means the bytes were queued. */
struct rlb_zc_hold {
    int32_t bid[RLB_OUTQ_PIECES];
    uint16_t n;
    struct rlb_zc_hold *next;
};

#endif
