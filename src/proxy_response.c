/* Upstream side of the proxy: response heads and bodies, keep-alive, tunnels. */
#include <ringlb/buf.h>
#include <ringlb/conn.h>
#include <ringlb/http1.h>
#include <ringlb/http1_emit.h>
#include <ringlb/lb.h>
#include <ringlb/log.h>
#include <ringlb/proxy.h>
#include <ringlb/route.h>
#include <ringlb/timer.h>
#include <ringlb/upstream.h>

#include <arpa/inet.h>
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proxy_internal.h"

void rlb__proxy_relay_tunnel(struct rlb_worker *w, struct rlb_conn *from)
{
    struct rlb_conn *to = rlb_conn_peer(w, from);
    if (!to) {
        rlb_conn_inq_clear(w, from);
        return;
    }
    struct rlb_outq *q = rlb_conn_outq(w, to);
    while (q && from->inq_head != RLB_BUF_NONE && q->queued_bytes < OUTQ_HIGH && rlb_outq_room(q, 1, 0)) {
        int32_t id = from->inq_head;
        struct rlb_seg *seg = &w->bufs.segs[id];
        rlb_outq_push_buf(q, &w->bufs, id, rlb_buf_ptr(&w->bufs, id) + seg->off, seg->len);
        rlb_conn_inq_consume(w, from, seg->len);
    }
    rlb_conn_flush(w, to);
    arm(w, from, RLB_TIMER_BODY_IDLE);
    if ((from->flags & RLB_CF_EOF) && from->inq_head == RLB_BUF_NONE) {
        /* One side finished: deliver what the other still has queued, then close both. */
        struct rlb_conn *c = from->kind == RLB_CONN_CLIENT ? from : to;
        struct rlb_conn *u = from->kind == RLB_CONN_CLIENT ? to : from;
        if (rlb_conn_unsent(u) == 0 && !(u->flags & RLB_CF_SEND_INFLIGHT)) {
            rlb__proxy_close_upstream(w, u, false);
        } else {
            u->flags |= RLB_CF_CLOSE_AFTER_SEND;
            return;
        }
        rlb__proxy_close_client_after_send(w, c);
    }
}

static enum rlb_resp_framing client_framing(struct rlb_txn *t, const struct rlb_http_response *resp)
{
    switch (resp->body) {
    case RLB_BODY_NONE:
        return RLB_FRAME_NONE;
    case RLB_BODY_LENGTH:
        return RLB_FRAME_LENGTH;
    default:
        /* Chunked, or delimited by the backend's close: HTTP/1.1 clients get
         * chunks so their connection survives; HTTP/1.0 ones get a close. */
        if (t->flags & RLB_TF_CLIENT_HTTP10) {
            t->flags |= RLB_TF_CLIENT_CLOSE;
            return RLB_FRAME_CLOSE;
        }
        t->flags |= RLB_TF_RECHUNK;
        return RLB_FRAME_CHUNKED;
    }
}

static void start_tunnel(struct rlb_worker *w, struct rlb_conn *c, struct rlb_conn *u)
{
    c->state = RLB_CS_TUNNEL;
    u->state = RLB_US_TUNNEL;
    rlb__proxy_txn_put(w, c);
    rlb_timer_cancel(&w->timers, w->conns, slot(w, u));
    arm(w, c, RLB_TIMER_BODY_IDLE);
    rlb__proxy_relay_tunnel(w, u);
    if (c->state == RLB_CS_TUNNEL)
        rlb__proxy_relay_tunnel(w, c);
}

/* Returns true when a head was handled and parsing should go on. */
static bool read_response_head(struct rlb_worker *w, struct rlb_conn *u, struct rlb_conn *c)
{
    struct rlb_txn *t = c->txn;
    struct rlb_http_response resp;
    resp.headers = w->hdr_scratch;
    resp.max_headers_capacity = w->hdr_capacity;
    int rc = rlb__proxy_parse_head(w, u, false, &resp, t->method);
    if (rc == RLB_HTTP_INCOMPLETE)
        return false;
    if (rc == RLB_HTTP_ERROR) {
        rlb_log_warn("invalid response from %s: %s", w->cfg->pools[u->pool].backends[u->backend].addr.text,
                     resp.error_reason ? resp.error_reason : "?");
        rlb__proxy_send_error(w, c, 502);
        return false;
    }
    if (resp.status >= 500) {
        rlb_upstream_report(w, u->pool, u->backend, RLB_UPSTREAM_5XX);
        if ((resp.status == 502 || resp.status == 503 || resp.status == 504) && (t->flags & RLB_TF_REPLAYABLE) &&
            w->cfg->pools[t->route_pool].retry.on_5xx && rlb__proxy_may_retry(w, t)) {
            int status = resp.status;
            if (!rlb__proxy_replay_request(w, c, u, true))
                rlb__proxy_send_error(w, c, status); /* nobody left: the same answer, from us */
            return false;
        }
    } else if (resp.status >= 200) {
        rlb_upstream_report(w, u->pool, u->backend, RLB_UPSTREAM_OK);
    }
    rlb__proxy_release_replay(w, t);
    int32_t bid = u->inq_head;
    const char *head = rlb_buf_ptr(&w->bufs, bid) + w->bufs.segs[bid].off;
    struct rlb_outq *q = rlb_conn_outq(w, c);
    if (!q) {
        rlb__proxy_send_error(w, c, 502);
        return false;
    }
    struct rlb_resp_emit opt = {.route = t->route, .via_line = rlb__proxy_via_line(w)};

    if (resp.status < 200) {
        if (resp.status == 101) {
            if (!(t->flags & RLB_TF_UPGRADE) || !(resp.flags & RLB_MSG_UPGRADE)) {
                rlb__proxy_send_error(w, c, 502);
                return false;
            }
            opt.upgrade = true;
        } else {
            opt.interim = true;
        }
        /* 1xx cannot go to an HTTP/1.0 client (RFC 9110 15.2). */
        if (opt.upgrade || !(t->flags & RLB_TF_CLIENT_HTTP10)) {
            if (rlb_http1_emit_response(q, &w->bufs, bid, head, &resp, &opt) < 0) {
                rlb__proxy_send_error(w, c, 502);
                return false;
            }
            w->stats.responses[1]++;
        }
        rlb_conn_inq_consume(w, u, resp.head_len);
        rlb_conn_flush(w, c);
        if (opt.upgrade) {
            t->flags |= RLB_TF_RESP_STARTED;
            start_tunnel(w, c, u);
            return false;
        }
        return true;
    }

    /* Lines of ours after the backend's fields: the cache's status, the A/B cookie. */
    char extra[512];
    int cached = rlb__proxy_cache_response(w, c, u, &resp, extra, 200);
    if (cached < 0)
        return false; /* answered from the cache */
    size_t extra_len = (size_t)cached;
    opt.framing = (uint8_t)client_framing(t, &resp);
    if ((resp.flags & RLB_MSG_CONN_CLOSE) || resp.minor_version == 0 || resp.body == RLB_BODY_UNTIL_CLOSE)
        t->flags |= RLB_TF_UPSTREAM_CLOSE;
    if (w->draining)
        t->flags |= RLB_TF_CLIENT_CLOSE;
    opt.client_close = (t->flags & RLB_TF_CLIENT_CLOSE) != 0;
    opt.client_keepalive10 = !opt.client_close && (t->flags & RLB_TF_CLIENT_HTTP10);
    extra_len += rlb__proxy_variant_cookie(w, t, extra + extra_len, sizeof(extra) - extra_len);
    opt.extra_line = (struct rlb_str){extra, extra_len};
    if (rlb_http1_emit_response(q, &w->bufs, bid, head, &resp, &opt) < 0) {
        rlb__proxy_send_error(w, c, 502);
        return false;
    }
    w->stats.responses[resp.status / 100 < 6 ? resp.status / 100 : 0]++;
    t->flags |= RLB_TF_RESP_STARTED;
    t->status = resp.status;
    t->resp_body = resp.body;
    t->resp_remaining = resp.content_length;
    rlb_chunked_init(&t->resp_chunked);
    t->resp_state = resp.body == RLB_BODY_NONE ? RLB_RS_DONE : RLB_RS_BODY;
    rlb_conn_inq_consume(w, u, resp.head_len);
    /* Remembered for the next receives on this backend (see rlb_conn_arm_recv). */
    struct rlb_backend_state *bs = &w->pools[u->pool].backends[u->backend];
    uint32_t splice_min = w->cfg->buffers.splice_min;
    if (splice_min && resp.body == RLB_BODY_LENGTH && resp.content_length >= splice_min)
        bs->large_bodies = 64;
    else if (bs->large_bodies)
        bs->large_bodies--;
    if (rlb__proxy_splice_wanted(w, t, u)) {
        /* Starts once what was received is relayed; the sooner the receive
         * stops, the more of the body the splice carries. */
        u->flags |= RLB_CF_SPLICE;
        rlb_conn_pause_recv(w, u);
    }
    arm(w, u, RLB_TIMER_BODY_IDLE);
    return true;
}

/* Returns true when the body is complete. */
static bool relay_response_body(struct rlb_worker *w, struct rlb_conn *u, struct rlb_conn *c)
{
    struct rlb_txn *t = c->txn;
    struct rlb_outq *q = rlb_conn_outq(w, c);
    if (!q) {
        rlb__proxy_close_client(w, c, true);
        return false;
    }
    if ((u->flags & RLB_CF_SPLICE) && u->inq_head == RLB_BUF_NONE) {
        if (!rlb__proxy_splice_ready_to_start(u, c)) {
            /* The cancelled receive's completion, or the client's send
             * completion, brings us back. */
            rlb_conn_flush(w, c);
            return false;
        }
        int rc = rlb__proxy_splice_step(w, u, c);
        if (rc == RLB_RELAY_BAD) {
            rlb_upstream_report(w, u->pool, u->backend, RLB_UPSTREAM_FAILED);
            rlb__proxy_close_client(w, c, true);
            return false;
        }
        if (rc == RLB_RELAY_CLIENT_GONE) {
            rlb__proxy_close_client(w, c, true);
            return false;
        }
        return rc == RLB_RELAY_DONE;
    }
    bool progress = false;
    int rc = rlb__proxy_relay_body(w, u, q, t->resp_body, (t->flags & RLB_TF_RECHUNK) != 0, &t->resp_remaining,
                                   &t->resp_chunked, &progress, t->cache ? t : NULL);
    if (rc == RLB_RELAY_DONE)
        u->flags &= (uint16_t)~RLB_CF_SPLICE; /* the whole body had come with the buffers */
    if (rc == RLB_RELAY_BAD) {
        rlb_log_warn("invalid chunked response from %s: %s", w->cfg->pools[u->pool].backends[u->backend].addr.text,
                     t->resp_chunked.error_reason);
        /* Part of the response is already with the client: only a reset
         * tells it that the message is incomplete. */
        rlb__proxy_close_client(w, c, true);
        return false;
    }
    if (progress) {
        arm(w, u, RLB_TIMER_BODY_IDLE);
        rlb_conn_flush(w, c);
    }
    return rc == RLB_RELAY_DONE;
}

/* Everything of the response has been queued to the client. */
void rlb__proxy_response_done(struct rlb_worker *w, struct rlb_conn *c, struct rlb_conn *u)
{
    struct rlb_txn *t = c->txn;
    rlb__proxy_cache_complete(w, t);
    if (!(t->flags & RLB_TF_REQ_DONE)) {
        /* The backend answered before reading the whole body (an early 413,
         * say): neither connection is at a message boundary any more. */
        t->flags |= RLB_TF_CLIENT_CLOSE | RLB_TF_UPSTREAM_CLOSE;
    }
    rlb__proxy_unlink_pair(w, u);
    bool parked = !(t->flags & RLB_TF_UPSTREAM_CLOSE) && rlb_conn_unsent(u) == 0 &&
                  !(u->flags & RLB_CF_SEND_INFLIGHT) && rlb_upstream_park(w, u);
    if (!parked)
        rlb_conn_close(w, u, false);
    rlb_conn_flush(w, c);
    if ((t->flags & RLB_TF_CLIENT_CLOSE) || w->draining) {
        c->state = RLB_CS_WAIT;
        rlb__proxy_close_client_after_send(w, c);
        return;
    }
    rlb__proxy_txn_put(w, c);
    c->state = RLB_CS_HEAD;
    arm(w, c, c->inq_bytes ? RLB_TIMER_CLIENT_HEADER : RLB_TIMER_CLIENT_KEEPALIVE);
    rlb__proxy_client_process(w, c); /* pipelined requests */
}

/* The upstream connection failed before a response head: closed, reset,
 * timed out. A pooled connection closed by the backend while idle is the
 * keep-alive race, not a sick backend: resent once to the same backend.
 * Anything else counts against the backend, and an idempotent request
 * goes to another one if the retry budget allows. */
void rlb__proxy_upstream_failed(struct rlb_worker *w, struct rlb_conn *u, int status)
{
    struct rlb_conn *c = rlb_conn_peer(w, u);
    if (!c) {
        rlb__proxy_close_upstream(w, u, true);
        return;
    }
    struct rlb_txn *t = c->txn;
    bool nothing_back = t && !(t->flags & RLB_TF_RESP_STARTED) && t->resp_state == RLB_RS_HEAD && u->inq_bytes == 0;
    bool race = (u->flags & RLB_CF_REUSED) && status == 502 && t && !(t->flags & RLB_TF_RECONNECTED);
    if (!race)
        rlb_upstream_report(w, u->pool, u->backend, RLB_UPSTREAM_FAILED);
    if (nothing_back && (t->flags & RLB_TF_REPLAYABLE)) {
        if (race && rlb__proxy_replay_request(w, c, u, false))
            return;
        if (!race && rlb__proxy_may_retry(w, t) && rlb__proxy_replay_request(w, c, u, true))
            return;
    }
    rlb__proxy_send_error(w, c, status);
}

void rlb__proxy_upstream_process(struct rlb_worker *w, struct rlb_conn *u)
{
    struct rlb_conn *c = rlb_conn_peer(w, u);
    if (u->state == RLB_US_IDLE || !c) {
        /* Bytes or a close on a connection nobody waits for: not reusable. */
        if (u->inq_bytes || (u->flags & RLB_CF_EOF))
            rlb__proxy_close_upstream(w, u, true);
        return;
    }
    if (u->state == RLB_US_TUNNEL) {
        rlb__proxy_relay_tunnel(w, u);
        goto out;
    }
    struct rlb_txn *t = c->txn;
    for (;;) {
        if (t->resp_state == RLB_RS_HEAD) {
            if (u->inq_head == RLB_BUF_NONE || !read_response_head(w, u, c))
                break;
            if (c->state == RLB_CS_CLOSING || u->state != RLB_US_ACTIVE || c->txn != t)
                goto out;
        } else if (t->resp_state == RLB_RS_BODY) {
            if (!relay_response_body(w, u, c))
                break;
            t->resp_state = RLB_RS_DONE;
        } else {
            if (u->inq_bytes)
                t->flags |= RLB_TF_UPSTREAM_CLOSE; /* bytes after the response */
            rlb__proxy_response_done(w, c, u);
            return;
        }
    }
    if (u->state != RLB_US_ACTIVE || c->state == RLB_CS_CLOSING || c->txn != t)
        goto out;
    if ((u->flags & RLB_CF_EOF) && u->inq_head == RLB_BUF_NONE) {
        /* The backend closed before the response was complete. */
        if (t->resp_state == RLB_RS_HEAD) {
            rlb__proxy_upstream_failed(w, u, 502);
        } else {
            rlb_upstream_report(w, u->pool, u->backend, RLB_UPSTREAM_FAILED);
            rlb__proxy_close_client(w, c, true);
        }
        return;
    }
out:
    if (u->state == RLB_US_ACTIVE || u->state == RLB_US_TUNNEL)
        rlb__proxy_resume_recv(w, u);
}
