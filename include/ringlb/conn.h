/* Connection slots and their I/O primitives: receive queue, send queue,
 * multishot recv arming and pausing, the close sequence. */
#ifndef RINGLB_CONN_H
#define RINGLB_CONN_H

#include <ringlb/worker-t.h>

static inline uint32_t rlb_conn_slot(const struct rlb_worker *w, const struct rlb_conn *c)
{
    return (uint32_t)(c - w->conns);
}

static inline struct rlb_conn *rlb_conn_peer(struct rlb_worker *w, const struct rlb_conn *c)
{
    return c->peer == RLB_SLOT_NONE ? NULL : &w->conns[c->peer];
}

/* A freed slot is not "closing": freeing it again would corrupt the free list. */
static inline bool rlb_conn_is_closing(const struct rlb_conn *c)
{
    if (c->kind == RLB_CONN_CLIENT)
        return c->state == RLB_CS_CLOSING;
    return c->kind == RLB_CONN_UPSTREAM && c->state == RLB_US_CLOSING;
}

int rlb_conns_init(struct rlb_worker *w, uint32_t count);
void rlb_conns_destroy(struct rlb_worker *w);

/* A slot for socket <fd>, or NULL when the table is full. */
struct rlb_conn *rlb_conn_alloc(struct rlb_worker *w, enum rlb_conn_kind kind, int fd);

/* Posts a multishot recv unless one is posted or the connection is closing. */
void rlb_conn_arm_recv(struct rlb_worker *w, struct rlb_conn *c);
/* Cancels the multishot recv: the connection holds enough unconsumed input. */
void rlb_conn_pause_recv(struct rlb_worker *w, struct rlb_conn *c);

/* Appends a received span to the input queue. */
void rlb_conn_inq_append(struct rlb_worker *w, struct rlb_conn *c, int32_t id);
/* Drops <n> bytes from the front of the input queue. */
void rlb_conn_inq_consume(struct rlb_worker *w, struct rlb_conn *c, uint32_t n);
void rlb_conn_inq_clear(struct rlb_worker *w, struct rlb_conn *c);
/* Makes the front of the input queue contiguous (copying into a linear
 * buffer) so a head can be parsed in place. Returns 0, or -1 when the bytes
 * exceed a linear buffer or none is free. */
int rlb_conn_inq_linearize(struct rlb_worker *w, struct rlb_conn *c);

/* The send queue, taken from the pool on first use. NULL on memory exhaustion. */
struct rlb_outq *rlb_conn_outq(struct rlb_worker *w, struct rlb_conn *c);
/* Posts a send for whatever is queued, unless one is already in flight. */
void rlb_conn_flush(struct rlb_worker *w, struct rlb_conn *c);
/* Bytes queued and not yet sent. */
static inline uint64_t rlb_conn_unsent(const struct rlb_conn *c)
{
    uint64_t n = c->outq ? c->outq->queued_bytes : 0;
    if (c->tls)
        n += c->tls->out_len - c->tls->out_sent; /* encrypted, not yet sent */
    return n;
}

/* Starts closing: whatever is still queued is dropped (callers that want
 * it delivered wait for the queue to drain first); <abort> makes it a reset
 * so the peer cannot mistake a truncated message for a whole one. The slot
 * is freed when the last posted operation completes. */
void rlb_conn_close(struct rlb_worker *w, struct rlb_conn *c, bool abort);
/* Frees the slot of a closing connection once nothing is posted any more. */
void rlb_conn_try_free(struct rlb_worker *w, struct rlb_conn *c);

void rlb_conn_set_nodelay(struct rlb_conn *c);

/* Cancels a posted connect; its completion then reports -ECANCELED. */
void rlb_conn_cancel_connect(struct rlb_worker *w, struct rlb_conn *c);

#endif
