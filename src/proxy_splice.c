/* Large response bodies by splice(2): upstream socket -> pipe -> client
 * socket, with the pages moved by reference instead of copied into a receive
 * buffer and out again. Measured (docs/profile.md): plain splice(2) halves
 * the CPU of a 256 KiB body on this kernel, while io_uring's splice runs on
 * io-wq threads; so the worker calls splice(2) itself, non-blocking, and
 * uses the ring only to learn when a socket is ready again (one-shot polls).
 *
 * Order is kept by construction: splicing starts only once the upstream
 * receive is cancelled, every body byte received before is relayed, and the
 * client's send queue is empty; from then until the body ends nothing else
 * is written to the client. */
#include <ringlb/buf.h>
#include <ringlb/cache.h>
#include <ringlb/conn.h>
#include <ringlb/tls.h>
#include <ringlb/log.h>
#include <ringlb/proxy.h>
#include <ringlb/ring.h>
#include <ringlb/upstream.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "proxy_internal.h"

/* Pipes are sized so that a pipe holds a good step of a body while staying
 * well inside fs.pipe-user-pages-soft for many concurrent splices. */
#define PIPE_BYTES (256u * 1024)
#define PIPES_KEPT 64
/* Bytes moved per call before yielding to the loop (through a poll that
 * fires at once when the socket is still ready). */
#define STEP_BUDGET (4u * PIPE_BYTES)

static int pipe_get(struct rlb_worker *w, int fds[2])
{
    if (w->num_pipes) {
        w->num_pipes--;
        fds[0] = w->pipes[w->num_pipes][0];
        fds[1] = w->pipes[w->num_pipes][1];
        return 0;
    }
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0)
        return -1;
    /* Smaller is fine (an unprivileged user past the soft limit gets 2 pages). */
    fcntl(fds[1], F_SETPIPE_SZ, PIPE_BYTES);
    return 0;
}

void rlb__proxy_splice_release(struct rlb_worker *w, struct rlb_txn *t)
{
    if (t->pipe_r < 0)
        return;
    /* A pipe with bytes left in it belongs to a response that was abandoned. */
    if (t->pipe_bytes == 0 && w->num_pipes < PIPES_KEPT &&
        (w->pipes || (w->pipes = calloc(PIPES_KEPT, sizeof(*w->pipes))))) {
        w->pipes[w->num_pipes][0] = t->pipe_r;
        w->pipes[w->num_pipes][1] = t->pipe_w;
        w->num_pipes++;
    } else {
        close(t->pipe_r);
        close(t->pipe_w);
    }
    t->pipe_r = t->pipe_w = -1;
    t->pipe_bytes = 0;
}

void rlb__proxy_splice_destroy(struct rlb_worker *w)
{
    for (uint32_t i = 0; i < w->num_pipes; i++) {
        close(w->pipes[i][0]);
        close(w->pipes[i][1]);
    }
    free(w->pipes);
    w->pipes = NULL;
    w->num_pipes = 0;
}

static void poll_for(struct rlb_worker *w, struct rlb_conn *c, unsigned events)
{
    if (c->flags & RLB_CF_POLL_ARMED)
        return;
    struct io_uring_sqe *sqe = rlb_ring_sqe(&w->ring, &w->stats.ring);
    io_uring_prep_poll_add(sqe, c->fd, events);
    io_uring_sqe_set_data64(sqe, rlb_ud(RLB_OP_POLL, rlb_conn_slot(w, c), c->gen));
    c->flags |= RLB_CF_POLL_ARMED;
    c->ops++;
}

/* Moves what the client socket takes from the pipe. False when the client is gone. */
static bool drain_pipe(struct rlb_txn *t, struct rlb_conn *c, uint64_t *moved, bool *progress, bool *blocked)
{
    ssize_t n = splice(t->pipe_r, NULL, c->fd, NULL, t->pipe_bytes, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n > 0) {
        t->pipe_bytes -= (uint32_t)n;
        *moved += (uint64_t)n;
        *progress = true;
    } else if (n < 0 && errno == EAGAIN) {
        *blocked = true;
    } else if (n < 0 && errno != EINTR) {
        return false;
    }
    return true;
}

bool rlb__proxy_splice_wanted(const struct rlb_worker *w, const struct rlb_txn *t, const struct rlb_conn *u)
{
    uint32_t min = w->cfg->buffers.splice_min;
    /* Bytes BoringSSL must encrypt or decrypt cannot bypass it; the kernel's TLS can take them. */
    if (u->tls || (u->peer != RLB_SLOT_NONE && rlb_tls_userspace_tx(w->conns[u->peer].tls)))
        return false;
    /* A body going into the cache must pass through our memory. */
    if (t->cache && t->cache->storing)
        return false;
    return min && t->resp_body == RLB_BODY_LENGTH && !(t->flags & RLB_TF_RECHUNK) &&
           t->resp_remaining >= (uint64_t)min + u->inq_bytes;
}

bool rlb__proxy_splice_ready_to_start(const struct rlb_conn *u, const struct rlb_conn *c)
{
    return !(u->flags & RLB_CF_RECV_ARMED) && u->inq_head == RLB_BUF_NONE && !rlb_conn_unsent(c) &&
           !(c->flags & RLB_CF_SEND_INFLIGHT);
}

int rlb__proxy_splice_step(struct rlb_worker *w, struct rlb_conn *u, struct rlb_conn *c)
{
    struct rlb_txn *t = c->txn;
    if (t->pipe_r < 0) {
        int fds[2];
        if (pipe_get(w, fds) < 0) {
            /* No pipe (descriptor limit): the buffers carry this body. */
            rlb_log_warn("pipe for splicing: %s; relaying through buffers", strerror(errno));
            u->flags &= (uint16_t)~RLB_CF_SPLICE;
            rlb_conn_arm_recv(w, u);
            return RLB_RELAY_MORE;
        }
        t->pipe_r = fds[0];
        t->pipe_w = fds[1];
        w->stats.splices++;
    }
    uint64_t moved = 0;
    bool in_blocked = false, out_blocked = false;
    while (moved < STEP_BUDGET) {
        bool progress = false;
        if (t->resp_remaining && t->pipe_bytes < PIPE_BYTES) {
            size_t want = t->resp_remaining < PIPE_BYTES - t->pipe_bytes ? (size_t)t->resp_remaining
                                                                        : PIPE_BYTES - t->pipe_bytes;
            ssize_t n = splice(u->fd, NULL, t->pipe_w, NULL, want, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
            if (n > 0) {
                t->resp_remaining -= (uint64_t)n;
                t->pipe_bytes += (uint32_t)n;
                progress = true;
            } else if (n == 0) {
                rlb_log_warn("backend %s closed %llu bytes before the end of the body",
                             w->cfg->pools[u->pool].backends[u->backend].addr.text,
                             (unsigned long long)t->resp_remaining);
                return RLB_RELAY_BAD;
            } else if (errno == EAGAIN) {
                /* Either the socket is empty or the pipe is full. */
                in_blocked = true;
            } else if (errno != EINTR) {
                return RLB_RELAY_BAD;
            }
        }
        if (t->pipe_bytes && !drain_pipe(t, c, &moved, &progress, &out_blocked))
            return RLB_RELAY_CLIENT_GONE;
        if (t->resp_remaining == 0 && t->pipe_bytes == 0) {
            rlb__proxy_splice_release(w, t);
            u->flags &= (uint16_t)~RLB_CF_SPLICE;
            return RLB_RELAY_DONE;
        }
        if (!progress)
            break;
        in_blocked = out_blocked = false;
    }
    arm(w, u, RLB_TIMER_BODY_IDLE);
    /* Wait for whichever side stopped us; after the budget, for either (a
     * poll on a ready socket completes at once: a yield to the loop). */
    if (out_blocked || (!in_blocked && t->pipe_bytes >= PIPE_BYTES))
        poll_for(w, c, POLLOUT);
    else
        poll_for(w, u, POLLIN);
    return RLB_RELAY_MORE;
}

int rlb__proxy_splice_stored(struct rlb_worker *w, struct rlb_conn *c, struct rlb_cache_entry *e)
{
    struct rlb_txn *t = c->txn;
    struct rlb_cache_txn *ct = t->cache;
    if (e) {
        int fds[2];
        if (pipe_get(w, fds) < 0)
            return RLB_RELAY_BAD;
        /* The head is small and its bytes are reused once the queue drains: copied into the pipe. */
        struct rlb_outq *q = c->outq;
        ssize_t n = writev(fds[1], q->iov + q->head, (int)rlb_outq_pending(q));
        if (n < 0 || (uint64_t)n != q->queued_bytes) {
            t->pipe_r = fds[0];
            t->pipe_w = fds[1];
            t->pipe_bytes = 1; /* not reusable: closed */
            rlb__proxy_splice_release(w, t);
            return RLB_RELAY_BAD;
        }
        rlb_outq_discard(q, &w->bufs);
        rlb_outq_put(&w->outqs, q);
        c->outq = NULL;
        t->pipe_r = fds[0];
        t->pipe_w = fds[1];
        t->pipe_bytes = (uint32_t)n;
        rlb_cache_ref(e);
        ct->splice_entry = e;
        ct->splice_off = 0;
        w->stats.splices++;
    }
    e = ct->splice_entry;
    uint64_t moved = 0;
    while (moved < STEP_BUDGET) {
        bool progress = false;
        if (ct->splice_off < e->body_len && t->pipe_bytes < PIPE_BYTES) {
            uint64_t left = e->body_len - ct->splice_off;
            struct iovec v = {e->body + ct->splice_off,
                              (size_t)(left < PIPE_BYTES - t->pipe_bytes ? left : PIPE_BYTES - t->pipe_bytes)};
            ssize_t n = vmsplice(t->pipe_w, &v, 1, SPLICE_F_NONBLOCK);
            if (n > 0) {
                ct->splice_off += (uint64_t)n;
                t->pipe_bytes += (uint32_t)n;
                progress = true;
            } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
                return RLB_RELAY_CLIENT_GONE;
            }
        }
        bool blocked = false; /* only the socket can stop us: the pipe fills from our own pages */
        if (t->pipe_bytes && !drain_pipe(t, c, &moved, &progress, &blocked))
            return RLB_RELAY_CLIENT_GONE;
        if (ct->splice_off == e->body_len && t->pipe_bytes == 0) {
            rlb__proxy_splice_release(w, t);
            ct->splice_entry = NULL;
            rlb_cache_unref(w->cache, e);
            return RLB_RELAY_DONE;
        }
        if (!progress)
            break;
    }
    arm(w, c, RLB_TIMER_BODY_IDLE);
    poll_for(w, c, POLLOUT);
    return RLB_RELAY_MORE;
}

void rlb_proxy_splice_ready(struct rlb_worker *w, struct rlb_conn *c)
{
    if (c->kind == RLB_CONN_CLIENT && c->txn && c->txn->cache && c->txn->cache->splice_entry) {
        rlb__proxy_cache_splice_ready(w, c);
        return;
    }
    struct rlb_conn *u = c->kind == RLB_CONN_UPSTREAM ? c : rlb_conn_peer(w, c);
    if (u && u->kind == RLB_CONN_UPSTREAM)
        rlb__proxy_upstream_process(w, u);
}
