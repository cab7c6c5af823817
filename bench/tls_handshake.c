/* bench_tls_handshake: a closed-loop TLS handshake load generator (BoringSSL, epoll).
 *
 * Usage: bench_tls_handshake --port P [--host 127.0.0.1] [--concurrency 64] [--duration 5]
 *                            [--mode full|resume] [--tls 1.3|1.2] [--sni localhost] [--path /]
 *                            [--threads 1] [--timeout-ms 5000]
 *
 * C connection slots spread over T threads, each thread with its own epoll set and
 * non-blocking sockets.  Every slot repeats: connect -> TLS handshake -> one
 * `GET PATH HTTP/1.1` with `Connection: close` -> read the whole response -> wait for
 * the server to close (or time out) -> close, and starts over at once.  So the server
 * under test completes a real request per handshake and, as in wrk's `close-*`
 * scenarios, closes first (the TIME_WAIT is its, not the client's).
 *
 * A "handshake" in the figures is one such connection that completed with a 2xx
 * response inside the measured window; connections still open when it ends are
 * dropped uncounted.
 *
 *   full    no session is ever offered: every handshake is a full one (the server still
 *           issues its tickets, as it would to any new client).
 *   resume  one priming connection (not measured) obtains a session ticket; every later
 *           connection offers that session.  SSL_session_reused() is checked on each;
 *           should the server refuse the ticket (a rotated ticket key, say) the session
 *           that connection obtained becomes the one offered.  When no measured
 *           handshake was resumed the tool says so on stderr and exits 3.
 *
 * Client cost is kept down because one load CPU drives the handshakes of one proxy
 * CPU: no certificate verification (SSL_VERIFY_NONE; the TLS stack still checks the
 * server's handshake signature), X25519 key exchange, no ALPN.  Its own CPU per handshake is
 * in the output (client_cpu_us_per_hs) so a saturated client can be recognised.
 *
 * The last line of stdout is machine-readable:
 *   tls_handshake mode=M tls=V concurrency=C threads=T handshakes=N seconds=S hs_per_s=X
 *     resumed=N resumed_pct=X errors=N connect_err=N handshake_err=N io_err=N
 *     status_err=N timeout_err=N close_wait_timeouts=N p50_us=X p90_us=X p99_us=X
 *     p999_us=X max_us=X client_cpu_us_per_hs=X version=V cipher=C group=G
 * (latencies: connect() to the complete response; errors = the five *_err counters).
 * The first error of each kind is described on stderr.  Exit status: 0; 1 when no
 * handshake completed; 2 on usage errors; 3 when resume mode resumed nothing.
 */
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define NS_PER_S 1000000000LL
#define NS_PER_MS 1000000LL
#define RBUF_SIZE 16384           /* the response head must fit; bodies are counted, not kept */
#define MAX_EVENTS 256
#define SCAN_INTERVAL_NS (10 * NS_PER_MS)
#define RETRY_NS (20 * NS_PER_MS) /* back-off of a slot after an error, so a dead port is not hammered */
#define MAX_THREADS 256

enum state { ST_IDLE, ST_CONNECTING, ST_HANDSHAKE, ST_WRITING, ST_READING, ST_CLOSE_WAIT };
enum err_kind { E_CONNECT, E_HANDSHAKE, E_IO, E_STATUS, E_TIMEOUT, E_KINDS };
static const char *const err_name[E_KINDS] = { "connect_err", "handshake_err", "io_err", "status_err",
                                               "timeout_err" };

struct stats {
    uint64_t handshakes, resumed, close_wait_timeouts;
    uint64_t err[E_KINDS];
    uint32_t *lat_us;
    size_t nlat, cap;
};

struct worker;

struct conn {
    struct worker *w;
    enum state st;
    int fd;
    SSL *ssl;
    uint32_t events;   /* current epoll interest */
    int64_t start_ns;  /* connect() */
    int64_t deadline_ns;
    int64_t retry_ns;  /* idle slot: not before this */
    size_t rlen;       /* bytes of the head (later: of a chunked body's tail) in rbuf */
    int64_t body_left; /* -1: until EOF or the last chunk; -2: head not complete yet */
    bool chunked;
    int status;
    char rbuf[RBUF_SIZE];
};

struct worker {
    pthread_t tid;
    int ep;
    int nconn;
    struct conn *cs;
    int64_t until_ns;
    struct stats st;
};

static volatile sig_atomic_t g_stop;
static bool g_resume;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER; /* g_session, g_first_err, g_version... */
static SSL_SESSION *g_session;                             /* resume mode: the session offered */
static char g_version[32] = "-", g_cipher[64] = "-", g_group[32] = "-";
static char g_first_err[E_KINDS][256];
static struct sockaddr_storage g_addr;
static socklen_t g_addrlen;
static SSL_CTX *g_ctx;
static const char *g_sni = "localhost";
static char g_req[1024];
static size_t g_reqlen;
static int64_t g_timeout_ns = 5000 * NS_PER_MS;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
}

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static void lat_add(struct stats *st, uint32_t us)
{
    if (st->nlat == st->cap) {
        size_t ncap = st->cap ? st->cap * 2 : 65536;
        uint32_t *n = realloc(st->lat_us, ncap * sizeof *n);
        if (!n)
            return;
        st->lat_us = n;
        st->cap = ncap;
    }
    st->lat_us[st->nlat++] = us;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static uint32_t pct(const struct stats *st, double p)
{
    if (!st->nlat)
        return 0;
    size_t i = (size_t)(p / 100.0 * (double)st->nlat);
    if (i >= st->nlat)
        i = st->nlat - 1;
    return st->lat_us[i];
}

/* A new session (ticket) arrived.  In resume mode keep it when there is none yet or
 * when this connection was not resumed (the server refused the one offered). */
static int new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
    if (!g_resume)
        return 0;
    int taken = 0;
    pthread_mutex_lock(&g_lock);
    if (!g_session || !SSL_session_reused(ssl)) {
        if (g_session)
            SSL_SESSION_free(g_session);
        g_session = sess;
        taken = 1;
    }
    pthread_mutex_unlock(&g_lock);
    return taken; /* 1: we own the reference now */
}

static void set_interest(struct conn *c, uint32_t ev)
{
    if (c->events == ev)
        return;
    struct epoll_event e = { .events = ev, .data.ptr = c };
    if (epoll_ctl(c->w->ep, EPOLL_CTL_MOD, c->fd, &e) == 0)
        c->events = ev;
}

static void conn_close(struct conn *c, int64_t now, bool backoff)
{
    if (c->ssl) {
        SSL_free(c->ssl); /* no close_notify: the server has closed first, or we give up */
        c->ssl = NULL;
    }
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    c->st = ST_IDLE;
    c->retry_ns = backoff ? now + RETRY_NS : 0;
}

/* Count an error of this kind, remember the first one's reason, close with back-off. */
static void conn_fail(struct conn *c, enum err_kind k, int64_t now, const char *what, int sys_errno)
{
    c->w->st.err[k]++;
    if (!g_first_err[k][0]) {
        char ssl_reason[160] = "";
        uint32_t e = ERR_peek_error();
        if (e)
            ERR_error_string_n(e, ssl_reason, sizeof ssl_reason);
        pthread_mutex_lock(&g_lock);
        if (!g_first_err[k][0])
            snprintf(g_first_err[k], sizeof g_first_err[k], "%s%s%s%s%s", what, sys_errno ? ": " : "",
                     sys_errno ? strerror(sys_errno) : "", ssl_reason[0] ? ": " : "", ssl_reason);
        pthread_mutex_unlock(&g_lock);
    }
    ERR_clear_error();
    conn_close(c, now, true);
}

static void conn_start(struct conn *c, int64_t now)
{
    int fd = socket(g_addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        conn_fail(c, E_CONNECT, now, "socket", errno);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    c->start_ns = now;
    c->deadline_ns = now + g_timeout_ns;
    c->rlen = 0;
    c->body_left = -2;
    c->chunked = false;
    c->status = 0;
    c->ssl = SSL_new(g_ctx);
    if (!c->ssl || !SSL_set_fd(c->ssl, fd) || !SSL_set_tlsext_host_name(c->ssl, g_sni)) {
        conn_fail(c, E_CONNECT, now, "SSL_new", 0);
        return;
    }
    SSL_set_connect_state(c->ssl);
    if (g_resume) {
        pthread_mutex_lock(&g_lock);
        if (g_session)
            SSL_set_session(c->ssl, g_session); /* takes its own reference */
        pthread_mutex_unlock(&g_lock);
    }
    int r = connect(fd, (struct sockaddr *)&g_addr, g_addrlen);
    if (r < 0 && errno != EINPROGRESS) {
        conn_fail(c, E_CONNECT, now, "connect", errno);
        return;
    }
    c->st = ST_CONNECTING;
    c->events = EPOLLOUT;
    struct epoll_event e = { .events = EPOLLOUT, .data.ptr = c };
    if (epoll_ctl(c->w->ep, EPOLL_CTL_ADD, fd, &e) < 0)
        conn_fail(c, E_CONNECT, now, "epoll_ctl", errno);
}

/* Parse the complete response head; false when it is not an HTTP/1.x response. */
static bool parse_head(struct conn *c, size_t head_len)
{
    if (head_len < 12 || memcmp(c->rbuf, "HTTP/1.", 7) != 0)
        return false;
    c->status = atoi(c->rbuf + 9);
    c->body_left = -1;
    const char *p = memchr(c->rbuf, '\n', head_len);
    const char *end = c->rbuf + head_len;
    while (p && p + 1 < end) {
        const char *line = p + 1;
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        if (!eol)
            break;
        size_t len = (size_t)(eol - line);
        if (len >= 15 && !strncasecmp(line, "content-length:", 15))
            c->body_left = strtoll(line + 15, NULL, 10);
        else if (len >= 18 && !strncasecmp(line, "transfer-encoding:", 18) && memmem(line, len, "chunked", 7))
            c->chunked = true;
        p = eol;
    }
    if (c->chunked)
        c->body_left = -1;
    return true;
}

static void response_done(struct conn *c, int64_t now)
{
    struct stats *st = &c->w->st;
    if (c->status >= 200 && c->status < 300) {
        st->handshakes++;
        if (SSL_session_reused(c->ssl))
            st->resumed++;
        lat_add(st, (uint32_t)((now - c->start_ns) / 1000));
        if (g_cipher[0] == '-') {
            pthread_mutex_lock(&g_lock);
            if (g_cipher[0] == '-') {
                snprintf(g_version, sizeof g_version, "%s", SSL_get_version(c->ssl));
                const SSL_CIPHER *ci = SSL_get_current_cipher(c->ssl);
                const char *gn = SSL_get_curve_name(SSL_get_curve_id(c->ssl));
                snprintf(g_group, sizeof g_group, "%s", gn ? gn : "?");
                snprintf(g_cipher, sizeof g_cipher, "%s", ci ? SSL_CIPHER_standard_name(ci) : "?");
            }
            pthread_mutex_unlock(&g_lock);
        }
    } else {
        st->err[E_STATUS]++;
        if (!g_first_err[E_STATUS][0]) {
            pthread_mutex_lock(&g_lock);
            snprintf(g_first_err[E_STATUS], sizeof g_first_err[E_STATUS], "HTTP status %d", c->status);
            pthread_mutex_unlock(&g_lock);
        }
    }
    c->st = ST_CLOSE_WAIT; /* the server closes after `Connection: close` */
    c->deadline_ns = now + g_timeout_ns;
}

/* Feed n bytes just read; true when the response is complete. */
static bool consume(struct conn *c, const char *data, size_t n, bool *bad)
{
    if (c->body_left == -2) { /* still in the head */
        size_t old = c->rlen, take = RBUF_SIZE - 1 - old;
        if (take > n)
            take = n;
        memcpy(c->rbuf + old, data, take);
        c->rlen += take;
        size_t from = old > 3 ? old - 3 : 0;
        char *e = memmem(c->rbuf + from, c->rlen - from, "\r\n\r\n", 4);
        if (!e) {
            *bad = c->rlen == RBUF_SIZE - 1; /* head too large */
            return false;
        }
        size_t head_len = (size_t)(e - c->rbuf) + 4;
        if (!parse_head(c, head_len)) {
            *bad = true;
            return false;
        }
        size_t used = head_len - old; /* bytes of data that belonged to the head */
        data += used;
        n -= used;
        c->rlen = 0;
    }
    if (c->chunked) { /* complete at the last-chunk marker "0\r\n\r\n" */
        char tail[16];
        size_t keep = c->rlen + n < sizeof tail ? c->rlen + n : sizeof tail;
        size_t from_new = n < keep ? n : keep, from_old = keep - from_new;
        memcpy(tail, c->rbuf + c->rlen - from_old, from_old);
        memcpy(tail + from_old, data + n - from_new, from_new);
        memcpy(c->rbuf, tail, keep);
        c->rlen = keep;
        return keep >= 5 && !memcmp(c->rbuf + keep - 5, "0\r\n\r\n", 5);
    }
    if (c->body_left >= 0) {
        c->body_left -= (int64_t)n;
        return c->body_left <= 0;
    }
    return false; /* delimited by the close */
}

static void handle(struct conn *c, int64_t now)
{
    int r, err;
    switch (c->st) {
    case ST_CONNECTING: {
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 || soerr) {
            conn_fail(c, E_CONNECT, now, "connect", soerr ? soerr : errno);
            return;
        }
        c->st = ST_HANDSHAKE;
    }
        /* fall through */
    case ST_HANDSHAKE:
        r = SSL_do_handshake(c->ssl);
        if (r != 1) {
            err = SSL_get_error(c->ssl, r);
            if (err == SSL_ERROR_WANT_READ)
                set_interest(c, EPOLLIN);
            else if (err == SSL_ERROR_WANT_WRITE)
                set_interest(c, EPOLLOUT);
            else
                conn_fail(c, E_HANDSHAKE, now, err == SSL_ERROR_SYSCALL ? "handshake (socket)" : "handshake",
                          err == SSL_ERROR_SYSCALL ? errno : 0);
            return;
        }
        c->st = ST_WRITING;
        /* fall through */
    case ST_WRITING:
        r = SSL_write(c->ssl, g_req, (int)g_reqlen);
        if (r <= 0) {
            err = SSL_get_error(c->ssl, r);
            if (err == SSL_ERROR_WANT_READ)
                set_interest(c, EPOLLIN);
            else if (err == SSL_ERROR_WANT_WRITE)
                set_interest(c, EPOLLOUT);
            else
                conn_fail(c, E_IO, now, "write", err == SSL_ERROR_SYSCALL ? errno : 0);
            return;
        }
        c->st = ST_READING;
        set_interest(c, EPOLLIN);
        /* fall through */
    case ST_READING:
    case ST_CLOSE_WAIT:
        for (;;) {
            char buf[16384];
            r = SSL_read(c->ssl, buf, sizeof buf);
            if (r > 0) {
                if (c->st == ST_CLOSE_WAIT)
                    continue; /* nothing more is expected; ignore */
                bool bad = false;
                if (consume(c, buf, (size_t)r, &bad)) {
                    response_done(c, now);
                    continue; /* the close (close_notify / FIN) may already be here */
                }
                if (bad) {
                    conn_fail(c, E_IO, now, "malformed or oversized response head", 0);
                    return;
                }
                continue;
            }
            err = SSL_get_error(c->ssl, r);
            if (err == SSL_ERROR_WANT_READ) {
                set_interest(c, EPOLLIN);
                return;
            }
            if (err == SSL_ERROR_WANT_WRITE) {
                set_interest(c, EPOLLOUT);
                return;
            }
            /* EOF, close_notify or an error (a reset after the response is fine) */
            if (c->st == ST_READING && c->body_left == -1 && !c->chunked && c->status)
                response_done(c, now); /* a body delimited by the close */
            if (c->st == ST_CLOSE_WAIT) {
                ERR_clear_error();
                conn_close(c, now, false);
            } else {
                conn_fail(c, E_IO, now, "connection closed before the response was complete",
                          err == SSL_ERROR_SYSCALL ? errno : 0);
            }
            return;
        }
    case ST_IDLE:
        return;
    }
}

static void scan_timeouts(struct worker *w, int64_t now)
{
    for (int i = 0; i < w->nconn; i++) {
        struct conn *c = &w->cs[i];
        if (c->st == ST_IDLE || now < c->deadline_ns)
            continue;
        if (c->st == ST_CLOSE_WAIT) {
            w->st.close_wait_timeouts++;
            conn_close(c, now, false);
        } else {
            conn_fail(c, E_TIMEOUT, now, "no progress within --timeout-ms", 0);
        }
    }
}

/* Run the worker's slots until w->until_ns.  Priming (one slot): stop early once a
 * response is complete, the connection closed and a session is in; true if so. */
static bool run(struct worker *w, bool priming)
{
    struct epoll_event evs[MAX_EVENTS];
    int64_t next_scan = now_ns() + SCAN_INTERVAL_NS;
    while (!g_stop) {
        int64_t now = now_ns();
        if (now >= w->until_ns)
            break;
        if (priming && w->st.handshakes > 0 && w->cs[0].st == ST_IDLE) {
            pthread_mutex_lock(&g_lock);
            bool have = g_session != NULL;
            pthread_mutex_unlock(&g_lock);
            return have;
        }
        for (int i = 0; i < w->nconn; i++)
            if (w->cs[i].st == ST_IDLE && now >= w->cs[i].retry_ns && !(priming && w->st.handshakes > 0))
                conn_start(&w->cs[i], now);
        int64_t wait = w->until_ns - now;
        if (wait > SCAN_INTERVAL_NS)
            wait = SCAN_INTERVAL_NS;
        int n = epoll_wait(w->ep, evs, MAX_EVENTS, (int)((wait + NS_PER_MS - 1) / NS_PER_MS));
        now = now_ns();
        for (int i = 0; i < n; i++)
            handle(evs[i].data.ptr, now);
        if (now >= next_scan) {
            scan_timeouts(w, now);
            next_scan = now + SCAN_INTERVAL_NS;
        }
    }
    return false;
}

static void *worker_main(void *arg)
{
    run(arg, false);
    return NULL;
}

static void worker_reset(struct worker *w)
{
    for (int i = 0; i < w->nconn; i++)
        if (w->cs[i].st != ST_IDLE || w->cs[i].fd >= 0)
            conn_close(&w->cs[i], 0, false);
    free(w->st.lat_us);
    memset(&w->st, 0, sizeof w->st);
    for (int k = 0; k < E_KINDS; k++)
        g_first_err[k][0] = 0;
}

static void usage(const char *p)
{
    fprintf(stderr,
            "usage: %s --port P [--host 127.0.0.1] [--concurrency 64] [--duration 5] [--mode full|resume]\n"
            "          [--tls 1.3|1.2] [--sni localhost] [--path /] [--threads 1] [--timeout-ms 5000]\n",
            p);
    exit(2);
}

static long parse_num(const char *p, const char *opt, const char *s, long min, long max)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < min || v > max) {
        fprintf(stderr, "%s: bad %s '%s' (%ld..%ld)\n", p, opt, s, min, max);
        exit(2);
    }
    return v;
}

static double cpu_us(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec * 1e6 + (double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_sec * 1e6 +
           (double)ru.ru_stime.tv_usec;
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *path = "/", *mode = "full", *tls = "1.3";
    long port = 0, conc = 64, dur = 5, timeout_ms = 5000, nthreads = 1;
    static const struct option opts[] = {
        { "host", required_argument, 0, 'h' },       { "port", required_argument, 0, 'p' },
        { "concurrency", required_argument, 0, 'c' }, { "duration", required_argument, 0, 'd' },
        { "mode", required_argument, 0, 'm' },       { "tls", required_argument, 0, 'v' },
        { "sni", required_argument, 0, 's' },        { "path", required_argument, 0, 'u' },
        { "threads", required_argument, 0, 'T' },    { "timeout-ms", required_argument, 0, 't' },
        { "help", no_argument, 0, '?' },             { 0, 0, 0, 0 },
    };
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'h': host = optarg; break;
        case 'p': port = parse_num(argv[0], "--port", optarg, 1, 65535); break;
        case 'c': conc = parse_num(argv[0], "--concurrency", optarg, 1, 1000000); break;
        case 'd': dur = parse_num(argv[0], "--duration", optarg, 1, 86400); break;
        case 'm': mode = optarg; break;
        case 'v': tls = optarg; break;
        case 's': g_sni = optarg; break;
        case 'u': path = optarg; break;
        case 'T': nthreads = parse_num(argv[0], "--threads", optarg, 1, MAX_THREADS); break;
        case 't': timeout_ms = parse_num(argv[0], "--timeout-ms", optarg, 1, 3600000); break;
        default: usage(argv[0]);
        }
    }
    if (optind != argc || port == 0)
        usage(argv[0]);
    if (strcmp(mode, "full") && strcmp(mode, "resume")) {
        fprintf(stderr, "%s: --mode must be full or resume\n", argv[0]);
        return 2;
    }
    uint16_t ver;
    if (!strcmp(tls, "1.3")) {
        ver = TLS1_3_VERSION;
    } else if (!strcmp(tls, "1.2")) {
        ver = TLS1_2_VERSION;
    } else {
        fprintf(stderr, "%s: --tls must be 1.2 or 1.3\n", argv[0]);
        return 2;
    }
    if (nthreads > conc)
        nthreads = conc;
    g_resume = !strcmp(mode, "resume");
    g_timeout_ns = timeout_ms * NS_PER_MS;

    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai;
    char portstr[24];
    snprintf(portstr, sizeof portstr, "%ld", port);
    int gr = getaddrinfo(host, portstr, &hints, &ai);
    if (gr) {
        fprintf(stderr, "%s: %s: %s\n", argv[0], host, gai_strerror(gr));
        return 2;
    }
    memcpy(&g_addr, ai->ai_addr, ai->ai_addrlen);
    g_addrlen = ai->ai_addrlen;
    freeaddrinfo(ai);

    int rl = snprintf(g_req, sizeof g_req,
                      "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: bench_tls_handshake\r\nConnection: close\r\n\r\n",
                      path, g_sni);
    if (rl <= 0 || (size_t)rl >= sizeof g_req) {
        fprintf(stderr, "%s: --path or --sni too long\n", argv[0]);
        return 2;
    }
    g_reqlen = (size_t)rl;

    g_ctx = SSL_CTX_new(TLS_method());
    if (!g_ctx || !SSL_CTX_set_min_proto_version(g_ctx, ver) || !SSL_CTX_set_max_proto_version(g_ctx, ver) ||
        /* key share X25519 only; P-256 is listed too because a TLS 1.2 server may only use an
         * ECDSA P-256 certificate with a client that names that curve (RFC 4492 5.1) */
        !SSL_CTX_set1_curves_list(g_ctx, "X25519:P-256")) {
        fprintf(stderr, "%s: SSL_CTX setup failed\n", argv[0]);
        ERR_print_errors_fp(stderr);
        return 1;
    }
    SSL_CTX_set_verify(g_ctx, SSL_VERIFY_NONE, NULL);
    if (g_resume) {
        SSL_CTX_set_session_cache_mode(g_ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
        SSL_CTX_sess_set_new_cb(g_ctx, new_session_cb);
    } else {
        SSL_CTX_set_session_cache_mode(g_ctx, SSL_SESS_CACHE_OFF);
    }

    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = { .sa_handler = on_signal };
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    struct rlimit nof;
    if (getrlimit(RLIMIT_NOFILE, &nof) == 0 && nof.rlim_cur < nof.rlim_max) {
        nof.rlim_cur = nof.rlim_max;
        setrlimit(RLIMIT_NOFILE, &nof);
    }

    struct worker *ws = calloc((size_t)nthreads, sizeof *ws);
    if (!ws) {
        perror("calloc");
        return 1;
    }
    for (long t = 0; t < nthreads; t++) {
        struct worker *w = &ws[t];
        w->nconn = (int)(conc / nthreads + (t < conc % nthreads));
        w->cs = calloc((size_t)w->nconn, sizeof *w->cs);
        w->ep = epoll_create1(EPOLL_CLOEXEC);
        if (!w->cs || w->ep < 0) {
            perror("setup");
            return 1;
        }
        for (int i = 0; i < w->nconn; i++) {
            w->cs[i].fd = -1;
            w->cs[i].w = w;
        }
    }

    char fail[512] = "";
    if (g_resume) {
        /* priming: one connection of worker 0, unmeasured, until a ticket and a response are in */
        struct worker *w = &ws[0];
        int saved = w->nconn;
        w->nconn = 1;
        w->until_ns = now_ns() + g_timeout_ns;
        if (!run(w, true) && !g_stop) {
            if (w->st.handshakes)
                snprintf(fail, sizeof fail, "the server issued no session ticket on the priming connection");
            else
                snprintf(fail, sizeof fail, "the priming connection did not complete: %s",
                         g_first_err[E_CONNECT][0]     ? g_first_err[E_CONNECT]
                         : g_first_err[E_HANDSHAKE][0] ? g_first_err[E_HANDSHAKE]
                         : g_first_err[E_IO][0]        ? g_first_err[E_IO]
                         : g_first_err[E_STATUS][0]    ? g_first_err[E_STATUS]
                                                       : "timed out");
        }
        worker_reset(w);
        w->nconn = saved;
    }

    double cpu0 = cpu_us();
    int64_t t0 = now_ns();
    if (!fail[0] && !g_stop) {
        for (long t = 0; t < nthreads; t++)
            ws[t].until_ns = t0 + dur * NS_PER_S;
        for (long t = 1; t < nthreads; t++)
            if (pthread_create(&ws[t].tid, NULL, worker_main, &ws[t])) {
                perror("pthread_create");
                return 1;
            }
        run(&ws[0], false);
        for (long t = 1; t < nthreads; t++)
            pthread_join(ws[t].tid, NULL);
    }
    int64_t t1 = now_ns();
    double cpu = cpu_us() - cpu0;
    double secs = (double)(t1 - t0) / NS_PER_S;

    /* merge */
    struct stats S = { 0 };
    for (long t = 0; t < nthreads; t++) {
        struct stats *st = &ws[t].st;
        S.handshakes += st->handshakes;
        S.resumed += st->resumed;
        S.close_wait_timeouts += st->close_wait_timeouts;
        for (int k = 0; k < E_KINDS; k++)
            S.err[k] += st->err[k];
        for (size_t i = 0; i < st->nlat; i++)
            lat_add(&S, st->lat_us[i]);
    }
    qsort(S.lat_us, S.nlat, sizeof *S.lat_us, cmp_u32);
    uint64_t errors = 0;
    for (int k = 0; k < E_KINDS; k++)
        errors += S.err[k];
    printf("tls_handshake mode=%s tls=%s concurrency=%ld threads=%ld handshakes=%llu seconds=%.3f hs_per_s=%.1f "
           "resumed=%llu resumed_pct=%.1f errors=%llu connect_err=%llu handshake_err=%llu io_err=%llu "
           "status_err=%llu timeout_err=%llu close_wait_timeouts=%llu p50_us=%u p90_us=%u p99_us=%u p999_us=%u "
           "max_us=%u client_cpu_us_per_hs=%.1f version=%s cipher=%s group=%s\n",
           mode, tls, conc, nthreads, (unsigned long long)S.handshakes, secs,
           secs > 0 ? (double)S.handshakes / secs : 0.0, (unsigned long long)S.resumed,
           S.handshakes ? 100.0 * (double)S.resumed / (double)S.handshakes : 0.0, (unsigned long long)errors,
           (unsigned long long)S.err[E_CONNECT], (unsigned long long)S.err[E_HANDSHAKE],
           (unsigned long long)S.err[E_IO], (unsigned long long)S.err[E_STATUS],
           (unsigned long long)S.err[E_TIMEOUT], (unsigned long long)S.close_wait_timeouts, pct(&S, 50),
           pct(&S, 90), pct(&S, 99), pct(&S, 99.9), S.nlat ? S.lat_us[S.nlat - 1] : 0,
           S.handshakes ? cpu / (double)S.handshakes : 0.0, g_version, g_cipher, g_group);
    fflush(stdout);
    for (int k = 0; k < E_KINDS; k++)
        if (g_first_err[k][0])
            fprintf(stderr, "bench_tls_handshake: first %s: %s\n", err_name[k], g_first_err[k]);

    if (fail[0]) {
        fprintf(stderr, "bench_tls_handshake: RESUMPTION FAILED: %s\n", fail);
        return 3;
    }
    if (S.handshakes == 0) {
        fprintf(stderr, "bench_tls_handshake: no handshake completed\n");
        return 1;
    }
    if (g_resume && S.resumed == 0) {
        fprintf(stderr,
                "bench_tls_handshake: RESUMPTION FAILED: %llu handshakes, none resumed "
                "(the server did not accept the session it issued)\n",
                (unsigned long long)S.handshakes);
        return 3;
    }
    return 0;
}
