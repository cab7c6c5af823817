/* The response cache in the proxy's request path: lookups and hits, fetches that fill the store, waits for
 * a fetch in flight, revalidation, stale stand-ins, invalidation and purges. The rules themselves are in
 * cache_policy.c, the store in cache.c. */
#include <ringlb/buf.h>
#include <ringlb/cache.h>
#include <ringlb/cache_policy.h>
#include <ringlb/conn.h>
#include <ringlb/http1.h>
#include <ringlb/log.h>
#include <ringlb/proxy.h>
#include <ringlb/route.h>
#include <ringlb/str.h>
#include <ringlb/timer.h>
#include <ringlb/tls.h>
#include <ringlb/upstream.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "proxy_internal.h"

#define KEY_MAX 4096

static int64_t wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    return (int64_t)ts.tv_sec;
}

static struct rlb_cache_txn *ctxn_get(struct rlb_worker *w, struct rlb_txn *t)
{
    if (t->cache)
        return t->cache;
    struct rlb_cache_txn *ct = w->cache_txn_free;
    if (ct)
        w->cache_txn_free = ct->next_free;
    else if (!(ct = malloc(sizeof(*ct))))
        return NULL;
    memset(ct, 0, sizeof(*ct));
    rlb_cc_init(&ct->req_cc);
    t->cache = ct;
    return ct;
}

static void update_gauges(struct rlb_worker *w)
{
    w->stats.cache_bytes = w->cache->used;
    w->stats.cache_objects = w->cache->objects;
}

void rlb__proxy_cache_txn_end(struct rlb_worker *w, struct rlb_txn *t)
{
    struct rlb_cache_txn *ct = t->cache;
    if (!ct)
        return;
    if (ct->fill) {
        rlb_cache_fill_abandon(w->cache, ct->fill); /* ended before its response did: waiters fetch for themselves */
        update_gauges(w);
    }
    if (ct->stale)
        rlb_cache_unref(w->cache, ct->stale);
    if (ct->splice_entry)
        rlb_cache_unref(w->cache, ct->splice_entry);
    free(ct->inval);
    t->cache = NULL;
    ct->next_free = w->cache_txn_free;
    w->cache_txn_free = ct;
}

/* The request's Cache-Control, with Pragma: no-cache standing for no-cache when Cache-Control is absent
 * (RFC 9111 5.4). */
static void request_cc(struct rlb_cc *cc, const struct rlb_http_header *h, uint32_t n)
{
    rlb_cc_init(cc);
    bool has_cc = false, pragma_no_cache = false;
    for (uint32_t i = 0; i < n; i++) {
        if (h[i].id == RLB_HDR_CACHE_CONTROL) {
            has_cc = true;
            rlb_cc_parse(cc, h[i].value, h[i].value_len);
        } else if (h[i].id == RLB_HDR_PRAGMA && memmem(h[i].value, h[i].value_len, "no-cache", 8)) {
            pragma_no_cache = true;
        }
    }
    if (!has_cc && pragma_no_cache)
        cc->flags |= RLB_CC_NO_CACHE;
}

static const struct rlb_http_header *find(const struct rlb_http_header *h, uint32_t n, uint16_t id)
{
    for (uint32_t i = 0; i < n; i++)
        if (h[i].id == id)
            return &h[i];
    return NULL;
}

/* The client's validators, checked against a stored response (RFC 9110 13.1.2, 13.1.3, 13.2.2). */
struct conditionals {
    struct rlb_str inm; /* If-None-Match, combined lines not needed: the first line decides, others are rare */
    int64_t ims;        /* If-Modified-Since, -1 none */
    bool present;
};

static void conditionals_of(struct conditionals *cd, const struct rlb_http_header *h, uint32_t n)
{
    const struct rlb_http_header *inm = find(h, n, RLB_HDR_IF_NONE_MATCH);
    const struct rlb_http_header *ims = find(h, n, RLB_HDR_IF_MODIFIED_SINCE);
    cd->inm = inm ? (struct rlb_str){inm->value, inm->value_len} : (struct rlb_str){NULL, 0};
    cd->ims = ims ? rlb_http_date_parse(ims->value, ims->value_len) : -1;
    cd->present = inm || ims;
}

/* Weak comparison (RFC 9110 8.8.3.2): W/ does not matter. */
static bool etag_listed(struct rlb_str list, const char *etag, uint32_t etag_len)
{
    if (etag_len >= 2 && etag[0] == 'W' && etag[1] == '/')
        etag += 2, etag_len -= 2;
    size_t i = 0;
    while (i < list.len) {
        while (i < list.len && (list.ptr[i] == ' ' || list.ptr[i] == '\t' || list.ptr[i] == ','))
            i++;
        if (i < list.len && list.ptr[i] == '*')
            return true;
        if (i + 1 < list.len && list.ptr[i] == 'W' && list.ptr[i + 1] == '/')
            i += 2;
        size_t s = i;
        if (i < list.len && list.ptr[i] == '"') {
            i++;
            while (i < list.len && list.ptr[i] != '"')
                i++;
            if (i < list.len)
                i++;
        } else {
            while (i < list.len && list.ptr[i] != ',')
                i++;
        }
        if (i - s == etag_len && memcmp(list.ptr + s, etag, etag_len) == 0)
            return true;
    }
    return false;
}

static bool not_modified(const struct rlb_cache_entry *e, const struct conditionals *cd)
{
    if (!cd->present || e->status != 200)
        return false;
    if (cd->inm.len)
        return e->etag && etag_listed(cd->inm, e->etag, e->etag_len);
    if (cd->ims < 0)
        return false;
    int64_t lm = e->last_modified;
    return lm >= 0 && lm <= cd->ims;
}

static const char *const label_text[] = {
    [RLB_XCACHE_HIT] = "HIT", [RLB_XCACHE_MISS] = "MISS", [RLB_XCACHE_STALE] = "STALE",
    [RLB_XCACHE_REVALIDATED] = "REVALIDATED", [RLB_XCACHE_BYPASS] = "BYPASS",
};

/* "X-Cache: ...\r\nCache-Status: ...\r\n" (RFC 9211) into <out>; returns the length. */
static int status_lines(char *out, size_t cap, uint8_t label, int64_t ttl, bool stored)
{
    switch (label) {
    case RLB_XCACHE_HIT:
    case RLB_XCACHE_STALE:
        return snprintf(out, cap, "X-Cache: %s\r\nCache-Status: ringlb; hit; ttl=%lld\r\n", label_text[label],
                        (long long)ttl);
    case RLB_XCACHE_REVALIDATED:
        return snprintf(out, cap, "X-Cache: REVALIDATED\r\nCache-Status: ringlb; fwd=stale; fwd-status=304\r\n");
    case RLB_XCACHE_MISS:
        return snprintf(out, cap, "X-Cache: MISS\r\nCache-Status: ringlb; fwd=miss%s\r\n", stored ? "; stored" : "");
    case RLB_XCACHE_BYPASS:
        return snprintf(out, cap, "X-Cache: BYPASS\r\nCache-Status: ringlb; fwd=bypass\r\n");
    default:
        return 0;
    }
}

static char *put_lit(char *p, const char *s)
{
    size_t n = strlen(s); /* of literals: folded by the compiler */
    memcpy(p, s, n);
    return p + n;
}

static char *put_i64(char *p, int64_t v)
{
    char tmp[24];
    int n = 0;
    uint64_t u = v < 0 ? (uint64_t)-v : (uint64_t)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *p++ = '-';
    while (n)
        *p++ = tmp[--n];
    return p;
}

/* Everything of a local answer is queued: keep-alive or close, as for a proxied response. Returns true when
 * the connection is ready for its next request. */
static bool finish_local(struct rlb_worker *w, struct rlb_conn *c)
{
    struct rlb_txn *t = c->txn;
    rlb_conn_flush(w, c);
    if ((t->flags & RLB_TF_CLIENT_CLOSE) || w->draining) {
        c->state = RLB_CS_WAIT;
        rlb__proxy_close_client_after_send(w, c);
        return false;
    }
    rlb__proxy_txn_put(w, c);
    c->state = RLB_CS_HEAD;
    arm(w, c, c->inq_bytes ? RLB_TIMER_CLIENT_HEADER : RLB_TIMER_CLIENT_KEEPALIVE);
    return true;
}

enum { QS_CLOSED = -1, QS_QUEUED = 0, QS_SPLICING = 1 };

/* Whether a hit's body goes by splice instead of a send: its pages are its own, it is past the measured
 * crossover, the kernel writes the socket's plaintext, and nothing queued must go before it. */
static bool splice_hit(const struct rlb_worker *w, const struct rlb_conn *c, const struct rlb_cache_entry *e)
{
    uint32_t min = w->cfg->cache.splice_min;
    return min && e->body_mapped && e->body_len >= min && c->fd >= 0 && !rlb_tls_userspace_tx(c->tls) &&
           (!c->outq || rlb_outq_pending(c->outq) == 0) && !(c->flags & RLB_CF_SEND_INFLIGHT);
}

/* Queues a stored response: its head and body by reference (no copy, no allocation once warm), the
 * generated lines in the queue's arena; or, for a large body, the same head then the body's pages by splice
 * (QS_SPLICING: the connection waits in RLB_CS_WAIT until they are out, see rlb__proxy_cache_splice_ready).
 * A 304 when the client's validators match. QS_CLOSED when the queue had no room (the connection is then
 * closed). */
static int queue_stored(struct rlb_worker *w, struct rlb_conn *c, struct rlb_cache_entry *e, uint8_t label,
                        const struct conditionals *cd, int64_t now)
{
    struct rlb_txn *t = c->txn;
    bool by_splice = splice_hit(w, c, e) && t->method != RLB_METHOD_HEAD;
    struct rlb_outq *q = rlb_conn_outq(w, c);
    if (!q || !rlb_outq_room(q, 5, (t->flags & RLB_TF_SET_VARIANT) ? 512 : 256)) {
        rlb__proxy_close_client(w, c, true);
        return QS_CLOSED;
    }
    bool nm = cd && not_modified(e, cd);
    by_splice = by_splice && !nm;
    int32_t id = rlb_cache_pin(w->cache, e);
    if (id == RLB_BUF_NONE) {
        rlb__proxy_close_client(w, c, true);
        return QS_CLOSED;
    }
    if (nm)
        rlb_outq_push_buf(q, &w->bufs, id, e->head304, e->head304_len);
    else
        rlb_outq_push_buf(q, &w->bufs, id, e->head, e->head_len);
    int64_t age = rlb_cache_current_age(e->initial_age, e->response_time, now);
    /* Written by hand: printf was a third of ringlb's own time per hit. */
    char *start = rlb_outq_reserve(q, 256), *p = start;
    if (!nm && e->status != 204) { /* a 204 carries none (RFC 9110 8.6) */
        p = put_lit(p, "Content-Length: ");
        p = put_i64(p, (int64_t)e->body_len);
        p = put_lit(p, "\r\n");
    }
    p = put_lit(p, "Age: ");
    p = put_i64(p, age);
    p = put_lit(p, "\r\n");
    if (w->cfg->cache.status_header) {
        if (label == RLB_XCACHE_HIT || label == RLB_XCACHE_STALE) {
            p = put_lit(p, label == RLB_XCACHE_HIT ? "X-Cache: HIT\r\n" : "X-Cache: STALE\r\n");
            p = put_lit(p, "Cache-Status: ringlb; hit; ttl=");
            p = put_i64(p, e->lifetime - age);
            p = put_lit(p, "\r\n");
        } else {
            p += status_lines(p, 128, label, e->lifetime - age, false);
        }
    }
    if (t->flags & RLB_TF_CLIENT_CLOSE)
        p = put_lit(p, "Connection: close\r\n");
    else if (t->flags & RLB_TF_CLIENT_HTTP10)
        p = put_lit(p, "Connection: keep-alive\r\n");
    rlb_outq_commit(q, (size_t)(p - start));
    if (t->flags & RLB_TF_SET_VARIANT) {
        char *cookie = rlb_outq_reserve(q, 256);
        rlb_outq_commit(q, rlb__proxy_variant_cookie(w, t, cookie, 256));
    }
    struct rlb_str via = rlb__proxy_via_line(w);
    rlb_outq_push_static(q, via.ptr, via.len);
    rlb_outq_push_static(q, "\r\n", 2);
    int status = nm ? 304 : e->status;
    w->stats.responses[status / 100 < 6 ? status / 100 : 0]++;
    t->flags |= RLB_TF_RESP_STARTED;
    t->status = (uint16_t)status;
    if (e->state == RLB_CE_READY)
        rlb_cache_touch(w->cache, e);
    if (by_splice && ctxn_get(w, t)) {
        int rc = rlb__proxy_splice_stored(w, c, e);
        if (rc != RLB_RELAY_BAD) { /* RLB_RELAY_BAD: no pipe; the head is still queued, the body joins it */
            rlb_buf_unref(&w->bufs, id);
            if (rc == RLB_RELAY_CLIENT_GONE) {
                rlb__proxy_close_client(w, c, true);
                return QS_CLOSED;
            }
            if (rc == RLB_RELAY_MORE) {
                c->state = RLB_CS_WAIT;
                return QS_SPLICING;
            }
            return QS_QUEUED;
        }
    }
    if (!nm && t->method != RLB_METHOD_HEAD)
        rlb_outq_push_buf(q, &w->bufs, id, e->body, e->body_len);
    rlb_buf_unref(&w->bufs, id); /* the pieces hold their own references */
    return QS_QUEUED;
}

void rlb__proxy_cache_splice_ready(struct rlb_worker *w, struct rlb_conn *c)
{
    int rc = rlb__proxy_splice_stored(w, c, NULL);
    if (rc == RLB_RELAY_CLIENT_GONE || rc == RLB_RELAY_BAD)
        rlb__proxy_close_client(w, c, true);
    else if (rc == RLB_RELAY_DONE && finish_local(w, c))
        rlb__proxy_client_process(w, c); /* pipelined requests */
}

/* Waits for the fetch <f> of the same key: the head stays in the input until the fetch ends. */
static int wait_for(struct rlb_worker *w, struct rlb_conn *c, struct rlb_txn *t, struct rlb_cache_entry *f)
{
    struct rlb_cache_txn *ct = ctxn_get(w, t);
    if (!ct || !rlb_cache_wait(w->cache, f, slot(w, c), c->gen))
        return RLB_CACHE_FORWARD;
    ct->wait = f;
    w->stats.cache_collapsed++;
    c->state = RLB_CS_WAIT;
    arm(w, c, RLB_TIMER_CACHE_WAIT);
    return RLB_CACHE_WAITING;
}

static bool unsafe_invalidation(struct rlb_worker *w, struct rlb_txn *t, const char *key, size_t key_len,
                                struct rlb_str host)
{
    struct rlb_cache_txn *ct = ctxn_get(w, t);
    if (!ct)
        return false;
    ct->inval = malloc(key_len + host.len + 1);
    if (!ct->inval)
        return false;
    memcpy(ct->inval, key, key_len);
    memcpy(ct->inval + key_len, host.ptr, host.len);
    ct->inval_len = (uint32_t)key_len;
    ct->inval_host_len = (uint32_t)host.len;
    ct->label = RLB_XCACHE_BYPASS;
    return true;
}

/* stale-while-revalidate (RFC 5861 3): the stale answer goes out at once, and a client of our own, without a
 * socket, sends this request again through the whole path, forced to revalidate. Its response is stored (or
 * refreshes the entry) and goes nowhere else. Started from the wake list, not inside this request. */
static void revalidate_in_background(struct rlb_worker *w, const struct rlb_conn *c, const struct rlb_http_request *req)
{
    struct rlb_cache *cache = w->cache;
    if (req->head_len > w->bufs.linear_size || cache->num_wake == cache->cap_wake)
        return; /* then the next request after the window revalidates */
    int32_t lin = rlb_linear_alloc(&w->bufs);
    if (lin == RLB_BUF_NONE)
        return;
    struct rlb_conn *v = rlb_conn_alloc(w, RLB_CONN_CLIENT, -1);
    if (!v) {
        rlb_buf_unref(&w->bufs, lin);
        return;
    }
    const char *head = rlb_buf_ptr(&w->bufs, c->inq_head) + w->bufs.segs[c->inq_head].off;
    memcpy(rlb_buf_ptr(&w->bufs, lin), head, req->head_len);
    w->bufs.segs[lin].off = 0;
    w->bufs.segs[lin].len = req->head_len;
    rlb_conn_inq_append(w, v, lin);
    v->listener = c->listener;
    memcpy(v->ip, c->ip, sizeof(v->ip));
    v->ip_len = c->ip_len;
    v->state = RLB_CS_HEAD;
    v->flags |= RLB_CF_EOF | RLB_CF_CACHE_REVALIDATE; /* nothing more will come from it */
    cache->wake[cache->num_wake++] = (uint64_t)rlb_conn_slot(w, v) << 32 | v->gen;
}

int rlb__proxy_cache_request(struct rlb_worker *w, struct rlb_conn *c, const struct rlb_http_request *req,
                             struct rlb_str host, struct rlb_str path)
{
    struct rlb_txn *t = c->txn;
    const struct rlb_cache_cfg *cfg = &w->cfg->cache;
    bool nowait = c->flags & RLB_CF_CACHE_NOWAIT;
    c->flags &= (uint16_t)~RLB_CF_CACHE_NOWAIT;
    if (!w->cache || t->route->cache_off || (t->flags & RLB_TF_UPGRADE))
        return RLB_CACHE_FORWARD;
    char ident[KEY_MAX];
    size_t key_len = rlb_cache_key_build(ident, sizeof(ident), cfg->key_host, (enum rlb_cache_query)cfg->key_query,
                                         host, path);
    bool safe_read = req->method_id == RLB_METHOD_GET || req->method_id == RLB_METHOD_HEAD;
    if (!safe_read || key_len == 0 || req->body != RLB_BODY_NONE || find(req->headers, req->num_headers, RLB_HDR_RANGE)) {
        /* Partial content is passed through, never stored or served from a whole entry. */
        t->flags |= RLB_TF_CACHE_BYPASS;
        w->stats.cache_bypass++;
        if (key_len && rlb_cache_method_unsafe(req->method_id))
            unsafe_invalidation(w, t, ident, key_len, host);
        return RLB_CACHE_FORWARD;
    }
    int kh_len = 0;
    if (cfg->num_key_headers) {
        kh_len = rlb_cache_vary_values(ident + key_len, sizeof(ident) - key_len,
                                       (struct rlb_str){cfg->key_headers_joined, strlen(cfg->key_headers_joined)},
                                       req->headers, req->num_headers);
        if (kh_len < 0) {
            t->flags |= RLB_TF_CACHE_BYPASS;
            w->stats.cache_bypass++;
            return RLB_CACHE_FORWARD;
        }
    }
    if (t->route->num_splits && key_len + (size_t)kh_len + 8 < sizeof(ident)) {
        /* An A/B split's variants are different responses: each has its own entries. */
        kh_len += snprintf(ident + key_len + kh_len, 8, "#%u\n", t->variant);
    }
    struct rlb_cc cc;
    request_cc(&cc, req->headers, req->num_headers);
    /* The primary key alone: invalidation and PURGE find every key-header variant through it. */
    uint64_t hash = rlb_cache_hash(ident, (uint32_t)key_len);
    struct rlb_cache_found found;
    rlb_cache_lookup(w->cache, hash, ident, (uint32_t)key_len, (uint32_t)kh_len, req->headers, req->num_headers,
                     &found);
    int64_t now = wall_now();
    struct rlb_cache_entry *e = found.ready;
    if (e) {
        struct rlb_cache_freshness f = {
            .age = rlb_cache_current_age(e->initial_age, e->response_time, now),
            .lifetime = e->lifetime,
            .resp_flags = e->resp_flags,
            .swr = e->swr,
        };
        enum rlb_cache_use use = rlb_cache_usable(&f, &cc);
        if (c->flags & RLB_CF_CACHE_REVALIDATE) {
            if (found.filling) {
                rlb__proxy_close_client(w, c, false); /* someone fetches it already */
                return RLB_CACHE_SERVED;
            }
            use = RLB_USE_VALIDATE;
        }
        if (use == RLB_USE_SWR && !found.filling)
            revalidate_in_background(w, c, req);
        if (use != RLB_USE_VALIDATE) {
            uint8_t label = use == RLB_USE_FRESH ? RLB_XCACHE_HIT : RLB_XCACHE_STALE;
            if (use == RLB_USE_FRESH)
                w->stats.cache_hits++;
            else
                w->stats.cache_stale++;
            struct conditionals cd;
            conditionals_of(&cd, req->headers, req->num_headers);
            rlb_conn_inq_consume(w, c, req->head_len);
            if (queue_stored(w, c, e, label, &cd, now) == QS_QUEUED)
                finish_local(w, c);
            return RLB_CACHE_SERVED;
        }
    }
    if (cc.flags & RLB_CC_ONLY_IF_CACHED) {
        /* RFC 9111 5.2.1.7: nothing usable is stored, and the origin must not be asked. */
        rlb__proxy_send_error(w, c, 504);
        return RLB_CACHE_SERVED;
    }
    if (found.filling && !nowait)
        return wait_for(w, c, t, found.filling);
    struct rlb_cache_txn *ct = ctxn_get(w, t);
    if (!ct)
        return RLB_CACHE_FORWARD;
    ct->req_cc = cc;
    ct->request_time = now;
    ct->label = e ? RLB_XCACHE_REVALIDATED : RLB_XCACHE_MISS;
    w->stats.cache_misses++;
    if (e) {
        /* Kept for stale-if-error even when the revalidation is not a fetch of our own. */
        rlb_cache_ref(e);
        ct->stale = e;
    }
    if (req->method_id == RLB_METHOD_GET && !(cc.flags & RLB_CC_NO_STORE) && !nowait) {
        const char *head = rlb_buf_ptr(&w->bufs, c->inq_head) + w->bufs.segs[c->inq_head].off;
        ct->fill = rlb_cache_fill_begin(w->cache, hash, ident, (uint32_t)key_len, (uint32_t)kh_len, head,
                                        req->head_len, e);
        update_gauges(w);
    }
    if (!ct->fill && e)
        ct->label = RLB_XCACHE_MISS; /* no validators of ours go out: an ordinary fetch */
    return RLB_CACHE_FORWARD;
}

/* The validators of the entry a fetch revalidates ("If-None-Match: ...\r\n..."), for the request upstream. */
size_t rlb__proxy_cache_validators(const struct rlb_txn *t, char *out, size_t cap)
{
    const struct rlb_cache_txn *ct = t->cache;
    if (!ct || !ct->fill || !ct->fill->stale)
        return 0;
    const struct rlb_cache_entry *e = ct->fill->stale;
    size_t n = 0;
    if (e->etag && e->etag_len + 18 < cap)
        n += (size_t)snprintf(out, cap, "If-None-Match: %.*s\r\n", (int)e->etag_len, e->etag);
    if (e->last_modified_text && n + e->last_modified_len + 22 < cap)
        n += (size_t)snprintf(out + n, cap - n, "If-Modified-Since: %.*s\r\n", (int)e->last_modified_len,
                              e->last_modified_text);
    return n;
}

bool rlb__proxy_cache_fetching(const struct rlb_txn *t)
{
    return t->cache && t->cache->fill;
}

/* ---------------------------------------------------------------------------------------------------------------
 * Storing a response
 */

/* Fields a stored response does not keep: framing and connection management are per hop, Age is computed
 * per answer, and what the route hides stays hidden. */
static bool stored_field(const struct rlb_route_cfg *rt, const struct rlb_http_header *h)
{
    if (h->flags & RLB_HF_HOP)
        return false;
    switch (h->id) {
    case RLB_HDR_CONTENT_LENGTH:
    case RLB_HDR_TRANSFER_ENCODING:
    case RLB_HDR_CONNECTION:
    case RLB_HDR_KEEP_ALIVE:
    case RLB_HDR_PROXY_CONNECTION:
    case RLB_HDR_UPGRADE:
    case RLB_HDR_AGE:
        return false;
    case RLB_HDR_SERVER:
        return !rt || rt->server_mode == RLB_SERVER_PASS;
    case RLB_HDR_X_POWERED_BY:
        return !rt || !rt->hide_powered_by;
    default:
        return true;
    }
}

/* What a 304 carries of the stored fields (RFC 9110 15.4.5). */
static bool field_of_304(uint16_t id)
{
    return id == RLB_HDR_CACHE_CONTROL || id == RLB_HDR_CONTENT_LOCATION || id == RLB_HDR_DATE ||
           id == RLB_HDR_ETAG || id == RLB_HDR_EXPIRES || id == RLB_HDR_VARY;
}

struct meta_in {
    int status;
    struct rlb_str reason;
    const struct rlb_http_header *h; /* the response's fields (stored ones, or merged after a 304) */
    uint32_t n;
    const struct rlb_http_header *req; /* the request's, for the Vary values */
    uint32_t nreq;
    const struct rlb_route_cfg *route;
    int64_t request_time, response_time;
};

static size_t line_len(const struct rlb_http_header *h)
{
    return h->name_len + 2 + h->value_len + 2;
}

static char *put_line(char *p, const struct rlb_http_header *h)
{
    memcpy(p, h->name, h->name_len);
    p += h->name_len;
    *p++ = ':';
    *p++ = ' ';
    memcpy(p, h->value, h->value_len);
    p += h->value_len;
    *p++ = '\r';
    *p++ = '\n';
    return p;
}

/* Computes freshness and builds the response block of <e> from <in>. Returns NULL when storable, else why
 * not (with <e> untouched). */
static const char *build_meta(struct rlb_worker *w, struct rlb_cache_entry *e, const struct meta_in *in,
                              const struct rlb_cc *req_cc, bool authorization)
{
    const struct rlb_cache_cfg *cfg = &w->cfg->cache;
    struct rlb_cc cc;
    rlb_cc_init(&cc);
    struct rlb_cache_times tm = {.request_time = in->request_time, .response_time = in->response_time,
                                 .date = -1, .age = 0, .expires = -1, .last_modified = -1};
    const struct rlb_http_header *etag = NULL, *lm = NULL;
    struct rlb_str vary = {"", 0};
    char vary_joined[512];
    size_t vary_len = 0;
    bool set_cookie = false, has_expires = false, vary_star = false;
    for (uint32_t i = 0; i < in->n; i++) {
        const struct rlb_http_header *h = &in->h[i];
        switch (h->id) {
        case RLB_HDR_CACHE_CONTROL:
            rlb_cc_parse(&cc, h->value, h->value_len);
            break;
        case RLB_HDR_DATE:
            if (tm.date < 0)
                tm.date = rlb_http_date_parse(h->value, h->value_len);
            break;
        case RLB_HDR_AGE: {
            int64_t a = rlb_delta_seconds(h->value, h->value_len);
            if (a > tm.age)
                tm.age = a;
            break;
        }
        case RLB_HDR_EXPIRES:
            if (!has_expires) {
                int64_t x = rlb_http_date_parse(h->value, h->value_len);
                tm.expires = x < 0 ? 0 : x; /* invalid means already expired (RFC 9111 5.3) */
            }
            has_expires = true;
            break;
        case RLB_HDR_LAST_MODIFIED:
            if (!lm) {
                lm = h;
                tm.last_modified = rlb_http_date_parse(h->value, h->value_len);
            }
            break;
        case RLB_HDR_ETAG:
            if (!etag)
                etag = h;
            break;
        case RLB_HDR_SET_COOKIE:
            set_cookie = true;
            break;
        case RLB_HDR_VARY:
            if (vary_len + h->value_len + 2 > sizeof(vary_joined))
                return "Vary too long";
            if (vary_len) {
                vary_joined[vary_len++] = ',';
                vary_joined[vary_len++] = ' ';
            }
            memcpy(vary_joined + vary_len, h->value, h->value_len);
            vary_len += h->value_len;
            break;
        default:
            break;
        }
    }
    /* RFC 9110 6.6.1: a cache that stores a response without Date gives it one, the time it came. */
    char date_line[40] = "";
    size_t date_len = 0;
    if (!find(in->h, in->n, RLB_HDR_DATE)) {
        char d[30];
        rlb_http_date_format(tm.response_time, d);
        date_len = (size_t)snprintf(date_line, sizeof(date_line), "Date: %s\r\n", d);
    }
    if (tm.date < 0)
        tm.date = tm.response_time;
    vary = (struct rlb_str){vary_joined, vary_len};
    char values[2048];
    int values_len = 0;
    if (vary_len) {
        values_len = rlb_cache_vary_values(values, sizeof(values), vary, in->req, in->nreq);
        if (values_len < 0)
            vary_star = true; /* '*' (or values too long to keep) */
    }
    struct rlb_cache_heuristic heur = {cfg->heuristic, cfg->heuristic_percent, cfg->heuristic_max_s};
    int64_t lifetime = rlb_cache_freshness_lifetime(&cc, &tm, in->status, &heur);
    struct rlb_cache_store_ctx sc = {
        .method = RLB_METHOD_GET,
        .status = in->status,
        .req_cc = req_cc,
        .resp_cc = &cc,
        .authorization = authorization,
        .set_cookie = set_cookie,
        .store_set_cookie = cfg->store_set_cookie,
        .vary_star = vary_star,
        .has_expires = has_expires,
        .has_validator = etag || lm,
        .lifetime = lifetime,
    };
    const char *why = rlb_cache_unstorable(&sc);
    if (why)
        return why;

    /* The block: head, head304, Vary names, their values, ETag, Last-Modified. */
    const struct rlb_route_cfg *rt = in->route;
    char status_line[64];
    int sl = snprintf(status_line, sizeof(status_line), "HTTP/1.1 %d %.*s\r\n", in->status,
                      (int)(in->reason.len > 40 ? 40 : in->reason.len), in->reason.ptr);
    size_t head_len = (size_t)sl, h304_len = sizeof("HTTP/1.1 304 Not Modified\r\n") - 1;
    for (uint32_t i = 0; i < in->n; i++) {
        if (stored_field(rt, &in->h[i])) {
            head_len += line_len(&in->h[i]);
            if (field_of_304(in->h[i].id))
                h304_len += line_len(&in->h[i]);
        }
    }
    const char *server = rt && rt->server_mode == RLB_SERVER_REPLACE ? rt->server_value : NULL;
    if (server)
        head_len += 8 + strlen(server) + 2;
    head_len += date_len;
    h304_len += date_len;
    size_t size = head_len + h304_len + vary_len + (size_t)values_len + (etag ? etag->value_len : 0) +
                  (lm ? lm->value_len : 0);
    char *meta = malloc(size ? size : 1);
    if (!meta)
        return "out of memory";
    char *p = meta;
    memcpy(p, status_line, (size_t)sl);
    p += sl;
    for (uint32_t i = 0; i < in->n; i++)
        if (stored_field(rt, &in->h[i]))
            p = put_line(p, &in->h[i]);
    if (server)
        p += sprintf(p, "Server: %s\r\n", server);
    memcpy(p, date_line, date_len);
    p += date_len;
    char *h304 = p;
    memcpy(p, "HTTP/1.1 304 Not Modified\r\n", 27);
    p += 27;
    memcpy(p, date_line, date_len);
    p += date_len;
    for (uint32_t i = 0; i < in->n; i++)
        if (stored_field(rt, &in->h[i]) && field_of_304(in->h[i].id))
            p = put_line(p, &in->h[i]);
    char *vary_p = p;
    memcpy(p, vary_joined, vary_len);
    p += vary_len;
    char *values_p = p;
    memcpy(p, values, (size_t)values_len);
    p += values_len;
    char *etag_p = p;
    if (etag) {
        memcpy(p, etag->value, etag->value_len);
        p += etag->value_len;
    }
    char *lm_p = p;
    if (lm) {
        memcpy(p, lm->value, lm->value_len);
        p += lm->value_len;
    }
    if (!rlb_cache_set_meta(w->cache, e, meta, (uint32_t)size))
        return "no room within the budget";
    e->head = meta;
    e->head_len = (uint32_t)head_len;
    e->head304 = h304;
    e->head304_len = (uint32_t)h304_len;
    e->vary = vary_p;
    e->vary_len = (uint32_t)vary_len;
    e->vary_values = values_p;
    e->vary_values_len = (uint32_t)values_len;
    e->etag = etag ? etag_p : NULL;
    e->etag_len = etag ? etag->value_len : 0;
    e->last_modified_text = lm ? lm_p : NULL;
    e->last_modified_len = lm ? lm->value_len : 0;
    e->last_modified = tm.last_modified;
    e->status = (uint16_t)in->status;
    e->response_time = tm.response_time;
    e->initial_age = rlb_cache_initial_age(&tm);
    e->lifetime = lifetime;
    e->swr = cc.stale_while_revalidate;
    e->sie = cc.stale_if_error;
    e->resp_flags = cc.flags;
    if (cc.s_maxage != RLB_CC_ABSENT)
        e->resp_flags |= RLB_CC_PROXY_REVALIDATE; /* RFC 9111 5.2.2.10 */
    return NULL;
}

/* The request a fetch was made for, parsed again from the copy the fetch keeps. */
static uint32_t fetch_request(struct rlb_worker *w, const struct rlb_cache_entry *f, bool *authorization)
{
    struct rlb_http_request req;
    req.headers = w->cache->hdr;
    req.max_headers_capacity = w->cache->hdr_cap;
    if (rlb_http1_parse_request(f->req, f->req_len, &w->cfg->limits, &req) <= 0)
        return 0;
    if (authorization)
        *authorization = find(req.headers, req.num_headers, RLB_HDR_AUTHORIZATION) != NULL;
    return req.num_headers;
}

/* A 304 answered our validators: the stored fields are updated from it (RFC 9111 4.3.4), freshness anew. */
static bool refresh_stored(struct rlb_worker *w, struct rlb_txn *t, struct rlb_cache_entry *e,
                           const struct rlb_http_response *resp, uint32_t nreq)
{
    /* The stored head, parsed (after the 304's own headers are copied out of the shared array). */
    uint32_t n304 = resp->num_headers;
    struct rlb_http_header *merged = malloc((n304 + w->cfg->limits.max_headers) * sizeof(*merged));
    size_t copy_len = e->head_len + 2;
    char *copy = malloc(copy_len);
    if (!merged || !copy) {
        free(merged);
        free(copy);
        return false;
    }
    memcpy(merged, resp->headers, n304 * sizeof(*merged));
    memcpy(copy, e->head, e->head_len);
    memcpy(copy + e->head_len, "\r\n", 2);
    struct rlb_http_response stored;
    stored.headers = merged + n304;
    stored.max_headers_capacity = w->cfg->limits.max_headers;
    bool ok = rlb_http1_parse_response(copy, copy_len, &w->cfg->limits, RLB_METHOD_GET, &stored) > 0;
    uint32_t n = n304;
    for (uint32_t i = 0; ok && i < stored.num_headers; i++) {
        const struct rlb_http_header *h = &stored.headers[i];
        bool replaced = false;
        for (uint32_t k = 0; k < n304 && !replaced; k++)
            replaced = rlb_str_ieq(merged[k].name, merged[k].name_len, h->name, h->name_len);
        if (!replaced)
            merged[n++] = *h;
    }
    /* The 304's framing fields say nothing about the stored body. */
    uint32_t kept = 0;
    for (uint32_t i = 0; i < n; i++)
        if (merged[i].id != RLB_HDR_CONTENT_LENGTH && merged[i].id != RLB_HDR_TRANSFER_ENCODING)
            merged[kept++] = merged[i];
    if (ok) {
        struct rlb_cache_txn *ct = t->cache;
        struct meta_in in = {
            .status = e->status, .reason = stored.reason, .h = merged, .n = kept,
            .req = w->cache->hdr, .nreq = nreq, .route = t->route,
            .request_time = ct->request_time, .response_time = wall_now(),
        };
        const char *why = build_meta(w, e, &in, &ct->req_cc, false);
        ok = why == NULL;
        if (!ok)
            rlb_log_debug("cache: a 304 made a stored response unstorable (%s)", why);
    }
    free(merged);
    free(copy);
    return ok;
}

/* The upstream connection of a response answered here: the head is consumed, the connection parked if
 * nothing else of it is pending, else closed. */
static void release_upstream(struct rlb_worker *w, struct rlb_conn *u, struct rlb_txn *t,
                             const struct rlb_http_response *resp, bool reusable)
{
    rlb_conn_inq_consume(w, u, resp->head_len);
    if (!reusable || (resp->flags & RLB_MSG_CONN_CLOSE) || resp->minor_version == 0 || u->inq_bytes ||
        !(t->flags & RLB_TF_REQ_DONE))
        t->flags |= RLB_TF_UPSTREAM_CLOSE;
    rlb__proxy_unlink_pair(w, u);
    bool parked = !(t->flags & RLB_TF_UPSTREAM_CLOSE) && rlb_conn_unsent(u) == 0 &&
                  !(u->flags & RLB_CF_SEND_INFLIGHT) && rlb_upstream_park(w, u);
    if (!parked)
        rlb_conn_close(w, u, !reusable);
}

static bool serve_stale_entry(struct rlb_worker *w, struct rlb_conn *c, uint8_t label)
{
    struct rlb_txn *t = c->txn;
    struct rlb_cache_entry *e = t->cache->stale;
    rlb_timer_cancel(&w->timers, w->conns, slot(w, c));
    w->stats.cache_stale++;
    if (label == RLB_XCACHE_REVALIDATED)
        w->stats.cache_revalidated++;
    if (queue_stored(w, c, e, label, NULL, wall_now()) == QS_QUEUED && finish_local(w, c))
        rlb__proxy_client_process(w, c); /* pipelined requests */
    return true;
}

/* The requests waiting for a fetch whose response will not be stored go to the origin side by side instead
 * of queueing for one fetch after another. */
static void release_waiters(struct rlb_worker *w, const struct rlb_cache_entry *f)
{
    for (uint32_t i = 0; i < f->num_waiters; i++) {
        struct rlb_conn *c = &w->conns[f->waiters[i] >> 32];
        if (c->gen == (uint32_t)f->waiters[i] && c->kind == RLB_CONN_CLIENT)
            c->flags |= RLB_CF_CACHE_NOWAIT;
    }
}

bool rlb__proxy_cache_stand_in(struct rlb_worker *w, struct rlb_conn *c)
{
    struct rlb_txn *t = c->txn;
    struct rlb_cache_txn *ct = t ? t->cache : NULL;
    if (!ct || !ct->stale || (t->flags & RLB_TF_RESP_STARTED))
        return false;
    struct rlb_cache_entry *e = ct->stale;
    struct rlb_cache_freshness f = {
        .age = rlb_cache_current_age(e->initial_age, e->response_time, wall_now()),
        .lifetime = e->lifetime,
        .resp_flags = e->resp_flags,
        .swr = e->swr,
    };
    if (!rlb_cache_stale_if_error(&f, &ct->req_cc, e->sie))
        return false;
    if (c->state == RLB_CS_HEAD) {
        /* No backend could even be asked: the head is still unread in the input, and with it whatever was
         * pipelined behind; answer, then close, as for an error. */
        rlb_conn_inq_clear(w, c);
        t->flags |= RLB_TF_CLIENT_CLOSE;
    }
    return serve_stale_entry(w, c, RLB_XCACHE_STALE);
}

static void invalidate_location(struct rlb_worker *w, const struct rlb_cache_txn *ct, const struct rlb_http_header *h)
{
    /* Only the same host: another origin's responses are not this request's to invalidate (RFC 9111 4.4). */
    struct rlb_str host = {ct->inval + ct->inval_len, ct->inval_host_len};
    struct rlb_str target = {h->value, h->value_len};
    if (target.len && target.ptr[0] != '/') {
        struct rlb_str th = {NULL, 0}, path = target;
        rlb_route_split_target(target.ptr, target.len, &th, &path);
        if (!rlb_str_ieq(th.ptr, th.len, host.ptr, host.len))
            return;
        target = path;
    }
    if (!target.len || target.ptr[0] != '/')
        return;
    char key[KEY_MAX];
    const struct rlb_cache_cfg *cfg = &w->cfg->cache;
    size_t n = rlb_cache_key_build(key, sizeof(key), cfg->key_host, (enum rlb_cache_query)cfg->key_query, host, target);
    if (n)
        w->stats.cache_purged += rlb_cache_invalidate(w->cache, key, (uint32_t)n, false);
}

int rlb__proxy_cache_response(struct rlb_worker *w, struct rlb_conn *c, struct rlb_conn *u,
                              const struct rlb_http_response *resp, char *extra, size_t cap)
{
    struct rlb_txn *t = c->txn;
    struct rlb_cache_txn *ct = t->cache;
    if (!w->cache)
        return 0;
    int n = 0;
    if (!ct) {
        if ((t->flags & RLB_TF_CACHE_BYPASS) && w->cfg->cache.status_header)
            n = status_lines(extra, cap, RLB_XCACHE_BYPASS, 0, false);
        return n;
    }
    if (ct->inval && resp->status >= 200 && resp->status < 400) {
        w->stats.cache_purged += rlb_cache_invalidate(w->cache, ct->inval, ct->inval_len, false);
        for (uint32_t i = 0; i < resp->num_headers; i++)
            if (resp->headers[i].id == RLB_HDR_LOCATION || resp->headers[i].id == RLB_HDR_CONTENT_LOCATION)
                invalidate_location(w, ct, &resp->headers[i]);
        update_gauges(w);
    }
    struct rlb_cache_entry *f = ct->fill;
    bool error = resp->status == 500 || resp->status == 502 || resp->status == 503 || resp->status == 504;
    if (f && f->stale && resp->status == 304) {
        bool authorization = false;
        uint32_t nreq = fetch_request(w, f, &authorization);
        struct conditionals cd;
        conditionals_of(&cd, w->cache->hdr, nreq);
        struct rlb_cache_entry *e = f->stale;
        bool fresh = refresh_stored(w, t, e, resp, nreq);
        release_upstream(w, u, t, resp, true);
        if (!fresh) {
            rlb_cache_remove(w->cache, e);
            /* The stored body is still the one the origin confirmed: serve it this once. */
        }
        w->stats.cache_revalidated++;
        rlb_timer_cancel(&w->timers, w->conns, slot(w, c));
        /* The client's validators point into the fetch's copy of the request: answer before it goes. */
        int qs = queue_stored(w, c, e, RLB_XCACHE_REVALIDATED, &cd, wall_now());
        if (qs == QS_CLOSED)
            return -1; /* the client was closed, and the fetch abandoned with its transaction */
        ct->fill = NULL;
        rlb_cache_fill_abandon(w->cache, f); /* waiters find the refreshed entry */
        update_gauges(w);
        if (qs == QS_QUEUED && finish_local(w, c))
            rlb__proxy_client_process(w, c);
        return -1;
    }
    if (error && ct->stale) {
        struct rlb_cache_freshness fr = {
            .age = rlb_cache_current_age(ct->stale->initial_age, ct->stale->response_time, wall_now()),
            .lifetime = ct->stale->lifetime,
            .resp_flags = ct->stale->resp_flags,
        };
        if (rlb_cache_stale_if_error(&fr, &ct->req_cc, ct->stale->sie)) {
            /* The error's body is not read: the connection cannot be reused. */
            release_upstream(w, u, t, resp, false);
            serve_stale_entry(w, c, RLB_XCACHE_STALE);
            return -1;
        }
    }
    bool stored = false;
    if (f) {
        bool authorization = false;
        uint32_t nreq = fetch_request(w, f, &authorization);
        struct meta_in in = {
            .status = resp->status, .reason = resp->reason, .h = resp->headers, .n = resp->num_headers,
            .req = w->cache->hdr, .nreq = nreq, .route = t->route,
            .request_time = ct->request_time, .response_time = wall_now(),
        };
        const char *why = nreq ? build_meta(w, f, &in, &ct->req_cc, authorization) : "request unreadable";
        if (!why && resp->body == RLB_BODY_LENGTH && !rlb_cache_reserve_body(w->cache, f, resp->content_length))
            why = "larger than max_object or the budget";
        if (why) {
            rlb_log_debug("cache: not storing %d: %s", resp->status, why);
            if (f->stale && resp->status >= 200 && resp->status < 300)
                rlb_cache_remove(w->cache, f->stale); /* a new representation: the old one is outdated */
            ct->fill = NULL;
            release_waiters(w, f);
            rlb_cache_fill_abandon(w->cache, f);
            update_gauges(w);
        } else {
            ct->storing = true;
            stored = true;
        }
    }
    if (w->cfg->cache.status_header)
        n = status_lines(extra, cap, ct->label == RLB_XCACHE_REVALIDATED ? RLB_XCACHE_MISS : ct->label, 0, stored);
    return n;
}

void rlb__proxy_cache_body(struct rlb_worker *w, struct rlb_txn *t, const char *p, size_t len)
{
    struct rlb_cache_txn *ct = t->cache;
    if (!ct->storing)
        return;
    if (!rlb_cache_fill_append(w->cache, ct->fill, p, len)) {
        rlb_log_debug("cache: abandoning an object past max_object or the budget");
        release_waiters(w, ct->fill);
        ct->storing = false;
        rlb_cache_fill_abandon(w->cache, ct->fill);
        ct->fill = NULL;
        update_gauges(w);
    }
}

void rlb__proxy_cache_complete(struct rlb_worker *w, struct rlb_txn *t)
{
    struct rlb_cache_txn *ct = t->cache;
    if (!ct || !ct->storing)
        return;
    /* A close-delimited body cut by a reset is not whole: storing it would serve the truncation. */
    if (ct->fill->purged) {
        rlb_cache_fill_abandon(w->cache, ct->fill);
    } else {
        rlb_cache_fill_finish(w->cache, ct->fill);
        w->stats.cache_stored++;
    }
    ct->fill = NULL;
    ct->storing = false;
    update_gauges(w);
}

/* ---------------------------------------------------------------------------------------------------------------
 * Waiting and purging
 */

static void resume_waiter(struct rlb_worker *w, struct rlb_conn *c, bool timed_out)
{
    struct rlb_txn *t = c->txn;
    t->cache->wait = NULL;
    if (timed_out)
        c->flags |= RLB_CF_CACHE_NOWAIT;
    uint16_t keep = t->flags & (RLB_TF_CLIENT_CLOSE);
    rlb__proxy_txn_put(w, c);
    w->stats.requests--; /* it is counted again when its head is read again */
    c->state = RLB_CS_HEAD;
    rlb_timer_cancel(&w->timers, w->conns, slot(w, c));
    rlb__proxy_client_process(w, c);
    if (keep && c->txn && c->state == RLB_CS_WAIT)
        c->txn->flags |= keep; /* the client half-closed while waiting */
}

void rlb_proxy_cache_wake(struct rlb_worker *w)
{
    struct rlb_cache *cache = w->cache;
    while (cache->num_wake) {
        uint64_t v = cache->wake[--cache->num_wake];
        struct rlb_conn *c = &w->conns[v >> 32];
        if (c->gen != (uint32_t)v || c->kind != RLB_CONN_CLIENT)
            continue;
        if ((c->flags & RLB_CF_CACHE_REVALIDATE) && c->state == RLB_CS_HEAD && !c->txn) {
            w->stats.cache_background++;
            rlb__proxy_client_process(w, c);
        } else if (c->state == RLB_CS_WAIT && c->txn && c->txn->cache && c->txn->cache->wait) {
            resume_waiter(w, c, false);
        }
        rlb_conn_try_free(w, c);
    }
}

void rlb__proxy_cache_wait_timeout(struct rlb_worker *w, struct rlb_conn *c)
{
    if (c->state == RLB_CS_WAIT && c->txn && c->txn->cache && c->txn->cache->wait)
        resume_waiter(w, c, true);
}

static bool loopback(const struct rlb_conn *c)
{
    return strncmp(c->ip, "127.", 4) == 0 || strcmp(c->ip, "::1") == 0;
}

static void send_text(struct rlb_worker *w, struct rlb_conn *c, int status, const char *body)
{
    struct rlb_outq *q = rlb_conn_outq(w, c);
    if (!q || !rlb_outq_room(q, 1, 256)) {
        rlb__proxy_close_client(w, c, true);
        return;
    }
    char *p = rlb_outq_reserve(q, 256);
    int n = snprintf(p, 256, "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n\r\n%s", status,
                     rlb_http_reason(status), strlen(body), body);
    rlb_outq_commit(q, (size_t)(n < 256 ? n : 255));
    w->stats.responses[status / 100]++;
    c->txn->flags |= RLB_TF_RESP_STARTED;
}

bool rlb__proxy_cache_purge(struct rlb_worker *w, struct rlb_conn *c, const struct rlb_http_request *req,
                            struct rlb_str host, struct rlb_str target)
{
    const struct rlb_cache_cfg *cfg = &w->cfg->cache;
    if (!w->cache || req->method.len != 5 || memcmp(req->method.ptr, "PURGE", 5) != 0)
        return false;
    struct rlb_str token = {NULL, 0};
    for (uint32_t i = 0; i < req->num_headers; i++)
        if (rlb_str_ieq_lit(req->headers[i].name, req->headers[i].name_len, "x-purge-token", 13))
            token = (struct rlb_str){req->headers[i].value, req->headers[i].value_len};
    rlb_conn_inq_consume(w, c, req->head_len);
    rlb_timer_cancel(&w->timers, w->conns, slot(w, c));
    if (req->body != RLB_BODY_NONE)
        c->txn->flags |= RLB_TF_CLIENT_CLOSE; /* its body is not read */
    /* Constant time: the token is the only secret, and the comparison must not tell how much of it matched. */
    size_t want = cfg->purge_token ? strlen(cfg->purge_token) : 0;
    unsigned diff = token.len != want || !want;
    for (size_t i = 0; want && i < want; i++)
        diff |= (unsigned)(i < token.len ? token.ptr[i] : 0) ^ (unsigned)cfg->purge_token[i];
    if (!cfg->purge_token || !loopback(c) || diff) {
        send_text(w, c, 403, "purge refused\n");
    } else {
        bool prefix = target.len && target.ptr[target.len - 1] == '*';
        if (prefix)
            target.len--;
        char key[KEY_MAX];
        size_t n = rlb_cache_key_build(key, sizeof(key), cfg->key_host, (enum rlb_cache_query)cfg->key_query, host,
                                       target);
        if (!n || (!prefix && (!target.len || target.ptr[0] != '/'))) {
            send_text(w, c, 400, "purge: bad target\n");
        } else {
            uint32_t here = rlb_cache_invalidate(w->cache, key, (uint32_t)n, prefix);
            w->stats.cache_purged += here;
            update_gauges(w);
            bool posted = !w->cache->purges || rlb_cache_purge_post(w->cache->purges, key, (uint32_t)n, prefix);
            char body[96];
            snprintf(body, sizeof(body), "purged %u here%s\n", here, posted ? ", all workers notified" : "; others NOT notified (out of memory)");
            send_text(w, c, posted ? 200 : 500, body);
            rlb_log_info("cache: PURGE %.*s%s: %u entries on worker %u", (int)n, key, prefix ? "*" : "", here, w->id);
        }
    }
    c->state = RLB_CS_WAIT;
    finish_local(w, c);
    return true;
}
