/* Client side of the proxy: request heads, routing, backend choice, request bodies. */
#include <ringlb/buf.h>
#include <ringlb/conn.h>
#include <ringlb/http1.h>
#include <ringlb/http1_emit.h>
#include <ringlb/lb.h>
#include <ringlb/log.h>
#include <ringlb/proxy.h>
#include <ringlb/route.h>
#include <ringlb/timer.h>
#include <ringlb/str.h>
#include <ringlb/upstream.h>

#include <xxhash.h>

#include <arpa/inet.h>
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proxy_internal.h"

static const struct rlb_str proto_http = {"http", 4};
static const struct rlb_str proto_https = {"https", 5};

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

/* A request and the upstream connection carrying it: linked both ways and
 * counted in the backend's requests in flight, whichever way it was found. */
static void pair_with_upstream(struct rlb_worker *w, struct rlb_conn *c, struct rlb_conn *u)
{
    u->peer = slot(w, c);
    c->peer = slot(w, u);
    rlb_upstream_busy(w, u);
}

/* Picks a backend this request has not tried and gets a connection to it:
 * an idle pooled one when there is one, else a new connect. When the pool
 * has nobody left to try, the request moves down the failover tiers. */
struct rlb_conn *rlb__proxy_acquire_upstream(struct rlb_worker *w, struct rlb_conn *c, struct rlb_txn *t)
{
    uint32_t max_tries = w->cfg->pools[t->route_pool].retry.tries;
    while (t->attempts < max_tries) {
        struct rlb_pool_state *ps = &w->pools[t->pool];
        uint64_t exclude[RLB_LB_MAX_EXCLUDE_WORDS] = {0};
        for (uint32_t i = 0; i < t->tries; i++)
            exclude[t->tried[i] / 64] |= 1ull << (t->tried[i] % 64);
        struct rlb_lb_pick_ctx ctx = {.exclude = exclude, .hash = t->hash};
        int b = t->tries < RLB_TXN_MAX_TRIES ? rlb_lb_pick(&ps->lb, &ctx) : -1;
        if (b < 0) {
            uint32_t next = rlb_upstream_tier(w, t->route_pool, t->pool);
            if (next == UINT32_MAX)
                return NULL;
            t->pool = next;
            t->tries = 0;
            w->stats.failovers++;
            continue;
        }
        t->tried[t->tries++] = b;
        t->attempts++;
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
        pair_with_upstream(w, c, u);
        return u;
    }
    return NULL;
}

bool rlb__proxy_may_retry(struct rlb_worker *w, const struct rlb_txn *t)
{
    return t->attempts < w->cfg->pools[t->route_pool].retry.tries && rlb_upstream_retry_allowed(w, t->route_pool);
}

/* The key a hash pool balances on; a request without the configured header
 * or cookie falls back to its client address, so it still sticks somewhere. */
static uint64_t request_hash(const struct rlb_pool_cfg *pool, const struct rlb_conn *c,
                             const struct rlb_http_request *req)
{
    const struct rlb_hash_cfg *h = &pool->hash;
    struct rlb_str key = {c->ip, c->ip_len};
    if (h->key == RLB_HASH_KEY_URI) {
        key = req->target;
    } else if (h->key == RLB_HASH_KEY_HEADER) {
        size_t len = strlen(h->name);
        for (uint32_t i = 0; i < req->num_headers; i++)
            if (rlb_str_ieq(req->headers[i].name, req->headers[i].name_len, h->name, len)) {
                key = (struct rlb_str){req->headers[i].value, req->headers[i].value_len};
                break;
            }
    } else if (h->key == RLB_HASH_KEY_COOKIE) {
        struct rlb_str v;
        if (rlb_cookie_find(req->headers, req->num_headers, h->name, strlen(h->name), &v))
            key = v;
    }
    return XXH3_64bits(key.ptr, key.len);
}

/* A/B split: the variant the client's cookie names, else a weighted draw
 * that the response will tell the client to keep. */
static void choose_variant(struct rlb_worker *w, struct rlb_txn *t, const struct rlb_http_request *req)
{
    const struct rlb_route_cfg *r = t->route;
    struct rlb_str v;
    int i = -1;
    if (rlb_cookie_find(req->headers, req->num_headers, r->split_cookie, strlen(r->split_cookie), &v))
        i = rlb_split_from_cookie(w->cfg, r, v.ptr, v.len);
    if (i < 0) {
        /* Any per-worker generator serves; pool 0's is always there. */
        i = (int)rlb_split_choose(r, rlb_lb_random(&w->pools[0].lb));
        t->flags |= RLB_TF_SET_VARIANT;
    }
    t->variant = (uint8_t)i;
}

int rlb__proxy_emit_request(struct rlb_worker *w, struct rlb_conn *c, struct rlb_conn *u, int32_t bid,
                            const char *head, const struct rlb_http_request *req)
{
    struct rlb_txn *t = c->txn;
    const struct rlb_pool_cfg *pool = &w->cfg->pools[t->pool];
    const char *backend_text = pool->backends[t->backend].addr.text;
    struct rlb_req_emit opt = {
        .route = t->route,
        .client_ip = {c->ip, c->ip_len},
        .via_line = rlb__proxy_via_line(w),
        .proto = c->tls ? proto_https : proto_http,
        .default_host = {backend_text, strlen(backend_text)},
        .upstream_keepalive = pool->keepalive_max_idle > 0 && !(t->flags & RLB_TF_UPGRADE),
        .drop_conditionals = rlb__proxy_cache_fetching(t),
    };
    char validators[320];
    opt.extra_lines = (struct rlb_str){validators, rlb__proxy_cache_validators(t, validators, sizeof(validators))};
    struct rlb_outq *q = rlb_conn_outq(w, u);
    if (!q)
        return -1;
    return rlb_http1_emit_request(q, &w->bufs, bid, head, req, &opt);
}

void rlb__proxy_start_upstream_io(struct rlb_worker *w, struct rlb_conn *u)
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

/* Pinning request heads for retries must not be what starves receives:
 * under buffer pressure new requests go without a replay copy (connect
 * failures are still retried, as their queued bytes were never sent). */
static bool replay_affordable(const struct rlb_worker *w)
{
    const struct rlb_buf_group *g = &w->bufs.groups[RLB_BUF_GROUP_CLIENT];
    return g->in_ring + g->pending_adds > g->count / 4;
}

/* 308 (method and body kept, RFC 9110 15.4.9) to the same host and target over HTTPS. The host and target are
 * the client's own bytes, sent by reference; the connection closes after, since a body is not read. */
static void send_https_redirect(struct rlb_worker *w, struct rlb_conn *c, int32_t bid, struct rlb_str host,
                                struct rlb_str target)
{
    /* The port of the plain listener goes; the HTTPS one comes in its place unless it is 443. */
    size_t host_len = host.len;
    for (size_t i = host.len; i-- > 0;) {
        if (host.ptr[i] == ']')
            break;
        if (host.ptr[i] == ':') {
            host_len = i;
            break;
        }
    }
    struct rlb_outq *q = rlb_conn_outq(w, c);
    if (host_len == 0 || target.len == 0 || target.ptr[0] != '/') {
        rlb__proxy_send_error(w, c, 400);
        return;
    }
    if (!q || !rlb_outq_room(q, 6, 64)) {
        rlb__proxy_close_client(w, c, true);
        return;
    }
    static const char head[] = "HTTP/1.1 308 Permanent Redirect\r\nLocation: https://";
    static const char tail[] = "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    rlb_outq_push_static(q, head, sizeof(head) - 1);
    rlb_outq_push_buf(q, &w->bufs, bid, host.ptr, host_len);
    uint16_t port = w->cfg->listeners[c->listener].redirect_https;
    if (port != 443) {
        char p[8];
        int n = snprintf(p, sizeof(p), ":%u", port);
        rlb_outq_push_copy(q, p, (size_t)n);
    }
    rlb_outq_push_buf(q, &w->bufs, bid, target.ptr, target.len);
    rlb_outq_push_static(q, tail, sizeof(tail) - 1);
    w->stats.responses[3]++;
    c->txn->flags |= RLB_TF_RESP_STARTED | RLB_TF_CLIENT_CLOSE;
    c->state = RLB_CS_WAIT;
    rlb_timer_cancel(&w->timers, w->conns, slot(w, c));
    rlb_conn_inq_clear(w, c);
    rlb_conn_flush(w, c);
    rlb__proxy_close_client_after_send(w, c);
}

/* A whole, valid request head is at the front of c's input. */
static bool start_request(struct rlb_worker *w, struct rlb_conn *c, const struct rlb_http_request *req)
{
    int32_t bid = c->inq_head;
    const char *head = rlb_buf_ptr(&w->bufs, bid) + w->bufs.segs[bid].off;
    w->stats.requests++;
    struct rlb_txn *t = rlb__proxy_txn_get(w);
    if (!t) {
        rlb__proxy_send_error(w, c, 503);
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
            t->flags |= RLB_TF_CLIENT_CLOSE | RLB_TF_CLIENT_SAID_CLOSE;
    }
    if (req->flags & RLB_MSG_CONN_CLOSE)
        t->flags |= RLB_TF_CLIENT_CLOSE | RLB_TF_CLIENT_SAID_CLOSE;
    if (w->draining)
        t->flags |= RLB_TF_CLIENT_CLOSE;
    if (req->flags & RLB_MSG_UPGRADE)
        t->flags |= RLB_TF_UPGRADE;

    if (req->method_id == RLB_METHOD_CONNECT) {
        rlb__proxy_send_error(w, c, 405);
        return false;
    }
    struct rlb_str host = req->host;
    struct rlb_str path = req->target;
    rlb_route_split_target(req->target.ptr, req->target.len, &host, &path);
    if (w->cfg->listeners[c->listener].redirect_https) {
        send_https_redirect(w, c, bid, host, path);
        return false;
    }
    fill_client_ip(c);
    if (rlb__proxy_cache_purge(w, c, req, host, path))
        return true;
    t->route = rlb_route_find(w->cfg, c->listener, host.ptr, host.len, path.ptr, path.len);
    if (!t->route) {
        rlb__proxy_send_error(w, c, 404);
        return false;
    }
    t->route_pool = t->route->pool;
    if (t->route->num_splits) {
        choose_variant(w, t, req);
        t->route_pool = t->route->splits[t->variant].pool;
    }
    if (rlb__proxy_cache_request(w, c, req, host, path) != RLB_CACHE_FORWARD)
        return true;
    uint32_t tier = rlb_upstream_tier(w, t->route_pool, UINT32_MAX);
    if (tier != t->route_pool && tier != UINT32_MAX)
        w->stats.failovers++;
    t->pool = tier != UINT32_MAX ? tier : t->route_pool;
    if (w->cfg->pools[t->pool].balance == RLB_BALANCE_HASH)
        t->hash = request_hash(&w->cfg->pools[t->pool], c, req);
    rlb_upstream_count_request(w, t->route_pool);

    struct rlb_conn *u = rlb__proxy_acquire_upstream(w, c, t);
    if (!u) {
        rlb__proxy_send_error(w, c, 503);
        return false;
    }
    if (rlb__proxy_emit_request(w, c, u, bid, head, req) < 0) {
        rlb__proxy_send_error(w, c, 431);
        return false;
    }
    if (req->body == RLB_BODY_NONE && idempotent(req->method_id) && !(t->flags & RLB_TF_UPGRADE) &&
        ((u->flags & RLB_CF_REUSED) || w->cfg->pools[t->route_pool].retry.tries > 1) && replay_affordable(w)) {
        /* Kept so the request can go out again: on a fresh connection if a
         * pooled one turns out closed by the backend meanwhile, or to another
         * backend after a reset or a 502/503/504. The reference pins a receive
         * buffer until the response head, hence the check on spare buffers. */
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
    rlb__proxy_start_upstream_io(w, u);
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
        rlb__proxy_send_error(w, c, 503);
        return false;
    }
    /* A chunked body is decoded and chunked again: only framing ringlb
     * checked reaches the backend. */
    bool progress = false;
    int rc = rlb__proxy_relay_body(w, c, q, t->req_body, t->req_body == RLB_BODY_CHUNKED, &t->req_remaining,
                                   &t->req_chunked, &progress, NULL);
    if (rc == RLB_RELAY_BAD) {
        w->stats.parse_errors++;
        rlb_log_debug("bad chunked request body: %s", t->req_chunked.error_reason);
        rlb__proxy_send_error(w, c, 400);
        return false;
    }
    bool done = rc == RLB_RELAY_DONE;
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
        rlb__proxy_close_client(w, c, true);
    }
    return false;
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
    if (c->timer.list != RLB_TIMER_CLIENT_HEADER)
        arm(w, c, RLB_TIMER_CLIENT_HEADER);
    struct rlb_http_request req;
    req.headers = w->hdr_scratch;
    req.max_headers_capacity = w->hdr_capacity;
    int rc = rlb__proxy_parse_head(w, c, true, &req, 0);
    if (rc == RLB_HTTP_INCOMPLETE)
        return false;
    if (rc == RLB_HTTP_ERROR) {
        w->stats.parse_errors++;
        rlb_log_debug("rejected request from slot %u: %d %s", slot(w, c), req.error_status,
                      req.error_reason ? req.error_reason : "");
        rlb__proxy_send_error(w, c, req.error_status ? req.error_status : 400);
        return false;
    }
    return start_request(w, c, &req);
}

bool rlb__proxy_replay_request(struct rlb_worker *w, struct rlb_conn *c, struct rlb_conn *u, bool elsewhere)
{
    struct rlb_txn *t = c->txn;
    struct rlb_http_request req;
    req.headers = w->hdr_scratch;
    req.max_headers_capacity = w->hdr_capacity;
    if (rlb_http1_parse_request(t->replay_head, t->replay_len, &w->cfg->limits, &req) <= 0)
        return false;
    rlb__proxy_close_upstream(w, u, true);
    struct rlb_conn *nu;
    if (elsewhere) {
        nu = rlb__proxy_acquire_upstream(w, c, t);
    } else {
        /* The backend only closed an idle connection: same backend, once. */
        t->flags |= RLB_TF_RECONNECTED;
        nu = rlb_upstream_connect(w, t->pool, (uint32_t)t->backend);
        if (nu)
            pair_with_upstream(w, c, nu);
    }
    if (!nu)
        return false;
    if (rlb__proxy_emit_request(w, c, nu, t->replay_bid, t->replay_head, &req) < 0)
        return false;
    w->stats.upstream_retries++;
    rlb__proxy_start_upstream_io(w, nu);
    return true;
}

void rlb__proxy_client_process(struct rlb_worker *w, struct rlb_conn *c)
{
    for (;;) {
        switch (c->state) {
        case RLB_CS_HEAD:
            /* Pipelined requests answered here (cache hits) queue their responses at once: the next one
             * waits for the send queue to drain (rlb_proxy_sent resumes it) rather than overflow it. */
            if (c->outq && (!rlb_outq_room(c->outq, 8, 512) || c->outq->queued_bytes >= OUTQ_HIGH))
                goto out;
            if (!read_request_head(w, c)) {
                if (c->state == RLB_CS_HEAD && (c->flags & RLB_CF_EOF)) {
                    rlb__proxy_close_client(w, c, false);
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
            rlb__proxy_relay_tunnel(w, c);
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
        rlb__proxy_resume_recv(w, c);
}
