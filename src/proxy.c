/* The proxy state machine: events from the worker loop, closing, errors. */
#include <ringlb/buf.h>
#include <ringlb/conn.h>
#include <ringlb/http1.h>
#include <ringlb/http1_emit.h>
#include <ringlb/lb.h>
#include <ringlb/log.h>
#include <ringlb/proxy.h>
#include <ringlb/route.h>
#include <ringlb/timer.h>
#include <ringlb/tls.h>
#include <ringlb/upstream.h>

#include <arpa/inet.h>
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proxy_internal.h"

int rlb_proxy_init(struct rlb_worker *w)
{
    w->hdr_capacity = w->cfg->limits.max_headers;
    w->hdr_scratch = calloc(w->hdr_capacity, sizeof(*w->hdr_scratch));
    if (!w->hdr_scratch)
        return -ENOMEM;
    const char *via = w->cfg->via_name ? w->cfg->via_name : "ringlb";
    int n = snprintf(w->via_line, sizeof(w->via_line), "Via: 1.1 %s\r\n", via);
    w->via_len = (uint32_t)(n < (int)sizeof(w->via_line) ? n : (int)sizeof(w->via_line) - 1);
    return 0;
}

void rlb_proxy_destroy(struct rlb_worker *w)
{
    rlb__proxy_splice_destroy(w);
    free(w->hdr_scratch);
    w->hdr_scratch = NULL;
    while (w->txn_free) {
        struct rlb_txn *t = w->txn_free;
        w->txn_free = t->next_free;
        free(t);
    }
    while (w->cache_txn_free) {
        struct rlb_cache_txn *ct = w->cache_txn_free;
        w->cache_txn_free = ct->next_free;
        free(ct);
    }
}

struct rlb_str rlb__proxy_via_line(const struct rlb_worker *w)
{
    return (struct rlb_str){w->via_line, w->via_len};
}

size_t rlb__proxy_variant_cookie(const struct rlb_worker *w, const struct rlb_txn *t, char *out, size_t cap)
{
    if (!(t->flags & RLB_TF_SET_VARIANT))
        return 0;
    /* A month, so a returning shopper sees the same variant. */
    int n = snprintf(out, cap, "Set-Cookie: %s=%s; Path=/; Max-Age=2592000; HttpOnly; SameSite=Lax\r\n",
                     t->route->split_cookie, w->cfg->pools[t->route->splits[t->variant].pool].name);
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

struct rlb_txn *rlb__proxy_txn_get(struct rlb_worker *w)
{
    struct rlb_txn *t = w->txn_free;
    if (t)
        w->txn_free = t->next_free;
    else if (!(t = malloc(sizeof(*t))))
        return NULL;
    memset(t, 0, sizeof(*t));
    t->backend = -1;
    t->replay_bid = RLB_BUF_NONE;
    t->pipe_r = t->pipe_w = -1;
    return t;
}

void rlb__proxy_release_replay(struct rlb_worker *w, struct rlb_txn *t)
{
    /* Once the head is let go the request cannot be sent again: an interim (1xx) answer lets it go too,
     * and a later failure of that connection must not replay a head that is no longer there. */
    t->flags &= (uint16_t)~RLB_TF_REPLAYABLE;
    if (t->replay_bid != RLB_BUF_NONE) {
        rlb_buf_unref(&w->bufs, t->replay_bid);
        t->replay_bid = RLB_BUF_NONE;
    }
}

void rlb__proxy_txn_put(struct rlb_worker *w, struct rlb_conn *c)
{
    struct rlb_txn *t = c->txn;
    if (!t)
        return;
    rlb__proxy_release_replay(w, t);
    rlb__proxy_splice_release(w, t);
    rlb__proxy_cache_txn_end(w, t);
    c->txn = NULL;
    t->next_free = w->txn_free;
    w->txn_free = t;
}

void rlb__proxy_unlink_pair(struct rlb_worker *w, struct rlb_conn *c)
{
    struct rlb_conn *p = rlb_conn_peer(w, c);
    if (p)
        p->peer = RLB_SLOT_NONE;
    c->peer = RLB_SLOT_NONE;
    struct rlb_conn *u = c->kind == RLB_CONN_UPSTREAM ? c : p;
    if (u && u->kind == RLB_CONN_UPSTREAM)
        rlb_upstream_done(w, u);
}

void rlb__proxy_close_upstream(struct rlb_worker *w, struct rlb_conn *u, bool abort)
{
    if (u->state == RLB_US_IDLE)
        rlb_upstream_unpark(w, u);
    rlb__proxy_unlink_pair(w, u);
    rlb_conn_close(w, u, abort);
}

void rlb__proxy_close_client(struct rlb_worker *w, struct rlb_conn *c, bool abort)
{
    struct rlb_conn *u = rlb_conn_peer(w, c);
    if (u)
        rlb__proxy_close_upstream(w, u, true); /* mid-transaction: its state is unknown */
    rlb__proxy_txn_put(w, c);
    rlb_conn_close(w, c, abort);
}

/* Closes gracefully once everything queued is sent: FIN after the last
 * byte, then input is read and dropped for a while so that the client's
 * unread pipelined bytes cannot turn our close into a reset that would
 * destroy the response before the client reads it. */
void rlb__proxy_close_client_after_send(struct rlb_worker *w, struct rlb_conn *c)
{
    c->flags |= RLB_CF_CLOSE_AFTER_SEND;
    /* Over TLS the end is close_notify before the FIN: without it a client cannot tell a response delimited by
     * the close from a truncated one. */
    if (rlb_conn_unsent(c) || (c->flags & RLB_CF_SEND_INFLIGHT) || (c->tls && rlb_tls_close_notify(w, c))) {
        arm(w, c, RLB_TIMER_BODY_IDLE); /* a client that never reads is not waited for forever */
        return;
    }
    struct rlb_conn *u = rlb_conn_peer(w, c);
    if (u)
        rlb__proxy_close_upstream(w, u, true);
    /* A client that asked for the close and whose request was read whole
     * has promised to send nothing more (RFC 9112 9.6): nothing unread can
     * turn the close into a reset, so lingering would only cost a shutdown,
     * a receive and a timer (the heuristic nginx's lingering_close uses). */
    uint16_t tf = c->txn ? c->txn->flags : 0;
    bool promised = (tf & RLB_TF_CLIENT_SAID_CLOSE) && (tf & RLB_TF_REQ_DONE) && c->inq_bytes == 0;
    rlb__proxy_txn_put(w, c);
    if ((c->flags & RLB_CF_EOF) || promised) {
        rlb_conn_close(w, c, false);
        return;
    }
    shutdown(c->fd, SHUT_WR);
    c->state = RLB_CS_LINGER;
    rlb_conn_inq_clear(w, c);
    arm(w, c, RLB_TIMER_LINGER);
    rlb_conn_arm_recv(w, c);
}

/* Answers with an error generated here and closes. Only possible while no
 * byte of a backend's response was queued to the client. */
void rlb__proxy_send_error(struct rlb_worker *w, struct rlb_conn *c, int status)
{
    struct rlb_conn *u = rlb_conn_peer(w, c);
    if (u)
        rlb__proxy_close_upstream(w, u, true);
    if (status >= 500 && rlb__proxy_cache_stand_in(w, c))
        return;
    if (c->txn && (c->txn->flags & RLB_TF_RESP_STARTED)) {
        rlb__proxy_close_client(w, c, true);
        return;
    }
    struct rlb_outq *q = rlb_conn_outq(w, c);
    if (!q || !rlb_outq_room(q, 1, 256)) {
        rlb__proxy_close_client(w, c, true);
        return;
    }
    rlb_http1_emit_error(q, status);
    w->stats.responses[status / 100 < 6 ? status / 100 : 0]++;
    if (c->txn)
        c->txn->flags |= RLB_TF_RESP_STARTED;
    c->state = RLB_CS_WAIT;
    rlb_timer_cancel(&w->timers, w->conns, slot(w, c));
    rlb_conn_inq_clear(w, c);
    rlb_conn_flush(w, c);
    rlb__proxy_close_client_after_send(w, c);
}

/* Whether parsing <len> bytes could give anything but "incomplete": a head
 * terminator arrived, or a limit is crossed. The first attempt always parses
 * (nearly every head arrives whole); after an incomplete one, only the new
 * bytes are searched, so a head trickling in byte by byte (slowloris) costs
 * linear work, not a full re-parse per byte. A bare-LF terminator counts too:
 * the parser then rejects it at once instead of waiting for the timeout. */
static bool head_may_be_complete(struct rlb_worker *w, struct rlb_conn *c, const char *p, size_t len)
{
    const struct rlb_http_limits *lim = &w->cfg->limits;
    if (c->head_scanned == 0)
        return true;
    size_t from = c->head_scanned > 3 ? c->head_scanned - 3 : 0;
    if (from < len && (memmem(p + from, len - from, "\n\r\n", 3) || memmem(p + from, len - from, "\n\n", 2)))
        return true;
    c->head_scanned = (uint32_t)len;
    if (len > lim->max_head_size)
        return true;
    return len > lim->max_request_line && !memchr(p, '\n', lim->max_request_line);
}

/* Parses a head at the front of c's input, merging buffers when a head
 * arrived in several pieces. */
int rlb__proxy_parse_head(struct rlb_worker *w, struct rlb_conn *c, bool request, void *msg, int method)
{
    for (;;) {
        int32_t id = c->inq_head;
        struct rlb_seg *seg = &w->bufs.segs[id];
        const char *p = rlb_buf_ptr(&w->bufs, id) + seg->off;
        int rc;
        if (seg->next == RLB_BUF_NONE && !head_may_be_complete(w, c, p, seg->len))
            return RLB_HTTP_INCOMPLETE;
        if (request)
            rc = rlb_http1_parse_request(p, seg->len, &w->cfg->limits, msg);
        else
            rc = rlb_http1_parse_response(p, seg->len, &w->cfg->limits, method, msg);
        if (rc != RLB_HTTP_INCOMPLETE || seg->next == RLB_BUF_NONE) {
            c->head_scanned = rc == RLB_HTTP_INCOMPLETE ? (uint32_t)seg->len : 0;
            return rc;
        }
        if (rlb_conn_inq_linearize(w, c) < 0) {
            if (request) {
                struct rlb_http_request *req = msg;
                req->error_status = 431;
                req->error_reason = "head larger than a linear buffer";
            }
            return RLB_HTTP_ERROR;
        }
    }
}

int rlb__proxy_relay_body(struct rlb_worker *w, struct rlb_conn *from, struct rlb_outq *q, uint8_t kind, bool rechunk,
                          uint64_t *remaining, struct rlb_chunked_decoder *dec, bool *progress,
                          struct rlb_txn *store)
{
    int result = RLB_RELAY_MORE;
    while (from->inq_head != RLB_BUF_NONE && result == RLB_RELAY_MORE) {
        if (q->queued_bytes >= OUTQ_HIGH || !rlb_outq_room(q, 4, 24))
            return RLB_RELAY_MORE; /* the send completion brings us back */
        int32_t id = from->inq_head;
        struct rlb_seg *seg = &w->bufs.segs[id];
        const char *p = rlb_buf_ptr(&w->bufs, id) + seg->off;
        const char *data = p;
        size_t dlen = seg->len, consumed = seg->len;
        *progress = true;
        if (kind == RLB_BODY_LENGTH) {
            dlen = consumed = seg->len < *remaining ? seg->len : (size_t)*remaining;
            *remaining -= dlen;
            if (*remaining == 0)
                result = RLB_RELAY_DONE;
        } else if (kind == RLB_BODY_CHUNKED) {
            int rc = rlb_chunked_decode(dec, p, seg->len, &consumed, &data, &dlen);
            if (rc == RLB_CHUNKED_ERROR)
                return RLB_RELAY_BAD;
            if (rc != RLB_CHUNKED_DATA)
                dlen = 0;
            if (rc == RLB_CHUNKED_DONE)
                result = RLB_RELAY_DONE;
        }
        if (dlen) {
            if (store)
                rlb__proxy_cache_body(w, store, data, dlen);
            if (rechunk)
                rlb_http1_emit_chunk_header(q, dlen);
            rlb_outq_push_buf(q, &w->bufs, id, data, dlen);
            if (rechunk)
                rlb_outq_push_static(q, "\r\n", 2);
        }
        rlb_conn_inq_consume(w, from, (uint32_t)consumed);
    }
    /* A close-delimited body ends with a clean close, never with a reset. */
    if (kind == RLB_BODY_UNTIL_CLOSE && (from->flags & RLB_CF_EOF) && from->inq_head == RLB_BUF_NONE &&
        !(from->flags & RLB_CF_ABORT))
        result = RLB_RELAY_DONE;
    if (result == RLB_RELAY_DONE && rechunk)
        rlb_outq_push_static(q, "0\r\n\r\n", 5);
    return result;
}

void rlb__proxy_resume_recv(struct rlb_worker *w, struct rlb_conn *c)
{
    if (c->flags & RLB_CF_SPLICE)
        rlb_conn_pause_recv(w, c); /* the body comes by splice, not into buffers */
    else if (c->inq_bytes >= INQ_HIGH)
        rlb_conn_pause_recv(w, c);
    else if (c->inq_bytes <= INQ_HIGH / 2)
        rlb_conn_arm_recv(w, c);
}

void rlb_proxy_input(struct rlb_worker *w, struct rlb_conn *c)
{
    if (c->kind == RLB_CONN_CLIENT)
        rlb__proxy_client_process(w, c);
    else
        rlb__proxy_upstream_process(w, c);
}

void rlb_proxy_accepted(struct rlb_worker *w, struct rlb_conn *c)
{
    c->state = RLB_CS_HEAD; /* TCP_NODELAY comes from the listening socket */
    /* The head timeout starts once TLS is up: the handshake has its own. */
    arm(w, c, c->tls ? rlb_timer_handshake_list(w->cfg, c->listener) : RLB_TIMER_CLIENT_HEADER);
    rlb_conn_arm_recv(w, c);
}

void rlb_proxy_tls_ready(struct rlb_worker *w, struct rlb_conn *c)
{
    if (rlb_conn_is_closing(c))
        return;
    if (c->kind == RLB_CONN_CLIENT) {
        arm(w, c, RLB_TIMER_CLIENT_HEADER);
        rlb_conn_arm_recv(w, c);
        if (c->inq_bytes)
            rlb__proxy_client_process(w, c);
    } else {
        rlb_conn_arm_recv(w, c);
        rlb_conn_flush(w, c); /* the request waited for the handshake */
        if (c->inq_bytes)
            rlb__proxy_upstream_process(w, c);
    }
}

void rlb_proxy_tls_failed(struct rlb_worker *w, struct rlb_conn *c)
{
    if (rlb_conn_is_closing(c))
        return;
    if (c->kind == RLB_CONN_CLIENT) {
        rlb__proxy_close_client(w, c, c->tls && c->tls->phase != RLB_TLS_FAILED);
        return;
    }
    struct rlb_conn *client = rlb_conn_peer(w, c);
    if (client && client->txn && !(c->tls && c->tls->phase == RLB_TLS_DATA)) {
        /* Nothing reached the backend: the request may go elsewhere, like after a refused connect. */
        rlb_proxy_connected(w, c, -EPROTO);
    } else if (client && client->txn) {
        rlb__proxy_upstream_failed(w, c, 502);
    } else {
        rlb__proxy_close_upstream(w, c, true);
    }
}

void rlb_proxy_recv_end(struct rlb_worker *w, struct rlb_conn *c, int res)
{
    if (c->tls && c->tls->phase != RLB_TLS_DATA)
        rlb_tls_abandoned(w, c);
    c->flags |= RLB_CF_EOF;
    if (res < 0)
        c->flags |= RLB_CF_ABORT;
    if (c->kind == RLB_CONN_CLIENT) {
        if (res < 0 && c->state != RLB_CS_LINGER) {
            rlb__proxy_close_client(w, c, true);
            return;
        }
        rlb__proxy_client_process(w, c);
        if (c->state == RLB_CS_WAIT && c->txn)
            c->txn->flags |= RLB_TF_CLIENT_CLOSE; /* half-closed: answer, then close */
    } else {
        rlb__proxy_upstream_process(w, c);
    }
}

static void upstream_sent_all(struct rlb_worker *w, struct rlb_conn *u)
{
    if (u->flags & RLB_CF_CLOSE_AFTER_SEND) {
        struct rlb_conn *c = rlb_conn_peer(w, u);
        rlb__proxy_close_upstream(w, u, false);
        if (c)
            rlb__proxy_close_client_after_send(w, c);
    }
}

void rlb_proxy_sent(struct rlb_worker *w, struct rlb_conn *c, int res)
{
    if (res < 0) {
        if (c->kind == RLB_CONN_CLIENT) {
            rlb__proxy_close_client(w, c, true);
        } else {
            struct rlb_conn *client = rlb_conn_peer(w, c);
            if (client && client->txn)
                rlb__proxy_upstream_failed(w, c, 502);
            else if (client)
                rlb__proxy_close_client(w, client, true);
            else
                rlb__proxy_close_upstream(w, c, true);
        }
        return;
    }
    if (c->outq) { /* NULL after a TLS send of BoringSSL's own records */
        if (c->fd < 0) /* the "send" of a connection of our own was a no-op: all of it counts as sent */
            res = (int)rlb_outq_inflight_bytes(c->outq);
        rlb_outq_sent(c->outq, &w->bufs, (size_t)res);
        if (rlb_outq_pending(c->outq)) {
            rlb_conn_flush(w, c);
        } else {
            rlb_outq_put(&w->outqs, c->outq);
            c->outq = NULL;
        }
    }
    struct rlb_conn *p = rlb_conn_peer(w, c);
    if (c->kind == RLB_CONN_CLIENT) {
        if (!c->outq && (c->flags & RLB_CF_CLOSE_AFTER_SEND) && c->state != RLB_CS_LINGER) {
            rlb__proxy_close_client_after_send(w, c);
            return;
        }
        if (p)
            rlb__proxy_upstream_process(w, p); /* room for more response bytes */
        else if (c->state == RLB_CS_HEAD && (c->inq_bytes || (c->flags & RLB_CF_EOF)))
            rlb__proxy_client_process(w, c); /* held back by a full send queue: pipelined requests, or the close */
    } else {
        if (!c->outq)
            upstream_sent_all(w, c);
        if (p && p->state != RLB_CS_CLOSING)
            rlb__proxy_client_process(w, p); /* room for more request bytes */
    }
}

void rlb_proxy_connected(struct rlb_worker *w, struct rlb_conn *u, int res)
{
    struct rlb_conn *c = rlb_conn_peer(w, u);
    if (res == 0) {
        u->state = RLB_US_ACTIVE;
        if (!c) {
            rlb__proxy_close_upstream(w, u, true);
            return;
        }
        if (w->cfg->pools[u->pool].tls.enabled && rlb_tls_connect(w, u) != 0)
            res = -ENOMEM;
        else {
            rlb__proxy_start_upstream_io(w, u);
            return;
        }
    }
    if (u->state == RLB_US_ACTIVE)
        u->state = RLB_US_CONNECTING; /* a TLS handshake that failed is a connect that failed */
    const struct rlb_backend_cfg *be = &w->cfg->pools[u->pool].backends[u->backend];
    w->stats.upstream_connect_failures++;
    rlb_upstream_report(w, u->pool, u->backend, RLB_UPSTREAM_FAILED);
    /* A cancelled connect is one our connect timer gave up on. */
    if (res != -EPROTO) /* a failed TLS handshake was logged with its reason */
        rlb_log_warn("connect to %s: %s", be->addr.text, res == -ECANCELED ? "timed out" : strerror(-res));
    if (!c) {
        rlb__proxy_close_upstream(w, u, true);
        return;
    }
    /* Nothing was sent: the queued request moves to another backend as it is. */
    struct rlb_outq *q = u->outq;
    u->outq = NULL;
    rlb__proxy_close_upstream(w, u, true);
    struct rlb_txn *t = c->txn;
    /* Backends all refusing connections is 503; one we reached but could not trust is a bad gateway (502). */
    if (res != -EPROTO)
        t->connect_failures++;
    struct rlb_conn *nu = rlb__proxy_acquire_upstream(w, c, t);
    if (!nu) {
        if (q) {
            rlb_outq_discard(q, &w->bufs);
            rlb_outq_put(&w->outqs, q);
        }
        rlb__proxy_send_error(w, c, t->connect_failures == t->attempts ? 503 : 502);
        return;
    }
    w->stats.upstream_retries++;
    RLB_BUG_ON(nu->outq != NULL);
    nu->outq = q;
    rlb__proxy_start_upstream_io(w, nu);
}

void rlb_proxy_timeout(struct rlb_worker *w, struct rlb_conn *c, enum rlb_timer_kind kind)
{
    w->stats.timeouts++;
    switch (kind) {
    case RLB_TIMER_CLIENT_HEADER:
        if (c->inq_bytes)
            rlb__proxy_send_error(w, c, 408);
        else
            rlb__proxy_close_client(w, c, false);
        break;
    case RLB_TIMER_CLIENT_KEEPALIVE:
    case RLB_TIMER_LINGER:
        rlb__proxy_close_client(w, c, false);
        break;
    case RLB_TIMER_BODY_IDLE:
        if (c->kind == RLB_CONN_CLIENT) {
            if (c->state == RLB_CS_REQ_BODY && c->txn && !(c->txn->flags & RLB_TF_RESP_STARTED))
                rlb__proxy_send_error(w, c, 408);
            else
                rlb__proxy_close_client(w, c, true);
        } else {
            struct rlb_conn *client = rlb_conn_peer(w, c);
            if (client)
                rlb__proxy_close_client(w, client, true);
            else
                rlb__proxy_close_upstream(w, c, true);
        }
        break;
    case RLB_TIMER_UPSTREAM_CONNECT:
        /* The connect completes with -ECANCELED and is handled like a
         * refused one: the request moves to the next backend. */
        rlb_conn_cancel_connect(w, c);
        break;
    case RLB_TIMER_UPSTREAM_RESPONSE:
        rlb__proxy_upstream_failed(w, c, 504);
        break;
    case RLB_TIMER_POOL_IDLE:
        rlb__proxy_close_upstream(w, c, false);
        break;
    case RLB_TIMER_CACHE_WAIT:
        rlb__proxy_cache_wait_timeout(w, c);
        break;
    case RLB_TIMER_TLS_HANDSHAKE:
        rlb_tls_abandoned(w, c);
        rlb__proxy_close_client(w, c, true);
        break;
    default:
        break;
    }
}

void rlb_proxy_drain(struct rlb_worker *w)
{
    rlb_upstream_close_idle(w);
    for (uint32_t i = 0; i < w->slot_hwm; i++) {
        struct rlb_conn *c = &w->conns[i];
        if (c->kind == RLB_CONN_CLIENT && c->state == RLB_CS_HEAD && c->inq_bytes == 0 && !c->txn)
            rlb__proxy_close_client(w, c, false);
    }
}

void rlb_proxy_abort_all(struct rlb_worker *w)
{
    for (uint32_t i = 0; i < w->slot_hwm; i++) {
        struct rlb_conn *c = &w->conns[i];
        if (c->kind == RLB_CONN_CLIENT)
            rlb__proxy_close_client(w, c, true);
        else if (c->kind == RLB_CONN_UPSTREAM)
            rlb__proxy_close_upstream(w, c, true);
    }
}
