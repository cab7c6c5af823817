/* HTTP/1.x head parser: table-driven acceptance, rejection with the exact
 * status, every truncation point, limits, header ids and hop-by-hop flags. */
#include <criterion/criterion.h>

#include <ringlb/api.h>
#include <ringlb/http1.h>

#include <string.h>

#define NHDR 64

static const struct rlb_http_limits lim_default = {8192, 65536, 100};

struct parsed_req {
    struct rlb_http_header hdrs[NHDR];
    struct rlb_http_request req;
    int r;
};

struct parsed_resp {
    struct rlb_http_header hdrs[NHDR];
    struct rlb_http_response resp;
    int r;
};

/* Copies the input to an exactly sized heap block so that ASan catches any
 * read past <len>, the way picohttpparser's guard-page tests do. */
static int parse_req_lim(const char *s, size_t len, const struct rlb_http_limits *lim, uint32_t cap,
                         struct parsed_req *p)
{
    char *copy = malloc(len ? len : 1);
    cr_assert(copy);
    memcpy(copy, s, len);
    memset(&p->req, 0, sizeof(p->req));
    p->req.headers = p->hdrs;
    p->req.max_headers_capacity = cap;
    p->r = rlb_http1_parse_request(copy, len, lim, &p->req);
    /* Pointers must stay valid for the caller's checks: re-point them to <s>. */
    ptrdiff_t d = s - copy;
    if (p->r > 0) {
        p->req.method.ptr += d;
        p->req.target.ptr += d;
        if (p->req.host_index >= 0)
            p->req.host.ptr += d;
        for (uint32_t i = 0; i < p->req.num_headers; i++) {
            p->hdrs[i].name += d;
            p->hdrs[i].value += d;
        }
    }
    free(copy);
    return p->r;
}

static int parse_req(const char *s, size_t len, struct parsed_req *p)
{
    return parse_req_lim(s, len, &lim_default, NHDR, p);
}

static int parse_resp_lim(const char *s, size_t len, const struct rlb_http_limits *lim, int method,
                          struct parsed_resp *p)
{
    char *copy = malloc(len ? len : 1);
    cr_assert(copy);
    memcpy(copy, s, len);
    memset(&p->resp, 0, sizeof(p->resp));
    p->resp.headers = p->hdrs;
    p->resp.max_headers_capacity = NHDR;
    p->r = rlb_http1_parse_response(copy, len, lim, method, &p->resp);
    ptrdiff_t d = s - copy;
    if (p->r > 0) {
        p->resp.reason.ptr += d;
        for (uint32_t i = 0; i < p->resp.num_headers; i++) {
            p->hdrs[i].name += d;
            p->hdrs[i].value += d;
        }
    }
    free(copy);
    return p->r;
}

static int parse_resp(const char *s, size_t len, int method, struct parsed_resp *p)
{
    return parse_resp_lim(s, len, &lim_default, method, p);
}

struct bad_case {
    const char *in;
    size_t len;
    int status;
};

#define BAD(s, st) {(s), sizeof(s) - 1, (st)}

static const struct bad_case bad_requests[] = {
    /* request line */
    BAD("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    BAD("GET /  HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    BAD("GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400),
    BAD(" GET / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    BAD("GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    BAD("GET /\t HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    BAD("G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    BAD("GET /a\x80 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    BAD("GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    BAD("GET /a\x01 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    BAD("GET /\r\nHost: a\r\n\r\n", 400),
    BAD("GET / \r\nHost: a\r\n\r\n", 400),
    BAD("GET / http/1.1\r\nHost: a\r\n\r\n", 400),
    BAD("GET / HTTP/1\r\nHost: a\r\n\r\n", 400),
    BAD("GET / HTTP/1.1x\r\nHost: a\r\n\r\n", 400),
    BAD("GET / HTTP/11.1\r\nHost: a\r\n\r\n", 400),
    BAD("GET / HTTP/1.a\r\nHost: a\r\n\r\n", 400),
    BAD("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
    BAD("GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505),
    BAD("GET / HTTP/0.9\r\nHost: a\r\n\r\n", 505),
    BAD("GET / HTTP/3.1\r\nHost: a\r\n\r\n", 505),
    /* request-target forms */
    BAD("GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    BAD("GET example.com:80 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    BAD("GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    BAD("GET http:// HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    BAD("GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    BAD("GET http://e|x.com/a HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    BAD("GET http://user@example.com/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    BAD("GET https://?q HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    BAD("CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    BAD("CONNECT * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    BAD("CONNECT a/b:443 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    BAD("POST a HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    /* line endings */
    BAD("GET / HTTP/1.1\nHost: a\r\n\r\n", 400),
    BAD("GET / HTTP/1.1\rHost: a\r\n\r\n", 400),
    BAD("GET / HTTP/1.1\r\nHost: a\n\r\n", 400),
    BAD("GET / HTTP/1.1\r\nHost: a\r\n\n", 400),
    BAD("GET / HTTP/1.1\r\nHost: a\r\n\rx", 400),
    BAD("GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", 400),
    BAD("GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\r\n\r\n", 400),
    BAD("GET / HTTP/1.1\r\nHost: a\r\n\n\r\n", 400),
    /* field names */
    BAD("GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
    BAD("GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", 400),
    BAD("GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n", 400),
    BAD("GET / HTTP/1.1\r\nHost: a\r\nX(y: b\r\n\r\n", 400),
    BAD("GET / HTTP/1.1\r\nHost: a\r\nX y: b\r\n\r\n", 400),
    BAD("GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", 400),
    BAD("GET / HTTP/1.1\r\nHost: a\r\nX\x80: b\r\n\r\n", 400),
    /* field values */
    BAD("GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n", 400),
    BAD("GET / HTTP/1.1\r\nHost: a\r\nX: a\x01\r\n\r\n", 400),
    BAD("GET / HTTP/1.1\r\nHost: a\r\nX: a\x1f\r\n\r\n", 400),
    BAD("GET / HTTP/1.1\r\nHost: a\r\nX: a\x7f\r\n\r\n", 400),
    BAD("GET / HTTP/1.1\r\nHost: a\r\nX: 0123456789abcdef\x7f\r\n\r\n", 400),
    BAD("GET / HTTP/1.1\r\nHost: a\r\nX: 0123456789abcdef\x0b\r\n\r\n", 400),
    /* obs-fold */
    BAD("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 400),
    BAD("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tb\r\n\r\n", 400),
    BAD("GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400),
    /* Host */
    BAD("GET / HTTP/1.1\r\n\r\n", 400),
    BAD("GET / HTTP/1.1\r\nX: a\r\n\r\n", 400),
    BAD("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400),
    BAD("GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n", 400),
    BAD("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
    BAD("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
    BAD("GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", 400),
    BAD("GET / HTTP/1.1\r\nHost: a?b\r\n\r\n", 400),
    BAD("GET / HTTP/1.1\r\nHost: a\tb\r\n\r\n", 400),
    BAD("GET / HTTP/1.1\r\nHost: a\x80\r\n\r\n", 400),
    /* Content-Length */
    BAD("POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", 400),
    BAD("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", 400),
    BAD("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
    BAD("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\n", 400),
    BAD("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5 5\r\n\r\n", 400),
    BAD("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5a\r\n\r\n", 400),
    BAD("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n", 400),
    BAD("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5,,5\r\n\r\n", 400),
    BAD("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: ,5\r\n\r\n", 400),
    BAD("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5,\r\n\r\n", 400),
    BAD("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775808\r\n\r\n", 400),
    BAD("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", 400),
    BAD("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400),
    BAD("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5, 7\r\n\r\n", 400),
    /* Transfer-Encoding */
    BAD("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", 400),
    BAD("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    BAD("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    BAD("POST / HTTP/1.0\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
    BAD("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400),
    BAD("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    BAD("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
    BAD("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
    BAD("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n", 400),
    BAD("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: , ,\r\n\r\n", 400),
    BAD("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
    BAD("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
    BAD("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    BAD("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", 501),
    BAD("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunkedx\r\n\r\n", 501),
    BAD("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \"chunked\"\r\n\r\n", 501),
    /* Expect, Connection */
    BAD("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue-x\r\n\r\n", 417),
    BAD("POST / HTTP/1.1\r\nHost: a\r\nExpect: foo\r\n\r\n", 417),
    BAD("POST / HTTP/1.1\r\nHost: a\r\nExpect:\r\n\r\n", 417),
    BAD("GET / HTTP/1.1\r\nHost: a\r\nConnection: close@\r\n\r\n", 400),
    BAD("GET / HTTP/1.1\r\nHost: a\r\nConnection: a b\r\n\r\n", 400),
    /* garbage is refused before the head is complete */
    BAD("GE\x01", 400),
    BAD("\r\n", 400),
    BAD("GET / HTTP/1.1\r\nHost: a\r\nX: \x01", 400),
    BAD("GET / HTTP/1.1\r\nHo st", 400),
    BAD("GET / HTTP/1.1\r\n\t", 400),
    BAD("GET / HTTP/1.1\n", 400),
    /* ...but a valid prefix is only incomplete */
    BAD("GET / HTTP/1.", RLB_HTTP_INCOMPLETE),
    BAD("GET / HTTP/9.9\r", RLB_HTTP_INCOMPLETE),
};

Test(http1_request, rejections)
{
    for (size_t i = 0; i < RLB_ARRAY_SIZE(bad_requests); i++) {
        const struct bad_case *c = &bad_requests[i];
        struct parsed_req p;
        int r = parse_req(c->in, c->len, &p);
        if (c->status < 0) {
            cr_expect_eq(r, c->status, "case %zu: %d", i, r);
            continue;
        }
        cr_expect_eq(r, RLB_HTTP_ERROR, "case %zu (%.*s): r=%d", i, (int)c->len, c->in, r);
        cr_expect_eq(p.req.error_status, c->status, "case %zu (%.*s): status %u want %d (%s)", i, (int)c->len,
                     c->in, p.req.error_status, c->status, p.req.error_reason ? p.req.error_reason : "-");
        cr_expect(p.req.error_reason != NULL && p.req.error_reason[0], "case %zu: no reason", i);
    }
}

struct good_case {
    const char *in;
    size_t len;
};

#define GOOD(s) {(s), sizeof(s) - 1}

static const struct good_case good_requests[] = {
    GOOD("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"),
    GOOD("GET /index.html?a=b&c=%20d HTTP/1.1\r\nHost: example.com\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) "
         "AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36\r\nAccept: "
         "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\nAccept-Language: en-US,en;q=0.5\r\n"
         "Accept-Encoding: gzip, deflate, br\r\nCookie: a=b; c=d\r\nConnection: keep-alive\r\n"
         "Upgrade-Insecure-Requests: 1\r\nSec-Fetch-Dest: document\r\n\r\n"),
    GOOD("GET / HTTP/1.0\r\n\r\n"),
    GOOD("HEAD / HTTP/1.0\r\nHost: a\r\n\r\n"),
    GOOD("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"),
    GOOD("GET http://example.com/x HTTP/1.1\r\nHost: example.com\r\n\r\n"),
    GOOD("GET http://[::1]:8080?q=1 HTTP/1.1\r\nHost: x\r\n\r\n"),
    GOOD("GET HTTPS://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n"),
    GOOD("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"),
    GOOD("CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\n\r\n"),
    GOOD("POST /submit HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n"),
    GOOD("POST /submit HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n"),
    GOOD("POST /submit HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"),
    GOOD("POST /submit HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: , Chunked ,\r\n\r\n"),
    GOOD("PUT /x HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 10\r\n\r\n"),
    GOOD("GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"),
    GOOD("GET / HTTP/1.1\r\nHost:\r\n\r\n"),
    GOOD("GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"),
    GOOD("GET / HTTP/1.1\r\nHost: a\r\nX-Empty:\r\nX-Tab:\tv\t\r\nX-Obs: \x80\xff\r\n\r\n"),
    GOOD("get / HTTP/1.1\r\nHost: a\r\n\r\n"),
    GOOD("M-SEARCH /upnp HTTP/1.1\r\nHost: a\r\n\r\n"),
    GOOD("PATCH /p HTTP/1.1\r\nHost: a\r\nX: 0123456789abcdef\t0123456789abcdef\r\n\r\n"),
};

Test(http1_request, accepted_and_every_truncation)
{
    for (size_t i = 0; i < RLB_ARRAY_SIZE(good_requests); i++) {
        const struct good_case *c = &good_requests[i];
        struct parsed_req p;
        int r = parse_req(c->in, c->len, &p);
        cr_expect_eq(r, (int)c->len, "case %zu: r=%d (%s)", i, r, p.req.error_reason ? p.req.error_reason : "-");
        cr_expect_eq(p.req.head_len, c->len, "case %zu", i);
        for (size_t n = 0; n < c->len; n++) {
            r = parse_req(c->in, n, &p);
            cr_expect_eq(r, RLB_HTTP_INCOMPLETE, "case %zu prefix %zu: r=%d (%s)", i, n, r,
                         p.req.error_reason ? p.req.error_reason : "-");
        }
        /* Body bytes after the head are not the parser's business. */
        char more[2048];
        cr_assert(c->len + 10 < sizeof(more));
        memcpy(more, c->in, c->len);
        memcpy(more + c->len, "0123456789", 10);
        r = parse_req(more, c->len + 10, &p);
        cr_expect_eq(r, (int)c->len, "case %zu with body", i);
    }
}

Test(http1_request, star_only_with_options)
{
    struct parsed_req p;
    const char s[] = "M-SEARCH * HTTP/1.1\r\nHost: a\r\n\r\n";
    cr_expect_eq(parse_req(s, sizeof(s) - 1, &p), RLB_HTTP_ERROR);
    cr_expect_eq(p.req.error_status, 400);
}

Test(http1_request, fields_of_a_simple_get)
{
    const char s[] = "GET /a?b HTTP/1.1\r\nHost:  example.com  \r\nAccept: */*\r\n\r\n";
    struct parsed_req p;
    cr_assert_eq(parse_req(s, sizeof(s) - 1, &p), (int)sizeof(s) - 1);
    cr_expect_eq(p.req.method_id, RLB_METHOD_GET);
    cr_expect_eq(p.req.method.len, 3);
    cr_expect(memcmp(p.req.method.ptr, "GET", 3) == 0);
    cr_expect_eq(p.req.target.len, 4);
    cr_expect(memcmp(p.req.target.ptr, "/a?b", 4) == 0);
    cr_expect_eq(p.req.minor_version, 1);
    cr_expect_eq(p.req.request_line_len, 19);
    cr_expect_eq(p.req.num_headers, 2);
    cr_expect_eq(p.req.host_index, 0);
    cr_expect_eq(p.req.host.len, 11);
    cr_expect(memcmp(p.req.host.ptr, "example.com", 11) == 0);
    cr_expect_eq(p.req.body, RLB_BODY_NONE);
    cr_expect_eq(p.req.flags, 0);
    cr_expect_eq(p.hdrs[0].id, RLB_HDR_HOST);
    cr_expect_eq(p.hdrs[0].value_len, 11);
    cr_expect_eq(p.hdrs[1].id, RLB_HDR_OTHER);
    cr_expect_eq(p.hdrs[1].name_len, 6);
    cr_expect(memcmp(p.hdrs[1].value, "*/*", 3) == 0);
}

Test(http1_request, methods)
{
    static const struct {
        const char *m;
        int id;
    } t[] = {
        {"GET", RLB_METHOD_GET},         {"HEAD", RLB_METHOD_HEAD},   {"POST", RLB_METHOD_POST},
        {"PUT", RLB_METHOD_PUT},         {"DELETE", RLB_METHOD_DELETE}, {"OPTIONS", RLB_METHOD_OPTIONS},
        {"TRACE", RLB_METHOD_TRACE},     {"PATCH", RLB_METHOD_PATCH}, {"get", RLB_METHOD_OTHER},
        {"PROPFIND", RLB_METHOD_OTHER},  {"GETS", RLB_METHOD_OTHER},  {"Post", RLB_METHOD_OTHER},
    };
    for (size_t i = 0; i < RLB_ARRAY_SIZE(t); i++) {
        char s[128];
        int n = snprintf(s, sizeof(s), "%s / HTTP/1.1\r\nHost: a\r\n\r\n", t[i].m);
        struct parsed_req p;
        cr_expect_eq(parse_req(s, (size_t)n, &p), n, "%s", t[i].m);
        cr_expect_eq(p.req.method_id, t[i].id, "%s", t[i].m);
    }
    const char c[] = "CONNECT a:1 HTTP/1.1\r\nHost: a:1\r\n\r\n";
    struct parsed_req p;
    cr_expect_eq(parse_req(c, sizeof(c) - 1, &p), (int)sizeof(c) - 1);
    cr_expect_eq(p.req.method_id, RLB_METHOD_CONNECT);
}

Test(http1_request, body_kinds)
{
    struct parsed_req p;
    const char cl[] = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775807\r\n\r\n";
    cr_assert_gt(parse_req(cl, sizeof(cl) - 1, &p), 0);
    cr_expect_eq(p.req.body, RLB_BODY_LENGTH);
    cr_expect_eq(p.req.content_length, 9223372036854775807ULL);

    const char cl0[] = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n";
    cr_assert_gt(parse_req(cl0, sizeof(cl0) - 1, &p), 0);
    cr_expect_eq(p.req.body, RLB_BODY_NONE);
    cr_expect_eq(p.req.content_length, 0);

    const char cl2[] = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 007, 7\r\ncontent-length:7\r\n\r\n";
    cr_assert_gt(parse_req(cl2, sizeof(cl2) - 1, &p), 0);
    cr_expect_eq(p.req.body, RLB_BODY_LENGTH);
    cr_expect_eq(p.req.content_length, 7);

    const char te[] = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\n\r\n";
    cr_assert_gt(parse_req(te, sizeof(te) - 1, &p), 0);
    cr_expect_eq(p.req.body, RLB_BODY_CHUNKED);
    cr_expect_eq(p.hdrs[1].flags & RLB_HF_HOP, 0, "Transfer-Encoding is not hop-by-hop here");

    const char named[] = "GET / HTTP/1.1\r\nHost: a\r\nConnection: host, content-length\r\nContent-Length: 0\r\n\r\n";
    cr_assert_gt(parse_req(named, sizeof(named) - 1, &p), 0);
    cr_expect_eq(p.hdrs[0].flags & RLB_HF_HOP, 0, "Host named in Connection must survive");
    cr_expect_eq(p.hdrs[2].flags & RLB_HF_HOP, 0, "Content-Length named in Connection must survive");

    const char none[] = "POST / HTTP/1.1\r\nHost: a\r\n\r\n";
    cr_assert_gt(parse_req(none, sizeof(none) - 1, &p), 0);
    cr_expect_eq(p.req.body, RLB_BODY_NONE);
}

Test(http1_request, connection_and_expect_flags)
{
    struct parsed_req p;
    const char a[] = "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    cr_assert_gt(parse_req(a, sizeof(a) - 1, &p), 0);
    cr_expect_eq(p.req.flags, RLB_MSG_CONN_CLOSE | RLB_MSG_HAS_HOP);

    const char b[] = "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\nKeep-Alive: timeout=5\r\n\r\n";
    cr_assert_gt(parse_req(b, sizeof(b) - 1, &p), 0);
    cr_expect_eq(p.req.flags, RLB_MSG_CONN_KEEPALIVE | RLB_MSG_HAS_HOP);
    cr_expect(p.hdrs[1].flags & RLB_HF_HOP);

    const char c[] = "GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n";
    cr_assert_gt(parse_req(c, sizeof(c) - 1, &p), 0);
    cr_expect_eq(p.req.flags, RLB_MSG_UPGRADE | RLB_MSG_HAS_HOP);

    const char d[] = "GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n\r\n";
    cr_assert_gt(parse_req(d, sizeof(d) - 1, &p), 0);
    cr_expect_eq(p.req.flags & RLB_MSG_UPGRADE, 0);

    const char e[] = "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\n\r\n";
    cr_assert_gt(parse_req(e, sizeof(e) - 1, &p), 0);
    cr_expect_eq(p.req.flags, RLB_MSG_HAS_HOP);

    const char f[] = "GET / HTTP/1.1\r\nHost: a\r\nConnection: ,, close ,\tkeep-alive,\r\nConnection: Upgrade\r\n"
                     "Upgrade: x\r\n\r\n";
    cr_assert_gt(parse_req(f, sizeof(f) - 1, &p), 0);
    cr_expect_eq(p.req.flags, RLB_MSG_CONN_CLOSE | RLB_MSG_CONN_KEEPALIVE | RLB_MSG_UPGRADE | RLB_MSG_HAS_HOP);

    const char g[] = "PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n";
    cr_assert_gt(parse_req(g, sizeof(g) - 1, &p), 0);
    cr_expect_eq(p.req.flags, RLB_MSG_EXPECT_CONTINUE);

    const char h[] = "PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n";
    cr_assert_gt(parse_req(h, sizeof(h) - 1, &p), 0);
    cr_expect_eq(p.req.flags, 0, "HTTP/1.0 clients cannot take a 100 Continue");
}

Test(http1_request, hop_by_hop_flags)
{
    const char s[] = "GET / HTTP/1.1\r\n"
                     "X-Before: 1\r\n"        /* 0: named by Connection later */
                     "Host: a\r\n"            /* 1 */
                     "Connection: x-before, X-AFTER, content-length, transfer-encoding\r\n" /* 2 */
                     "Keep-Alive: 1\r\n"      /* 3 */
                     "Proxy-Connection: 1\r\n" /* 4 */
                     "TE: trailers\r\n"       /* 5 */
                     "Trailer: X\r\n"         /* 6 */
                     "Upgrade: a\r\n"         /* 7 */
                     "x-after: 2\r\n"         /* 8 */
                     "X-Other: 3\r\n"         /* 9 */
                     "Content-Length: 3\r\n"  /* 10 */
                     "Connection: x-other2\r\n" /* 11 */
                     "X-Other2: 4\r\n"        /* 12 */
                     "\r\n";
    static const bool hop[] = {1, 0, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1};
    struct parsed_req p;
    cr_assert_eq(parse_req(s, sizeof(s) - 1, &p), (int)sizeof(s) - 1, "%s", p.req.error_reason);
    cr_assert_eq(p.req.num_headers, RLB_ARRAY_SIZE(hop));
    for (size_t i = 0; i < RLB_ARRAY_SIZE(hop); i++)
        cr_expect_eq(!!(p.hdrs[i].flags & RLB_HF_HOP), hop[i], "header %zu (%.*s)", i, (int)p.hdrs[i].name_len,
                     p.hdrs[i].name);
    cr_expect(p.req.flags & RLB_MSG_HAS_HOP);
    cr_expect_eq(p.req.body, RLB_BODY_LENGTH);
}

Test(http1_request, header_ids)
{
    for (int id = 1; id < RLB_HDR__COUNT; id++) {
        struct rlb_str name = rlb_http1_header_name((enum rlb_hdr_id)id);
        cr_assert_gt(name.len, 0, "id %d", id);
        /* Mixed case must intern to the same id. */
        char mixed[64];
        for (size_t k = 0; k < name.len; k++)
            mixed[k] = (k % 2 && name.ptr[k] >= 'a' && name.ptr[k] <= 'z') ? (char)(name.ptr[k] - 32) : name.ptr[k];
        for (int variant = 0; variant < 2; variant++) {
            char s[256];
            const char *nm = variant ? mixed : name.ptr;
            const char *value = "1";
            if (id == RLB_HDR_HOST)
                value = "a";
            else if (id == RLB_HDR_EXPECT)
                value = "100-continue";
            else if (id == RLB_HDR_TRANSFER_ENCODING)
                value = "chunked";
            int n = snprintf(s, sizeof(s), "POST / HTTP/1.0\r\n%.*s: %s\r\n\r\n", (int)name.len, nm, value);
            struct parsed_req p;
            cr_expect_eq(parse_req(s, (size_t)n, &p), id == RLB_HDR_TRANSFER_ENCODING ? RLB_HTTP_ERROR : n, "%s",
                         s);
            if (p.r > 0)
                cr_expect_eq(p.hdrs[0].id, id, "%s", s);
        }
    }
    /* Near misses stay OTHER. */
    static const char *const others[] = {"hosts", "hos", "x-forwarded-fo", "contentlength", "content_length",
                                          "tf", "vIa1", "X-Real-IP2", "connectioN2", "Hpst", "dat3"};
    for (size_t i = 0; i < RLB_ARRAY_SIZE(others); i++) {
        char s[256];
        int n = snprintf(s, sizeof(s), "GET / HTTP/1.0\r\n%s: 1\r\n\r\n", others[i]);
        struct parsed_req p;
        cr_assert_eq(parse_req(s, (size_t)n, &p), n, "%s", s);
        cr_expect_eq(p.hdrs[0].id, RLB_HDR_OTHER, "%s", others[i]);
    }
    cr_expect_eq(rlb_http1_header_name(RLB_HDR_OTHER).len, 0);
    cr_expect_eq(rlb_http1_header_name(RLB_HDR__COUNT).len, 0);
    cr_expect(memcmp(rlb_http1_header_name(RLB_HDR_X_FORWARDED_PROTO).ptr, "x-forwarded-proto", 17) == 0);
}

Test(http1_request, line_offsets_rebuild_the_head)
{
    for (size_t i = 0; i < RLB_ARRAY_SIZE(good_requests); i++) {
        const struct good_case *c = &good_requests[i];
        struct parsed_req p;
        if (parse_req(c->in, c->len, &p) <= 0)
            continue;
        char out[2048];
        size_t n = 0;
        memcpy(out, c->in, p.req.request_line_len);
        n += p.req.request_line_len;
        for (uint32_t k = 0; k < p.req.num_headers; k++) {
            const struct rlb_http_header *h = &p.hdrs[k];
            cr_expect_eq(h->line_off, n, "case %zu header %u", i, k);
            cr_expect_eq(h->name, c->in + h->line_off);
            cr_expect(h->value >= h->name + h->name_len + 1);
            cr_expect(h->value + h->value_len <= c->in + h->line_off + h->line_len - 2);
            memcpy(out + n, c->in + h->line_off, h->line_len);
            n += h->line_len;
        }
        memcpy(out + n, "\r\n", 2);
        n += 2;
        cr_expect_eq(n, c->len, "case %zu", i);
        cr_expect(memcmp(out, c->in, n) == 0, "case %zu", i);
    }
}

Test(http1_request, ows_trimmed)
{
    const char s[] = "GET / HTTP/1.1\r\nHost: a\r\nX:  \t v a l \t \r\nY:\t\t\r\n\r\n";
    struct parsed_req p;
    cr_assert_gt(parse_req(s, sizeof(s) - 1, &p), 0);
    cr_expect_eq(p.hdrs[1].value_len, 5);
    cr_expect(memcmp(p.hdrs[1].value, "v a l", 5) == 0);
    cr_expect_eq(p.hdrs[2].value_len, 0);
}

static void expect_req_status(const char *s, size_t len, const struct rlb_http_limits *l, uint32_t cap, int status)
{
    struct parsed_req p;
    int r = parse_req_lim(s, len, l, cap, &p);
    if (status < 0) {
        cr_expect_eq(r, status, "len %zu: r=%d (%s)", len, r, p.req.error_reason ? p.req.error_reason : "-");
    } else if (status == 0) {
        cr_expect_eq(r, (int)len, "len %zu: r=%d (%s)", len, r, p.req.error_reason ? p.req.error_reason : "-");
    } else {
        cr_expect_eq(r, RLB_HTTP_ERROR, "len %zu: r=%d", len, r);
        cr_expect_eq(p.req.error_status, status, "len %zu: status %u", len, p.req.error_status);
    }
}

Test(http1_request, limits_request_line)
{
    const struct rlb_http_limits l = {32, 256, 4};
    char s[300];
    /* "GET /" + pad + " HTTP/1.1\r\n": 5 + pad + 11 */
    for (size_t pad = 0; pad < 40; pad++) {
        size_t n = 0;
        memcpy(s, "GET /", 5);
        n = 5;
        memset(s + n, 'a', pad);
        n += pad;
        memcpy(s + n, " HTTP/1.1\r\nHost: a\r\n\r\n", 22);
        size_t line = 5 + pad + 11;
        n += 22;
        expect_req_status(s, n, &l, NHDR, line <= 32 ? 0 : 414);
        /* Truncated inside the line: 414 as soon as 32 bytes hold no CRLF. */
        for (size_t k = 0; k < line; k++)
            expect_req_status(s, k, &l, NHDR, k >= 32 ? 414 : RLB_HTTP_INCOMPLETE);
    }
}

Test(http1_request, limits_head_size)
{
    const struct rlb_http_limits l = {64, 128, 100};
    char s[300];
    const char start[] = "GET / HTTP/1.1\r\nHost: a\r\nX: ";
    for (size_t pad = 0; pad < 120; pad++) {
        size_t n = sizeof(start) - 1;
        memcpy(s, start, n);
        memset(s + n, 'v', pad);
        n += pad;
        memcpy(s + n, "\r\n\r\n", 4);
        n += 4;
        expect_req_status(s, n, &l, NHDR, n <= 128 ? 0 : 431);
        for (size_t k = 0; k < n; k++)
            expect_req_status(s, k, &l, NHDR, k >= 128 ? 431 : RLB_HTTP_INCOMPLETE);
    }
    /* A request line under its own limit but over the head limit. */
    const struct rlb_http_limits small = {64, 20, 100};
    const char r[] = "GET /0123456789 HTTP/1.1\r\nHost: a\r\n\r\n";
    expect_req_status(r, sizeof(r) - 1, &small, NHDR, 431);
    expect_req_status(r, 20, &small, NHDR, 431);
    expect_req_status(r, 19, &small, NHDR, RLB_HTTP_INCOMPLETE);
}

Test(http1_request, limits_header_count)
{
    const struct rlb_http_limits l = {64, 4096, 4};
    const char four[] = "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    const char five[] = "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n";
    expect_req_status(four, sizeof(four) - 1, &l, NHDR, 0);
    expect_req_status(five, sizeof(five) - 1, &l, NHDR, 431);
    /* Known as soon as the fifth line starts. */
    expect_req_status(five, sizeof(four) - 2, &l, NHDR, 431);
    expect_req_status(five, sizeof(four) - 3, &l, NHDR, RLB_HTTP_INCOMPLETE);
    /* The caller's array is a limit too. */
    expect_req_status(four, sizeof(four) - 1, &l, 3, 431);
    expect_req_status(four, sizeof(four) - 1, &l, 4, 0);
}

/* ---- responses ---- */

struct resp_case {
    const char *in;
    size_t len;
    int method;
    int result; /* 0: accepted whole, else RLB_HTTP_ERROR */
    int body;
    uint64_t cl;
    int status;
};

#define RESP(s, m, res, b, cl, st) {(s), sizeof(s) - 1, (m), (res), (b), (cl), (st)}
#define RBAD(s) {(s), sizeof(s) - 1, RLB_METHOD_GET, RLB_HTTP_ERROR, 0, 0, 0}

static const struct resp_case responses[] = {
    RESP("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", RLB_METHOD_GET, 0, RLB_BODY_LENGTH, 5, 200),
    RESP("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", RLB_METHOD_GET, 0, RLB_BODY_NONE, 0, 200),
    RESP("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", RLB_METHOD_HEAD, 0, RLB_BODY_NONE, 0, 200),
    RESP("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", RLB_METHOD_GET, 0, RLB_BODY_CHUNKED, 0, 200),
    RESP("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", RLB_METHOD_HEAD, 0, RLB_BODY_NONE, 0, 200),
    RESP("HTTP/1.1 200 OK\r\n\r\n", RLB_METHOD_GET, 0, RLB_BODY_UNTIL_CLOSE, 0, 200),
    RESP("HTTP/1.0 200 OK\r\nServer: x\r\n\r\n", RLB_METHOD_GET, 0, RLB_BODY_UNTIL_CLOSE, 0, 200),
    RESP("HTTP/1.1 200\r\n\r\n", RLB_METHOD_GET, 0, RLB_BODY_UNTIL_CLOSE, 0, 200),
    RESP("HTTP/1.1 200 \r\nContent-Length: 1\r\n\r\n", RLB_METHOD_GET, 0, RLB_BODY_LENGTH, 1, 200),
    RESP("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", RLB_METHOD_GET, 0, RLB_BODY_NONE, 0, 204),
    RESP("HTTP/1.1 204 No Content\r\n\r\n", RLB_METHOD_GET, 0, RLB_BODY_NONE, 0, 204),
    RESP("HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\nETag: \"x\"\r\n\r\n", RLB_METHOD_GET, 0, RLB_BODY_NONE,
         0, 304),
    RESP("HTTP/1.1 100 Continue\r\n\r\n", RLB_METHOD_POST, 0, RLB_BODY_NONE, 0, 100),
    RESP("HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n", RLB_METHOD_GET, 0, RLB_BODY_NONE, 0, 103),
    RESP("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", RLB_METHOD_GET, 0,
         RLB_BODY_NONE, 0, 101),
    RESP("HTTP/1.1 200 Connection established\r\n\r\n", RLB_METHOD_CONNECT, 0, RLB_BODY_NONE, 0, 200),
    RESP("HTTP/1.1 299 X\r\nContent-Length: 3\r\n\r\n", RLB_METHOD_CONNECT, 0, RLB_BODY_NONE, 0, 299),
    RESP("HTTP/1.1 407 Auth\r\nContent-Length: 3\r\n\r\n", RLB_METHOD_CONNECT, 0, RLB_BODY_LENGTH, 3, 407),
    RESP("HTTP/1.1 404 Not Found\r\nContent-Length: 3, 3\r\ncontent-length: 3\r\n\r\n", RLB_METHOD_GET, 0,
         RLB_BODY_LENGTH, 3, 404),
    RESP("HTTP/1.1 999 Whatever \x80\tyes\r\n\r\n", RLB_METHOD_GET, 0, RLB_BODY_UNTIL_CLOSE, 0, 999),
    RESP("HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: 12\r\n"
         "Date: Sat, 28 Nov 2026 09:00:00 GMT\r\nServer: nginx\r\nX-Powered-By: PHP\r\n\r\n",
         RLB_METHOD_POST, 0, RLB_BODY_LENGTH, 12, 500),
    RBAD("HTTP/1.1 99 X\r\n\r\n"),
    RBAD("HTTP/1.1 099 X\r\n\r\n"),
    RBAD("HTTP/1.1 2000 X\r\n\r\n"),
    RBAD("HTTP/1.1 20a X\r\n\r\n"),
    RBAD("HTTP/1.1  200 X\r\n\r\n"),
    RBAD("HTTP/1.1 200\tX\r\n\r\n"),
    RBAD("HTTP/2.0 200 OK\r\n\r\n"),
    RBAD("HTTP/1.2 200 OK\r\n\r\n"),
    RBAD("HTTP/0.9 200 OK\r\n\r\n"),
    RBAD("http/1.1 200 OK\r\n\r\n"),
    RBAD("HTTP/1.1 200 OK\n\r\n"),
    RBAD("HTTP/1.1 200\n\r\n"),
    RBAD("HTTP/1.1 200 OK\rX\r\n\r\n"),
    RBAD("HTTP/1.1 200 O\x01K\r\n\r\n"),
    RBAD("HTTP/1.1 200 O\x7fK\r\n\r\n"),
    RBAD("HTTP/1.1 200 OK\r\nX: a\nY: b\r\n\r\n"),
    RBAD("HTTP/1.1 200 OK\r\nX : a\r\n\r\n"),
    RBAD("HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n"),
    RBAD("HTTP/1.1 200 OK\r\nX: a\0\r\n\r\n"),
    RBAD("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
    RBAD("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"),
    RBAD("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
    RBAD("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"),
    RBAD("HTTP/1.1 200 OK\r\nTransfer-Encoding:\r\n\r\n"),
    RBAD("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
    RBAD("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
    RBAD("HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n"),
    RBAD("HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n"),
    RBAD("HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n"),
    RBAD("HTTP/1.1 200 OK\r\nConnection: a@b\r\n\r\n"),
    RBAD("HTTX"),
    RBAD("HTTP/1.1 2x"),
};

Test(http1_response, table_and_every_truncation)
{
    for (size_t i = 0; i < RLB_ARRAY_SIZE(responses); i++) {
        const struct resp_case *c = &responses[i];
        struct parsed_resp p;
        int r = parse_resp(c->in, c->len, c->method, &p);
        if (c->result == RLB_HTTP_ERROR) {
            cr_expect_eq(r, RLB_HTTP_ERROR, "case %zu (%.*s): r=%d", i, (int)c->len, c->in, r);
            cr_expect(p.resp.error_reason != NULL, "case %zu", i);
            continue;
        }
        cr_expect_eq(r, (int)c->len, "case %zu: r=%d (%s)", i, r, p.resp.error_reason ? p.resp.error_reason : "-");
        cr_expect_eq(p.resp.head_len, c->len, "case %zu", i);
        cr_expect_eq(p.resp.body, c->body, "case %zu: body %u want %d", i, p.resp.body, c->body);
        cr_expect_eq(p.resp.content_length, c->cl, "case %zu", i);
        cr_expect_eq(p.resp.status, c->status, "case %zu", i);
        for (size_t n = 0; n < c->len; n++) {
            r = parse_resp(c->in, n, c->method, &p);
            cr_expect_eq(r, RLB_HTTP_INCOMPLETE, "case %zu prefix %zu: r=%d (%s)", i, n, r,
                         p.resp.error_reason ? p.resp.error_reason : "-");
        }
    }
}

Test(http1_response, fields_and_flags)
{
    struct parsed_resp p;
    const char a[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
    cr_assert_gt(parse_resp(a, sizeof(a) - 1, RLB_METHOD_GET, &p), 0);
    cr_expect_eq(p.resp.flags, RLB_MSG_UPGRADE | RLB_MSG_HAS_HOP);
    cr_expect_eq(p.resp.minor_version, 1);
    cr_expect_eq(p.resp.status_line_len, 34);
    cr_expect_eq(p.resp.reason.len, 19);
    cr_expect(memcmp(p.resp.reason.ptr, "Switching Protocols", 19) == 0);

    const char b[] = "HTTP/1.1 200 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
    cr_assert_gt(parse_resp(b, sizeof(b) - 1, RLB_METHOD_GET, &p), 0);
    cr_expect_eq(p.resp.flags & RLB_MSG_UPGRADE, 0, "only a 101 switches");

    const char c[] = "HTTP/1.0 200 OK\r\nConnection: keep-alive, X-Foo\r\nX-Foo: 1\r\nKeep-Alive: 5\r\n"
                     "Via: 1.1 a\r\n\r\n";
    cr_assert_gt(parse_resp(c, sizeof(c) - 1, RLB_METHOD_GET, &p), 0);
    cr_expect_eq(p.resp.flags, RLB_MSG_CONN_KEEPALIVE | RLB_MSG_HAS_HOP);
    cr_expect_eq(p.resp.minor_version, 0);
    cr_expect(p.hdrs[1].flags & RLB_HF_HOP);
    cr_expect(p.hdrs[2].flags & RLB_HF_HOP);
    cr_expect_eq(p.hdrs[3].flags, 0);
    cr_expect_eq(p.hdrs[3].id, RLB_HDR_VIA);

    const char d[] = "HTTP/1.1 200\r\nConnection: close\r\n\r\n";
    cr_assert_gt(parse_resp(d, sizeof(d) - 1, RLB_METHOD_GET, &p), 0);
    cr_expect_eq(p.resp.flags, RLB_MSG_CONN_CLOSE | RLB_MSG_HAS_HOP);
    cr_expect_eq(p.resp.reason.len, 0);
}

Test(http1_response, limits)
{
    const struct rlb_http_limits l = {24, 64, 2};
    struct parsed_resp p;
    const char ok[] = "HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\n\r\n";
    cr_expect_eq(parse_resp_lim(ok, sizeof(ok) - 1, &l, RLB_METHOD_GET, &p), (int)sizeof(ok) - 1);
    const char many[] = "HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    cr_expect_eq(parse_resp_lim(many, sizeof(many) - 1, &l, RLB_METHOD_GET, &p), RLB_HTTP_ERROR);
    const char longline[] = "HTTP/1.1 200 OKOKOKOKOKOKOK\r\n\r\n";
    cr_expect_eq(parse_resp_lim(longline, sizeof(longline) - 1, &l, RLB_METHOD_GET, &p), RLB_HTTP_ERROR);
    cr_expect_eq(parse_resp_lim(longline, 24, &l, RLB_METHOD_GET, &p), RLB_HTTP_ERROR);
    cr_expect_eq(parse_resp_lim(longline, 23, &l, RLB_METHOD_GET, &p), RLB_HTTP_INCOMPLETE);
    const char big[] = "HTTP/1.1 200 OK\r\nA: 01234567890123456789012345678901234567890123456789\r\n\r\n";
    cr_expect_eq(parse_resp_lim(big, sizeof(big) - 1, &l, RLB_METHOD_GET, &p), RLB_HTTP_ERROR);
    cr_expect(p.resp.error_reason != NULL);
    cr_expect_eq(parse_resp_lim(big, 64, &l, RLB_METHOD_GET, &p), RLB_HTTP_ERROR);
    cr_expect_eq(parse_resp_lim(big, 63, &l, RLB_METHOD_GET, &p), RLB_HTTP_INCOMPLETE);
}

Test(http1_reason, phrases)
{
    static const int codes[] = {100, 101, 200, 201, 202, 204, 206, 301, 302, 303, 304, 307, 308, 400, 401, 403, 404,
                                405, 408, 411, 413, 414, 415, 417, 421, 426, 429, 431, 500, 501, 502, 503, 504, 505};
    for (size_t i = 0; i < RLB_ARRAY_SIZE(codes); i++)
        cr_expect_str_neq(rlb_http_reason(codes[i]), "Unknown", "%d", codes[i]);
    cr_expect_str_eq(rlb_http_reason(400), "Bad Request");
    cr_expect_str_eq(rlb_http_reason(431), "Request Header Fields Too Large");
    cr_expect_str_eq(rlb_http_reason(505), "HTTP Version Not Supported");
    cr_expect_str_eq(rlb_http_reason(299), "Unknown");
    cr_expect_str_eq(rlb_http_reason(-1), "Unknown");
}

/* The word-at-a-time scanners must stop at a bad byte wherever it falls
 * relative to their 8/16-byte steps, and step over HTAB wherever it falls. */
Test(http1_request, bad_byte_at_every_offset)
{
    static const unsigned char value_bad[] = {0x00, 0x01, 0x0a, 0x0d, 0x1f, 0x7f};
    static const unsigned char target_bad[] = {0x00, 0x09, 0x1f, 0x7f, 0x80, 0xff};
    for (size_t off = 0; off < 48; off++) {
        char s[256];
        struct parsed_req p;
        const char pre[] = "GET / HTTP/1.1\r\nHost: a\r\nX: v";
        size_t n = sizeof(pre) - 1;
        memcpy(s, pre, n);
        memset(s + n, 'x', 48);
        memcpy(s + n + 48, "\r\n\r\n", 4);
        size_t len = n + 52;

        s[n + off] = '\t';
        cr_expect_eq(parse_req(s, len, &p), (int)len, "tab at %zu", off);
        s[n + off] = (char)0x80;
        cr_expect_eq(parse_req(s, len, &p), (int)len, "obs-text at %zu", off);
        for (size_t b = 0; b < sizeof(value_bad); b++) {
            s[n + off] = (char)value_bad[b];
            cr_expect_eq(parse_req(s, len, &p), RLB_HTTP_ERROR, "value byte %#x at %zu", value_bad[b], off);
            cr_expect_eq(p.req.error_status, 400);
        }

        const char tpre[] = "GET /";
        n = sizeof(tpre) - 1;
        memcpy(s, tpre, n);
        memset(s + n, 'a', 48);
        memcpy(s + n + 48, " HTTP/1.1\r\nHost: a\r\n\r\n", 22);
        len = n + 48 + 22;
        cr_expect_eq(parse_req(s, len, &p), (int)len, "clean target");
        for (size_t b = 0; b < sizeof(target_bad); b++) {
            s[n + off] = (char)target_bad[b];
            cr_expect_eq(parse_req(s, len, &p), RLB_HTTP_ERROR, "target byte %#x at %zu", target_bad[b], off);
            cr_expect_eq(p.req.error_status, 400);
            s[n + off] = 'a';
        }
        s[n + off] = '~';
        cr_expect_eq(parse_req(s, len, &p), (int)len, "tilde at %zu", off);
        s[n + off] = '!';
        cr_expect_eq(parse_req(s, len, &p), (int)len, "bang at %zu", off);

        const char rpre[] = "HTTP/1.1 200 R";
        n = sizeof(rpre) - 1;
        memcpy(s, rpre, n);
        memset(s + n, 'r', 48);
        memcpy(s + n + 48, "\r\n\r\n", 4);
        len = n + 52;
        struct parsed_resp q;
        s[n + off] = '\t';
        cr_expect_eq(parse_resp(s, len, RLB_METHOD_GET, &q), (int)len, "reason tab at %zu", off);
        cr_expect_eq(q.resp.reason.len, 49);
        for (size_t b = 0; b < sizeof(value_bad); b++) {
            s[n + off] = (char)value_bad[b];
            cr_expect_eq(parse_resp(s, len, RLB_METHOD_GET, &q), RLB_HTTP_ERROR, "reason byte %#x at %zu",
                         value_bad[b], off);
        }
    }
}
