#include <ringlb/buf.h>
#include <ringlb/conn.h>
#include <ringlb/log.h>
#include <ringlb/ring.h>
#include <ringlb/timer.h>
#include <ringlb/tls.h>

#include <errno.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

int rlb_conns_init(struct rlb_worker *w, uint32_t count)
{
    if (count > RLB_MAX_SLOTS)
        count = RLB_MAX_SLOTS;
    /* Mapped, never touched up front: slots are handed out from a high-water
     * mark, so memory grows with the connections actually open, not with
     * max_connections. Page alignment is also cache-line alignment. */
    void *mem = mmap(NULL, sizeof(struct rlb_conn) * count, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED)
        return -errno;
    w->conns = mem;
    w->num_conns = count;
    w->slot_hwm = 0;
    w->free_head = RLB_SLOT_NONE;
    return 0;
}

void rlb_conns_destroy(struct rlb_worker *w)
{
    if (w->conns)
        munmap(w->conns, sizeof(struct rlb_conn) * w->num_conns);
    w->conns = NULL;
}

struct rlb_conn *rlb_conn_alloc(struct rlb_worker *w, enum rlb_conn_kind kind, int fd)
{
    uint32_t s = w->free_head;
    if (s != RLB_SLOT_NONE)
        w->free_head = w->conns[s].peer;
    else if (w->slot_hwm < w->num_conns)
        s = w->slot_hwm++;
    else
        return NULL;
    struct rlb_conn *c = &w->conns[s];
    uint32_t gen = c->gen;
    memset(c, 0, sizeof(*c));
    c->gen = gen;
    c->kind = (uint8_t)kind;
    c->fd = fd;
    c->peer = RLB_SLOT_NONE;
    c->inq_head = c->inq_tail = RLB_BUF_NONE;
    c->timer.prev = c->timer.next = RLB_SLOT_NONE;
    c->idle_prev = c->idle_next = RLB_SLOT_NONE;
    w->live_conns++;
    if (kind == RLB_CONN_CLIENT)
        w->live_clients++;
    return c;
}

void rlb_conn_set_nodelay(struct rlb_conn *c)
{
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* The buffer group travels in the operation code, so that even a
 * completion for a slot already reused returns its buffer to the right ring. */
static enum rlb_op recv_op(const struct rlb_conn *c)
{
    return c->kind == RLB_CONN_CLIENT ? RLB_OP_RECV : RLB_OP_RECV_UP;
}

void rlb_conn_arm_recv(struct rlb_worker *w, struct rlb_conn *c)
{
    if (c->flags & (RLB_CF_RECV_ARMED | RLB_CF_EOF))
        return;
    if (c->state == RLB_CS_CLOSING && c->kind == RLB_CONN_CLIENT)
        return;
    if (c->kind == RLB_CONN_UPSTREAM && c->state == RLB_US_CLOSING)
        return;
    struct io_uring_sqe *sqe = rlb_ring_sqe(&w->ring, &w->stats.ring);
    /* With a provided buffer: no buffer is tied to the connection until
     * bytes actually arrive, so idle connections cost no buffer memory.
     * Multishot, except for backends that lately sent bodies worth
     * splicing: a multishot receive would drain everything already queued
     * on the socket into buffers before the response head is even parsed,
     * leaving nothing for the splice; one buffer per receive costs a poll
     * per response, which backends of small responses need not pay. */
    if (c->kind == RLB_CONN_UPSTREAM && w->pools[c->pool].backends[c->backend].large_bodies)
        io_uring_prep_recv(sqe, c->fd, NULL, 0, 0);
    else
        io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = c->kind == RLB_CONN_CLIENT ? RLB_BUF_GROUP_CLIENT : RLB_BUF_GROUP_UPSTREAM;
    io_uring_sqe_set_data64(sqe, rlb_ud(recv_op(c), rlb_conn_slot(w, c), c->gen));
    c->flags |= RLB_CF_RECV_ARMED;
    c->flags &= (uint16_t)~(RLB_CF_RECV_CANCELING | RLB_CF_STARVED);
    c->ops++;
}

void rlb_conn_pause_recv(struct rlb_worker *w, struct rlb_conn *c)
{
    if (!(c->flags & RLB_CF_RECV_ARMED) || (c->flags & RLB_CF_RECV_CANCELING))
        return;
    struct io_uring_sqe *sqe = rlb_ring_sqe(&w->ring, &w->stats.ring);
    io_uring_prep_cancel64(sqe, rlb_ud(recv_op(c), rlb_conn_slot(w, c), c->gen), 0);
    io_uring_sqe_set_data64(sqe, rlb_ud(RLB_OP_CANCEL, rlb_conn_slot(w, c), c->gen));
    c->flags |= RLB_CF_RECV_CANCELING;
}

void rlb_conn_cancel_connect(struct rlb_worker *w, struct rlb_conn *c)
{
    struct io_uring_sqe *sqe = rlb_ring_sqe(&w->ring, &w->stats.ring);
    io_uring_prep_cancel64(sqe, rlb_ud(RLB_OP_CONNECT, rlb_conn_slot(w, c), c->gen), 0);
    io_uring_sqe_set_data64(sqe, rlb_ud(RLB_OP_CANCEL, rlb_conn_slot(w, c), c->gen));
}

void rlb_conn_inq_append(struct rlb_worker *w, struct rlb_conn *c, int32_t id)
{
    struct rlb_seg *seg = &w->bufs.segs[id];
    seg->next = RLB_BUF_NONE;
    if (c->inq_tail == RLB_BUF_NONE)
        c->inq_head = id;
    else
        w->bufs.segs[c->inq_tail].next = id;
    c->inq_tail = id;
    c->inq_bytes += seg->len;
}

void rlb_conn_inq_consume(struct rlb_worker *w, struct rlb_conn *c, uint32_t n)
{
    while (n) {
        int32_t id = c->inq_head;
        RLB_BUG_ON(id == RLB_BUF_NONE);
        struct rlb_seg *seg = &w->bufs.segs[id];
        uint32_t take = n < seg->len ? n : seg->len;
        seg->off += take;
        seg->len -= take;
        c->inq_bytes -= take;
        n -= take;
        if (seg->len == 0) {
            c->inq_head = seg->next;
            if (c->inq_head == RLB_BUF_NONE)
                c->inq_tail = RLB_BUF_NONE;
            rlb_buf_unref(&w->bufs, id);
        }
    }
}

void rlb_conn_inq_clear(struct rlb_worker *w, struct rlb_conn *c)
{
    while (c->inq_head != RLB_BUF_NONE) {
        int32_t id = c->inq_head;
        c->inq_head = w->bufs.segs[id].next;
        rlb_buf_unref(&w->bufs, id);
    }
    c->inq_tail = RLB_BUF_NONE;
    c->inq_bytes = 0;
}

int rlb_conn_inq_linearize(struct rlb_worker *w, struct rlb_conn *c)
{
    struct rlb_bufs *b = &w->bufs;
    int32_t first = c->inq_head;
    if (first == RLB_BUF_NONE || b->segs[first].next == RLB_BUF_NONE)
        return 0;
    int32_t second = b->segs[first].next;
    if (b->segs[first].len + b->segs[second].len > b->linear_size)
        return -1;
    /* Copying is the exception: only heads that arrive in pieces pay it,
     * and only up to the next piece, never the body behind the head. */
    int32_t lin = first;
    if (rlb_buf_is_ring(b, first)) {
        lin = rlb_linear_alloc(b);
        if (lin == RLB_BUF_NONE)
            return -1;
        memcpy(rlb_buf_ptr(b, lin), rlb_buf_ptr(b, first) + b->segs[first].off, b->segs[first].len);
        w->stats.bytes_copied += b->segs[first].len;
        b->segs[lin].len = b->segs[first].len;
        rlb_buf_unref(b, first);
        c->inq_head = lin;
    } else if (b->segs[first].off) {
        char *p = rlb_buf_ptr(b, first);
        memmove(p, p + b->segs[first].off, b->segs[first].len);
        b->segs[first].off = 0;
    }
    struct rlb_seg *ls = &b->segs[lin];
    struct rlb_seg *ss = &b->segs[second];
    memcpy(rlb_buf_ptr(b, lin) + ls->len, rlb_buf_ptr(b, second) + ss->off, ss->len);
    w->stats.bytes_copied += ss->len;
    ls->len += ss->len;
    ls->next = ss->next;
    if (c->inq_tail == second)
        c->inq_tail = lin;
    rlb_buf_unref(b, second);
    return 0;
}

struct rlb_outq *rlb_conn_outq(struct rlb_worker *w, struct rlb_conn *c)
{
    if (!c->outq)
        c->outq = rlb_outq_get(&w->outqs);
    return c->outq;
}

void rlb_conn_flush(struct rlb_worker *w, struct rlb_conn *c)
{
    if (rlb_tls_userspace_tx(c->tls)) {
        rlb_tls_flush(w, c);
        return;
    }
    struct rlb_outq *q = c->outq;
    if (!q || (c->flags & RLB_CF_SEND_INFLIGHT) || rlb_outq_pending(q) == 0)
        return;
    if (c->kind == RLB_CONN_UPSTREAM && c->state == RLB_US_CONNECTING)
        return;
    uint32_t n = rlb_outq_prepare_send(q, RLB_OUTQ_PIECES);
    struct io_uring_sqe *sqe = rlb_ring_sqe(&w->ring, &w->stats.ring);
    /* Send-zero-copy fails with EOPNOTSUPP on kernel TLS sockets. */
    uint32_t zc_min = c->tls || c->fd < 0 ? 0 : w->cfg->buffers.zerocopy_min;
    size_t bytes = 0;
    for (uint32_t i = 0; zc_min && i < n; i++) {
        const struct iovec *v = &q->iov[q->head + i];
        /* The arena is rewritten once the queue drains, long before a
         * notification may come: a send with generated bytes is copied. */
        if ((const char *)v->iov_base >= q->arena && (const char *)v->iov_base < q->arena + RLB_OUTQ_ARENA) {
            zc_min = 0;
            break;
        }
        bytes += v->iov_len;
    }
    struct rlb_zc_hold *hold = NULL;
    if (c->fd < 0) {
        /* A connection of ringlb's own (a background cache revalidation): its bytes go nowhere, but through
         * the completion path of a send, so flow control works as for a client (see rlb_proxy_sent). */
        io_uring_prep_nop(sqe);
    } else if (zc_min && bytes >= zc_min && (hold = rlb_zc_hold_inflight(&w->outqs, q, &w->bufs)) != NULL) {
        /* Worth it only for large sends: each costs a second completion,
         * and its buffers stay pinned (by the hold) until the notification. */
        io_uring_prep_sendmsg_zc(sqe, c->fd, &q->msg, MSG_NOSIGNAL);
        struct rlb_zc_hold **tail = &c->zc_holds;
        while (*tail)
            tail = &(*tail)->next;
        *tail = hold;
        c->flags |= RLB_CF_SEND_ZC;
        c->ops++; /* the notification */
        w->stats.zc_sends++;
    } else if (n == 1) {
        io_uring_prep_send(sqe, c->fd, q->iov[q->head].iov_base, q->iov[q->head].iov_len, MSG_NOSIGNAL);
    } else {
        io_uring_prep_sendmsg(sqe, c->fd, &q->msg, MSG_NOSIGNAL);
    }
    io_uring_sqe_set_data64(sqe, rlb_ud(RLB_OP_SEND, rlb_conn_slot(w, c), c->gen));
    c->flags |= RLB_CF_SEND_INFLIGHT;
    c->ops++;
}

void rlb_conn_close(struct rlb_worker *w, struct rlb_conn *c, bool abort)
{
    if (rlb_conn_is_closing(c))
        return;
    if (abort)
        c->flags |= RLB_CF_ABORT;
    c->state = c->kind == RLB_CONN_CLIENT ? RLB_CS_CLOSING : RLB_US_CLOSING;
    rlb_timer_cancel(&w->timers, w->conns, rlb_conn_slot(w, c));
    rlb_conn_inq_clear(w, c);
    if (abort) {
        /* A reset rather than a FIN: the peer must not mistake a truncated
         * message for a complete one. */
        struct linger lg = {1, 0};
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    if (c->outq && !(c->flags & RLB_CF_SEND_INFLIGHT)) {
        rlb_outq_discard(c->outq, &w->bufs);
        rlb_outq_put(&w->outqs, c->outq);
        c->outq = NULL;
    }
    if (c->flags & RLB_CF_RECV_ARMED)
        rlb_conn_pause_recv(w, c);
    /* Waking the posted operations: shutdown makes the recv and send finish. */
    if (c->flags & (RLB_CF_RECV_ARMED | RLB_CF_SEND_INFLIGHT | RLB_CF_POLL_ARMED))
        shutdown(c->fd, SHUT_RDWR);
    rlb_conn_try_free(w, c);
}

void rlb_conn_try_free(struct rlb_worker *w, struct rlb_conn *c)
{
    if (!rlb_conn_is_closing(c) || c->ops)
        return;
    if (c->outq) {
        rlb_outq_discard(c->outq, &w->bufs);
        rlb_outq_put(&w->outqs, c->outq);
        c->outq = NULL;
    }
    rlb_conn_inq_clear(w, c);
    rlb_tls_free(w, c);
    close(c->fd);
    c->fd = -1;
    if (c->kind == RLB_CONN_CLIENT)
        w->live_clients--;
    w->live_conns--;
    c->kind = RLB_CONN_FREE;
    c->gen++;
    uint32_t s = rlb_conn_slot(w, c);
    c->peer = w->free_head;
    w->free_head = s;
}
