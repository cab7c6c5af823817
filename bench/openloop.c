/* bench_openloop: an open-loop, constant-rate HTTP/1.1 load generator.
 *
 * Usage: bench_openloop --url http://HOST:PORT/PATH --rate R --duration S
 *                       [--connections C] [--warmup S] [--timeout-ms T]
 *                       [--header 'Name: value' ...]
 *
 * A closed-loop client (wrk, ab) sends the next request only after the
 * previous one returned, so when the server stalls the load stalls with it and
 * a one-second pause shows up as a handful of slow samples instead of the
 * thousands of requests that real users would have sent meanwhile
 * ("coordinated omission").  Here request i is due at t0 + i/R no matter what;
 * if no connection is idle it waits in a queue, and its latency is measured
 * from the time it was due, so the queueing a slow server causes is charged to
 * the server.  The idea and the histogram layout follow wrk2 / HdrHistogram.
 *
 * One thread, epoll, C keep-alive connections without pipelining.  The whole
 * first `warmup` seconds of the schedule are sent but not recorded; the next
 * `duration` seconds are measured.  After the last scheduled request the
 * backlog is still sent and outstanding responses are awaited for at most the
 * timeout; whatever is left then counts as an error.
 *
 * The last line of stdout is machine-readable:
 *   openloop rate=R duration=S sent=N completed=N errors=N achieved_rps=X
 *            p50_us=X p90_us=X p99_us=X p999_us=X p9999_us=X max_us=X
 * Counters cover the measured window only.  Exit 1 if no connection to the
 * URL can be established at start, 2 on usage errors, 0 otherwise.
 */
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define NS_PER_S 1000000000LL
#define NS_PER_MS 1000000LL
#define RBUF_SIZE 65536             /* per connection; also the limit on a response head */
#define REQ_MAX 16384
#define MAX_HEADERS 64
#define MAX_EVENTS 256
#define SCAN_INTERVAL_NS (10 * NS_PER_MS) /* granularity of timeouts and reconnect retries */
#define RETRY_NS (50 * NS_PER_MS)         /* back-off after a failed connect, so a dead port is not hammered */
#define TIMER_TAG UINT32_MAX

/* ---- histogram ----------------------------------------------------------
 * Log-linear buckets over nanoseconds: values below 2^SUB_BITS are exact,
 * above that every power of two is split into 2^SUB_BITS linear buckets, so
 * the relative error is below 1/128 (0.8%) from 1 us up to any uint64 value.
 * Recording is one clz and an increment, cheap enough for every response. */
#define HIST_SUB_BITS 7
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_BUCKETS ((64 - HIST_SUB_BITS + 1) * HIST_SUB)

struct hist {
    uint64_t count;
    uint64_t min, max;
    double sum;
    uint64_t b[HIST_BUCKETS];
};

static unsigned hist_index(uint64_t v)
{
    if (v < HIST_SUB)
        return (unsigned)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v);
    unsigned shift = e - HIST_SUB_BITS;
    return (shift + 1) * HIST_SUB + (unsigned)((v >> shift) - HIST_SUB);
}

/* The highest value that maps to bucket idx: reporting the upper edge never
 * understates a percentile (HdrHistogram's convention). */
static uint64_t hist_upper(unsigned idx)
{
    if (idx < HIST_SUB)
        return idx;
    unsigned shift = idx / HIST_SUB - 1;
    uint64_t sub = idx % HIST_SUB + HIST_SUB;
    if (shift >= 64 - HIST_SUB_BITS - 1)
        return UINT64_MAX;
    return ((sub + 1) << shift) - 1;
}

static void hist_record(struct hist *h, uint64_t v)
{
    if (h->count == 0 || v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
    h->count++;
    h->sum += (double)v;
    h->b[hist_index(v)]++;
}

static uint64_t hist_percentile(const struct hist *h, double pct)
{
    if (h->count == 0)
        return 0;
    double want = pct / 100.0 * (double)h->count;
    uint64_t target = (uint64_t)want;
    if ((double)target < want)
        target++;
    if (target == 0)
        target = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= target) {
            uint64_t v = hist_upper(i);
            return v > h->max ? h->max : v < h->min ? h->min : v;
        }
    }
    return h->max;
}

/* ---- state ---------------------------------------------------------------- */

enum cstate { C_CLOSED, C_CONNECTING, C_IDLE, C_BUSY };
enum pstate { P_HEAD, P_BODY_LEN, P_BODY_EOF, P_CHUNK_SIZE, P_CHUNK_DATA, P_CHUNK_END, P_TRAILER };
enum perr { E_TIMEOUT, E_CONN, E_PARSE, E_STATUS, E_UNSENT, E_KINDS };
static const char *const perr_name[E_KINDS] = {"timeout", "connection", "bad response", "http status", "never sent"};

struct conn {
    int fd;
    enum cstate state;
    int idle_pos;       /* index in g.idle while C_IDLE, else -1 */
    uint32_t events;    /* current epoll interest */
    int64_t since;      /* C_CONNECTING: connect start; C_BUSY: request send time */
    int64_t retry_at;   /* C_CLOSED: when to connect again */
    uint64_t req;       /* schedule index of the request in flight */
    size_t woff;        /* request bytes written */
    enum pstate ps;
    uint64_t remain;    /* body or chunk bytes still to skip */
    int status;
    bool close_after;   /* the response ends the connection */
    size_t len;         /* bytes buffered in buf */
    char *buf;
};

static struct {
    /* options */
    const char *url;
    char host[256];
    char port[8];
    char hostport[300];
    char path[4096];
    double rate, duration, warmup;
    int nconns;
    int64_t timeout_ns;
    const char *headers[MAX_HEADERS];
    int nheaders;

    struct sockaddr_storage addr;
    socklen_t addrlen;
    char req[REQ_MAX];
    size_t reqlen;

    int ep;
    int tfd;            /* only when epoll_pwait2 is unavailable */
    int64_t tfd_armed;
    struct conn *conns;
    int *idle;
    int nidle;

    /* schedule: request i is due at t0 + i * 1e9 / rate */
    int64_t t0;
    uint64_t n_warm, n_total;
    uint64_t due;       /* requests whose time has come */
    uint64_t next;      /* next request to send; due - next are queued */
    uint64_t max_queued;

    /* measured-window results */
    uint64_t sent, completed, errors[E_KINDS];
    uint64_t warm_completed, warm_errors;
    uint64_t reconnects;
    int64_t last_complete;
    int last_connect_err;
    struct hist lat, svc;
} g;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
}

static int64_t sched_ns(uint64_t i)
{
    return g.t0 + (int64_t)((double)i * 1e9 / g.rate);
}

/* ---- connections ---------------------------------------------------------- */

static void idle_push(struct conn *c)
{
    c->state = C_IDLE;
    c->idle_pos = g.nidle;
    g.idle[g.nidle++] = (int)(c - g.conns);
}

static void idle_remove(struct conn *c)
{
    if (c->idle_pos < 0)
        return;
    int last = g.idle[--g.nidle];
    g.idle[c->idle_pos] = last;
    g.conns[last].idle_pos = c->idle_pos;
    c->idle_pos = -1;
}

static void set_events(struct conn *c, uint32_t ev)
{
    if (c->events == ev)
        return;
    struct epoll_event e = {.events = ev, .data.u32 = (uint32_t)(c - g.conns)};
    if (epoll_ctl(g.ep, EPOLL_CTL_MOD, c->fd, &e) < 0) {
        perror("bench_openloop: epoll_ctl");
        exit(1);
    }
    c->events = ev;
}

static void conn_open(struct conn *c, int64_t now)
{
    c->len = 0;
    c->idle_pos = -1;
    c->state = C_CLOSED;
    int fd = socket(g.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        g.last_connect_err = errno;
        c->retry_at = now + RETRY_NS;
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&g.addr, g.addrlen) < 0 && errno != EINPROGRESS) {
        g.last_connect_err = errno;
        close(fd);
        c->retry_at = now + RETRY_NS;
        return;
    }
    struct epoll_event e = {.events = EPOLLOUT, .data.u32 = (uint32_t)(c - g.conns)};
    if (epoll_ctl(g.ep, EPOLL_CTL_ADD, fd, &e) < 0) {
        perror("bench_openloop: epoll_ctl");
        exit(1);
    }
    c->fd = fd;
    c->events = EPOLLOUT;
    c->state = C_CONNECTING;
    c->since = now;
}

/* Count the in-flight request (if any) as failed with `kind`; request indexes
 * below n_warm belong to the warm-up and only feed the warm-up tally. */
static void count_error(uint64_t req, enum perr kind)
{
    if (req >= g.n_warm)
        g.errors[kind]++;
    else
        g.warm_errors++;
}

/* Drop the connection and dial again: immediately after an orderly close (the
 * server said Connection: close), after a back-off when the connect failed. */
static void conn_reset(struct conn *c, int64_t now, bool backoff)
{
    idle_remove(c);
    if (c->state != C_CLOSED) {
        close(c->fd); /* close() also removes it from the epoll set */
        c->fd = -1;
    }
    c->state = C_CLOSED;
    c->len = 0;
    if (backoff) {
        c->retry_at = now + RETRY_NS;
    } else {
        g.reconnects++;
        conn_open(c, now);
    }
}

static void conn_fail(struct conn *c, int64_t now, enum perr kind)
{
    if (c->state == C_BUSY)
        count_error(c->req, kind);
    conn_reset(c, now, false);
}

static void connect_done(struct conn *c, int64_t now)
{
    int err = 0;
    socklen_t el = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0)
        err = errno;
    if (err != 0) {
        g.last_connect_err = err;
        conn_reset(c, now, true);
        return;
    }
    set_events(c, EPOLLIN);
    idle_push(c);
}

/* Write what is left of the request; false if the connection died. */
static bool conn_write(struct conn *c, int64_t now)
{
    while (c->woff < g.reqlen) {
        ssize_t n = send(c->fd, g.req + c->woff, g.reqlen - c->woff, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                set_events(c, EPOLLIN | EPOLLOUT);
                return true;
            }
            if (errno == EINTR)
                continue;
            return false;
        }
        c->woff += (size_t)n;
    }
    set_events(c, EPOLLIN);
    return true;
}

/* Send request i on idle connection c.  False if nothing could be written:
 * the request was not consumed and the caller tries another connection. */
static bool conn_send(struct conn *c, uint64_t i, int64_t now)
{
    c->state = C_BUSY;
    c->req = i;
    c->woff = 0;
    c->ps = P_HEAD;
    c->close_after = false;
    c->since = now;
    if (!conn_write(c, now)) {
        bool none_written = c->woff == 0;
        if (none_written)
            c->state = C_IDLE; /* keeps conn_fail from charging the request */
        conn_fail(c, now, E_CONN);
        if (none_written)
            return false;
    }
    if (i >= g.n_warm)
        g.sent++;
    return true;
}

/* ---- response parsing ------------------------------------------------------ */

/* End of the head: a blank line, CRLF or (tolerated per RFC 9112) bare LF. */
static const char *find_head_end(const char *p, size_t n)
{
    const char *end = p + n;
    for (const char *q = memchr(p, '\n', n); q; q = memchr(q + 1, '\n', (size_t)(end - q - 1))) {
        if (end - q >= 2 && q[1] == '\n')
            return q + 2;
        if (end - q >= 3 && q[1] == '\r' && q[2] == '\n')
            return q + 3;
    }
    return NULL;
}

static bool has_token(const char *v, size_t n, const char *tok)
{
    size_t tl = strlen(tok);
    size_t i = 0;
    while (i < n) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t s = i;
        while (i < n && v[i] != ',')
            i++;
        size_t e = i;
        while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
            e--;
        if (e - s == tl && strncasecmp(v + s, tok, tl) == 0)
            return true;
    }
    return false;
}

/* Transfer-Encoding frames the body as chunked only if chunked is the last coding. */
static bool last_token_is(const char *v, size_t n, const char *tok)
{
    size_t e = n;
    while (e > 0 && (v[e - 1] == ' ' || v[e - 1] == '\t'))
        e--;
    size_t s = e;
    while (s > 0 && v[s - 1] != ',')
        s--;
    while (s < e && (v[s] == ' ' || v[s] == '\t'))
        s++;
    return e - s == strlen(tok) && strncasecmp(v + s, tok, e - s) == 0;
}

/* Parse a complete head [p, p+n).  Sets status, framing and close_after.
 * Returns -1 if malformed, 1 if the response has no body, 0 otherwise. */
static int parse_head(struct conn *c, const char *p, size_t n)
{
    if (n < 13 || memcmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1') || p[8] != ' ')
        return -1;
    for (int k = 9; k < 12; k++)
        if (p[k] < '0' || p[k] > '9')
            return -1;
    if (p[12] != ' ' && p[12] != '\r' && p[12] != '\n')
        return -1;
    int status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    bool keepalive = p[7] == '1';
    bool close_hdr = false, chunked = false, have_te = false, have_cl = false;
    uint64_t cl = 0;

    const char *end = p + n;
    const char *line = (const char *)memchr(p, '\n', n) + 1;
    while (line < end) {
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        if (!eol)
            return -1;
        size_t ll = (size_t)(eol - line);
        if (ll > 0 && line[ll - 1] == '\r')
            ll--;
        if (ll == 0)
            break;
        const char *colon = memchr(line, ':', ll);
        if (!colon)
            return -1;
        size_t nl = (size_t)(colon - line);
        const char *v = colon + 1;
        const char *ve = line + ll;
        while (v < ve && (*v == ' ' || *v == '\t'))
            v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        size_t vl = (size_t)(ve - v);
        if (nl == 14 && strncasecmp(line, "Content-Length", 14) == 0) {
            if (vl == 0 || vl > 18)
                return -1;
            uint64_t x = 0;
            for (size_t k = 0; k < vl; k++) {
                if (v[k] < '0' || v[k] > '9')
                    return -1;
                x = x * 10 + (uint64_t)(v[k] - '0');
            }
            if (have_cl && x != cl)
                return -1;
            have_cl = true;
            cl = x;
        } else if (nl == 17 && strncasecmp(line, "Transfer-Encoding", 17) == 0) {
            have_te = true;
            chunked = last_token_is(v, vl, "chunked");
        } else if (nl == 10 && strncasecmp(line, "Connection", 10) == 0) {
            if (has_token(v, vl, "close"))
                close_hdr = true;
            if (has_token(v, vl, "keep-alive"))
                keepalive = true;
        }
        line = eol + 1;
    }

    c->status = status;
    c->close_after = close_hdr || !keepalive;
    if ((status >= 100 && status < 200) || status == 204 || status == 304)
        return 1;
    if (have_te) {
        /* RFC 9112 6.3: Transfer-Encoding overrides Content-Length; without
         * chunked as the final coding the body runs to the close. */
        c->ps = chunked ? P_CHUNK_SIZE : P_BODY_EOF;
        if (!chunked)
            c->close_after = true;
        return 0;
    }
    if (have_cl) {
        if (cl == 0)
            return 1;
        c->ps = P_BODY_LEN;
        c->remain = cl;
        return 0;
    }
    c->ps = P_BODY_EOF;
    c->close_after = true;
    return 0;
}

static void complete(struct conn *c, int64_t now)
{
    uint64_t i = c->req;
    bool ok = c->status < 400;
    if (i < g.n_warm) {
        if (ok)
            g.warm_completed++;
        else
            g.warm_errors++;
    } else if (ok) {
        int64_t lat = now - sched_ns(i);
        hist_record(&g.lat, lat > 0 ? (uint64_t)lat : 0);
        hist_record(&g.svc, (uint64_t)(now - c->since));
        g.completed++;
        g.last_complete = now;
    } else {
        g.errors[E_STATUS]++;
    }
    /* Without pipelining, bytes past the response or a response that beat
     * the end of our own request mean the connection is out of step. */
    if (c->close_after || c->len > 0 || c->woff < g.reqlen) {
        c->state = C_IDLE;
        conn_reset(c, now, false);
    } else {
        idle_push(c);
    }
}

/* Find one line in [p, p+n): returns its length without the line end and
 * stores the total including it in *adv; -1 if incomplete. */
static long take_line(const char *p, size_t n, size_t *adv)
{
    const char *nl = memchr(p, '\n', n);
    if (!nl)
        return -1;
    size_t ll = (size_t)(nl - p);
    *adv = ll + 1;
    if (ll > 0 && p[ll - 1] == '\r')
        ll--;
    return (long)ll;
}

enum { PR_MORE, PR_DONE, PR_ERR };

/* Consume buffered bytes for the response in flight.  Body bytes are skipped
 * in place; only a partial head or chunk-size line stays buffered. */
static int parse(struct conn *c)
{
    size_t off = 0;
    int rc = PR_MORE;
    while (rc == PR_MORE && off < c->len) {
        const char *p = c->buf + off;
        size_t n = c->len - off;
        size_t adv = 0;
        long ll;
        switch (c->ps) {
        case P_HEAD: {
            const char *he = find_head_end(p, n);
            if (!he)
                goto need_more;
            adv = (size_t)(he - p);
            int r = parse_head(c, p, adv);
            if (r < 0 || c->status == 101)
                return PR_ERR;
            if (c->status >= 100 && c->status < 200)
                c->ps = P_HEAD; /* interim response: the real one follows */
            else if (r == 1)
                rc = PR_DONE;
            break;
        }
        case P_BODY_LEN:
        case P_CHUNK_DATA:
            adv = n < c->remain ? n : (size_t)c->remain;
            c->remain -= adv;
            if (c->remain == 0) {
                if (c->ps == P_BODY_LEN)
                    rc = PR_DONE;
                else
                    c->ps = P_CHUNK_END;
            }
            break;
        case P_BODY_EOF:
            adv = n;
            break;
        case P_CHUNK_SIZE: {
            ll = take_line(p, n, &adv);
            if (ll < 0)
                goto need_more;
            uint64_t sz = 0;
            long k = 0;
            for (; k < ll; k++) {
                char ch = p[k];
                int d = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
                      : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 : -1;
                if (d < 0)
                    break;
                if (sz >> 56)
                    return PR_ERR;
                sz = sz * 16 + (uint64_t)d;
            }
            if (k == 0 || (k < ll && p[k] != ';' && p[k] != ' ' && p[k] != '\t'))
                return PR_ERR;
            if (sz == 0) {
                c->ps = P_TRAILER;
            } else {
                c->ps = P_CHUNK_DATA;
                c->remain = sz;
            }
            break;
        }
        case P_CHUNK_END:
            ll = take_line(p, n, &adv);
            if (ll < 0)
                goto need_more;
            if (ll != 0)
                return PR_ERR;
            c->ps = P_CHUNK_SIZE;
            break;
        case P_TRAILER:
            ll = take_line(p, n, &adv);
            if (ll < 0)
                goto need_more;
            if (ll == 0)
                rc = PR_DONE;
            break;
        }
        off += adv;
        continue;
    need_more:
        /* A head or line that fills the whole buffer will never complete. */
        if (off == 0 && c->len == RBUF_SIZE)
            return PR_ERR;
        break;
    }
    if (off > 0) {
        memmove(c->buf, c->buf + off, c->len - off);
        c->len -= off;
    }
    return rc;
}

static void conn_read(struct conn *c, int64_t now)
{
    if (c->state == C_IDLE) {
        /* Idle: EOF (the server dropped keep-alive) or unsolicited bytes; either
         * way this connection cannot carry the next request. */
        conn_reset(c, now, false);
        return;
    }
    if (c->state != C_BUSY)
        return;
    ssize_t n = recv(c->fd, c->buf + c->len, RBUF_SIZE - c->len, 0);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return;
        conn_fail(c, now, E_CONN);
        return;
    }
    now = now_ns();
    if (n == 0) {
        if (c->ps == P_BODY_EOF && c->len == 0) {
            c->close_after = true;
            complete(c, now);
        } else {
            conn_fail(c, now, E_CONN);
        }
        return;
    }
    c->len += (size_t)n;
    int rc = parse(c);
    if (rc == PR_ERR)
        conn_fail(c, now, E_PARSE);
    else if (rc == PR_DONE)
        complete(c, now);
}

/* ---- main loop -------------------------------------------------------------- */

/* Every SCAN_INTERVAL: time out stuck requests and connects, redial closed
 * connections whose back-off has passed. */
static void scan(int64_t now)
{
    for (int k = 0; k < g.nconns; k++) {
        struct conn *c = &g.conns[k];
        if (c->state == C_BUSY && now - c->since >= g.timeout_ns) {
            conn_fail(c, now, E_TIMEOUT);
        } else if (c->state == C_CONNECTING && now - c->since >= g.timeout_ns) {
            g.last_connect_err = ETIMEDOUT;
            conn_reset(c, now, true);
        } else if (c->state == C_CLOSED && now >= c->retry_at) {
            conn_open(c, now);
        }
    }
}

static void dispatch(int64_t now)
{
    while (g.next < g.due && g.nidle > 0) {
        struct conn *c = &g.conns[g.idle[g.nidle - 1]];
        idle_remove(c);
        if (conn_send(c, g.next, now))
            g.next++;
    }
    if (g.due - g.next > g.max_queued)
        g.max_queued = g.due - g.next;
}

/* Block until an event or `wake` (absolute, ns).  epoll_pwait2 takes a
 * nanosecond timeout in the same syscall; kernels before 5.11 get a timerfd
 * instead, because epoll_wait's millisecond timeout would send up to 1 ms late. */
static int wait_events(struct epoll_event *evs, int64_t wake, int64_t now)
{
    if (g.tfd < 0) {
        int64_t d = wake > now ? wake - now : 0;
        struct timespec ts = {.tv_sec = d / NS_PER_S, .tv_nsec = d % NS_PER_S};
        int n = epoll_pwait2(g.ep, evs, MAX_EVENTS, &ts, NULL);
        if (n >= 0 || errno != ENOSYS)
            return n;
        g.tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        struct epoll_event e = {.events = EPOLLIN, .data.u32 = TIMER_TAG};
        if (g.tfd < 0 || epoll_ctl(g.ep, EPOLL_CTL_ADD, g.tfd, &e) < 0) {
            perror("bench_openloop: timerfd");
            exit(1);
        }
        g.tfd_armed = -1;
    }
    if (wake <= now)
        return epoll_wait(g.ep, evs, MAX_EVENTS, 0);
    if (wake != g.tfd_armed) {
        struct itimerspec its = {.it_value = {.tv_sec = wake / NS_PER_S, .tv_nsec = wake % NS_PER_S}};
        timerfd_settime(g.tfd, TFD_TIMER_ABSTIME, &its, NULL);
        g.tfd_armed = wake;
    }
    return epoll_wait(g.ep, evs, MAX_EVENTS, -1);
}

static void handle_events(struct epoll_event *evs, int n, int64_t now)
{
    for (int k = 0; k < n; k++) {
        if (evs[k].data.u32 == TIMER_TAG) {
            uint64_t ticks;
            if (read(g.tfd, &ticks, sizeof ticks) < 0) {
                /* EAGAIN: already consumed; nothing to do */
            }
            g.tfd_armed = -1;
            continue;
        }
        struct conn *c = &g.conns[evs[k].data.u32];
        uint32_t ev = evs[k].events;
        if (c->state == C_CONNECTING) {
            connect_done(c, now);
            continue;
        }
        if ((ev & EPOLLOUT) && c->state == C_BUSY && c->woff < g.reqlen && !conn_write(c, now)) {
            conn_fail(c, now, E_CONN);
            continue;
        }
        if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP))
            conn_read(c, now);
    }
}

/* Dial every connection before the clock starts, so connection setup is not
 * charged to the first requests.  False if none of them got through. */
static bool connect_all(void)
{
    int64_t start = now_ns();
    for (int k = 0; k < g.nconns; k++)
        conn_open(&g.conns[k], start);
    struct epoll_event evs[MAX_EVENTS];
    for (;;) {
        int64_t now = now_ns();
        int connecting = 0;
        for (int k = 0; k < g.nconns; k++)
            connecting += g.conns[k].state == C_CONNECTING;
        if (connecting == 0 || now - start >= g.timeout_ns)
            break;
        int n = wait_events(evs, start + g.timeout_ns, now);
        if (n < 0 && errno != EINTR) {
            perror("bench_openloop: epoll_wait");
            exit(1);
        }
        handle_events(evs, n < 0 ? 0 : n, now_ns());
    }
    return g.nidle > 0;
}

static void run(void)
{
    struct epoll_event evs[MAX_EVENTS];
    g.t0 = now_ns();
    g.n_warm = (uint64_t)(g.warmup * g.rate + 0.5);
    g.n_total = g.n_warm + (uint64_t)(g.duration * g.rate + 0.5);
    int64_t sched_end = sched_ns(g.n_total);
    int64_t drain_end = sched_end + g.timeout_ns;
    int64_t next_scan = g.t0 + SCAN_INTERVAL_NS;

    for (;;) {
        int64_t now = now_ns();
        while (g.due < g.n_total && sched_ns(g.due) <= now)
            g.due++;
        dispatch(now);
        if (now >= next_scan) {
            scan(now);
            next_scan = now + SCAN_INTERVAL_NS;
            dispatch(now);
        }
        if (g.next == g.n_total) {
            bool busy = false;
            for (int k = 0; k < g.nconns && !busy; k++)
                busy = g.conns[k].state == C_BUSY;
            if (!busy)
                break;
        }
        if (now >= drain_end)
            break;

        int64_t wake = next_scan < drain_end ? next_scan : drain_end;
        /* With a backlog the next send waits for a free connection, not the clock. */
        if (g.due < g.n_total && g.next == g.due) {
            int64_t t = sched_ns(g.due);
            if (t < wake)
                wake = t;
        }
        int n = wait_events(evs, wake, now);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("bench_openloop: epoll_wait");
            exit(1);
        }
        handle_events(evs, n, now_ns());
    }

    /* Whatever is still in flight or never left the queue failed. */
    for (int k = 0; k < g.nconns; k++)
        if (g.conns[k].state == C_BUSY)
            count_error(g.conns[k].req, E_TIMEOUT);
    uint64_t first_unsent = g.next > g.n_warm ? g.next : g.n_warm;
    if (g.n_total > first_unsent)
        g.errors[E_UNSENT] += g.n_total - first_unsent;
}

/* ---- setup and report -------------------------------------------------------- */

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_openloop --url http://HOST[:PORT]/PATH --rate REQ_PER_S --duration SECONDS\n"
            "                      [--connections C (64)] [--warmup SECONDS (1)] [--timeout-ms T (2000)]\n"
            "                      [--header 'Name: value' ...]\n");
    exit(2);
}

static double parse_num(const char *s, const char *what, double lo)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo) || v > 1e12) {
        fprintf(stderr, "bench_openloop: bad %s '%s'\n", what, s);
        exit(2);
    }
    return v;
}

static void parse_url(const char *url)
{
    static const char scheme[] = "http://";
    if (strncasecmp(url, scheme, sizeof scheme - 1) != 0) {
        fprintf(stderr, "bench_openloop: only http:// URLs are supported: %s\n", url);
        exit(2);
    }
    const char *a = url + sizeof scheme - 1;
    const char *slash = strchr(a, '/');
    size_t alen = slash ? (size_t)(slash - a) : strlen(a);
    snprintf(g.path, sizeof g.path, "%s", slash ? slash : "/");
    if (alen == 0 || alen >= sizeof g.host) {
        fprintf(stderr, "bench_openloop: bad URL %s\n", url);
        exit(2);
    }
    snprintf(g.hostport, sizeof g.hostport, "%.*s", (int)alen, a);
    const char *hs = a, *he, *colon;
    if (*a == '[') { /* [v6addr]:port */
        he = memchr(a, ']', alen);
        if (!he) {
            fprintf(stderr, "bench_openloop: bad URL %s\n", url);
            exit(2);
        }
        hs = a + 1;
        colon = he + 1 < a + alen && he[1] == ':' ? he + 1 : NULL;
    } else {
        colon = memchr(a, ':', alen);
        he = colon ? colon : a + alen;
    }
    snprintf(g.host, sizeof g.host, "%.*s", (int)(he - hs), hs);
    size_t plen = colon ? (size_t)(a + alen - colon - 1) : 0;
    if (colon && (plen == 0 || plen >= sizeof g.port)) {
        fprintf(stderr, "bench_openloop: bad port in %s\n", url);
        exit(2);
    }
    snprintf(g.port, sizeof g.port, "%.*s", colon ? (int)plen : 2, colon ? colon + 1 : "80");
}

static void build_request(void)
{
    bool have_host = false;
    for (int k = 0; k < g.nheaders; k++)
        if (strncasecmp(g.headers[k], "Host:", 5) == 0)
            have_host = true;
    int n = snprintf(g.req, sizeof g.req, "GET %s HTTP/1.1\r\n", g.path);
    if (!have_host && n >= 0 && (size_t)n < sizeof g.req)
        n += snprintf(g.req + n, sizeof g.req - (size_t)n, "Host: %s\r\n", g.hostport);
    for (int k = 0; k < g.nheaders && n >= 0 && (size_t)n < sizeof g.req; k++)
        n += snprintf(g.req + n, sizeof g.req - (size_t)n, "%s\r\n", g.headers[k]);
    if (n >= 0 && (size_t)n < sizeof g.req)
        n += snprintf(g.req + n, sizeof g.req - (size_t)n, "\r\n");
    if (n < 0 || (size_t)n >= sizeof g.req) {
        fprintf(stderr, "bench_openloop: request too large\n");
        exit(2);
    }
    g.reqlen = (size_t)n;
}

static void resolve(void)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res;
    int rc = getaddrinfo(g.host, g.port, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "bench_openloop: cannot resolve %s: %s\n", g.host, gai_strerror(rc));
        exit(1);
    }
    memcpy(&g.addr, res->ai_addr, res->ai_addrlen);
    g.addrlen = res->ai_addrlen;
    freeaddrinfo(res);
}

static void print_pcts(const char *title, const struct hist *h)
{
    static const double pcts[] = {50, 90, 99, 99.9, 99.99};
    printf("  %s (us):\n   ", title);
    for (size_t k = 0; k < sizeof pcts / sizeof pcts[0]; k++)
        printf(" p%g %.1f ", pcts[k], (double)hist_percentile(h, pcts[k]) / 1e3);
    printf(" max %.1f  mean %.1f\n", (double)h->max / 1e3, h->count ? h->sum / (double)h->count / 1e3 : 0.0);
}

static void report(void)
{
    uint64_t errors = 0;
    for (int k = 0; k < E_KINDS; k++)
        errors += g.errors[k];
    int64_t meas_start = sched_ns(g.n_warm);
    double window = g.duration;
    if (g.completed > 0 && (double)(g.last_complete - meas_start) / 1e9 > window)
        window = (double)(g.last_complete - meas_start) / 1e9;
    double achieved = window > 0 ? (double)g.completed / window : 0.0;

    printf("bench_openloop %s: %.1f req/s for %.1f s after %.1f s warm-up, %d connections\n", g.url, g.rate,
           g.duration, g.warmup, g.nconns);
    printf("  scheduled %llu  sent %llu  completed %llu  errors %llu (", (unsigned long long)(g.n_total - g.n_warm),
           (unsigned long long)g.sent, (unsigned long long)g.completed, (unsigned long long)errors);
    for (int k = 0; k < E_KINDS; k++)
        printf("%s%s %llu", k ? ", " : "", perr_name[k], (unsigned long long)g.errors[k]);
    printf(")\n");
    printf("  achieved %.1f req/s  max queued %llu  reconnects %llu  warm-up completed %llu errors %llu\n", achieved,
           (unsigned long long)g.max_queued, (unsigned long long)g.reconnects, (unsigned long long)g.warm_completed,
           (unsigned long long)g.warm_errors);
    print_pcts("latency from scheduled time (corrected for coordinated omission)", &g.lat);
    print_pcts("service time from actual send (uncorrected, for comparison)", &g.svc);
    if (achieved < 0.99 * g.rate)
        printf("  note: achieved rate is below the target: the server or this client is saturated\n");
    printf("openloop rate=%.1f duration=%.1f sent=%llu completed=%llu errors=%llu achieved_rps=%.1f p50_us=%.1f "
           "p90_us=%.1f p99_us=%.1f p999_us=%.1f p9999_us=%.1f max_us=%.1f\n",
           g.rate, g.duration, (unsigned long long)g.sent, (unsigned long long)g.completed,
           (unsigned long long)errors, achieved, (double)hist_percentile(&g.lat, 50) / 1e3,
           (double)hist_percentile(&g.lat, 90) / 1e3, (double)hist_percentile(&g.lat, 99) / 1e3,
           (double)hist_percentile(&g.lat, 99.9) / 1e3, (double)hist_percentile(&g.lat, 99.99) / 1e3,
           (double)g.lat.max / 1e3);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"url", required_argument, NULL, 'u'},         {"rate", required_argument, NULL, 'r'},
        {"duration", required_argument, NULL, 'd'},    {"connections", required_argument, NULL, 'c'},
        {"warmup", required_argument, NULL, 'w'},      {"timeout-ms", required_argument, NULL, 't'},
        {"header", required_argument, NULL, 'H'},      {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    g.nconns = 64;
    g.warmup = 1;
    g.timeout_ns = 2000 * NS_PER_MS;
    g.rate = -1;
    g.duration = -1;
    g.tfd = -1;
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'u':
            g.url = optarg;
            break;
        case 'r':
            g.rate = parse_num(optarg, "--rate", 1e-3);
            break;
        case 'd':
            g.duration = parse_num(optarg, "--duration", 1e-3);
            break;
        case 'c':
            g.nconns = (int)parse_num(optarg, "--connections", 1);
            if (g.nconns > 100000)
                usage();
            break;
        case 'w':
            g.warmup = parse_num(optarg, "--warmup", 0);
            break;
        case 't':
            g.timeout_ns = (int64_t)(parse_num(optarg, "--timeout-ms", 1) * (double)NS_PER_MS);
            break;
        case 'H':
            if (g.nheaders == MAX_HEADERS || !strchr(optarg, ':') || optarg[0] == ':' || strpbrk(optarg, "\r\n")) {
                fprintf(stderr, "bench_openloop: bad or too many --header '%s'\n", optarg);
                exit(2);
            }
            g.headers[g.nheaders++] = optarg;
            break;
        default:
            usage();
        }
    }
    if (optind != argc || !g.url || g.rate <= 0 || g.duration <= 0)
        usage();
    if (g.rate * (g.duration + g.warmup) > 1e10) {
        fprintf(stderr, "bench_openloop: rate x time is absurdly large\n");
        exit(2);
    }
    parse_url(g.url);
    build_request();
    resolve();
    signal(SIGPIPE, SIG_IGN);
    /* The default 50 us timer slack would let every wake-up, hence every
     * send, run up to 50 us late, which lands directly in the latencies. */
    prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);

    g.ep = epoll_create1(EPOLL_CLOEXEC);
    g.conns = calloc((size_t)g.nconns, sizeof *g.conns);
    g.idle = calloc((size_t)g.nconns, sizeof *g.idle);
    if (g.ep < 0 || !g.conns || !g.idle) {
        perror("bench_openloop: setup");
        return 1;
    }
    for (int k = 0; k < g.nconns; k++) {
        g.conns[k].fd = -1;
        g.conns[k].idle_pos = -1;
        g.conns[k].buf = malloc(RBUF_SIZE);
        if (!g.conns[k].buf) {
            perror("bench_openloop: malloc");
            return 1;
        }
    }
    if (!connect_all()) {
        fprintf(stderr, "bench_openloop: cannot connect to %s (%s:%s): %s\n", g.url, g.host, g.port,
                strerror(g.last_connect_err ? g.last_connect_err : ETIMEDOUT));
        return 1;
    }
    run();
    report();
    for (int k = 0; k < g.nconns; k++) {
        if (g.conns[k].state != C_CLOSED)
            close(g.conns[k].fd);
        free(g.conns[k].buf);
    }
    free(g.conns);
    free(g.idle);
    close(g.ep);
    if (g.tfd >= 0)
        close(g.tfd);
    return 0;
}
