/* bench_backend: a minimal, fast HTTP/1.1 origin for benchmarks.
 *
 * Usage: bench_backend --port 9001 [--port 9002 ...] [--threads N]
 *                      [--max-body BYTES]
 *
 * Every request gets "200 OK" with a body of the size named by the path
 * /size/<bytes> (0 for any other path), framed by Content-Length.  A query
 * with max-age=<N> (e.g. /size/1024?max-age=3600, other query parameters
 * allowed) makes the response cacheable: it then also carries
 * "Cache-Control: public, max-age=N", an ETag and a Last-Modified (both
 * fixed).  GET /bench-backend/stats is answered with the number of requests
 * answered so far (all threads and ports, the stats requests themselves not
 * counted): "requests=N cacheable=M\n".  Keep-alive
 * unless the client sends "Connection: close" or speaks HTTP/1.0 without
 * "Connection: keep-alive".  Pipelined requests are answered in order;
 * request bodies framed by Content-Length are read and discarded, and the
 * response is sent once the body is in ("Expect: 100-continue" gets an
 * interim 100 first).  A chunked
 * request body is answered with 501 and the connection closed.
 *
 * One epoll loop per thread; each thread has its own SO_REUSEPORT listener
 * per port so the kernel spreads connections.  The body bytes are allocated
 * once and shared by every response (writev, no copying).
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_PORTS 16
#define INBUF_SIZE 16384
#define RESPQ 64 /* pipelined responses queued per connection */
#define HDR_MAX 192
#define MAX_EVENTS 256

enum { K_LISTENER = 1, K_CONN = 2 };

struct listener {
    int kind;
    int fd;
};

struct resp {
    char hdr[HDR_MAX];
    size_t hlen;
    const char *tail; /* static header lines after hdr (cacheable responses, stats), or NULL */
    size_t tlen;
    const char *body; /* g_body, or the stats text */
    size_t blen;
    size_t off;       /* bytes of hdr+tail+body already written */
};

struct conn {
    int kind;
    int fd;
    uint32_t events;    /* current epoll interest */
    bool closing;       /* last response queued; close after flushing */
    size_t inlen;       /* bytes buffered in in[] */
    uint64_t body_left; /* request body bytes still to discard */
    bool pend;          /* a final response waits for the request body */
    bool pend_head, pend_close, pend_ka;
    size_t pend_blen;
    long pend_max_age;
    unsigned qhead, qlen;
    struct resp q[RESPQ];
    char in[INBUF_SIZE];
};

static const char *g_body;
static size_t g_max_body = 16u << 20;
/* requests answered with a final response (stats requests excluded), and the cacheable ones */
static atomic_ulong g_requests, g_cacheable;
/* the fixed validators of cacheable responses and the blank line that ends their head */
static const char CACHE_TAIL[] = "ETag: \"bench-v1\"\r\n"
                                 "Last-Modified: Thu, 01 Jan 2026 00:00:00 GMT\r\n\r\n";
#define STATS_PATH "/bench-backend/stats"
static int g_ports[MAX_PORTS];
static int g_nports;

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static int make_listener(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket");
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0)
        die("setsockopt");
    struct sockaddr_in sa = {
        .sin_family = AF_INET,
        .sin_port = htons((uint16_t)port),
        .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
    };
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        fprintf(stderr, "bench_backend: bind 127.0.0.1:%d: %s\n", port, strerror(errno));
        exit(1);
    }
    if (listen(fd, 4096) < 0)
        die("listen");
    return fd;
}

static void conn_close(int ep, struct conn *c)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c);
}

/* Case-insensitive search for a token in a header value. */
static bool value_has(const char *v, size_t n, const char *tok)
{
    size_t tl = strlen(tok);
    for (size_t i = 0; i + tl <= n; i++)
        if (strncasecmp(v + i, tok, tl) == 0)
            return true;
    return false;
}

/* max_age >= 0: a cacheable response (Cache-Control with that max-age, then CACHE_TAIL) */
static void queue_response(struct conn *c, int status, size_t blen, bool head, bool close_conn,
                           bool ka_header, long max_age)
{
    struct resp *r = &c->q[(c->qhead + c->qlen) % RESPQ];
    r->tail = NULL;
    r->tlen = 0;
    r->body = g_body;
    if (status == 100) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        memcpy(r->hdr, cont, sizeof cont - 1);
        r->hlen = sizeof cont - 1;
        r->blen = 0;
        r->off = 0;
        c->qlen++;
        return;
    }
    const char *reason = status == 200 ? "OK" : status == 400 ? "Bad Request"
                       : status == 431 ? "Request Header Fields Too Large" : "Not Implemented";
    /* at most 17 + 23 + 40 + 38 + 24 + 42 = 184 bytes (max_age has at most 9 digits) */
    int n = snprintf(r->hdr, sizeof r->hdr,
                     "HTTP/1.1 %d %s\r\nServer: bench-backend\r\n"
                     "Content-Type: application/octet-stream\r\nContent-Length: %zu\r\n%s%s",
                     status, reason, blen,
                     close_conn ? "Connection: close\r\n" : ka_header ? "Connection: keep-alive\r\n" : "",
                     max_age >= 0 ? "" : "\r\n");
    if (max_age >= 0) {
        n += snprintf(r->hdr + n, sizeof r->hdr - (size_t)n, "Cache-Control: public, max-age=%ld\r\n", max_age);
        r->tail = CACHE_TAIL;
        r->tlen = sizeof CACHE_TAIL - 1;
    }
    r->hlen = (size_t)n;
    r->blen = head ? 0 : blen;
    r->off = 0;
    c->qlen++;
}

/* GET /bench-backend/stats: the counters, head and body in hdr */
static void queue_stats(struct conn *c, bool head, bool close_conn, bool ka_header)
{
    struct resp *r = &c->q[(c->qhead + c->qlen) % RESPQ];
    char body[64];
    int bl = snprintf(body, sizeof body, "requests=%lu cacheable=%lu\n",
                      atomic_load_explicit(&g_requests, memory_order_relaxed),
                      atomic_load_explicit(&g_cacheable, memory_order_relaxed));
    int n = snprintf(r->hdr, sizeof r->hdr,
                     "HTTP/1.1 200 OK\r\nServer: bench-backend\r\nContent-Type: text/plain\r\n"
                     "Cache-Control: no-store\r\nContent-Length: %d\r\n%s\r\n%s",
                     bl, close_conn ? "Connection: close\r\n" : ka_header ? "Connection: keep-alive\r\n" : "",
                     head ? "" : body);
    r->hlen = (size_t)n < sizeof r->hdr ? (size_t)n : sizeof r->hdr - 1;
    r->tail = NULL;
    r->tlen = 0;
    r->body = g_body;
    r->blen = 0;
    r->off = 0;
    c->qlen++;
}

/* Parse one request head of length hl (including the blank line).
 * Queues the response and sets body_left / closing.  */
static void handle_request(struct conn *c, const char *p, size_t hl)
{
    const char *end = p + hl;
    const char *eol = memchr(p, '\r', hl);
    const char *sp1 = memchr(p, ' ', (size_t)(eol - p));
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
    if (!sp1 || !sp2 || eol - sp2 - 1 != 8 || memcmp(sp2 + 1, "HTTP/1.", 7) != 0) {
        queue_response(c, 400, 0, false, true, false, -1);
        c->closing = true;
        return;
    }
    bool head = (sp1 - p == 4 && memcmp(p, "HEAD", 4) == 0);
    bool http10 = sp2[8] == '0';
    bool keepalive = !http10;
    bool ka_header = false;
    bool chunked = false;
    bool expect100 = false;
    uint64_t clen = 0;

    /* path: /size/<n> */
    size_t blen = 0;
    const char *path = sp1 + 1;
    size_t plen = (size_t)(sp2 - path);
    if (plen > 6 && memcmp(path, "/size/", 6) == 0) {
        uint64_t v = 0;
        for (size_t i = 6; i < plen && path[i] >= '0' && path[i] <= '9'; i++)
            v = v * 10 + (uint64_t)(path[i] - '0');
        if (v > g_max_body) {
            queue_response(c, 400, 0, head, true, false, -1);
            c->closing = true;
            return;
        }
        blen = (size_t)v;
    }
    /* query: max-age=<N> makes the response cacheable */
    long max_age = -1;
    const char *qm = memchr(path, '?', plen);
    bool stats = (size_t)((qm ? qm : path + plen) - path) == sizeof STATS_PATH - 1 &&
                 memcmp(path, STATS_PATH, sizeof STATS_PATH - 1) == 0;
    if (qm) {
        const char *q = qm + 1, *qe = path + plen;
        while (q < qe) {
            const char *amp = memchr(q, '&', (size_t)(qe - q));
            const char *pe = amp ? amp : qe;
            if (pe - q > 8 && memcmp(q, "max-age=", 8) == 0 && q[8] >= '0' && q[8] <= '9') {
                max_age = 0;
                for (const char *d = q + 8; d < pe && *d >= '0' && *d <= '9' && max_age < 100000000; d++)
                    max_age = max_age * 10 + (*d - '0');
            }
            q = pe + 1;
        }
    }

    /* headers */
    const char *h = eol + 2;
    while (h < end - 2) {
        const char *he = memchr(h, '\r', (size_t)(end - h));
        if (!he)
            break;
        const char *colon = memchr(h, ':', (size_t)(he - h));
        if (colon) {
            size_t nl = (size_t)(colon - h);
            const char *v = colon + 1;
            while (v < he && (*v == ' ' || *v == '\t'))
                v++;
            size_t vl = (size_t)(he - v);
            if (nl == 14 && strncasecmp(h, "Content-Length", 14) == 0) {
                clen = strtoull(v, NULL, 10);
            } else if (nl == 10 && strncasecmp(h, "Connection", 10) == 0) {
                if (value_has(v, vl, "close"))
                    keepalive = false;
                else if (value_has(v, vl, "keep-alive") && http10) {
                    keepalive = true;
                    ka_header = true;
                }
            } else if (nl == 6 && strncasecmp(h, "Expect", 6) == 0) {
                expect100 = value_has(v, vl, "100-continue");
            } else if (nl == 17 && strncasecmp(h, "Transfer-Encoding", 17) == 0) {
                chunked = value_has(v, vl, "chunked");
            }
        }
        h = he + 2;
    }
    if (stats && !chunked && clen == 0) {
        queue_stats(c, head, !keepalive, ka_header);
        if (!keepalive)
            c->closing = true;
        return;
    }
    atomic_fetch_add_explicit(&g_requests, 1, memory_order_relaxed);
    if (max_age >= 0)
        atomic_fetch_add_explicit(&g_cacheable, 1, memory_order_relaxed);
    if (chunked) {
        queue_response(c, 501, 0, head, true, false, -1);
        c->closing = true;
        return;
    }
    if (clen == 0) {
        queue_response(c, 200, blen, head, !keepalive, ka_header, max_age);
        if (!keepalive)
            c->closing = true;
        return;
    }
    /* Answer only once the whole body is read: an early answer makes some
     * clients and proxies drop the connection (or stall). */
    if (expect100)
        queue_response(c, 100, 0, false, false, false, -1);
    c->body_left = clen;
    c->pend = true;
    c->pend_blen = blen;
    c->pend_head = head;
    c->pend_close = !keepalive;
    c->pend_ka = ka_header;
    c->pend_max_age = max_age;
}

static void finish_body(struct conn *c)
{
    if (c->body_left || !c->pend)
        return;
    c->pend = false;
    queue_response(c, 200, c->pend_blen, c->pend_head, c->pend_close, c->pend_ka, c->pend_max_age);
    if (c->pend_close)
        c->closing = true;
}

/* Consume buffered input: discard body bytes, parse requests. */
static void process_input(struct conn *c)
{
    size_t pos = 0;
    /* each request may queue two responses (100 Continue + final) */
    while (!c->closing && c->qlen + 2 <= RESPQ && pos < c->inlen) {
        if (c->body_left) {
            size_t n = c->inlen - pos;
            if (n > c->body_left)
                n = (size_t)c->body_left;
            c->body_left -= n;
            pos += n;
            finish_body(c);
            continue;
        }
        const char *p = c->in + pos;
        size_t avail = c->inlen - pos;
        const char *e = memmem(p, avail, "\r\n\r\n", 4);
        if (!e) {
            if (avail == INBUF_SIZE) { /* head larger than the buffer */
                queue_response(c, 431, 0, false, true, false, -1);
                c->closing = true;
                pos = c->inlen;
            }
            break;
        }
        size_t hl = (size_t)(e - p) + 4;
        handle_request(c, p, hl);
        pos += hl;
    }
    if (c->closing)
        pos = c->inlen; /* nothing after a closing request matters */
    if (pos) {
        memmove(c->in, c->in + pos, c->inlen - pos);
        c->inlen -= pos;
    }
}

/* Write queued responses. Returns -1 on a fatal socket error. */
static int flush_output(struct conn *c)
{
    while (c->qlen) {
        struct iovec iov[3 * RESPQ];
        int n = 0;
        for (unsigned i = 0; i < c->qlen; i++) {
            struct resp *r = &c->q[(c->qhead + i) % RESPQ];
            /* hdr, tail, body: skip what is already written */
            const char *seg[3] = { r->hdr, r->tail, r->body };
            size_t len[3] = { r->hlen, r->tlen, r->blen };
            size_t skip = r->off;
            for (int k = 0; k < 3; k++) {
                if (skip >= len[k]) {
                    skip -= len[k];
                    continue;
                }
                iov[n].iov_base = (void *)(seg[k] + skip);
                iov[n].iov_len = len[k] - skip;
                n++;
                skip = 0;
            }
        }
        struct msghdr mh = { .msg_iov = iov, .msg_iovlen = (size_t)n };
        ssize_t w = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            if (errno == EINTR)
                continue;
            return -1;
        }
        size_t left = (size_t)w;
        while (left && c->qlen) {
            struct resp *r = &c->q[c->qhead];
            size_t rem = r->hlen + r->tlen + r->blen - r->off;
            if (left >= rem) {
                left -= rem;
                c->qhead = (c->qhead + 1) % RESPQ;
                c->qlen--;
            } else {
                r->off += left;
                left = 0;
            }
        }
    }
    return 0;
}

static void set_events(int ep, struct conn *c)
{
    uint32_t ev = 0;
    if (!c->closing && c->qlen + 2 <= RESPQ)
        ev |= EPOLLIN | EPOLLRDHUP;
    if (c->qlen)
        ev |= EPOLLOUT;
    if (ev != c->events) {
        struct epoll_event e = { .events = ev, .data.ptr = c };
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
        c->events = ev;
    }
}

/* Drive a connection after an event. */
static void conn_run(int ep, struct conn *c, uint32_t revents)
{
    bool peer_done = false;
    if (revents & (EPOLLERR)) {
        conn_close(ep, c);
        return;
    }
    if ((revents & (EPOLLIN | EPOLLRDHUP | EPOLLHUP)) && !c->closing) {
        for (;;) {
            size_t space = INBUF_SIZE - c->inlen;
            if (space == 0)
                break;
            ssize_t r = read(c->fd, c->in + c->inlen, space);
            if (r > 0) {
                c->inlen += (size_t)r;
                process_input(c);
                if ((size_t)r < space || c->closing || c->qlen + 2 > RESPQ)
                    break;
                continue;
            }
            if (r == 0) {
                peer_done = true;
                break;
            }
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                peer_done = true, c->qlen = 0;
            break;
        }
    }
    for (;;) {
        unsigned before = c->qlen;
        if (flush_output(c) < 0) {
            conn_close(ep, c);
            return;
        }
        /* Room freed and requests still buffered: answer them now, since
         * the socket will not signal for bytes we already hold. */
        if (c->qlen < before && c->inlen && !c->closing) {
            process_input(c);
            if (c->qlen)
                continue;
        }
        break;
    }
    if ((c->closing || peer_done) && c->qlen == 0) {
        conn_close(ep, c);
        return;
    }
    if (peer_done && c->qlen) {
        c->closing = true; /* finish writing, then close */
    }
    set_events(ep, c);
}

static void accept_all(int ep, int lfd)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            return; /* EAGAIN, or EMFILE etc.: retry on next event */
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = malloc(sizeof *c);
        if (!c) {
            close(fd);
            continue;
        }
        c->kind = K_CONN;
        c->fd = fd;
        c->events = EPOLLIN | EPOLLRDHUP;
        c->closing = false;
        c->inlen = 0;
        c->body_left = 0;
        c->pend = false;
        c->qhead = c->qlen = 0;
        struct epoll_event e = { .events = c->events, .data.ptr = c };
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e) < 0) {
            close(fd);
            free(c);
        }
    }
}

static void *worker(void *arg)
{
    struct listener *ls = arg;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1");
    for (int i = 0; i < g_nports; i++) {
        struct epoll_event e = { .events = EPOLLIN, .data.ptr = &ls[i] };
        if (epoll_ctl(ep, EPOLL_CTL_ADD, ls[i].fd, &e) < 0)
            die("epoll_ctl");
    }
    struct epoll_event evs[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(ep, evs, MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            int kind = *(int *)evs[i].data.ptr;
            if (kind == K_LISTENER)
                accept_all(ep, ((struct listener *)evs[i].data.ptr)->fd);
            else
                conn_run(ep, evs[i].data.ptr, evs[i].events);
        }
    }
    return NULL;
}

static void usage(void)
{
    fprintf(stderr, "usage: bench_backend --port N [--port N ...] [--threads N] [--max-body BYTES]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    int threads = 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
            if (g_nports == MAX_PORTS)
                usage();
            int p = atoi(argv[++i]);
            if (p <= 0 || p > 65535)
                usage();
            g_ports[g_nports++] = p;
        } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            threads = atoi(argv[++i]);
            if (threads < 1 || threads > 256)
                usage();
        } else if (strcmp(argv[i], "--max-body") == 0 && i + 1 < argc) {
            g_max_body = strtoull(argv[++i], NULL, 10);
        } else {
            usage();
        }
    }
    if (g_nports == 0)
        usage();
    signal(SIGPIPE, SIG_IGN);

    char *body = malloc(g_max_body ? g_max_body : 1);
    if (!body)
        die("malloc body");
    memset(body, 'x', g_max_body);
    g_body = body;

    pthread_t *tids = calloc((size_t)threads, sizeof *tids);
    struct listener *ls = calloc((size_t)threads * (size_t)g_nports, sizeof *ls);
    if (!tids || !ls)
        die("calloc");
    /* Bind every listener before serving so a busy port fails up front. */
    for (int t = 0; t < threads; t++)
        for (int i = 0; i < g_nports; i++) {
            ls[t * g_nports + i].kind = K_LISTENER;
            ls[t * g_nports + i].fd = make_listener(g_ports[i]);
        }
    for (int t = 1; t < threads; t++)
        if (pthread_create(&tids[t], NULL, worker, &ls[t * g_nports]) != 0)
            die("pthread_create");
    worker(&ls[0]);
    return 0;
}
