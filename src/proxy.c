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

/* Backpressure: a connection stops receiving when this much of its input
 * waits to be relayed, and relaying stops while the other side's send queue
 * holds this much. Together they bound a connection's buffer use whatever
 * the speed difference between client and backend. */
#define INQ_HIGH (128u * 1024)
#define OUTQ_HIGH (256u * 1024)

static const struct rlb_str proto_http = {"http", 4};

int rlb_proxy_init(struct rlb_worker *w)
{
    w->hdr_capacity = w->cfg->limits.max_headers;
    w->hdr_scratch = calloc(w->hdr_capacity, sizeof(*w->hdr_scratch));
    if (!w->hdr_scratch)
        return -ENOMEM;
    int n = snprintf(w->via_line, sizeof(w->via_line), "Via: 1.1 %s\r\n", w->cfg->via_name ? w->cfg->via_name : "ringlb");
    w->via_len = (uint32_t)(n < (int)sizeof(w->via_line) ? n : (int)sizeof(w->via_line) - 1);
    return 0;
}

void rlb_proxy_destroy(struct rlb_worker *w)
{
    free(w->hdr_scratch);
    w->hdr_scratch = NULL;
    while (w->txn_free) {
        struct rlb_txn *t = w->txn_free;
        w->txn_free = t->next_free;
        free(t);
    }
}

static struct rlb_str via_line(const struct rlb_worker *w)
{
    return (struct rlb_str){w->via_line, w->via_len};
}

static struct rlb_txn *txn_get(struct rlb_worker *w)
{
    struct rlb_txn *t = w->txn_free;
    if (t)
        w->txn_free = t->next_free;
    else if (!(t = malloc(sizeof(*t))))
        return NULL;
    memset(t, 0, sizeof(*t));
    t->backend = -1;
    t->replay_bid = RLB_BUF_NONE;
    return t;
}

static void release_replay(struct rlb_worker *w, struct rlb_txn *t)
{
    if (t->replay_bid != RLB_BUF_NONE) {
        rlb_buf_unref(&w->bufs, t->replay_bid);
        t->replay_bid = RLB_BUF_NONE;
    }
}

static void txn_put(struct rlb_worker *w, struct rlb_conn *c)
{
    struct rlb_txn *t = c->txn;
    if (!t)
        return;
    release_replay(w, t);
    c->txn = NULL;
    t->next_free = w->txn_free;
    w->txn_free = t;
}

static uint32_t slot(const struct rlb_worker *w, const struct rlb_conn *c)
{
    return rlb_conn_slot(w, c);
}

static void arm(struct rlb_worker *w, struct rlb_conn *c, enum rlb_timer_kind kind)
{
    rlb_timer_arm(&w->timers, w->conns, slot(w, c), kind);
}

static void unlink_pair(struct rlb_worker *w, struct rlb_conn *c)
{
    struct rlb_conn *p = rlb_conn_peer(w, c);
    if (p)
        p->peer = RLB_SLOT_NONE;
    c->peer = RLB_SLOT_NONE;
}

static void close_upstream(struct rlb_worker *w, struct rlb_conn *u, bool abort)
{
    if (u->state == RLB_US_IDLE)
        rlb_upstream_unpark(w, u);
    unlink_pair(w, u);
    rlb_conn_close(w, u, abort);
}

static void close_client(struct rlb_worker *w, struct rlb_conn *c, bool abort)
{
    struct rlb_conn *u = rlb_conn_peer(w, c);
    if (u)
        close_upstream(w, u, true); /* mid-transaction: its state is unknown */
    txn_put(w, c);
    rlb_conn_close(w, c, abort);
}

/* Closes gracefully once everything queued is sent: FIN after the last
 * byte, then input is read and dropped for a while so that the client's
 * unread pipelined bytes cannot turn our close into a reset that would
 * destroy the response before the client reads it. */
static void close_client_after_send(struct rlb_worker *w, struct rlb_conn *c)
{
    c->flags |= RLB_CF_CLOSE_AFTER_SEND;
    if (rlb_conn_unsent(c) || (c->flags & RLB_CF_SEND_INFLIGHT)) {
        arm(w, c, RLB_TIMER_BODY_IDLE); /* a client that never reads is not waited for forever */
        return;
    }
    struct rlb_conn *u = rlb_conn_peer(w, c);
    if (u)
        close_upstream(w, u, true);
    txn_put(w, c);
    if (c->flags & RLB_CF_EOF) {
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
static void send_error(struct rlb_worker *w, struct rlb_conn *c, int status)
{
    struct rlb_conn *u = rlb_conn_peer(w, c);
    if (u)
        close_upstream(w, u, true);
    if (c->txn && (c->txn->flags & RLB_TF_RESP_STARTED)) {
        close_client(w, c, true);
        return;
    }
    struct rlb_outq *q = rlb_conn_outq(w, c);
    if (!q || !rlb_outq_room(q, 1, 256)) {
        close_client(w, c, true);
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
    close_client_after_send(w, c);
}

static void fill_client_ip(struct rlb_conn *c)
{
    if (c->ip_len)
        return;
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    const char *r = NULL;
    if (getpeername(c->fd, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET) {
            r = inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, c->ip, sizeof(c->ip));
        } else if (ss.ss_family == AF_INET6) {
            struct in6_addr *a = &((struct sockaddr_in6 *)&ss)->sin6_addr;
            /* A v4 client on a dual-stack listener is a v4 client. */
            if (IN6_IS_ADDR_V4MAPPED(a))
                r = inet_ntop(AF_INET, &a->s6_addr[12], c->ip, sizeof(c->ip));
            else
                r = inet_ntop(AF_INET6, a, c->ip, sizeof(c->ip));
        }
    }
    if (!r)
        strcpy(c->ip, "unknown");
    c->ip_len = (uint8_t)strlen(c->ip);
}

/* Picks a backend this request has not tried and gets a connection to it:
 * an idle pooled one when there is one, else a new connect. */
static struct rlb_conn *acquire_upstream(struct rlb_worker *w, struct rlb_conn *c, struct rlb_txn *t)
{
    struct rlb_pool_state *ps = &w->pools[t->pool];
    uint32_t n = ps->lb.num_backends;
    uint32_t max_tries = n < RLB_TXN_MAX_TRIES ? n : RLB_TXN_MAX_TRIES;
    while (t->tries < max_tries) {
        uint64_t exclude[RLB_LB_MAX_EXCLUDE_WORDS] = {0};
        for (uint32_t i = 0; i < t->tries; i++)
            exclude[t->tried[i] / 64] |= 1ull << (t->tried[i] % 64);
        int b = rlb_lb_pick(&ps->lb, exclude);
        if (b < 0)
            return NULL;
        t->tried[t->tries++] = b;
        t->backend = b;
        struct rlb_conn *u = rlb_upstream_take_idle(w, t->pool, (uint32_t)b);
        if (u) {
            w->stats.upstream_reused++;
        } else {
            u = rlb_upstream_connect(w, t->pool, (uint32_t)b);
            if (!u) {
                rlb_log_warn("socket for backend %s: %s", w->cfg->pools[t->pool].backends[b].addr.text,
                             strerror(errno));
                continue;
            }
        }
        u->peer = slot(w, c);
        c->peer = slot(w, u);
        return u;
    }
    return NULL;
}

static int emit_request(struct rlb_worker *w, struct rlb_conn *c, struct rlb_conn *u, int32_t bid, const char *head,
                        const struct rlb_http_request *req)
{
    struct rlb_txn *t = c->txn;
    const struct rlb_pool_cfg *pool = &w->cfg->pools[t->pool];
    const char *backend_text = pool->backends[t->backend].addr.text;
    struct rlb_req_emit opt = {
        .route = t->route,
        .client_ip = {c->ip, c->ip_len},
        .via_line = via_line(w),
        .proto = proto_http,
        .default_host = {backend_text, strlen(backend_text)},
        .upstream_keepalive = pool->keepalive_max_idle > 0 && !(t->flags & RLB_TF_UPGRADE),
    };
    struct rlb_outq *q = rlb_conn_outq(w, u);
    if (!q)
        return -1;
    return rlb_http1_emit_request(q, &w->bufs, bid, head, req, &opt);
}

static void start_upstream_io(struct rlb_worker *w, struct rlb_conn *u)
{
    if (u->state == RLB_US_CONNECTING)
        return; /* the connect completion sends and arms */
    arm(w, u, RLB_TIMER_UPSTREAM_RESPONSE);
    rlb_conn_arm_recv(w, u);
    rlb_conn_flush(w, u);
}

static bool idempotent(uint8_t method)
{
    switch (method) {
    case RLB_METHOD_GET:
    case RLB_METHOD_HEAD:
    case RLB_METHOD_OPTIONS:
    case RLB_METHOD_TRACE:
    case RLB_METHOD_PUT:
    case RLB_METHOD_DELETE:
        return true;
    default:
        return false;
    }
}

/* A whole, valid request head is at the front of c's input. */
static bool start_request(struct rlb_worker *w, struct rlb_conn *c, const struct rlb_http_request *req)
{
    int32_t bid = c->inq_head;
    const char *head = rlb_buf_ptr(&w->bufs, bid) + w->bufs.segs[bid].off;
    w->stats.requests++;
    struct rlb_txn *t = txn_get(w);
    if (!t) {
        send_error(w, c, 503);
        return false;
    }
    c->txn = t;
    t->method = req->method_id;
    t->req_body = req->body;
    t->req_remaining = req->content_length;
    rlb_chunked_init(&t->req_chunked);
    if (req->minor_version == 0) {
        t->flags |= RLB_TF_CLIENT_HTTP10;
        if (!(req->flags & RLB_MSG_CONN_KEEPALIVE))
            t->flags |= RLB_TF_CLIENT_CLOSE;
    }
    if ((req->flags & RLB_MSG_CONN_CLOSE) || w->draining)
        t->flags |= RLB_TF_CLIENT_CLOSE;
    if (req->flags & RLB_MSG_UPGRADE)
        t->flags |= RLB_TF_UPGRADE;

    if (req->method_id == RLB_METHOD_CONNECT) {
        send_error(w, c, 405);
        return false;
    }
    struct rlb_str host = req->host;
    struct rlb_str path = req->target;
    rlb_route_split_target(req->target.ptr, req->target.len, &host, &path);
    t->route = rlb_route_find(w->cfg, c->listener, host.ptr, host.len, path.ptr, path.len);
    if (!t->route) {
        send_error(w, c, 404);
        return false;
    }
    t->pool = t->route->pool;
    fill_client_ip(c);

    struct rlb_conn *u = acquire_upstream(w, c, t);
    if (!u) {
        send_error(w, c, 503);
        return false;
    }
    if (emit_request(w, c, u, bid, head, req) < 0) {
        send_error(w, c, 431);
        return false;
    }
    if (req->body == RLB_BODY_NONE && idempotent(req->method_id) && !(t->flags & RLB_TF_UPGRADE)) {
        /* Kept so the request can go out again if a pooled connection turns
         * out to have been closed by the backend meanwhile. */
        t->flags |= RLB_TF_REPLAYABLE;
        t->replay_bid = bid;
        t->replay_head = head;
        t->replay_len = req->head_len;
        rlb_buf_ref(&w->bufs, bid);
    }
    rlb_conn_inq_consume(w, c, req->head_len);
    if (req->body == RLB_BODY_NONE) {
        t->flags |= RLB_TF_REQ_DONE;
        c->state = RLB_CS_WAIT;
        rlb_timer_cancel(&w->timers, w->conns, slot(w, c));
    } else {
        c->state = RLB_CS_REQ_BODY;
        arm(w, c, RLB_TIMER_BODY_IDLE);
    }
    start_upstream_io(w, u);
    return true;
}

/* Moves request body bytes from the client's input to the upstream queue.
 * Returns true when the body is complete. */
static bool relay_request_body(struct rlb_worker *w, struct rlb_conn *c)
{
    struct rlb_txn *t = c->txn;
    struct rlb_conn *u = rlb_conn_peer(w, c);
    if (!u) {
        /* The upstream went away (its response ended early): drop input. */
        rlb_conn_inq_clear(w, c);
        return false;
    }
    struct rlb_outq *q = rlb_conn_outq(w, u);
    if (!q) {
        send_error(w, c, 503);
        return false;
    }
    bool done = false;
    bool progress = false;
    while (c->inq_head != RLB_BUF_NONE && !done) {
        if (q->queued_bytes >= OUTQ_HIGH || !rlb_outq_room(q, 4, 24))
            break;
        int32_t id = c->inq_head;
        struct rlb_seg *seg = &w->bufs.segs[id];
        const char *p = rlb_buf_ptr(&w->bufs, id) + seg->off;
        if (t->req_body == RLB_BODY_LENGTH) {
            uint32_t n = seg->len < t->req_remaining ? seg->len : (uint32_t)t->req_remaining;
            rlb_outq_push_buf(q, &w->bufs, id, p, n);
            rlb_conn_inq_consume(w, c, n);
            t->req_remaining -= n;
            done = t->req_remaining == 0;
        } else {
            size_t consumed = 0, dlen = 0;
            const char *data = NULL;
            int rc = rlb_chunked_decode(&t->req_chunked, p, seg->len, &consumed, &data, &dlen);
            if (rc == RLB_CHUNKED_ERROR) {
                w->stats.parse_errors++;
                rlb_log_debug("bad chunked request body: %s", t->req_chunked.error_reason);
                send_error(w, c, 400);
                return false;
            }
            if (rc == RLB_CHUNKED_DATA) {
                rlb_http1_emit_chunk_header(q, dlen);
                rlb_outq_push_buf(q, &w->bufs, id, data, dlen);
                rlb_outq_push_static(q, "\r\n", 2);
            } else if (rc == RLB_CHUNKED_DONE) {
                rlb_outq_push_static(q, "0\r\n\r\n", 5);
                done = true;
            }
            rlb_conn_inq_consume(w, c, (uint32_t)consumed);
        }
        progress = true;
    }
    if (progress) {
        arm(w, c, RLB_TIMER_BODY_IDLE);
        if (u->state == RLB_US_ACTIVE)
            arm(w, u, RLB_TIMER_UPSTREAM_RESPONSE);
        rlb_conn_flush(w, u);
    }
    if (done) {
        t->flags |= RLB_TF_REQ_DONE;
        c->state = RLB_CS_WAIT;
        rlb_timer_cancel(&w->timers, w->conns, slot(w, c));
        return true;
    }
    if ((c->flags & RLB_CF_EOF) && c->inq_head == RLB_BUF_NONE) {
        /* The client stopped in the middle of its body: nothing sensible can
         * reach the backend any more. */
        close_client(w, c, true);
    }
    return false;
}

/* Whether parsing <len> bytes could give anything but "incomplete": a head
 * terminator arrived, or a limit is crossed. Only the new bytes are searched,
 * so a head trickling in byte by byte (slowloris) costs linear work, not a
 * full re-parse per byte. A bare-LF terminator counts too: the parser then
 * rejects it at once instead of waiting for the header timeout. */
static bool head_may_be_complete(struct rlb_worker *w, struct rlb_conn *c, const char *p, size_t len)
{
    const struct rlb_http_limits *lim = &w->cfg->limits;
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
static int parse_head(struct rlb_worker *w, struct rlb_conn *c, bool request, void *msg, int method)
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
            if (rc != RLB_HTTP_INCOMPLETE)
                c->head_scanned = 0;
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

static void skip_empty_lines(struct rlb_worker *w, struct rlb_conn *c)
{
    /* RFC 9112 2.2: ignore empty lines before a request line (some clients
     * send an extra CRLF after a POST body). */
    while (c->inq_head != RLB_BUF_NONE) {
        struct rlb_seg *seg = &w->bufs.segs[c->inq_head];
        const char *p = rlb_buf_ptr(&w->bufs, c->inq_head) + seg->off;
        uint32_t n = 0;
        while (n < seg->len && (p[n] == '\r' || p[n] == '\n'))
            n++;
        if (n == 0)
            return;
        rlb_conn_inq_consume(w, c, n);
        c->head_scanned = 0;
    }
}

/* Returns true when a request started (the state changed). */
static bool read_request_head(struct rlb_worker *w, struct rlb_conn *c)
{
    skip_empty_lines(w, c);
    if (c->inq_head == RLB_BUF_NONE)
        return false;
    if (c->timer.kind != RLB_TIMER_CLIENT_HEADER)
        arm(w, c, RLB_TIMER_CLIENT_HEADER);
    struct rlb_http_request req;
    req.headers = w->hdr_scratch;
    req.max_headers_capacity = w->hdr_capacity;
    int rc = parse_head(w, c, true, &req, 0);
    if (rc == RLB_HTTP_INCOMPLETE)
        return false;
    if (rc == RLB_HTTP_ERROR) {
        w->stats.parse_errors++;
        rlb_log_debug("rejected request from slot %u: %d %s", slot(w, c), req.error_status,
                      req.error_reason ? req.error_reason : "");
        send_error(w, c, req.error_status ? req.error_status : 400);
        return false;
    }
    return start_request(w, c, &req);
}

static void relay_tunnel(struct rlb_worker *w, struct rlb_conn *from)
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
            close_upstream(w, u, false);
        } else {
            u->flags |= RLB_CF_CLOSE_AFTER_SEND;
            return;
        }
        close_client_after_send(w, c);
    }
}

static void resume_recv(struct rlb_worker *w, struct rlb_conn *c)
{
    if (c->inq_bytes >= INQ_HIGH)
        rlb_conn_pause_recv(w, c);
    else if (c->inq_bytes <= INQ_HIGH / 2)
        rlb_conn_arm_recv(w, c);
}

static void client_process(struct rlb_worker *w, struct rlb_conn *c)
{
    for (;;) {
        switch (c->state) {
        case RLB_CS_HEAD:
            if (!read_request_head(w, c)) {
                if (c->state == RLB_CS_HEAD && (c->flags & RLB_CF_EOF)) {
                    close_client(w, c, false);
                    return;
                }
                goto out;
            }
            break;
        case RLB_CS_REQ_BODY:
            if (!relay_request_body(w, c))
                goto out;
            break;
        case RLB_CS_WAIT:
            goto out;
        case RLB_CS_TUNNEL:
            relay_tunnel(w, c);
            goto out;
        case RLB_CS_LINGER:
            rlb_conn_inq_clear(w, c);
            if (c->flags & RLB_CF_EOF)
                rlb_conn_close(w, c, false);
            goto out;
        default:
            return;
        }
    }
out:
    if (c->state != RLB_CS_CLOSING)
        resume_recv(w, c);
}

/* Everything of the response has been queued to the client. */
static void response_done(struct rlb_worker *w, struct rlb_conn *c, struct rlb_conn *u)
{
    struct rlb_txn *t = c->txn;
    if (!(t->flags & RLB_TF_REQ_DONE)) {
        /* The backend answered before reading the whole body (an early 413,
         * say): neither connection is at a message boundary any more. */
        t->flags |= RLB_TF_CLIENT_CLOSE | RLB_TF_UPSTREAM_CLOSE;
    }
    unlink_pair(w, u);
    bool parked = !(t->flags & RLB_TF_UPSTREAM_CLOSE) && rlb_conn_unsent(u) == 0 &&
                  !(u->flags & RLB_CF_SEND_INFLIGHT) && rlb_upstream_park(w, u);
    if (!parked)
        rlb_conn_close(w, u, false);
    rlb_conn_flush(w, c);
    if ((t->flags & RLB_TF_CLIENT_CLOSE) || w->draining) {
        c->state = RLB_CS_WAIT;
        close_client_after_send(w, c);
        return;
    }
    txn_put(w, c);
    c->state = RLB_CS_HEAD;
    arm(w, c, c->inq_bytes ? RLB_TIMER_CLIENT_HEADER : RLB_TIMER_CLIENT_KEEPALIVE);
    client_process(w, c); /* pipelined requests */
}

static bool replay_request(struct rlb_worker *w, struct rlb_conn *c, struct rlb_conn *u)
{
    struct rlb_txn *t = c->txn;
    struct rlb_http_request req;
    req.headers = w->hdr_scratch;
    req.max_headers_capacity = w->hdr_capacity;
    if (rlb_http1_parse_request(t->replay_head, t->replay_len, &w->cfg->limits, &req) <= 0)
        return false;
    close_upstream(w, u, true);
    struct rlb_conn *nu = rlb_upstream_connect(w, t->pool, (uint32_t)t->backend);
    if (!nu)
        return false;
    nu->peer = slot(w, c);
    c->peer = slot(w, nu);
    int32_t bid = t->replay_bid;
    if (emit_request(w, c, nu, bid, t->replay_head, &req) < 0)
        return false;
    /* The retried request must not be retried again. */
    release_replay(w, t);
    t->flags &= (uint16_t)~RLB_TF_REPLAYABLE;
    w->stats.upstream_retries++;
    return true;
}

static void upstream_failed(struct rlb_worker *w, struct rlb_conn *u, int status)
{
    struct rlb_conn *c = rlb_conn_peer(w, u);
    if (!c) {
        close_upstream(w, u, true);
        return;
    }
    struct rlb_txn *t = c->txn;
    if (t && !(t->flags & RLB_TF_RESP_STARTED) && t->resp_state == RLB_RS_HEAD && u->inq_bytes == 0 &&
        (t->flags & RLB_TF_REPLAYABLE) && (u->flags & RLB_CF_REUSED) && status == 502) {
        if (replay_request(w, c, u))
            return;
    }
    send_error(w, c, status);
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
    txn_put(w, c);
    rlb_timer_cancel(&w->timers, w->conns, slot(w, u));
    arm(w, c, RLB_TIMER_BODY_IDLE);
    relay_tunnel(w, u);
    if (c->state == RLB_CS_TUNNEL)
        relay_tunnel(w, c);
}

/* Returns true when a head was handled and parsing should go on. */
static bool read_response_head(struct rlb_worker *w, struct rlb_conn *u, struct rlb_conn *c)
{
    struct rlb_txn *t = c->txn;
    struct rlb_http_response resp;
    resp.headers = w->hdr_scratch;
    resp.max_headers_capacity = w->hdr_capacity;
    int rc = parse_head(w, u, false, &resp, t->method);
    if (rc == RLB_HTTP_INCOMPLETE)
        return false;
    if (rc == RLB_HTTP_ERROR) {
        rlb_log_warn("invalid response from %s: %s", w->cfg->pools[u->pool].backends[u->backend].addr.text,
                     resp.error_reason ? resp.error_reason : "?");
        send_error(w, c, 502);
        return false;
    }
    release_replay(w, t);
    int32_t bid = u->inq_head;
    const char *head = rlb_buf_ptr(&w->bufs, bid) + w->bufs.segs[bid].off;
    struct rlb_outq *q = rlb_conn_outq(w, c);
    if (!q) {
        send_error(w, c, 502);
        return false;
    }
    struct rlb_resp_emit opt = {.route = t->route, .via_line = via_line(w)};

    if (resp.status < 200) {
        if (resp.status == 101) {
            if (!(t->flags & RLB_TF_UPGRADE) || !(resp.flags & RLB_MSG_UPGRADE)) {
                send_error(w, c, 502);
                return false;
            }
            opt.upgrade = true;
        } else {
            opt.interim = true;
        }
        /* 1xx cannot go to an HTTP/1.0 client (RFC 9110 15.2). */
        if (opt.upgrade || !(t->flags & RLB_TF_CLIENT_HTTP10)) {
            if (rlb_http1_emit_response(q, &w->bufs, bid, head, &resp, &opt) < 0) {
                send_error(w, c, 502);
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

    opt.framing = (uint8_t)client_framing(t, &resp);
    if ((resp.flags & RLB_MSG_CONN_CLOSE) || resp.minor_version == 0 || resp.body == RLB_BODY_UNTIL_CLOSE)
        t->flags |= RLB_TF_UPSTREAM_CLOSE;
    if (w->draining)
        t->flags |= RLB_TF_CLIENT_CLOSE;
    opt.client_close = (t->flags & RLB_TF_CLIENT_CLOSE) != 0;
    opt.client_keepalive10 = !opt.client_close && (t->flags & RLB_TF_CLIENT_HTTP10);
    if (rlb_http1_emit_response(q, &w->bufs, bid, head, &resp, &opt) < 0) {
        send_error(w, c, 502);
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
    arm(w, u, RLB_TIMER_BODY_IDLE);
    return true;
}

/* Returns true when the body is complete. */
static bool relay_response_body(struct rlb_worker *w, struct rlb_conn *u, struct rlb_conn *c)
{
    struct rlb_txn *t = c->txn;
    struct rlb_outq *q = rlb_conn_outq(w, c);
    bool rechunk = t->flags & RLB_TF_RECHUNK;
    bool done = false, progress = false;
    if (!q) {
        close_client(w, c, true);
        return false;
    }
    while (u->inq_head != RLB_BUF_NONE && !done) {
        if (q->queued_bytes >= OUTQ_HIGH || !rlb_outq_room(q, 4, 24))
            break;
        int32_t id = u->inq_head;
        struct rlb_seg *seg = &w->bufs.segs[id];
        const char *p = rlb_buf_ptr(&w->bufs, id) + seg->off;
        progress = true;
        if (t->resp_body == RLB_BODY_LENGTH) {
            uint32_t n = seg->len < t->resp_remaining ? seg->len : (uint32_t)t->resp_remaining;
            rlb_outq_push_buf(q, &w->bufs, id, p, n);
            rlb_conn_inq_consume(w, u, n);
            t->resp_remaining -= n;
            done = t->resp_remaining == 0;
        } else if (t->resp_body == RLB_BODY_CHUNKED) {
            size_t consumed = 0, dlen = 0;
            const char *data = NULL;
            int rc = rlb_chunked_decode(&t->resp_chunked, p, seg->len, &consumed, &data, &dlen);
            if (rc == RLB_CHUNKED_ERROR) {
                rlb_log_warn("invalid chunked response from %s: %s",
                             w->cfg->pools[u->pool].backends[u->backend].addr.text, t->resp_chunked.error_reason);
                /* Part of the response is already with the client: only a
                 * reset tells it that the message is incomplete. */
                close_client(w, c, true);
                return false;
            }
            if (rc == RLB_CHUNKED_DATA) {
                if (rechunk)
                    rlb_http1_emit_chunk_header(q, dlen);
                rlb_outq_push_buf(q, &w->bufs, id, data, dlen);
                if (rechunk)
                    rlb_outq_push_static(q, "\r\n", 2);
            } else if (rc == RLB_CHUNKED_DONE) {
                done = true;
            }
            rlb_conn_inq_consume(w, u, (uint32_t)consumed);
        } else {
            if (rechunk)
                rlb_http1_emit_chunk_header(q, seg->len);
            rlb_outq_push_buf(q, &w->bufs, id, p, seg->len);
            if (rechunk)
                rlb_outq_push_static(q, "\r\n", 2);
            rlb_conn_inq_consume(w, u, seg->len);
        }
    }
    if (!done && t->resp_body == RLB_BODY_UNTIL_CLOSE && (u->flags & RLB_CF_EOF) && u->inq_head == RLB_BUF_NONE &&
        !(u->flags & RLB_CF_ABORT))
        done = true;
    if (done && rechunk)
        rlb_outq_push_static(q, "0\r\n\r\n", 5);
    if (progress) {
        arm(w, u, RLB_TIMER_BODY_IDLE);
        rlb_conn_flush(w, c);
    }
    return done;
}

static void upstream_process(struct rlb_worker *w, struct rlb_conn *u)
{
    struct rlb_conn *c = rlb_conn_peer(w, u);
    if (u->state == RLB_US_IDLE || !c) {
        /* Bytes or a close on a connection nobody waits for: not reusable. */
        if (u->inq_bytes || (u->flags & RLB_CF_EOF))
            close_upstream(w, u, true);
        return;
    }
    if (u->state == RLB_US_TUNNEL) {
        relay_tunnel(w, u);
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
            response_done(w, c, u);
            return;
        }
    }
    if (u->state != RLB_US_ACTIVE || c->state == RLB_CS_CLOSING || c->txn != t)
        goto out;
    if ((u->flags & RLB_CF_EOF) && u->inq_head == RLB_BUF_NONE) {
        /* The backend closed before the response was complete. */
        if (t->resp_state == RLB_RS_HEAD)
            upstream_failed(w, u, 502);
        else
            close_client(w, c, true);
        return;
    }
out:
    if (u->state == RLB_US_ACTIVE || u->state == RLB_US_TUNNEL)
        resume_recv(w, u);
}

void rlb_proxy_input(struct rlb_worker *w, struct rlb_conn *c)
{
    if (c->kind == RLB_CONN_CLIENT)
        client_process(w, c);
    else
        upstream_process(w, c);
}

void rlb_proxy_accepted(struct rlb_worker *w, struct rlb_conn *c)
{
    c->state = RLB_CS_HEAD;
    rlb_conn_set_nodelay(c);
    arm(w, c, RLB_TIMER_CLIENT_HEADER);
    rlb_conn_arm_recv(w, c);
}

void rlb_proxy_recv_end(struct rlb_worker *w, struct rlb_conn *c, int res)
{
    c->flags |= RLB_CF_EOF;
    if (res < 0)
        c->flags |= RLB_CF_ABORT;
    if (c->kind == RLB_CONN_CLIENT) {
        if (res < 0 && c->state != RLB_CS_LINGER) {
            close_client(w, c, true);
            return;
        }
        client_process(w, c);
        if (c->state == RLB_CS_WAIT && c->txn)
            c->txn->flags |= RLB_TF_CLIENT_CLOSE; /* half-closed: answer, then close */
    } else {
        upstream_process(w, c);
    }
}

static void upstream_sent_all(struct rlb_worker *w, struct rlb_conn *u)
{
    if (u->flags & RLB_CF_CLOSE_AFTER_SEND) {
        struct rlb_conn *c = rlb_conn_peer(w, u);
        close_upstream(w, u, false);
        if (c)
            close_client_after_send(w, c);
    }
}

void rlb_proxy_sent(struct rlb_worker *w, struct rlb_conn *c, int res)
{
    if (res < 0) {
        if (c->kind == RLB_CONN_CLIENT) {
            close_client(w, c, true);
        } else {
            struct rlb_conn *client = rlb_conn_peer(w, c);
            if (client && client->txn)
                upstream_failed(w, c, 502);
            else if (client)
                close_client(w, client, true);
            else
                close_upstream(w, c, true);
        }
        return;
    }
    rlb_outq_sent(c->outq, &w->bufs, (size_t)res);
    if (rlb_outq_pending(c->outq)) {
        rlb_conn_flush(w, c);
    } else {
        rlb_outq_put(&w->outqs, c->outq);
        c->outq = NULL;
    }
    struct rlb_conn *p = rlb_conn_peer(w, c);
    if (c->kind == RLB_CONN_CLIENT) {
        if (!c->outq && (c->flags & RLB_CF_CLOSE_AFTER_SEND) && c->state != RLB_CS_LINGER) {
            close_client_after_send(w, c);
            return;
        }
        if (p)
            upstream_process(w, p); /* room for more response bytes */
    } else {
        if (!c->outq)
            upstream_sent_all(w, c);
        if (p && p->state != RLB_CS_CLOSING)
            client_process(w, p); /* room for more request bytes */
    }
}

void rlb_proxy_connected(struct rlb_worker *w, struct rlb_conn *u, int res)
{
    struct rlb_conn *c = rlb_conn_peer(w, u);
    if (res == 0) {
        u->state = RLB_US_ACTIVE;
        if (!c) {
            close_upstream(w, u, true);
            return;
        }
        start_upstream_io(w, u);
        return;
    }
    const struct rlb_backend_cfg *be = &w->cfg->pools[u->pool].backends[u->backend];
    w->stats.upstream_connect_failures++;
    /* A cancelled connect is one our connect timer gave up on. */
    rlb_log_warn("connect to %s: %s", be->addr.text, res == -ECANCELED ? "timed out" : strerror(-res));
    if (!c) {
        close_upstream(w, u, true);
        return;
    }
    /* Nothing was sent: the queued request moves to another backend as it is. */
    struct rlb_outq *q = u->outq;
    u->outq = NULL;
    close_upstream(w, u, true);
    struct rlb_txn *t = c->txn;
    t->connect_failures++;
    struct rlb_conn *nu = acquire_upstream(w, c, t);
    if (!nu) {
        if (q) {
            rlb_outq_discard(q, &w->bufs);
            rlb_outq_put(&w->outqs, q);
        }
        send_error(w, c, t->connect_failures == t->tries ? 503 : 502);
        return;
    }
    w->stats.upstream_retries++;
    RLB_BUG_ON(nu->outq != NULL);
    nu->outq = q;
    start_upstream_io(w, nu);
}

void rlb_proxy_timeout(struct rlb_worker *w, struct rlb_conn *c, enum rlb_timer_kind kind)
{
    w->stats.timeouts++;
    switch (kind) {
    case RLB_TIMER_CLIENT_HEADER:
        if (c->inq_bytes)
            send_error(w, c, 408);
        else
            close_client(w, c, false);
        break;
    case RLB_TIMER_CLIENT_KEEPALIVE:
    case RLB_TIMER_LINGER:
        close_client(w, c, false);
        break;
    case RLB_TIMER_BODY_IDLE:
        if (c->kind == RLB_CONN_CLIENT) {
            if (c->state == RLB_CS_REQ_BODY && c->txn && !(c->txn->flags & RLB_TF_RESP_STARTED))
                send_error(w, c, 408);
            else
                close_client(w, c, true);
        } else {
            struct rlb_conn *client = rlb_conn_peer(w, c);
            if (client)
                close_client(w, client, true);
            else
                close_upstream(w, c, true);
        }
        break;
    case RLB_TIMER_UPSTREAM_CONNECT:
        /* The connect completes with -ECANCELED and is handled like a
         * refused one: the request moves to the next backend. */
        rlb_conn_cancel_connect(w, c);
        break;
    case RLB_TIMER_UPSTREAM_RESPONSE: {
        struct rlb_conn *client = rlb_conn_peer(w, c);
        if (client)
            send_error(w, client, 504);
        else
            close_upstream(w, c, true);
        break;
    }
    case RLB_TIMER_POOL_IDLE:
        close_upstream(w, c, false);
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
            close_client(w, c, false);
    }
}

void rlb_proxy_abort_all(struct rlb_worker *w)
{
    for (uint32_t i = 0; i < w->slot_hwm; i++) {
        struct rlb_conn *c = &w->conns[i];
        if (c->kind == RLB_CONN_CLIENT)
            close_client(w, c, true);
        else if (c->kind == RLB_CONN_UPSTREAM)
            close_upstream(w, c, true);
    }
}
