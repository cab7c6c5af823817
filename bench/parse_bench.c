/* parse_bench: what the HTTP/1 parser costs per message, against the floor of merely finding the end of the head.
 *
 * Usage: parse_bench [--iterations N]    (default 1000000 per batch; run pinned: taskset -c 1 parse_bench)
 *
 * Each case is timed in batches of N parses with CLOCK_MONOTONIC around the whole batch, and the best of 5 batches
 * is kept: the minimum is the run least disturbed by interrupts and other tenants, which is what a micro-benchmark
 * can meaningfully report. The floor is memmem("\r\n\r\n") over the same bytes, the scan every head parser has to
 * do at least once; "x floor" is parse time divided by that. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "bench_args.h"
#include <ringlb/api.h>
#include <ringlb/http1.h>

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <time.h>

#define BATCHES 5
#define MAX_HEADERS 64
#define CHUNKED_PAYLOAD (16 * 1024)
#define CHUNK_SIZE 1024

/* Hides <p> and everything it points to from the optimiser, so a loop around a call with the same input is not
 * folded into one call; the parser lives in another object file, but memmem is a builtin. */
#define CLOBBER(p) __asm__ volatile("" : : "r"(p) : "memory")

static const char browser_get[] =
    "GET /catalog/search?q=io_uring&page=2 HTTP/1.1\r\n"
    "Host: shop.example.com\r\n"
    "Connection: keep-alive\r\n"
    "sec-ch-ua: \"Chromium\";v=\"124\", \"Google Chrome\";v=\"124\", \"Not-A.Brand\";v=\"99\"\r\n"
    "sec-ch-ua-mobile: ?0\r\n"
    "sec-ch-ua-platform: \"Linux\"\r\n"
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 "
    "Safari/537.36\r\n"
    "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8\r\n"
    "Sec-Fetch-Site: same-origin\r\n"
    "Sec-Fetch-Mode: navigate\r\n"
    "Sec-Fetch-User: ?1\r\n"
    "Sec-Fetch-Dest: document\r\n"
    "Accept-Encoding: gzip, deflate, br, zstd\r\n"
    "Accept-Language: en-GB,en;q=0.9,de;q=0.8\r\n"
    "Cookie: session=7f3c9a1e5b2d4c6f8a0b1c2d3e4f5a6b; cart=3; theme=dark; _ga=GA1.1.1234567890.1700000000\r\n"
    "\r\n";

static const char minimal_get[] = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";

static const char typical_response[] =
    "HTTP/1.1 200 OK\r\n"
    "Date: Sat, 28 Nov 2026 10:00:00 GMT\r\n"
    "Server: nginx/1.22.1\r\n"
    "Content-Type: text/html; charset=utf-8\r\n"
    "Content-Length: 48213\r\n"
    "Connection: keep-alive\r\n"
    "Cache-Control: private, max-age=0, must-revalidate\r\n"
    "ETag: \"5f3c-1a2b3c4d5e6f\"\r\n"
    "Last-Modified: Fri, 27 Nov 2026 18:22:41 GMT\r\n"
    "Vary: Accept-Encoding\r\n"
    "\r\n";

static const struct rlb_http_limits limits = {
    .max_request_line = 8192,
    .max_head_size = 65536,
    .max_headers = MAX_HEADERS,
};

static uint64_t sink; /* every result is folded in here and printed, so no parse is dead code */

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

struct bench_case {
    const char *name;
    const char *buf;
    size_t len;
    uint64_t (*run)(const struct bench_case *c, uint64_t iterations);
};

static uint64_t run_request(const struct bench_case *c, uint64_t iterations)
{
    struct rlb_http_header headers[MAX_HEADERS];
    struct rlb_http_request req;
    uint64_t acc = 0;
    for (uint64_t i = 0; i < iterations; i++) {
        CLOBBER(c->buf);
        req.headers = headers;
        req.max_headers_capacity = MAX_HEADERS;
        int ret = rlb_http1_parse_request(c->buf, c->len, &limits, &req);
        acc += (uint64_t)ret + req.num_headers;
    }
    return acc;
}

static uint64_t run_response(const struct bench_case *c, uint64_t iterations)
{
    struct rlb_http_header headers[MAX_HEADERS];
    struct rlb_http_response resp;
    uint64_t acc = 0;
    for (uint64_t i = 0; i < iterations; i++) {
        CLOBBER(c->buf);
        resp.headers = headers;
        resp.max_headers_capacity = MAX_HEADERS;
        int ret = rlb_http1_parse_response(c->buf, c->len, &limits, RLB_METHOD_GET, &resp);
        acc += (uint64_t)ret + resp.num_headers;
    }
    return acc;
}

static uint64_t run_chunked(const struct bench_case *c, uint64_t iterations)
{
    uint64_t acc = 0;
    for (uint64_t i = 0; i < iterations; i++) {
        CLOBBER(c->buf);
        struct rlb_chunked_decoder dec;
        rlb_chunked_init(&dec);
        size_t off = 0;
        int ret;
        do {
            size_t consumed;
            const char *data = NULL;
            size_t data_len = 0;
            ret = rlb_chunked_decode(&dec, c->buf + off, c->len - off, &consumed, &data, &data_len);
            off += consumed;
            acc += data_len;
        } while (ret == RLB_CHUNKED_DATA);
        acc += (uint64_t)ret + off;
    }
    return acc;
}

static uint64_t run_floor(const struct bench_case *c, uint64_t iterations)
{
    uint64_t acc = 0;
    for (uint64_t i = 0; i < iterations; i++) {
        CLOBBER(c->buf);
        const char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
        acc += end ? (uint64_t)(end - c->buf) : 0;
    }
    return acc;
}

/* Best batch in ns per iteration. */
static double time_case(const struct bench_case *c, uint64_t (*run)(const struct bench_case *, uint64_t),
                        uint64_t iterations)
{
    sink += run(c, iterations / 10 + 1); /* warm caches and branch predictors */
    double best = 0;
    for (int b = 0; b < BATCHES; b++) {
        double t0 = now_ns();
        sink += run(c, iterations);
        double t = (now_ns() - t0) / (double)iterations;
        if (b == 0 || t < best)
            best = t;
    }
    return best;
}

static char *build_chunked(size_t *len)
{
    size_t cap = CHUNKED_PAYLOAD + (CHUNKED_PAYLOAD / CHUNK_SIZE) * 16 + 16;
    char *buf = malloc(cap);
    if (!buf)
        return NULL;
    size_t off = 0;
    for (size_t sent = 0; sent < CHUNKED_PAYLOAD; sent += CHUNK_SIZE) {
        off += (size_t)snprintf(buf + off, cap - off, "%x\r\n", CHUNK_SIZE);
        memset(buf + off, 'x', CHUNK_SIZE);
        off += CHUNK_SIZE;
        memcpy(buf + off, "\r\n", 2);
        off += 2;
    }
    memcpy(buf + off, "0\r\n\r\n", 5);
    *len = off + 5;
    return buf;
}

/* A benchmark of a parser that rejects its input measures the error path; refuse to report that. */
static int check_case(const struct bench_case *c)
{
    struct rlb_http_header headers[MAX_HEADERS];
    long ret;
    if (c->run == run_request) {
        struct rlb_http_request req = {.headers = headers, .max_headers_capacity = MAX_HEADERS};
        ret = rlb_http1_parse_request(c->buf, c->len, &limits, &req);
    } else if (c->run == run_response) {
        struct rlb_http_response resp = {.headers = headers, .max_headers_capacity = MAX_HEADERS};
        ret = rlb_http1_parse_response(c->buf, c->len, &limits, RLB_METHOD_GET, &resp);
    } else {
        struct rlb_chunked_decoder dec;
        rlb_chunked_init(&dec);
        size_t off = 0, payload = 0;
        int cret;
        do {
            size_t consumed, data_len = 0;
            const char *data;
            cret = rlb_chunked_decode(&dec, c->buf + off, c->len - off, &consumed, &data, &data_len);
            off += consumed;
            payload += data_len;
        } while (cret == RLB_CHUNKED_DATA);
        ret = (cret == RLB_CHUNKED_DONE && payload == CHUNKED_PAYLOAD) ? (long)off : -1;
    }
    if (ret != (long)c->len) {
        fprintf(stderr, "parse_bench: case \"%s\" does not parse as a whole (%ld, expected %zu)\n", c->name, ret,
                c->len);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    uint64_t iterations = 1000000;
    int bad = bench_parse_iterations("parse_bench", argc, argv, &iterations);
    if (bad)
        return bad;

    size_t chunked_len;
    char *chunked = build_chunked(&chunked_len);
    if (!chunked) {
        perror("parse_bench");
        return 1;
    }
    /* Copies into writable, separately allocated memory, as a receive buffer would be. */
    const struct bench_case cases[] = {
        {"browser GET", strdup(browser_get), sizeof(browser_get) - 1, run_request},
        {"minimal GET", strdup(minimal_get), sizeof(minimal_get) - 1, run_request},
        {"response head", strdup(typical_response), sizeof(typical_response) - 1, run_response},
        {"16 KiB chunked body", chunked, chunked_len, run_chunked},
    };
    for (size_t i = 0; i < RLB_ARRAY_SIZE(cases); i++)
        if (!cases[i].buf || check_case(&cases[i]) < 0)
            return 1;

    printf("parse_bench: %" PRIu64 " iterations per batch, best of %d batches\n\n", iterations, BATCHES);
    printf("| case | bytes | ns/parse | MB/s | parses/s | memmem floor ns | x floor |\n");
    printf("|---|---:|---:|---:|---:|---:|---:|\n");
    char csv[RLB_ARRAY_SIZE(cases)][256];
    for (size_t i = 0; i < RLB_ARRAY_SIZE(cases); i++) {
        const struct bench_case *c = &cases[i];
        double ns = time_case(c, c->run, iterations);
        double floor_ns = time_case(c, run_floor, iterations);
        double mbs = (double)c->len / ns * 1e3; /* bytes/ns = GB/s; x1000 = MB/s (10^6 bytes) */
        double per_s = 1e9 / ns;
        printf("| %s | %zu | %.1f | %.0f | %.0f | %.1f | %.2f |\n", c->name, c->len, ns, mbs, per_s, floor_ns,
               ns / floor_ns);
        snprintf(csv[i], sizeof(csv[i]), "parse_bench,%s,%zu,%.1f,%.0f,%.0f,%.1f,%.2f", c->name, c->len, ns, mbs,
                 per_s, floor_ns, ns / floor_ns);
    }
    printf("\n# csv: bench,case,bytes,ns_per_parse,mb_per_s,parses_per_s,floor_ns,x_floor\n");
    for (size_t i = 0; i < RLB_ARRAY_SIZE(cases); i++)
        printf("%s\n", csv[i]);
    printf("# checksum %" PRIu64 "\n", sink);

    for (size_t i = 0; i < RLB_ARRAY_SIZE(cases); i++)
        free((void *)cases[i].buf);
    return 0;
}
