/* The head rewriter: what the backend and the client receive, byte for byte. */
#include <criterion/criterion.h>
#include <ringlb/buf.h>
#include <ringlb/http1.h>
#include <ringlb/http1_emit.h>

#include <string.h>

static struct rlb_bufs bufs;
static struct rlb_outq q;
static struct rlb_http_header hdrs[64];
static const struct rlb_http_limits limits = {8192, 65536, 64};

static void setup(void)
{
    struct rlb_bufs_spec spec = {.count = {8, 8}, .size = {4096, 4096}, .linear_cap = 2, .linear_size = 8192};
    cr_assert_eq(rlb_bufs_init(&bufs, NULL, &spec), 0);
    memset(&q, 0, sizeof(q));
}

static void teardown(void)
{
    rlb_bufs_destroy(&bufs, NULL);
}

TestSuite(emit, .init = setup, .fini = teardown);

/* Puts <text> in ring buffer 0 as if received, as the proxy would see it. */
static const char *receive(const char *text)
{
    size_t len = strlen(text);
    cr_assert(len < bufs.groups[RLB_BUF_GROUP_CLIENT].size);
    rlb_buf_received(&bufs, RLB_BUF_GROUP_CLIENT, 0, (uint32_t)len);
    memcpy(rlb_buf_ptr(&bufs, 0), text, len);
    return rlb_buf_ptr(&bufs, 0);
}

static char *gather(void)
{
    static char out[8192];
    size_t n = 0;
    for (uint16_t i = q.head; i < q.tail; i++) {
        memcpy(out + n, q.iov[i].iov_base, q.iov[i].iov_len);
        n += q.iov[i].iov_len;
    }
    out[n] = '\0';
    cr_expect_eq(q.queued_bytes, n);
    return out;
}

static const struct rlb_str via = {"Via: 1.1 ringlb\r\n", 17};

static char *emit_req(const char *text, const struct rlb_route_cfg *route, bool keepalive)
{
    const char *head = receive(text);
    struct rlb_http_request req = {.headers = hdrs, .max_headers_capacity = 64};
    int rc = rlb_http1_parse_request(head, strlen(text), &limits, &req);
    cr_assert_gt(rc, 0, "parse failed: %s", req.error_reason);
    struct rlb_req_emit opt = {
        .route = route,
        .client_ip = {"10.0.0.7", 8},
        .via_line = via,
        .proto = {"http", 4},
        .default_host = {"127.0.0.1:9001", 14},
        .upstream_keepalive = keepalive,
    };
    cr_assert_eq(rlb_http1_emit_request(&q, &bufs, 0, head, &req, &opt), 0);
    return gather();
}

Test(emit, plain_get_is_one_slice_plus_additions)
{
    char *out = emit_req("GET /a HTTP/1.1\r\nHost: shop\r\nAccept: */*\r\n\r\n", NULL, true);
    cr_expect_str_eq(out, "GET /a HTTP/1.1\r\nHost: shop\r\nAccept: */*\r\n"
                          "X-Forwarded-For: 10.0.0.7\r\nX-Real-IP: 10.0.0.7\r\nX-Forwarded-Proto: http\r\n"
                          "Via: 1.1 ringlb\r\n\r\n");
    /* The client's bytes are referenced, not copied: one piece for the whole kept head. */
    cr_expect_eq(q.iov[0].iov_base, rlb_buf_ptr(&bufs, 0));
    cr_expect_eq(bufs.refs[0], 2);
}

Test(emit, hop_by_hop_and_spoofable_headers_dropped)
{
    char *out = emit_req("POST /p HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\n"
                         "Keep-Alive: timeout=5\r\nTE: trailers\r\nTrailer: X\r\nProxy-Connection: x\r\n"
                         "X-Real-IP: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nContent-Length: 3\r\nA: b\r\n\r\n",
                         NULL, true);
    /* A lone, plain Content-Length stays where it was: no need to re-print it. */
    cr_expect_str_eq(out, "POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nA: b\r\n"
                          "X-Forwarded-For: 10.0.0.7\r\nX-Real-IP: 10.0.0.7\r\nX-Forwarded-Proto: http\r\n"
                          "Via: 1.1 ringlb\r\n\r\n");
}

Test(emit, content_length_lists_and_odd_forms_reemitted)
{
    const char *forms[] = {"Content-Length: 5, 5\r\n", "Content-Length: 005\r\n",
                           "Content-Length: 5\r\ncontent-length: 5\r\n"};
    for (size_t i = 0; i < 3; i++) {
        char req[256];
        snprintf(req, sizeof(req), "POST /p HTTP/1.1\r\nHost: h\r\n%sA: b\r\n\r\n", forms[i]);
        rlb_outq_discard(&q, &bufs);
        char *out = emit_req(req, NULL, true);
        cr_expect_str_eq(out, "POST /p HTTP/1.1\r\nHost: h\r\nA: b\r\nContent-Length: 5\r\n"
                              "X-Forwarded-For: 10.0.0.7\r\nX-Real-IP: 10.0.0.7\r\nX-Forwarded-Proto: http\r\n"
                              "Via: 1.1 ringlb\r\n\r\n",
                         "form %zu", i);
    }
}

Test(emit, xff_appended_to_every_existing_value)
{
    char *out = emit_req("GET / HTTP/1.1\r\nX-Forwarded-For: 1.2.3.4\r\nHost: h\r\nX-Forwarded-For: 5.6.7.8, 9.9.9.9\r\n"
                         "Via: 1.0 edge\r\n\r\n",
                         NULL, true);
    cr_expect_str_eq(out, "GET / HTTP/1.1\r\nHost: h\r\nVia: 1.0 edge\r\n"
                          "X-Forwarded-For: 1.2.3.4, 5.6.7.8, 9.9.9.9, 10.0.0.7\r\nX-Real-IP: 10.0.0.7\r\n"
                          "X-Forwarded-Proto: http\r\nVia: 1.1 ringlb\r\n\r\n");
}

/* Found by fuzz_emit: each X-Forwarded-For line costs a split of the kept run
 * plus two pieces in our joined list; the room check must count all three or
 * the queue overflows. Whatever fits is emitted whole, the rest refused. */
Test(emit, many_interleaved_xff_lines_never_overflow_the_queue)
{
    for (int n = 1; n <= 40; n++) {
        char text[4096];
        int len = snprintf(text, sizeof(text), "GET / HTTP/1.1\r\nHost: a\r\n");
        for (int i = 0; i < n; i++)
            len += snprintf(text + len, sizeof(text) - (size_t)len, "X-Forwarded-For: 10.%d.0.1\r\nA%d: b\r\n", i, i);
        snprintf(text + len, sizeof(text) - (size_t)len, "\r\n");
        const char *head = receive(text);
        struct rlb_http_request req = {.headers = hdrs, .max_headers_capacity = 64};
        if (rlb_http1_parse_request(head, strlen(text), &limits, &req) <= 0)
            break;
        memset(&q, 0, sizeof(q));
        struct rlb_req_emit opt = {.client_ip = {"10.0.0.7", 8}, .via_line = via, .proto = {"http", 4}};
        if (rlb_http1_emit_request(&q, &bufs, 0, head, &req, &opt) != 0) {
            cr_expect_geq(n, 10, "refused at only %d lines", n);
            break;
        }
        char *out = gather();
        cr_expect(strstr(out, "10.0.0.7\r\nX-Real-IP") != NULL);
        rlb_outq_discard(&q, &bufs);
    }
}

Test(emit, set_host_and_chunked_reframed)
{
    struct rlb_route_cfg route = {.set_host = "backend.internal"};
    char *out = emit_req("PUT /x HTTP/1.1\r\nHost: public\r\nTransfer-Encoding: chunked\r\n\r\n", &route, false);
    cr_expect_str_eq(out, "PUT /x HTTP/1.1\r\nHost: backend.internal\r\nTransfer-Encoding: chunked\r\n"
                          "Connection: close\r\nX-Forwarded-For: 10.0.0.7\r\nX-Real-IP: 10.0.0.7\r\n"
                          "X-Forwarded-Proto: http\r\nVia: 1.1 ringlb\r\n\r\n");
}

Test(emit, http10_and_absolute_form_rewritten)
{
    char *out = emit_req("GET /old HTTP/1.0\r\nUser-Agent: x\r\n\r\n", NULL, true);
    cr_expect_str_eq(out, "GET /old HTTP/1.1\r\nUser-Agent: x\r\nHost: 127.0.0.1:9001\r\n"
                          "X-Forwarded-For: 10.0.0.7\r\nX-Real-IP: 10.0.0.7\r\nX-Forwarded-Proto: http\r\n"
                          "Via: 1.1 ringlb\r\n\r\n");
    rlb_outq_discard(&q, &bufs);
    out = emit_req("GET http://shop.test/a?b HTTP/1.1\r\nHost: other\r\n\r\n", NULL, true);
    cr_expect_str_eq(out, "GET /a?b HTTP/1.1\r\nHost: shop.test\r\n"
                          "X-Forwarded-For: 10.0.0.7\r\nX-Real-IP: 10.0.0.7\r\nX-Forwarded-Proto: http\r\n"
                          "Via: 1.1 ringlb\r\n\r\n");
}

Test(emit, upgrade_kept_when_upgrading)
{
    char *out = emit_req("GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                         "Sec-WebSocket-Key: k\r\n\r\n",
                         NULL, true);
    cr_expect_str_eq(out, "GET /ws HTTP/1.1\r\nHost: h\r\nSec-WebSocket-Key: k\r\n"
                          "Connection: upgrade\r\nUpgrade: websocket\r\n"
                          "X-Forwarded-For: 10.0.0.7\r\nX-Real-IP: 10.0.0.7\r\nX-Forwarded-Proto: http\r\n"
                          "Via: 1.1 ringlb\r\n\r\n");
}

static char *emit_resp(const char *text, int method, struct rlb_resp_emit *opt)
{
    const char *head = receive(text);
    struct rlb_http_response resp = {.headers = hdrs, .max_headers_capacity = 64};
    int rc = rlb_http1_parse_response(head, strlen(text), &limits, method, &resp);
    cr_assert_gt(rc, 0, "parse failed: %s", resp.error_reason);
    opt->via_line = via;
    cr_assert_eq(rlb_http1_emit_response(&q, &bufs, 0, head, &resp, opt), 0);
    return gather();
}

Test(emit, response_server_hidden_and_powered_by_dropped)
{
    struct rlb_route_cfg route = {.server_mode = RLB_SERVER_HIDE, .hide_powered_by = true};
    struct rlb_resp_emit opt = {.route = &route, .framing = RLB_FRAME_LENGTH};
    char *out = emit_resp("HTTP/1.1 200 OK\r\nServer: Apache/2.4\r\nX-Powered-By: PHP/8\r\nContent-Length: 2\r\n"
                          "Keep-Alive: timeout=5\r\nConnection: keep-alive\r\nETag: \"x\"\r\n\r\n",
                          RLB_METHOD_GET, &opt);
    cr_expect_str_eq(out, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nETag: \"x\"\r\nVia: 1.1 ringlb\r\n\r\n");
}

Test(emit, response_server_replaced_and_close)
{
    struct rlb_route_cfg route = {.server_mode = RLB_SERVER_REPLACE, .server_value = "ringlb"};
    struct rlb_resp_emit opt = {.route = &route, .framing = RLB_FRAME_CHUNKED, .client_close = true};
    char *out = emit_resp("HTTP/1.0 200 OK\r\nServer: nginx\r\nDate: x\r\n\r\n", RLB_METHOD_GET, &opt);
    cr_expect_str_eq(out, "HTTP/1.1 200 OK\r\nDate: x\r\nServer: ringlb\r\nTransfer-Encoding: chunked\r\n"
                          "Connection: close\r\nVia: 1.1 ringlb\r\n\r\n");
}

Test(emit, head_response_keeps_content_length)
{
    struct rlb_resp_emit opt = {.framing = RLB_FRAME_NONE, .client_keepalive10 = true};
    char *out = emit_resp("HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", RLB_METHOD_HEAD, &opt);
    cr_expect_str_eq(out, "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nConnection: keep-alive\r\nVia: 1.1 ringlb\r\n\r\n");
}

Test(emit, switching_protocols)
{
    struct rlb_resp_emit opt = {.upgrade = true};
    char *out = emit_resp("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          "Sec-WebSocket-Accept: z\r\n\r\n",
                          RLB_METHOD_GET, &opt);
    cr_expect_str_eq(out, "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: z\r\n"
                          "Connection: upgrade\r\nUpgrade: websocket\r\nVia: 1.1 ringlb\r\n\r\n");
}

Test(emit, error_response)
{
    rlb_http1_emit_error(&q, 431);
    cr_expect_str_eq(gather(), "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain\r\n"
                               "Content-Length: 36\r\nConnection: close\r\n\r\n"
                               "431 Request Header Fields Too Large\n");
}

Test(emit, chunk_header)
{
    rlb_http1_emit_chunk_header(&q, 4096);
    cr_expect_str_eq(gather(), "1000\r\n");
}

Test(emit, partial_send_accounting)
{
    emit_req("GET / HTTP/1.1\r\nHost: h\r\n\r\n", NULL, true);
    uint64_t total = q.queued_bytes;
    rlb_outq_prepare_send(&q, RLB_OUTQ_PIECES);
    rlb_outq_sent(&q, &bufs, 5);
    cr_expect_eq(q.queued_bytes, total - 5);
    cr_expect_eq(bufs.refs[0], 2, "the partially sent slice still holds its buffer");
    rlb_outq_prepare_send(&q, RLB_OUTQ_PIECES);
    rlb_outq_sent(&q, &bufs, (size_t)(total - 5));
    cr_expect_eq(rlb_outq_pending(&q), 0);
    cr_expect_eq(bufs.refs[0], 1, "a fully sent slice gives its reference back");
}
