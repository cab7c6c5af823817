/* The TLS record layer of one connection, fed by the ring: no socket call
 * here blocks or even happens. BoringSSL reads ciphertext from the buffers
 * the multishot receive filled and writes records into a buffer the ring
 * sends; plaintext goes into the connection's input queue as if it had come
 * off the socket, and what the proxy queues is encrypted when it flushes.
 * After the handshake the kernel may take the records over (ktls.c). */
#include "tls_internal.h"

#include <ringlb/buf.h>
#include <ringlb/conn.h>
#include <ringlb/log.h>
#include <ringlb/proxy.h>
#include <ringlb/ring.h>
#include <ringlb/worker.h>

#include <openssl/err.h>

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static BIO_METHOD *ring_bio_method;
static pthread_once_t ring_bio_once = PTHREAD_ONCE_INIT;

/* ---------------------------------------------------------------------------------------------------------------
 * Buffers
 */

static char *out_get(struct rlb_tls_worker *tw)
{
    void *b = tw->out_free;
    if (b != NULL) {
        tw->out_free = *(void **)b;
        return b;
    }
    return malloc(RLB_TLS_OUT_SIZE);
}

/* An idle connection holds no ciphertext buffer. */
static void out_release(struct rlb_tls_worker *tw, struct rlb_tls_conn *t)
{
    if (t->out == NULL)
        return;
    *(void **)t->out = tw->out_free;
    tw->out_free = t->out;
    t->out = NULL;
    t->out_len = t->out_sent = 0;
}

/* Record boundaries of the ciphertext BoringSSL consumed: 5-byte headers
 * whose last two bytes give the body length. */
static void track_records(struct rlb_tls_conn *t, const uint8_t *p, size_t n)
{
    while (n) {
        if (t->rec_left == 0) {
            size_t take = 5u - t->rec_hdr_have;
            if (take > n)
                take = n;
            memcpy(t->rec_hdr + t->rec_hdr_have, p, take);
            t->rec_hdr_have = (uint8_t)(t->rec_hdr_have + take);
            p += take;
            n -= take;
            if (t->rec_hdr_have == 5) {
                t->rec_left = (uint32_t)t->rec_hdr[3] << 8 | t->rec_hdr[4];
                t->rec_hdr_have = 0;
            }
        } else {
            size_t take = n < t->rec_left ? n : t->rec_left;
            t->rec_left -= (uint32_t)take;
            p += take;
            n -= take;
        }
    }
}

static bool at_record_boundary(const struct rlb_tls_conn *t)
{
    return t->rec_hdr_have == 0 && t->rec_left == 0;
}

/* ---------------------------------------------------------------------------------------------------------------
 * The BIO: reads from the received buffers, writes into the ciphertext buffer
 */

static int ring_bio_read(BIO *bio, char *dst, int len)
{
    struct rlb_tls_conn *t = BIO_get_data(bio);
    struct rlb_bufs *b = &t->w->bufs;
    BIO_clear_retry_flags(bio);
    if (t->cin_bytes == 0) {
        BIO_set_retry_read(bio);
        return -1;
    }
    size_t n = 0;
    while (n < (size_t)len && t->cin_head != RLB_BUF_NONE) {
        int32_t id = t->cin_head;
        struct rlb_seg *seg = &b->segs[id];
        size_t take = (size_t)len - n < seg->len ? (size_t)len - n : seg->len;
        memcpy(dst + n, rlb_buf_ptr(b, id) + seg->off, take);
        seg->off += (uint32_t)take;
        seg->len -= (uint32_t)take;
        n += take;
        if (seg->len == 0) {
            t->cin_head = seg->next;
            if (t->cin_head == RLB_BUF_NONE)
                t->cin_tail = RLB_BUF_NONE;
            rlb_buf_unref(b, id);
        }
    }
    t->cin_bytes -= (uint32_t)n;
    track_records(t, (const uint8_t *)dst, n);
    return (int)n;
}

static int ring_bio_write(BIO *bio, const char *src, int len)
{
    struct rlb_tls_conn *t = BIO_get_data(bio);
    BIO_clear_retry_flags(bio);
    if (t->out == NULL && (t->out = out_get(t->w->tls)) == NULL)
        return -1;
    size_t room = RLB_TLS_OUT_SIZE - t->out_len;
    if (room == 0) {
        /* Retried once the send in flight completes. */
        BIO_set_retry_write(bio);
        return -1;
    }
    size_t n = (size_t)len < room ? (size_t)len : room;
    memcpy(t->out + t->out_len, src, n);
    t->out_len += (uint32_t)n;
    return (int)n;
}

static long ring_bio_ctrl(BIO *bio, int cmd, long num, void *ptr)
{
    (void)bio;
    (void)num;
    (void)ptr;
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static void make_bio_method(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_TYPE_SOURCE_SINK | 0x80, "ringlb ring");
    if (m != NULL && BIO_meth_set_read(m, ring_bio_read) && BIO_meth_set_write(m, ring_bio_write) &&
        BIO_meth_set_ctrl(m, ring_bio_ctrl))
        ring_bio_method = m;
}

/* ---------------------------------------------------------------------------------------------------------------
 * Attaching and freeing
 */

static struct rlb_tls_conn *attach(struct rlb_worker *w, struct rlb_conn *c, SSL_CTX *ctx)
{
    pthread_once(&ring_bio_once, make_bio_method);
    struct rlb_tls_worker *tw = w->tls;
    if (ring_bio_method == NULL || tw == NULL)
        return NULL;
    struct rlb_tls_conn *t = tw->conn_free;
    if (t != NULL)
        tw->conn_free = t->next_free;
    else if ((t = malloc(sizeof(*t))) == NULL)
        return NULL;
    memset(t, 0, sizeof(*t));
    t->w = w;
    t->owner = tw;
    t->slot = rlb_conn_slot(w, c);
    t->cin_head = t->cin_tail = RLB_BUF_NONE;
    t->ssl = SSL_new(ctx);
    BIO *bio = BIO_new(ring_bio_method);
    if (t->ssl == NULL || bio == NULL) {
        BIO_free(bio);
        SSL_free(t->ssl);
        t->next_free = tw->conn_free;
        tw->conn_free = t;
        ERR_clear_error();
        return NULL;
    }
    BIO_set_data(bio, t);
    BIO_set_init(bio, 1);
    SSL_set_bio(t->ssl, bio, bio);
    SSL_set_app_data(t->ssl, t);
    tw->live++;
    c->tls = t;
    return t;
}

void rlb_tls_free(struct rlb_worker *w, struct rlb_conn *c)
{
    struct rlb_tls_conn *t = c->tls;
    if (t == NULL)
        return;
    SSL_free(t->ssl);
    while (t->cin_head != RLB_BUF_NONE) {
        int32_t id = t->cin_head;
        t->cin_head = w->bufs.segs[id].next;
        rlb_buf_unref(&w->bufs, id);
    }
    out_release(w->tls, t);
    memset(t->client_secret, 0, sizeof(t->client_secret));
    memset(t->server_secret, 0, sizeof(t->server_secret));
    struct rlb_tls_worker *owner = t->owner;
    t->next_free = w->tls->conn_free;
    w->tls->conn_free = t;
    c->tls = NULL;
    owner->live--;
    rlb_tls_retire_check(w, owner);
}

int rlb_tls_accept(struct rlb_worker *w, struct rlb_conn *c)
{
    const struct rlb_tls_server *srv = &w->tls->servers[c->listener];
    struct rlb_tls_conn *t = attach(w, c, srv->ctx[0]);
    if (t == NULL)
        return -1;
    t->listener = c->listener;
    t->ktls_wanted = srv->cfg->ktls;
    SSL_set_accept_state(t->ssl);
    return 0;
}

int rlb_tls_connect(struct rlb_worker *w, struct rlb_conn *u)
{
    struct rlb_tls_client *cl = &w->tls->clients[u->pool];
    const struct rlb_pool_cfg *p = cl->cfg;
    const struct rlb_backend_cfg *be = &p->backends[u->backend];
    struct rlb_tls_conn *t = attach(w, u, cl->ctx);
    if (t == NULL)
        return -1;
    if (rlb_tls_client_setup(t->ssl, p, be) != 0) {
        rlb_tls_free(w, u);
        return -1;
    }
    if (cl->sessions[u->backend] != NULL)
        SSL_set_session(t->ssl, cl->sessions[u->backend]);
    t->phase = RLB_TLS_HANDSHAKE;
    SSL_do_handshake(t->ssl); /* writes the ClientHello; the flush sends it */
    ERR_clear_error();
    return 0;
}

/* ---------------------------------------------------------------------------------------------------------------
 * Sending
 */

static void send_out(struct rlb_worker *w, struct rlb_conn *c)
{
    struct rlb_tls_conn *t = c->tls;
    if ((c->flags & RLB_CF_SEND_INFLIGHT) || t->out_sent == t->out_len || rlb_conn_is_closing(c))
        return;
    struct io_uring_sqe *sqe = rlb_ring_sqe(&w->ring, &w->stats.ring);
    io_uring_prep_send(sqe, c->fd, t->out + t->out_sent, t->out_len - t->out_sent, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, rlb_ud(RLB_OP_SEND, rlb_conn_slot(w, c), c->gen));
    c->flags |= RLB_CF_SEND_INFLIGHT;
    c->ops++;
}

/* Encrypts what the proxy queued: one record per SSL_write, small pieces
 * (generated headers around the client's bytes) gathered into one record,
 * large ones encrypted where they lie. Stops when the ciphertext buffer
 * could not take a whole record, or after a bounded amount of plaintext so
 * that one connection cannot hog the loop. Returns -1 on a BoringSSL error. */
static int encrypt_queued(struct rlb_worker *w, struct rlb_conn *c)
{
    struct rlb_tls_conn *t = c->tls;
    struct rlb_outq *q = c->outq;
    struct rlb_tls_worker *tw = w->tls;
    uint32_t budget = RLB_TLS_PLAIN_PER_FLUSH;
    while (q != NULL && rlb_outq_pending(q) && budget > 0) {
        if (RLB_TLS_OUT_SIZE - t->out_len < sizeof(tw->staging) + RLB_TLS_RECORD_OVERHEAD)
            break;
        uint32_t n = rlb_outq_prepare_send(q, RLB_OUTQ_PIECES);
        const struct iovec *v = &q->iov[q->head];
        const char *src;
        size_t len;
        if (v->iov_len >= 4096) {
            src = v->iov_base;
            len = v->iov_len < sizeof(tw->staging) ? v->iov_len : sizeof(tw->staging);
        } else {
            len = 0;
            for (uint32_t i = 0; i < n && len < sizeof(tw->staging); i++) {
                size_t take = sizeof(tw->staging) - len < v[i].iov_len ? sizeof(tw->staging) - len : v[i].iov_len;
                memcpy(tw->staging + len, v[i].iov_base, take);
                len += take;
            }
            src = tw->staging;
        }
        int r = SSL_write(t->ssl, src, (int)len);
        if (r != (int)len) {
            rlb_outq_sent(q, &w->bufs, 0);
            ERR_clear_error();
            return -1;
        }
        rlb_outq_sent(q, &w->bufs, len);
        budget = len < budget ? budget - (uint32_t)len : 0;
    }
    return 0;
}

void rlb_tls_flush(struct rlb_worker *w, struct rlb_conn *c)
{
    struct rlb_tls_conn *t = c->tls;
    if (t->phase == RLB_TLS_DATA && !(c->flags & RLB_CF_SEND_INFLIGHT) && encrypt_queued(w, c) != 0) {
        rlb_proxy_tls_failed(w, c);
        return;
    }
    send_out(w, c);
}

/* ---------------------------------------------------------------------------------------------------------------
 * Receiving
 */

/* Moves what BoringSSL can decrypt into the input queue, in pieces no larger
 * than one receive buffer, so that a head spanning two of them can still be
 * joined in a linear buffer. Returns the bytes delivered, or -1 on a fatal
 * record error; <eof> is set on close_notify, <starved> when no buffer was free. */
static int64_t decrypt_into_inq(struct rlb_worker *w, struct rlb_conn *c, bool *eof, bool *starved)
{
    struct rlb_tls_conn *t = c->tls;
    struct rlb_bufs *b = &w->bufs;
    uint32_t piece = b->linear_size - w->cfg->limits.max_head_size;
    int64_t delivered = 0;
    for (;;) {
        int32_t lin = rlb_linear_alloc(b);
        if (lin == RLB_BUF_NONE) {
            *starved = true;
            return delivered;
        }
        char *p = rlb_buf_ptr(b, lin);
        uint32_t len = 0;
        bool stop = false, fatal = false;
        while (len < piece) {
            int r = SSL_read(t->ssl, p + len, (int)(piece - len));
            if (r > 0) {
                len += (uint32_t)r;
                continue;
            }
            int e = SSL_get_error(t->ssl, r);
            if (e == SSL_ERROR_ZERO_RETURN)
                *eof = true;
            else if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
                fatal = true;
            stop = true;
            break;
        }
        if (len) {
            b->segs[lin].off = 0;
            b->segs[lin].len = len;
            rlb_conn_inq_append(w, c, lin);
            delivered += len;
        } else {
            rlb_buf_unref(b, lin);
        }
        if (fatal) {
            ERR_clear_error();
            return -1;
        }
        if (stop)
            return delivered;
    }
}

/* Decrypts and hands the plaintext to the proxy; <resume>: the receive ended
 * for want of buffers, and the proxy re-arms it even if nothing is new. */
static void data_input(struct rlb_worker *w, struct rlb_conn *c, bool resume)
{
    struct rlb_tls_conn *t = c->tls;
    bool eof = false, starved = false;
    int64_t n = decrypt_into_inq(w, c, &eof, &starved);
    if (n < 0) {
        rlb_proxy_tls_failed(w, c);
        return;
    }
    if (t->out_len > t->out_sent) {
        /* BoringSSL answered something (a KeyUpdate): the kernel sends our records now, so it cannot go out. */
        if (t->ktls & RLB_KTLS_TX) {
            rlb_proxy_tls_failed(w, c);
            return;
        }
        send_out(w, c);
    }
    if (starved)
        rlb_worker_starved(w, c);
    if (n > 0 || resume)
        rlb_proxy_input(w, c);
    if (eof && !rlb_conn_is_closing(c) && !(c->flags & RLB_CF_EOF))
        rlb_proxy_recv_end(w, c, 0);
}

static void fail_handshake(struct rlb_worker *w, struct rlb_conn *c, const char *why)
{
    struct rlb_tls_conn *t = c->tls;
    struct rlb_tls_worker *tw = w->tls;
    uint32_t code = ERR_peek_error();
    if (c->kind == RLB_CONN_CLIENT && ERR_GET_LIB(code) == ERR_LIB_SSL && ERR_GET_REASON(code) == SSL_R_HTTP_REQUEST) {
        /* Plain HTTP to the TLS port: a person with a browser, most likely; tell them in their protocol, as nginx
         * does, rather than with an alert their client cannot show. */
        static const char answer[] = "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 49\r\n"
                                     "Connection: close\r\n\r\nThe plain HTTP request was sent to an HTTPS port\n";
        if (t->out == NULL)
            t->out = out_get(tw);
        if (t->out != NULL && t->out_len == 0) {
            memcpy(t->out, answer, sizeof(answer) - 1);
            t->out_len = sizeof(answer) - 1;
        }
    }
    char reason[200];
    rlb__tls_error(reason, sizeof(reason), why);
    if (c->kind == RLB_CONN_CLIENT) {
        w->stats.tls_handshake_failures++;
        /* Scanners and broken clients arrive in bursts: one line a second is enough to notice them. */
        if (w->timers.now_ms >= tw->failure_logged_ms + 1000) {
            tw->failure_logged_ms = w->timers.now_ms;
            rlb_log_info("TLS handshake failed on %s: %s", w->cfg->listeners[c->listener].addr.text, reason);
        }
    } else {
        rlb_log_warn("TLS handshake with backend %s failed: %s",
                     w->cfg->pools[c->pool].backends[c->backend].addr.text, reason);
    }
    t->phase = RLB_TLS_FAILED;
    if (c->kind == RLB_CONN_CLIENT && t->out_len > t->out_sent)
        send_out(w, c); /* the alert, then the close */
    else
        rlb_proxy_tls_failed(w, c);
}

static void ktls_progress(struct rlb_worker *w, struct rlb_conn *c);

/* The handshake (and the kernel's takeover, if any) is over: the secrets go, requests may flow. */
static void go_live(struct rlb_worker *w, struct rlb_conn *c, bool starved, bool eof)
{
    struct rlb_tls_conn *t = c->tls;
    memset(t->client_secret, 0, sizeof(t->client_secret));
    memset(t->server_secret, 0, sizeof(t->server_secret));
    if (starved)
        rlb_worker_starved(w, c);
    rlb_proxy_tls_ready(w, c);
    if (eof && !rlb_conn_is_closing(c) && !(c->flags & RLB_CF_EOF))
        rlb_proxy_recv_end(w, c, 0);
}

static void handshake_done(struct rlb_worker *w, struct rlb_conn *c)
{
    struct rlb_tls_conn *t = c->tls;
    t->phase = RLB_TLS_DATA;
    if (c->kind == RLB_CONN_CLIENT) {
        w->stats.tls_handshakes++;
        if (SSL_session_reused(t->ssl))
            w->stats.tls_resumed++;
        if (t->ktls_wanted && rlb_ktls_begin(w, c)) {
            /* The kernel takes the records from the next byte on: what BoringSSL still owes must be sent, and the
             * posted receive stopped, so that no ciphertext lands where plaintext is expected. */
            t->phase = RLB_TLS_KTLS_PREP;
            rlb_conn_pause_recv(w, c);
            send_out(w, c);
            ktls_progress(w, c);
            return;
        }
    }
    send_out(w, c);
    bool eof = false, starved = false;
    if (decrypt_into_inq(w, c, &eof, &starved) < 0) {
        rlb_proxy_tls_failed(w, c);
        return;
    }
    go_live(w, c, starved, eof);
}

static void ktls_progress(struct rlb_worker *w, struct rlb_conn *c)
{
    struct rlb_tls_conn *t = c->tls;
    if (t->phase != RLB_TLS_KTLS_PREP || (c->flags & (RLB_CF_SEND_INFLIGHT | RLB_CF_RECV_ARMED)) ||
        t->out_len > t->out_sent)
        return;
    /* Records that arrived before the receive stopped are BoringSSL's to read; the kernel takes the stream from
     * where they end, if they end on a record boundary (else receiving stays here and only sending moves). */
    bool eof = false, starved = false;
    if (decrypt_into_inq(w, c, &eof, &starved) < 0) {
        rlb_proxy_tls_failed(w, c);
        return;
    }
    if (t->out_len > t->out_sent) { /* BoringSSL answered something: send it first, then try again */
        send_out(w, c);
        return;
    }
    bool rx = !starved && !eof && t->cin_bytes == 0 && at_record_boundary(t) && SSL_pending(t->ssl) == 0;
    t->ktls = (uint8_t)rlb_ktls_install(w, c, rx);
    t->phase = RLB_TLS_DATA;
    out_release(w->tls, t);
    go_live(w, c, starved, eof);
}

static void drive_handshake(struct rlb_worker *w, struct rlb_conn *c)
{
    struct rlb_tls_conn *t = c->tls;
    int r = SSL_do_handshake(t->ssl);
    if (r == 1) {
        handshake_done(w, c);
        return;
    }
    int e = SSL_get_error(t->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        send_out(w, c);
        return;
    }
    fail_handshake(w, c, e == SSL_ERROR_SSL ? "protocol error" : "I/O error");
}

/* New ciphertext (<resume> false), or buffers came back after a starved receive (true). */
static void tls_input(struct rlb_worker *w, struct rlb_conn *c, bool resume)
{
    switch (c->tls->phase) {
    case RLB_TLS_HANDSHAKE:
        drive_handshake(w, c);
        if (resume && !rlb_conn_is_closing(c) && c->tls->phase == RLB_TLS_HANDSHAKE)
            rlb_conn_arm_recv(w, c);
        break;
    case RLB_TLS_KTLS_PREP:
        ktls_progress(w, c);
        break;
    case RLB_TLS_DATA:
        if (rlb_tls_userspace_rx(c->tls))
            data_input(w, c, resume);
        else
            rlb_proxy_input(w, c);
        break;
    default:
        break;
    }
}

void rlb_tls_input(struct rlb_worker *w, struct rlb_conn *c)
{
    tls_input(w, c, true);
}

void rlb_tls_received(struct rlb_worker *w, struct rlb_conn *c, int32_t bid)
{
    struct rlb_tls_conn *t = c->tls;
    struct rlb_seg *seg = &w->bufs.segs[bid];
    if (t->phase == RLB_TLS_FAILED) {
        rlb_buf_unref(&w->bufs, bid);
        return;
    }
    seg->next = RLB_BUF_NONE;
    if (t->cin_tail == RLB_BUF_NONE)
        t->cin_head = bid;
    else
        w->bufs.segs[t->cin_tail].next = bid;
    t->cin_tail = bid;
    t->cin_bytes += seg->len;
    t->saw_bytes = true;
    if (t->phase != RLB_TLS_KTLS_PREP) /* there, the receive's cancellation decides when */
        tls_input(w, c, false);
}

void rlb_tls_recv_stopped(struct rlb_worker *w, struct rlb_conn *c)
{
    if (c->tls->phase == RLB_TLS_KTLS_PREP)
        ktls_progress(w, c);
}

void rlb_tls_sent(struct rlb_worker *w, struct rlb_conn *c, int res)
{
    struct rlb_tls_conn *t = c->tls;
    if (res < 0) {
        rlb_proxy_sent(w, c, res);
        return;
    }
    t->out_sent += (uint32_t)res;
    if (t->out_sent < t->out_len) {
        send_out(w, c);
        return;
    }
    out_release(w->tls, t);
    switch (t->phase) {
    case RLB_TLS_HANDSHAKE:
        drive_handshake(w, c); /* in case it waited for room to write */
        break;
    case RLB_TLS_FAILED:
        rlb_proxy_tls_failed(w, c);
        break;
    case RLB_TLS_KTLS_PREP:
        ktls_progress(w, c);
        break;
    default:
        rlb_proxy_sent(w, c, 0);
        break;
    }
}

bool rlb_tls_close_notify(struct rlb_worker *w, struct rlb_conn *c)
{
    struct rlb_tls_conn *t = c->tls;
    if (t->notify_sent || t->phase != RLB_TLS_DATA)
        return false;
    t->notify_sent = true;
    if (t->ktls & RLB_KTLS_TX) {
        rlb_ktls_send_close_notify(c); /* the socket buffer is empty here: a two-byte record never blocks */
        return false;
    }
    SSL_shutdown(t->ssl); /* 0: ours is written, the peer's is not awaited */
    ERR_clear_error();
    if (t->out_len == t->out_sent)
        return false;
    send_out(w, c);
    return true;
}

void rlb_tls_abandoned(struct rlb_worker *w, struct rlb_conn *c)
{
    struct rlb_tls_conn *t = c->tls;
    if (t != NULL && c->kind == RLB_CONN_CLIENT && (t->phase == RLB_TLS_HANDSHAKE || t->phase == RLB_TLS_KTLS_PREP) &&
        t->saw_bytes)
        w->stats.tls_handshake_failures++;
}
