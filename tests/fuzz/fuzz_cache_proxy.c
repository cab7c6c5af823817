/* libFuzzer harness for the response cache in the request path (src/proxy_cache.c, src/cache.c,
 * src/cache_policy.c and the proxy around them): a real worker, driven inline in this thread, with a
 * cache section, one plain listener and one pool whose only backend is a listening socket of the
 * harness's own (the fake origin). Each input is a small script: client requests (method, target,
 * Host and a few fuzzed header lines: Cache-Control, Pragma, conditionals, Range, Authorization,
 * Cookie, X-Purge-Token, ...) on new or kept-alive loopback connections, and the origin's answers to
 * whatever the worker forwarded (a status, fuzzed Cache-Control, Vary, ETag, Last-Modified, Date,
 * Expires, Age, Set-Cookie, Content-Location, Location lines, a body framed by Content-Length,
 * chunked, by the close or truncated, written in pieces), with worker turns (0 ms waits) between
 * steps, clients and origin connections closed or reset in the middle.
 *
 * Checked, beyond ASan/UBSan (a trap with a message on stderr otherwise):
 *   - the cache's books, after every step: used <= cache.size, used == the charges of the entries
 *     (table and zombies), objects == the READY entries on the LRU list;
 *   - after the input, every socket closed: live_conns and live_clients back to 0 within a bounded
 *     number of turns, no fetch (FILLING entry) and no zombie left, the wake list empty; then the
 *     whole cache is invalidated and must account for 0 bytes (so nothing carries over to the next
 *     input: a crash replays from its input alone);
 *   - what each client receives parses as HTTP/1.1 responses, one per request in order (1xx
 *     interim ones aside), framed per RFC 9112 6.3 (HEAD, 204 and 304 without a body);
 *   - the origin never receives a PURGE, nor a cacheable GET/HEAD that carried
 *     Cache-Control: only-if-cached (RFC 9111 5.2.1.7; requests are tagged with X-Seq);
 *   - with X-Cache (configuration A): a HIT or STALE answer is never given to a request the cache
 *     must bypass (unsafe method, Range, a body, a cache: false route, PURGE), is never a 206, is a
 *     304 only when the request was conditional, and never carries Set-Cookie (store_set_cookie off).
 *
 * Two configurations, chosen by the input's first byte: A (256k budget, max_object 64k, hits of 16k
 * and more by vmsplice, heuristic freshness, sorted query, X-Device in the key, X-Cache on, long
 * timeouts) and B (128k budget, key without host or query, Set-Cookie stored, no X-Cache, no
 * splicing, Server replaced on /y/, 5 ms lock, response and body timeouts, which a "sleep" step
 * lets fire).
 *
 * Input layout (every byte read past the end is 0):
 *   byte 0     bit 0: configuration B (else A)
 *   then up to 12 steps (at most 8 requests), each an op byte:
 *     op & 3 == 0 or 1: REQUEST; with 1 the next step follows without letting the worker turn (the
 *                next request is pipelined, or arrives while this one is read). op bits 2-3: client
 *                slot (0..2, 3 is 2); bit 4: on a new connection (else the slot's kept-alive one,
 *                opened if none); bits 5-7: method (GET x4, HEAD, POST, PURGE, DELETE). Then
 *       r1: bits 0-3 target, bits 4-5 Host, bit 6 written in two pieces, bit 7 the origin answers
 *           at once (a response spec follows, read whether or not anything reached the origin)
 *       r2: bits 0-2 header lines (0..7), bit 3 HTTP/1.0, bit 4 Connection: close, bit 5 a body
 *           (POST always has one), bits 6-7 the body's length / 4
 *       per header line: h: bits 0-3 the name, bits 4-7 a value from the name's list, or (12..15) a
 *           raw value: a length byte (% 48) and that many bytes (CR, LF, NUL become 'x')
 *     op & 3 == 2: RESPOND to the oldest request pending at the origin: a response spec follows.
 *     op & 3 == 3: OTHER, bits 2-4: 0 n turns (n = 1 + bits 5-7), no settling; 1 close client
 *                  slot (bits 5-7) % 3; 2 reset it; 3 half-close it; 4 close an origin connection (the
 *                  oldest pending, else any); 5 reset it; 6 sleep 6 ms (configuration B, once per
 *                  input; A: a settle); 7 settle.
 *   Response spec:
 *     s0: bits 0-3 status (200 203 204 206 301 304 404 500 503 200 302 410 502 504 100, 15: two
 *         bytes give 100..999); bits 4-5 framing (Content-Length, chunked, close-delimited,
 *         truncated: a Content-Length larger than the body); bit 6 Connection: close; bit 7 the
 *         origin closes its connection after the response
 *     s1: body length (< 100: itself; else from a table up to 70000); the bytes are generated
 *     s2: bits 0-2 header lines; bits 3-4 chunk variant (plain, extensions, trailer, bad size);
 *         bits 5-7 chunk size
 *     s3: bit 0 written in three pieces (two cut bytes follow); bit 1 the requesting client closes
 *         after the first piece; bit 2 closes are resets; bit 3 with nothing pending, written to an
 *         idle origin connection anyway; bit 4 HTTP/1.0 status line
 *     header lines as for requests, names and values from the response's lists.
 *
 * The worker is kept from one input to the next (restarting it would cost more than the input): since
 * every socket is closed and the cache emptied at the end of each, an input replays alone the same way
 * (-runs=0 on a crash file reproduces it).
 *
 * FUZZ_CACHE_PROXY_VERBOSE=1 prints what each step does and every answer's status line and X-Cache. */
#include <ringlb/cache.h>
#include <ringlb/config.h>
#include <ringlb/conn.h>
#include <ringlb/log.h>
#include <ringlb/proxy.h>
#include <ringlb/worker.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);

/* Coverage feedback comes from ringlb's code only: the harness's own loops (the cache's books walked
 * after every step, the clients' byte-by-byte validation) would flood libFuzzer with features that say
 * nothing about the code under test, and cost a third of the time. */
#pragma clang attribute push(__attribute__((no_sanitize("coverage"))), apply_to = function)

#define INPUT_MAX 16384
#define MAX_STEPS 12
#define MAX_REQUESTS 8
#define NUM_CLIENTS 3
#define MAX_ORIGIN 32
#define MAX_SEQ 64
#define SETTLE_TURNS 64
#define FAST_TURNS 200
#define FREE_DEADLINE_MS 3000
#define PURGE_TOKEN "0123456789abcdef0123"

static bool verbose;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    if (!verbose)
        return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
}

/* A violated property: the message, then the trap libFuzzer reports with the input. */
static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("fuzz_cache_proxy: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    __builtin_trap();
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------------------------------------------------
 * The input
 */

struct rd {
    const uint8_t *p;
    size_t n;
};

static uint8_t u8(struct rd *in)
{
    if (!in->n)
        return 0;
    in->n--;
    return *in->p++;
}

static bool more(const struct rd *in)
{
    return in->n != 0;
}

/* ------------------------------------------------------------------------------------------------
 * Workers and the origin's listening socket
 */

struct inst {
    struct rlb_worker *w;
    struct rlb_config *cfg;
    struct sockaddr_in addr;
    bool b; /* configuration B */
};

static struct inst insts[2];
static int origin_listen_fd = -1;

static unsigned free_port(int *keep)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 || getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        fprintf(stderr, "fuzz_cache_proxy: cannot find a free loopback port\n");
        exit(1);
    }
    if (keep != NULL)
        *keep = fd;
    else
        close(fd);
    return ntohs(a.sin_port);
}

static struct rlb_config *make_config(bool b, unsigned port, unsigned origin_port)
{
    static char yaml[4096];
    const char *cache_a = "cache:\n"
                          "  size: 256k\n"
                          "  max_object: 64k\n"
                          "  splice_min: 16k\n"
                          "  heuristic: true\n"
                          "  key:\n"
                          "    query: sorted\n"
                          "    headers: [X-Device]\n"
                          "  purge_token: \"" PURGE_TOKEN "\"\n"
                          "timeouts:\n"
                          "  client_header: 10s\n"
                          "  upstream_response: 10s\n";
    const char *cache_b = "cache:\n"
                          "  size: 128k\n"
                          "  max_object: 32k\n"
                          "  splice_min: 0\n"
                          "  key:\n"
                          "    host: false\n"
                          "    query: ignore\n"
                          "  status_header: false\n"
                          "  store_set_cookie: true\n"
                          "  lock_timeout: 5ms\n"
                          "  purge_token: \"" PURGE_TOKEN "\"\n"
                          "timeouts:\n"
                          "  client_header: 10s\n"
                          "  upstream_response: 5ms\n"
                          "  body_idle: 5ms\n";
    const char *route_b = "      - path: /y/\n"
                          "        pool: app\n"
                          "        server_header: replace\n"
                          "        server_value: rlb\n"
                          "        hide_powered_by: true\n";
    int n = snprintf(yaml, sizeof(yaml),
                     "workers: 1\n"
                     "max_connections: 64\n"
                     "limits:\n"
                     "  max_header_size: 16k\n"
                     "buffers:\n"
                     "  count: 64\n"
                     "  size: 16k\n"
                     "  client_count: 64\n"
                     "  client_size: 16k\n"
                     "%s"
                     "listeners:\n"
                     "  - name: web\n"
                     "    address: 127.0.0.1:%u\n"
                     "    defer_accept: false\n"
                     "pools:\n"
                     "  - name: app\n"
                     "    retry:\n"
                     "      tries: 2\n"
                     "      budget_percent: 100\n"
                     "      budget_min: 1000\n"
                     "    backends:\n"
                     "      - 127.0.0.1:%u\n"
                     "vhosts:\n"
                     "  - hosts: [\"*\"]\n"
                     "    routes:\n"
                     "      - path: /api/\n"
                     "        pool: app\n"
                     "        cache: false\n"
                     "%s"
                     "      - path: /\n"
                     "        pool: app\n",
                     b ? cache_b : cache_a, port, origin_port, b ? route_b : "");
    if (n <= 0 || (size_t)n >= sizeof(yaml)) {
        fprintf(stderr, "fuzz_cache_proxy: configuration too long\n");
        exit(1);
    }
    char err[RLB_CONFIG_ERR_MAX];
    struct rlb_config *cfg = rlb_config_load_string("<fuzz_cache_proxy>", yaml, (size_t)n, err, sizeof(err));
    if (cfg == NULL) {
        fprintf(stderr, "fuzz_cache_proxy: configuration refused: %s\n", err);
        exit(1);
    }
    return cfg;
}

static void start_inst(struct inst *I, bool b, unsigned origin_port)
{
    I->b = b;
    for (int attempt = 0;; attempt++) {
        unsigned port = free_port(NULL);
        I->cfg = make_config(b, port, origin_port);
        I->w = aligned_alloc(64, (sizeof(*I->w) + 63) & ~(size_t)63);
        if (I->w == NULL)
            exit(1);
        memset(I->w, 0, sizeof(*I->w));
        I->w->id = b;
        I->w->cfg = I->cfg;
        I->w->cpu = -1; /* 0 would pin the fuzzer to CPU 0 */
        int rc = rlb_worker_start_inline(I->w);
        if (rc == 0 && I->w->cache != NULL) {
            I->addr = (struct sockaddr_in){.sin_family = AF_INET,
                                           .sin_port = htons((uint16_t)port),
                                           .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
            rlb_worker_turn(I->w, 0); /* the accept's submission */
            return;
        }
        fprintf(stderr, "fuzz_cache_proxy: starting the worker: %s (%s)\n", I->w->start_msg,
                rc ? strerror(-rc) : "no cache");
        rlb_worker_stop_inline(I->w);
        free(I->w);
        rlb_config_free(I->cfg);
        if (rc != -EADDRINUSE || attempt >= 10)
            exit(1);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    rlb_log_level = RLB_LOG_ERROR;
    signal(SIGPIPE, SIG_IGN); /* as the server does (src/server.c): a splice into a closed socket raises it */
    verbose = getenv("FUZZ_CACHE_PROXY_VERBOSE") != NULL;
    if (verbose)
        rlb_log_level = RLB_LOG_DEBUG;
    unsigned origin_port = free_port(&origin_listen_fd);
    if (listen(origin_listen_fd, 256) != 0) {
        perror("fuzz_cache_proxy: listen");
        exit(1);
    }
    fcntl(origin_listen_fd, F_SETFL, fcntl(origin_listen_fd, F_GETFL) | O_NONBLOCK);
    start_inst(&insts[0], false, origin_port);
    start_inst(&insts[1], true, origin_port);
    return 0;
}

/* ------------------------------------------------------------------------------------------------
 * Per-input state
 */

#define RQ_HEAD 0x01   /* the request was HEAD: its answer has no body */
#define RQ_BYPASS 0x02 /* the cache must not answer it (unsafe method, Range, body, cache: false, PURGE) */
#define RQ_COND 0x04   /* it carried If-None-Match or If-Modified-Since */
#define RQ_OIC 0x08    /* a cacheable GET/HEAD with only-if-cached: the origin must never see it */

struct client {
    int fd;          /* -1: none */
    bool eof;        /* the server's side ended (FIN or reset) */
    bool wr_shut;
    /* Validation of what comes back */
    int st;
    char head[32768];
    size_t hlen;
    char line[512];
    size_t llen;
    uint64_t left;
    uint8_t q[32];   /* RQ_* of the requests not answered yet, in order */
    unsigned qh, qt;
    uint32_t qseq[32];
};

enum { V_HEAD, V_BODY, V_CHUNK_LINE, V_CHUNK_DATA, V_CHUNK_END, V_TRAILER, V_UNTIL_CLOSE, V_IGNORE };

struct origin {
    int fd;          /* -1: free */
    char buf[16384];
    size_t len;
    uint64_t skip;   /* request body bytes still to drop */
    bool pending;    /* a request head was read and is not answered yet */
    bool head_req;   /* ... it is a HEAD */
    uint32_t seq;    /* ... its X-Seq (0: none) */
    uint64_t order;  /* ... when it came */
};

static struct client clients[NUM_CLIENTS];
static struct origin origins[MAX_ORIGIN];
static uint8_t seq_flags[MAX_SEQ + 1];
static int seq_slot[MAX_SEQ + 1];
static uint32_t next_seq;
static uint64_t order_counter;
static uint64_t io_events; /* anything the harness saw move: settling goes on while it grows */
static struct inst *cur;
static unsigned responses_written;
static unsigned long turns_total; /* for FUZZ_CACHE_PROXY_VERBOSE */

/* ------------------------------------------------------------------------------------------------
 * The cache's books
 */

static void check_books(const char *when)
{
    struct rlb_worker *w = cur->w;
    struct rlb_cache *c = w->cache;
    if (c->used > w->cfg->cache.size)
        fail("%s: the cache holds %llu bytes, above its budget of %llu", when, (unsigned long long)c->used,
             (unsigned long long)w->cfg->cache.size);
    uint64_t charged = 0, ready = 0, count = 0;
    for (uint32_t b = 0; b <= c->mask; b++) {
        for (struct rlb_cache_entry *e = c->buckets[b]; e; e = e->hnext) {
            charged += e->charge;
            count++;
            if (e->state == RLB_CE_READY)
                ready++;
            else if (e->state != RLB_CE_FILLING)
                fail("%s: an entry in the table in state %u", when, e->state);
            if ((e->hash & c->mask) != b)
                fail("%s: an entry in the wrong bucket", when);
        }
    }
    for (struct rlb_cache_entry *e = c->zombies.lru_next; e != &c->zombies; e = e->lru_next) {
        if (e->state != RLB_CE_DEAD)
            fail("%s: a zombie in state %u", when, e->state);
        charged += e->charge;
    }
    uint64_t on_lru = 0;
    for (struct rlb_cache_entry *e = c->lru.lru_next; e != &c->lru; e = e->lru_next) {
        if (e->state != RLB_CE_READY)
            fail("%s: an entry on the LRU list in state %u", when, e->state);
        on_lru++;
    }
    if (charged != c->used)
        fail("%s: the cache counts %llu bytes used, its entries are charged %llu", when, (unsigned long long)c->used,
             (unsigned long long)charged);
    if (ready != c->objects || on_lru != c->objects)
        fail("%s: %llu objects counted, %llu READY in the table, %llu on the LRU list", when,
             (unsigned long long)c->objects, (unsigned long long)ready, (unsigned long long)on_lru);
    if (count != c->count)
        fail("%s: %u entries counted, %llu in the table", when, c->count, (unsigned long long)count);
}

/* ------------------------------------------------------------------------------------------------
 * Validating what a client receives
 */

/* Case-insensitive comparison of <n> bytes, by hand: libc's is intercepted by libFuzzer (a hook per call). */
static bool ieq(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char x = a[i], y = b[i];
        if (x >= 'A' && x <= 'Z')
            x = (char)(x + 32);
        if (y >= 'A' && y <= 'Z')
            y = (char)(y + 32);
        if (x != y)
            return false;
    }
    return true;
}

static bool has_line(const char *head, size_t len, const char *prefix)
{
    size_t pl = strlen(prefix);
    for (size_t i = 0; i + 2 + pl <= len; i++)
        if (head[i] == '\r' && head[i + 1] == '\n' && ieq(head + i + 2, prefix, pl))
            return true;
    return false;
}

/* The value of the first field <name> (without the colon) in the head, or NULL. */
static const char *field(const char *head, size_t len, const char *name, size_t *vlen, size_t *from)
{
    size_t nl = strlen(name);
    for (size_t i = *from; i + 3 + nl <= len; i++) {
        if (head[i] != '\r' || head[i + 1] != '\n' || !ieq(head + i + 2, name, nl) || head[i + 2 + nl] != ':')
            continue;
        size_t s = i + 3 + nl;
        while (s < len && (head[s] == ' ' || head[s] == '\t'))
            s++;
        size_t e = s;
        while (e < len && head[e] != '\r')
            e++;
        while (e > s && (head[e - 1] == ' ' || head[e - 1] == '\t'))
            e--;
        *vlen = e - s;
        *from = e;
        return head + s;
    }
    return NULL;
}

static bool tchar(unsigned char ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

/* A whole response head (terminator included) arrived on client <k>. */
static void response_head(int k, struct client *cl, const char *h, size_t len)
{
    if (len < 14 || (memcmp(h, "HTTP/1.1 ", 9) != 0 && memcmp(h, "HTTP/1.0 ", 9) != 0))
        fail("client %d: a response that does not start with a status line: \"%.*s\"", k, (int)(len > 60 ? 60 : len), h);
    for (int i = 9; i < 12; i++)
        if (h[i] < '0' || h[i] > '9')
            fail("client %d: a status line without a status code: \"%.*s\"", k, (int)(len > 60 ? 60 : len), h);
    if (h[12] != ' ' && h[12] != '\r')
        fail("client %d: a malformed status line", k);
    int status = (h[9] - '0') * 100 + (h[10] - '0') * 10 + (h[11] - '0');
    /* Field lines: a token, a colon. */
    size_t i = 0;
    while (i < len && h[i] != '\n')
        i++;
    for (i++; i + 2 < len;) {
        size_t e = i;
        while (e < len && h[e] != '\n')
            e++;
        if (e >= len || h[e - 1] != '\r')
            fail("client %d: a field line not ended by CRLF", k);
        size_t c = i;
        while (c < e && tchar((unsigned char)h[c]))
            c++;
        if (c == i || h[c] != ':')
            fail("client %d: a malformed field line \"%.*s\"", k, (int)(e - i - 1), h + i);
        i = e + 1;
    }
    size_t xl = 0, from = 0;
    const char *xc = field(h, len - 2, "X-Cache", &xl, &from);
    say("    client %d <- %.*s%s%.*s\n", k, (int)(memchr(h, '\r', len) ? (const char *)memchr(h, '\r', len) - h : 12), h,
        xc ? "  X-Cache: " : "", (int)xl, xc ? xc : "");
    if (cl->qh == cl->qt)
        fail("client %d: a response (%d) with no request left to answer", k, status);
    uint8_t rq = cl->q[cl->qh % 32];
    if (status >= 100 && status < 200) {
        cl->st = status == 101 ? V_IGNORE : V_HEAD;
        return;
    }
    cl->qh++;
    if (xc && !cur->b && ((xl == 3 && memcmp(xc, "HIT", 3) == 0) || (xl == 5 && memcmp(xc, "STALE", 5) == 0))) {
        if (rq & RQ_BYPASS)
            fail("client %d: X-Cache: %.*s on an answer to a request the cache must bypass", k, (int)xl, xc);
        if (status == 206)
            fail("client %d: a 206 from the cache", k);
        if (status == 304 && !(rq & RQ_COND))
            fail("client %d: a 304 from the cache to an unconditional request", k);
        if (has_line(h, len, "Set-Cookie:"))
            fail("client %d: a stored Set-Cookie served (store_set_cookie is off)", k);
    }
    if ((rq & RQ_HEAD) || status == 204 || status == 304) {
        cl->st = V_HEAD;
        return;
    }
    size_t tl = 0;
    from = 0;
    const char *te = field(h, len - 2, "Transfer-Encoding", &tl, &from);
    size_t cll = 0;
    from = 0;
    const char *clv = field(h, len - 2, "Content-Length", &cll, &from);
    if (te && clv)
        fail("client %d: both Transfer-Encoding and Content-Length", k);
    if (te) {
        if (tl >= 7 && ieq(te + tl - 7, "chunked", 7)) {
            cl->st = V_CHUNK_LINE;
            cl->llen = 0;
        } else {
            cl->st = V_UNTIL_CLOSE;
        }
        return;
    }
    if (clv) {
        uint64_t n = 0;
        if (cll == 0 || cll > 18)
            fail("client %d: Content-Length \"%.*s\"", k, (int)cll, clv);
        for (size_t j = 0; j < cll; j++) {
            if (clv[j] < '0' || clv[j] > '9')
                fail("client %d: Content-Length \"%.*s\"", k, (int)cll, clv);
            n = n * 10 + (uint64_t)(clv[j] - '0');
        }
        size_t l2;
        const char *again;
        while ((again = field(h, len - 2, "Content-Length", &l2, &from)) != NULL)
            if (l2 != cll || memcmp(again, clv, cll) != 0)
                fail("client %d: two different Content-Length values", k);
        cl->left = n;
        cl->st = n ? V_BODY : V_HEAD;
        return;
    }
    cl->st = V_UNTIL_CLOSE;
}

static void client_feed(int k, const char *p, size_t n)
{
    struct client *cl = &clients[k];
    while (n) {
        switch (cl->st) {
        case V_HEAD: {
            /* Appended until the blank line; the scan restarts a little before the old end. */
            size_t start = cl->hlen > 3 ? cl->hlen - 3 : 0;
            size_t take = n < sizeof(cl->head) - cl->hlen ? n : sizeof(cl->head) - cl->hlen;
            if (take == 0)
                fail("client %d: a response head larger than %zu bytes", k, sizeof(cl->head));
            memcpy(cl->head + cl->hlen, p, take);
            size_t end = 0;
            for (size_t i = start; i + 4 <= cl->hlen + take; i++) {
                if (cl->head[i] == '\r' && cl->head[i + 1] == '\n' && cl->head[i + 2] == '\r' && cl->head[i + 3] == '\n') {
                    end = i + 4;
                    break;
                }
            }
            if (!end) {
                cl->hlen += take;
                p += take;
                n -= take;
                break;
            }
            size_t used = end - cl->hlen;
            p += used;
            n -= used;
            cl->hlen = 0;
            response_head(k, cl, cl->head, end);
            break;
        }
        case V_BODY: {
            size_t t = n < cl->left ? n : (size_t)cl->left;
            cl->left -= t;
            p += t;
            n -= t;
            if (!cl->left)
                cl->st = V_HEAD;
            break;
        }
        case V_CHUNK_LINE:
        case V_TRAILER: {
            char ch = *p++;
            n--;
            if (cl->llen >= sizeof(cl->line))
                fail("client %d: a chunk line longer than %zu bytes", k, sizeof(cl->line));
            cl->line[cl->llen++] = ch;
            if (ch != '\n')
                break;
            if (cl->llen < 2 || cl->line[cl->llen - 2] != '\r')
                fail("client %d: a chunk line not ended by CRLF", k);
            size_t ll = cl->llen - 2;
            cl->llen = 0;
            if (cl->st == V_TRAILER) {
                if (ll == 0)
                    cl->st = V_HEAD;
                break;
            }
            uint64_t size = 0;
            size_t j = 0;
            for (; j < ll; j++) {
                char c = cl->line[j];
                int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
                if (d < 0)
                    break;
                if (j >= 15)
                    fail("client %d: a chunk size too long", k);
                size = size * 16 + (uint64_t)d;
            }
            if (j == 0 || (j < ll && cl->line[j] != ';' && cl->line[j] != ' ' && cl->line[j] != '\t'))
                fail("client %d: a bad chunk size line \"%.*s\"", k, (int)ll, cl->line);
            if (size == 0) {
                cl->st = V_TRAILER;
            } else {
                cl->left = size;
                cl->st = V_CHUNK_DATA;
            }
            break;
        }
        case V_CHUNK_DATA: {
            size_t t = n < cl->left ? n : (size_t)cl->left;
            cl->left -= t;
            p += t;
            n -= t;
            if (!cl->left) {
                cl->st = V_CHUNK_END;
                cl->llen = 0;
            }
            break;
        }
        case V_CHUNK_END: {
            char ch = *p++;
            n--;
            if (ch != (cl->llen == 0 ? '\r' : '\n'))
                fail("client %d: a chunk's data not followed by CRLF", k);
            if (++cl->llen == 2) {
                cl->llen = 0;
                cl->st = V_CHUNK_LINE;
            }
            break;
        }
        default: /* V_UNTIL_CLOSE, V_IGNORE */
            n = 0;
            break;
        }
    }
}

/* Reads what every client has been sent. */
static void drain_clients(void)
{
    static char sink[65536];
    for (int k = 0; k < NUM_CLIENTS; k++) {
        struct client *cl = &clients[k];
        while (cl->fd >= 0 && !cl->eof) {
            ssize_t r = recv(cl->fd, sink, sizeof(sink), MSG_DONTWAIT);
            if (r > 0) {
                io_events++;
                client_feed(k, sink, (size_t)r);
                continue;
            }
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                break;
            io_events++;
            cl->eof = true; /* end of stream or reset: whatever was cut short is allowed */
            say("    client %d: closed by the server\n", k);
        }
    }
}

/* ------------------------------------------------------------------------------------------------
 * The origin
 */

static void origin_close(struct origin *o, bool reset)
{
    if (o->fd < 0)
        return;
    fuzz_close(&o->fd, reset);
    o->pending = false;
    o->len = 0;
    o->skip = 0;
}

static const char *find_ci(const char *h, size_t len, const char *needle)
{
    size_t nl = strlen(needle);
    for (size_t i = 0; i + nl <= len; i++)
        if (h[i] == needle[0] && ieq(h + i, needle, nl))
            return h + i;
    return NULL;
}

static uint64_t number_after(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    uint64_t v = 0;
    while (p < end && *p >= '0' && *p <= '9' && v < (1ull << 40))
        v = v * 10 + (uint64_t)(*p++ - '0');
    return v;
}

/* Takes the next request head out of <o>'s buffer when none is pending. */
static void origin_parse(struct origin *o)
{
    while (!o->pending && o->len) {
        if (o->skip) {
            size_t t = o->len < o->skip ? o->len : (size_t)o->skip;
            memmove(o->buf, o->buf + t, o->len - t);
            o->len -= t;
            o->skip -= t;
            continue;
        }
        const char *end = memmem(o->buf, o->len, "\r\n\r\n", 4);
        if (!end) {
            if (o->len == sizeof(o->buf))
                fail("origin: a request head larger than %zu bytes", sizeof(o->buf));
            return;
        }
        size_t hl = (size_t)(end - o->buf) + 4;
        if (hl >= 6 && memcmp(o->buf, "PURGE ", 6) == 0)
            fail("origin: a PURGE was forwarded");
        o->head_req = hl >= 5 && memcmp(o->buf, "HEAD ", 5) == 0;
        const char *s = find_ci(o->buf, hl, "\r\nX-Seq:");
        o->seq = s ? (uint32_t)number_after(s + 8, o->buf + hl) : 0;
        if (o->seq && o->seq <= MAX_SEQ && (seq_flags[o->seq] & RQ_OIC))
            fail("origin: request #%u, sent with Cache-Control: only-if-cached, reached the origin", o->seq);
        const char *cl = find_ci(o->buf, hl, "\r\nContent-Length:");
        o->skip = cl ? number_after(cl + 17, o->buf + hl) : 0;
        if (find_ci(o->buf, hl, "\r\nTransfer-Encoding:"))
            fail("origin: a chunked request body (the harness never sends one)");
        say("    origin %d -> %.*s (seq %u)\n", (int)(o - origins), (int)(memchr(o->buf, '\r', hl) ? (const char *)memchr(o->buf, '\r', hl) - o->buf : 0),
            o->buf, o->seq);
        memmove(o->buf, o->buf + hl, o->len - hl);
        o->len -= hl;
        o->pending = true;
        o->order = ++order_counter;
    }
}

/* Accepts the worker's new connections and reads what it sent on all of them. */
static void pump_origin(void)
{
    for (;;) {
        int fd = accept4(origin_listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            break;
        io_events++;
        int k = 0;
        while (k < MAX_ORIGIN && origins[k].fd >= 0)
            k++;
        if (k == MAX_ORIGIN) {
            close(fd); /* more than the worker should ever open to us: it sees a close */
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        origins[k] = (struct origin){.fd = fd};
    }
    for (int k = 0; k < MAX_ORIGIN; k++) {
        struct origin *o = &origins[k];
        while (o->fd >= 0) {
            if (o->len == sizeof(o->buf)) {
                origin_parse(o);
                if (o->len == sizeof(o->buf))
                    break; /* a pending request with more behind it: read on once answered */
            }
            ssize_t r = recv(o->fd, o->buf + o->len, sizeof(o->buf) - o->len, MSG_DONTWAIT);
            if (r > 0) {
                io_events++;
                o->len += (size_t)r;
                origin_parse(o);
                continue;
            }
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                break;
            io_events++;
            say("    origin %d: closed by the worker\n", k);
            origin_close(o, false);
        }
    }
}

static struct origin *oldest_pending(void)
{
    struct origin *best = NULL;
    for (int k = 0; k < MAX_ORIGIN; k++)
        if (origins[k].fd >= 0 && origins[k].pending && (!best || origins[k].order < best->order))
            best = &origins[k];
    return best;
}

/* ------------------------------------------------------------------------------------------------
 * Driving the worker
 */

/* Turns until nothing moves for three turns in a row (bounded). */
static void settle(int max_turns)
{
    struct rlb_worker *w = cur->w;
    int idle = 0;
    for (int i = 0; i < max_turns && idle < 2; i++) {
        uint64_t sqes = w->stats.ring.sqes, ev = io_events;
        rlb_worker_turn(w, 0);
        turns_total++;
        pump_origin();
        drain_clients();
        if (w->stats.ring.sqes == sqes && io_events == ev)
            idle++;
        else
            idle = 0;
    }
    check_books("after a step");
}

static int client_connect(void)
{
    /* 127.2.x.y: apart from fuzz_tls's sources should both ever run at once. */
    int fd = fuzz_loopback_connect(&cur->addr, 2);
    if (fd < 0)
        fail("connect: %s", strerror(errno));
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

static void client_close(int k, bool reset)
{
    fuzz_close(&clients[k].fd, reset);
}

static void client_open(int k)
{
    struct client *cl = &clients[k];
    client_close(k, false);
    memset(cl, 0, offsetof(struct client, head));
    cl->hlen = cl->llen = 0;
    cl->left = 0;
    cl->qh = cl->qt = 0;
    cl->fd = client_connect();
    cl->st = V_HEAD;
}

/* Writes all of <p> to <fd>, turning the worker while the socket is full. Returns false when the peer
 * is gone (or stopped reading for good). */
static bool write_all(int fd, const char *p, size_t n)
{
    int stuck = 0;
    while (n) {
        ssize_t r = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (r > 0) {
            p += r;
            n -= (size_t)r;
            stuck = 0;
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (++stuck > 400)
                return false; /* nobody reads: the worker stopped (a client that does not drain, say) */
            rlb_worker_turn(cur->w, stuck > 200 ? 1 : 0);
            pump_origin();
            drain_clients();
            continue;
        }
        return false;
    }
    return true;
}

/* ------------------------------------------------------------------------------------------------
 * Requests
 */

static const char *const targets[16] = {
    "/",          "/x",     "/x?b=2&a=1", "/x?a=1&b=2", "/x?a=1&a=0", "/y/z",   "/y/",    "/api/q",
    "/y/*",       "/x*",    "*",          "/x?",        "/%78",       "http://a.test/x", "/y/z?c", "/big",
};
static const char *const hosts[4] = {"a.test", "A.TEST:80", "b.test", "a.test:8080"};
static const char *const methods[8] = {"GET", "GET", "GET", "GET", "HEAD", "POST", "PURGE", "DELETE"};

enum { H_CC, H_PRAGMA, H_INM, H_IMS, H_RANGE, H_AE, H_AUTH, H_COOKIE, H_TOKEN, H_DEVICE, NUM_REQ_HEADERS };
static const char *const req_names[NUM_REQ_HEADERS] = {
    "Cache-Control", "Pragma", "If-None-Match", "If-Modified-Since", "Range",
    "Accept-Encoding", "Authorization", "Cookie", "X-Purge-Token", "X-Device",
};

/* Dates relative to now (the freshness arithmetic runs on the wall clock), fixed ones in the three
 * formats, and some that are not dates. */
static const char *date_value(unsigned i, char *buf)
{
    static const long rel[6] = {0, -10, -3600, 60, 86400, -86400L * 365};
    static const char *const fixed[6] = {
        "Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994",
        "Thu, 01 Jan 1970 00:00:00 GMT", "Fri, 31 Dec 9999 23:59:59 GMT",  "0",
    };
    i %= 12;
    if (i >= 6)
        return fixed[i - 6];
    time_t t = time(NULL) + rel[i];
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, 40, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    return buf;
}

#define LIST(...) ((const char *const[]){__VA_ARGS__, NULL})
static const char *const *const req_values[NUM_REQ_HEADERS] = {
    [H_CC] = LIST("no-cache", "max-age=0", "only-if-cached", "max-stale", "max-stale=60", "min-fresh=30", "no-store",
                  "max-age=60", "stale-if-error=60", "max-age=0, only-if-cached", "max-stale, only-if-cached",
                  "no-cache, max-stale"),
    [H_PRAGMA] = LIST("no-cache", "x", ""),
    [H_INM] = LIST("\"a\"", "W/\"a\"", "*", "\"b\", W/\"a\"", "\"b\"", "a", ""),
    [H_IMS] = NULL, /* dates */
    [H_RANGE] = LIST("bytes=0-1", "bytes=5-", "bytes=-3", "x"),
    [H_AE] = LIST("gzip", "br", "gzip, br", "", "  gzip  "),
    [H_AUTH] = LIST("Basic YTpi", "Bearer x"),
    [H_COOKIE] = LIST("a=1", "b=2", "a=1; b=2"),
    [H_TOKEN] = LIST(PURGE_TOKEN, "0123456789abcdef012", "0123456789abcdef0124", "", PURGE_TOKEN "0"),
    [H_DEVICE] = LIST("mobile", "desktop", ""),
};

static size_t list_len(const char *const *l)
{
    size_t n = 0;
    while (l[n])
        n++;
    return n;
}

/* One header value: from the name's list, or raw from the input. Returns its length. */
static size_t header_value(struct rd *in, uint8_t sel, const char *const *list, bool dates, char *out, size_t cap)
{
    if (sel >= 12) {
        size_t n = u8(in) % 48;
        if (n > cap)
            n = cap;
        for (size_t i = 0; i < n; i++) {
            char c = (char)u8(in);
            out[i] = (c == '\r' || c == '\n' || c == '\0') ? 'x' : c;
        }
        return n;
    }
    char buf[40];
    const char *v = dates ? date_value(sel, buf) : list[sel % list_len(list)];
    size_t n = strlen(v);
    if (n > cap)
        n = cap;
    memcpy(out, v, n);
    return n;
}

static bool put(char **p, char *end, const char *s, size_t n)
{
    if ((size_t)(end - *p) < n)
        return false;
    memcpy(*p, s, n);
    *p += n;
    return true;
}

static bool puts_(char **p, char *end, const char *s)
{
    return put(p, end, s, strlen(s));
}

static void respond(struct rd *in, struct origin *o);

static void do_request(struct rd *in, uint8_t op)
{
    int k = (op >> 2) & 3;
    if (k == 3)
        k = 2;
    bool fresh = op & 0x10;
    unsigned m = (op >> 5) & 7;
    uint8_t r1 = u8(in), r2 = u8(in);
    const char *target = targets[r1 & 15];
    const char *host = hosts[(r1 >> 4) & 3];
    bool split = r1 & 0x40, answer = r1 & 0x80;
    unsigned nh = r2 & 7;
    bool http10 = r2 & 0x08, close = r2 & 0x10;
    bool body = (r2 & 0x20) || m == 5;
    size_t body_len = body ? (size_t)((r2 >> 6) & 3) * 4 + (m == 5 ? 1 : 0) : 0;

    static char req[8192];
    char *p = req, *end = req + sizeof(req);
    uint32_t seq = ++next_seq;
    uint8_t flags = 0;
    if (m == 4)
        flags |= RQ_HEAD;
    if (m >= 5 || body_len || strncmp(target, "/api/", 5) == 0) /* Content-Length: 0 is no body */
        flags |= RQ_BYPASS;
    bool oic = false, range = false;

    char line[160];
    snprintf(line, sizeof(line), "%s %s HTTP/1.%d\r\nHost: %s\r\nX-Seq: %u\r\n", methods[m], target,
                     http10 ? 0 : 1, host, seq);
    puts_(&p, end, line);
    for (unsigned i = 0; i < nh; i++) {
        uint8_t h = u8(in);
        unsigned name = (h & 15) % NUM_REQ_HEADERS;
        uint8_t sel = h >> 4;
        char v[64];
        size_t vl = header_value(in, sel, req_values[name], name == H_IMS, v, sizeof(v));
        put(&p, end, req_names[name], strlen(req_names[name]));
        put(&p, end, ": ", 2);
        put(&p, end, v, vl);
        put(&p, end, "\r\n", 2);
        if (name == H_CC && sel < 12 && memmem(v, vl, "only-if-cached", 14))
            oic = true;
        if (name == H_RANGE)
            range = true;
        if (name == H_INM || name == H_IMS)
            flags |= RQ_COND;
    }
    if (range)
        flags |= RQ_BYPASS;
    if (oic && m <= 4 && !body_len && !range && target[0] == '/' && strncmp(target, "/api/", 5) != 0)
        flags |= RQ_OIC;
    if (close)
        puts_(&p, end, "Connection: close\r\n");
    else if (http10)
        puts_(&p, end, "Connection: keep-alive\r\n");
    if (body) {
        snprintf(line, sizeof(line), "Content-Length: %zu\r\n", body_len);
        puts_(&p, end, line);
    }
    puts_(&p, end, "\r\n");
    for (size_t i = 0; i < body_len; i++)
        put(&p, end, "b", 1);
    if (seq <= MAX_SEQ) {
        seq_flags[seq] = flags;
        seq_slot[seq] = k;
    }

    struct client *cl = &clients[k];
    if (fresh || cl->fd < 0 || cl->eof || cl->wr_shut)
        client_open(k);
    say("  request #%u on client %d%s: %s %s Host %s, %u lines, flags %#x\n", seq, k, fresh ? " (new)" : "",
        methods[m], target, host, nh, flags);
    if (cl->qt - cl->qh < 32) {
        cl->q[cl->qt % 32] = flags;
        cl->qseq[cl->qt % 32] = seq;
        cl->qt++;
    }
    size_t len = (size_t)(p - req);
    size_t cut = split ? len / 2 : len;
    if (!write_all(cl->fd, req, cut))
        cl->eof = true;
    if (split) {
        settle(8);
        if (cl->fd >= 0 && !cl->eof && !write_all(cl->fd, req + cut, len - cut))
            cl->eof = true;
    }
    if (!(op & 1))
        settle(SETTLE_TURNS);
    if (answer)
        respond(in, oldest_pending());
}

/* ------------------------------------------------------------------------------------------------
 * Responses
 */

static const int statuses[15] = {200, 203, 204, 206, 301, 304, 404, 500, 503, 200, 302, 410, 502, 504, 100};
static const unsigned body_lengths[14] = {100, 500, 1000, 4095, 4096, 4097, 16383, 16384, 20000, 32768, 40000, 65536, 65537, 70000};
static const unsigned chunk_sizes[8] = {1, 7, 64, 500, 4096, 16384, 65536, 1000000};

enum { R_CC, R_VARY, R_ETAG, R_LM, R_DATE, R_EXPIRES, R_AGE, R_SETCOOKIE, R_CLOC, R_LOC, R_SERVER, R_POWERED,
       R_PRAGMA, R_CTYPE, R_CLEN, R_CONN, NUM_RESP_HEADERS };
static const char *const resp_names[NUM_RESP_HEADERS] = {
    "Cache-Control", "Vary", "ETag", "Last-Modified", "Date", "Expires", "Age", "Set-Cookie",
    "Content-Location", "Location", "Server", "X-Powered-By", "Pragma", "Content-Type", "Content-Length", "Connection",
};
static const char *const *const resp_values[NUM_RESP_HEADERS] = {
    [R_CC] = LIST("max-age=60", "max-age=0", "s-maxage=60", "public", "private", "no-store", "no-cache",
                  "must-revalidate", "max-age=60, stale-while-revalidate=60", "max-age=0, stale-while-revalidate=60",
                  "max-age=0, stale-if-error=60", "must-understand, no-store", "private=\"Set-Cookie\"",
                  "max-age=\"30\"", "no-cache=\"Set-Cookie\"", "max-age=1, proxy-revalidate", "max-age=99999999999",
                  "max-age=60, max-age=0", "public, max-age=0, stale-while-revalidate=60, stale-if-error=60",
                  "immutable, max-age=60"),
    [R_VARY] = LIST("Accept-Encoding", "accept-encoding, X-Device", "*", "Cookie", "Authorization", "", "X-Device",
                    "Accept-Encoding,,Cookie", "Accept-Encoding, *"),
    [R_ETAG] = LIST("\"a\"", "W/\"a\"", "\"b\"", "\"\"", "a", "W/\"b\""),
    [R_LM] = NULL,
    [R_DATE] = NULL,
    [R_EXPIRES] = NULL,
    [R_AGE] = LIST("0", "10", "100000", "-1", "2147483648", "abc", "1, 2", "59"),
    [R_SETCOOKIE] = LIST("a=b", "sid=1; HttpOnly"),
    [R_CLOC] = LIST("/x", "/y/z", "http://a.test/x", "http://b.test/x", "/x?a=1&b=2", "//evil/x", "",
                    "http://A.TEST:80/x"),
    [R_LOC] = LIST("/x", "/y/z", "http://a.test/x", "http://b.test/x", "/x?a=1&b=2", "//evil/x", "",
                   "http://A.TEST:80/x"),
    [R_SERVER] = LIST("origin"),
    [R_POWERED] = LIST("php"),
    [R_PRAGMA] = LIST("no-cache"),
    [R_CTYPE] = LIST("text/plain"),
    [R_CLEN] = LIST("0", "5", "abc", "+1"),
    [R_CONN] = LIST("close", "keep-alive", "X-Powered-By, Server", "ETag"),
};

static char *resp_buf;
#define RESP_CAP (1u << 20)

/* Reads a response spec and, when <o> is a connection (pending or, with the spec's say-so, idle),
 * writes the response to it. */
static void respond(struct rd *in, struct origin *o)
{
    uint8_t s0 = u8(in), s1 = u8(in), s2 = u8(in), s3 = u8(in);
    int status;
    if ((s0 & 15) == 15) {
        unsigned v = (unsigned)u8(in) << 8;
        v |= u8(in);
        status = 100 + (int)(v % 900);
    } else {
        status = statuses[s0 & 15];
    }
    unsigned framing = (s0 >> 4) & 3;
    bool conn_close = s0 & 0x40, close_after = s0 & 0x80;
    size_t body_len = s1 < 100 ? s1 : body_lengths[(s1 - 100) % 14];
    unsigned nh = s2 & 7, chunk_variant = (s2 >> 3) & 3;
    size_t chunk = chunk_sizes[(s2 >> 5) & 7];
    bool split = s3 & 1, close_client = s3 & 2, reset = s3 & 4, unsolicited = s3 & 8, http10 = s3 & 0x10;
    uint8_t cut1 = split ? u8(in) : 0, cut2 = split ? u8(in) : 0;

    char *p = resp_buf, *end = resp_buf + RESP_CAP;
    char line[128];
    snprintf(line, sizeof(line), "HTTP/1.%d %03d R\r\n", http10 ? 0 : 1, status);
    puts_(&p, end, line);
    for (unsigned i = 0; i < nh; i++) {
        uint8_t h = u8(in);
        unsigned name = h & 15;
        char v[64];
        bool dates = name == R_LM || name == R_DATE || name == R_EXPIRES;
        size_t vl = header_value(in, h >> 4, resp_values[name], dates, v, sizeof(v));
        puts_(&p, end, resp_names[name]);
        put(&p, end, ": ", 2);
        put(&p, end, v, vl);
        put(&p, end, "\r\n", 2);
    }
    if (conn_close)
        puts_(&p, end, "Connection: close\r\n");

    if (!o) {
        if (!unsolicited)
            return;
        for (int k = 0; k < MAX_ORIGIN && !o; k++)
            if (origins[k].fd >= 0)
                o = &origins[k];
        if (!o)
            return;
    }
    bool bodiless = o->head_req || status < 200 || status == 204 || status == 304;
    if (bodiless)
        body_len = 0;
    if (chunk < body_len / 256)
        chunk = body_len / 256;
    char fill = (char)('A' + responses_written++ % 26);
    switch (framing) {
    case 0: /* Content-Length */
    case 3: /* truncated: announces more than comes */
        snprintf(line, sizeof(line), "Content-Length: %zu\r\n\r\n", body_len + (framing == 3 ? 1 + body_len / 2 : 0));
        if (!bodiless || framing == 3 || (s1 & 1))
            puts_(&p, end, line);
        else
            puts_(&p, end, "\r\n");
        if ((size_t)(end - p) >= body_len) {
            memset(p, fill, body_len);
            p += body_len;
        }
        break;
    case 1: /* chunked */
        puts_(&p, end, "Transfer-Encoding: chunked\r\n\r\n");
        if (bodiless)
            break;
        for (size_t done = 0; done < body_len;) {
            size_t c = body_len - done < chunk ? body_len - done : chunk;
            if (chunk_variant == 3 && done == 0)
                snprintf(line, sizeof(line), "%zxz\r\n", c);
            else
                snprintf(line, sizeof(line), chunk_variant == 1 ? "%zX;ext=\"v\"\r\n" : "%zx\r\n", c);
            if (!puts_(&p, end, line) || (size_t)(end - p) < c + 2)
                break;
            memset(p, fill, c);
            p += c;
            puts_(&p, end, "\r\n");
            done += c;
        }
        puts_(&p, end, chunk_variant == 2 ? "0\r\nX-Trailer: t\r\n\r\n" : "0\r\n\r\n");
        break;
    default: /* delimited by the close */
        puts_(&p, end, "\r\n");
        if ((size_t)(end - p) >= body_len) {
            memset(p, fill, body_len);
            p += body_len;
        }
        close_after = true;
        break;
    }
    size_t len = (size_t)(p - resp_buf);
    size_t c1 = split ? len * cut1 / 256 : len, c2 = split ? len * cut2 / 256 : len;
    if (c2 < c1) {
        size_t t = c1;
        c1 = c2;
        c2 = t;
    }
    int client = o->pending && o->seq && o->seq <= MAX_SEQ ? seq_slot[o->seq] : -1;
    say("  response %d (%zu bytes%s, framing %u%s) on origin %d to seq %u\n", status, body_len,
        bodiless ? ", no body" : "", framing, close_after ? ", then closed" : "", (int)(o - origins), o->seq);
    if (status >= 200)
        o->pending = false; /* the next request on it may come once this one is answered */
    size_t cuts[3] = {c1, c2, len};
    size_t off = 0;
    for (int i = 0; i < 3 && o->fd >= 0; i++) {
        if (cuts[i] > off) {
            if (!write_all(o->fd, resp_buf + off, cuts[i] - off)) {
                origin_close(o, false);
                break;
            }
            off = cuts[i];
        }
        if (i < 2 && split) {
            settle(16);
            if (i == 0 && close_client && client >= 0) {
                say("  client %d closes mid-response\n", client);
                client_close(client, reset);
            }
        }
    }
    if (close_after && o->fd >= 0)
        origin_close(o, reset);
    settle(SETTLE_TURNS);
}

/* ------------------------------------------------------------------------------------------------
 * The input's end: every socket closed, every slot back, the cache emptied
 */

/* What is left when connections do not go away: for the report. */
static void dump_conns(void)
{
    struct rlb_worker *w = cur->w;
    for (uint32_t i = 0; i < w->slot_hwm; i++) {
        const struct rlb_conn *c = &w->conns[i];
        if (c->kind == RLB_CONN_FREE)
            continue;
        const struct rlb_txn *t = c->txn;
        const struct rlb_cache_txn *ct = t ? t->cache : NULL;
        fprintf(stderr,
                "  slot %u: %s state %u flags %#x fd %d ops %u peer %d inq %u outq %s timer %u txn %s (flags %#x, "
                "resp_state %u) cache fill %p wait %p stale %p\n",
                i, c->kind == RLB_CONN_CLIENT ? "client" : "upstream", c->state, c->flags, c->fd, c->ops, (int)c->peer,
                c->inq_bytes, c->outq ? "yes" : "no", c->timer.list, t ? "yes" : "no", t ? t->flags : 0, t ? t->resp_state : 0,
                ct ? (void *)ct->fill : NULL, ct ? (void *)ct->wait : NULL, ct ? (void *)ct->stale : NULL);
    }
}

static void finish_input(void)
{
    struct rlb_worker *w = cur->w;
    for (int k = 0; k < NUM_CLIENTS; k++)
        client_close(k, false);
    for (int k = 0; k < MAX_ORIGIN; k++)
        origin_close(&origins[k], false);
    uint64_t deadline = 0;
    for (int turn = 0; w->live_conns != 0 || w->live_clients != 0; turn++) {
        if (turn >= FAST_TURNS) {
            /* Not within the fast turns: give a loaded machine time, then call it a leak. */
            if (!deadline)
                deadline = now_ms() + FREE_DEADLINE_MS;
            else if (now_ms() > deadline && (dump_conns(), true))
                fail("%u connection(s) (%u client(s)) still live %d ms after every socket was closed", w->live_conns,
                     w->live_clients, FREE_DEADLINE_MS);
        }
        rlb_worker_turn(w, turn >= FAST_TURNS ? 5 : 0);
        /* Retries of what was cut short: accepted and closed at once. */
        int fd;
        while ((fd = accept4(origin_listen_fd, NULL, NULL, SOCK_CLOEXEC)) >= 0)
            close(fd);
    }
    rlb_worker_turn(w, 0);
    struct rlb_cache *c = w->cache;
    check_books("after the input");
    if (c->num_wake)
        fail("%u client(s) left on the wake list with no connection left", c->num_wake);
    if (c->zombies.lru_next != &c->zombies)
        fail("a dead entry still referenced with no connection left");
    for (uint32_t b = 0; b <= c->mask; b++)
        for (struct rlb_cache_entry *e = c->buckets[b]; e; e = e->hnext)
            if (e->state == RLB_CE_FILLING)
                fail("a fetch (FILLING entry) left with no connection left");
    rlb_cache_invalidate(c, "", 0, true);
    check_books("after emptying the cache");
    if (c->used != 0 || c->objects != 0 || c->count != 0)
        fail("the emptied cache still counts %llu bytes, %llu objects, %u entries", (unsigned long long)c->used,
             (unsigned long long)c->objects, c->count);
    w->stats.cache_bytes = 0;
    w->stats.cache_objects = 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > INPUT_MAX)
        return -1; /* not added to the corpus */
    if (!resp_buf && !(resp_buf = malloc(RESP_CAP)))
        return 0;
    struct rd in = {data, size};
    uint8_t g = u8(&in);
    cur = &insts[g & 1];
    struct rlb_worker *w = cur->w;
    CHECK(w->live_conns == 0 && w->live_clients == 0);
    for (int k = 0; k < NUM_CLIENTS; k++)
        clients[k].fd = -1;
    for (int k = 0; k < MAX_ORIGIN; k++)
        origins[k].fd = -1;
    memset(seq_flags, 0, sizeof(seq_flags));
    next_seq = 0;
    order_counter = 0;
    responses_written = 0;
    uint64_t fnv = 14695981039346656037ull;
    for (size_t i = 0; i < size; i++)
        fnv = (fnv ^ data[i]) * 1099511628211ull;
    say("input %016llx of %zu bytes, configuration %c\n", (unsigned long long)fnv, size, cur->b ? 'B' : 'A');

    bool slept = false;
    int requests = 0;
    for (int step = 0; step < MAX_STEPS && more(&in); step++) {
        uint8_t op = u8(&in);
        switch (op & 3) {
        case 0:
        case 1:
            if (requests++ < MAX_REQUESTS)
                do_request(&in, op);
            break;
        case 2:
            say("  respond\n");
            respond(&in, oldest_pending());
            break;
        default: {
            unsigned sub = (op >> 2) & 7, arg = op >> 5;
            switch (sub) {
            case 0:
                for (unsigned i = 0; i <= arg; i++)
                    rlb_worker_turn(w, 0);
                pump_origin();
                drain_clients();
                check_books("after some turns");
                break;
            case 1:
            case 2:
                say("  client %u: %s\n", arg % NUM_CLIENTS, sub == 1 ? "close" : "reset");
                client_close((int)(arg % NUM_CLIENTS), sub == 2);
                settle(SETTLE_TURNS);
                break;
            case 3:
                if (clients[arg % NUM_CLIENTS].fd >= 0) {
                    say("  client %u: half-close\n", arg % NUM_CLIENTS);
                    shutdown(clients[arg % NUM_CLIENTS].fd, SHUT_WR);
                    clients[arg % NUM_CLIENTS].wr_shut = true;
                }
                settle(SETTLE_TURNS);
                break;
            case 4:
            case 5: {
                struct origin *o = oldest_pending();
                for (int k = 0; k < MAX_ORIGIN && !o; k++)
                    if (origins[k].fd >= 0)
                        o = &origins[k];
                if (o) {
                    say("  origin %d: %s\n", (int)(o - origins), sub == 4 ? "close" : "reset");
                    origin_close(o, sub == 5);
                }
                settle(SETTLE_TURNS);
                break;
            }
            case 6:
                if (cur->b && !slept) {
                    say("  sleep\n");
                    slept = true;
                    usleep(6000);
                }
                settle(SETTLE_TURNS);
                break;
            default:
                settle(SETTLE_TURNS);
                break;
            }
            break;
        }
        }
    }
    settle(SETTLE_TURNS);
    finish_input();
    say("done (%lu turns so far): hits %llu, stored %llu, revalidated %llu, stale %llu, collapsed %llu\n",
        turns_total, (unsigned long long)w->stats.cache_hits, (unsigned long long)w->stats.cache_stored,
        (unsigned long long)w->stats.cache_revalidated, (unsigned long long)w->stats.cache_stale,
        (unsigned long long)w->stats.cache_collapsed);
    return 0;
}

#pragma clang attribute pop
