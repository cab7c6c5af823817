/* libFuzzer harness for the head rewriters. Requests: whatever request the parser
 * accepts, the head ringlb sends upstream must parse again, with the same
 * method, target path and body framing, no hop-by-hop field left, and the
 * client's address appended to X-Forwarded-For. This is the "always
 * re-framed, never a blind copy" promise, checked on arbitrary input. */
#include <ringlb/buf.h>
#include <ringlb/http1.h>
#include <ringlb/http1_emit.h>
#include <ringlb/str.h>

#include <string.h>

#include "fuzz.h"

#define NHDR 64
#define BUFSZ 16384

static struct rlb_bufs bufs;
static bool ready;


static size_t gather(struct rlb_outq *q, char *out, size_t cap)
{
    size_t n = 0;
    for (uint16_t i = q->head; i < q->tail; i++) {
        CHECK(n + q->iov[i].iov_len <= cap);
        memcpy(out + n, q->iov[i].iov_base, q->iov[i].iov_len);
        n += q->iov[i].iov_len;
    }
    CHECK(n == q->queued_bytes);
    return n;
}

/* Responses: the head sent to the client parses again, as HTTP/1.1 with the
 * same status, framed the way the proxy said it would frame the body. */
static void check_response(char *head, size_t size, const struct rlb_http_limits *lim)
{
    static struct rlb_http_header h1[NHDR], h2[NHDR + 8];
    static struct rlb_outq q;
    static char out[BUFSZ * 2];
    struct rlb_http_response resp = {.headers = h1, .max_headers_capacity = NHDR};
    int method = (size & 4) ? RLB_METHOD_HEAD : RLB_METHOD_GET;
    if (rlb_http1_parse_response(head, size, lim, method, &resp) <= 0 || resp.status == 101)
        return;
    memset(&q, 0, sizeof(q));
    struct rlb_route_cfg route = {.server_mode = (enum rlb_server_header_mode)(size % 3), .server_value = "x",
                                  .hide_powered_by = (size & 8) != 0};
    struct rlb_resp_emit opt = {.route = &route, .via_line = {"Via: 1.1 ringlb\r\n", 17}};
    if (resp.status < 200) {
        opt.interim = true;
    } else if (resp.body == RLB_BODY_NONE) {
        opt.framing = RLB_FRAME_NONE;
    } else if (resp.body == RLB_BODY_LENGTH) {
        opt.framing = RLB_FRAME_LENGTH;
    } else {
        opt.framing = (size & 16) ? RLB_FRAME_CHUNKED : RLB_FRAME_CLOSE;
    }
    opt.client_close = opt.framing == RLB_FRAME_CLOSE || (size & 32);
    if (rlb_http1_emit_response(&q, &bufs, 0, head, &resp, &opt) != 0)
        return;
    size_t n = gather(&q, out, sizeof(out));
    struct rlb_http_limits big = {BUFSZ, BUFSZ * 2, NHDR + 8};
    struct rlb_http_response again = {.headers = h2, .max_headers_capacity = NHDR + 8};
    int rc = rlb_http1_parse_response(out, n, &big, method, &again);
    CHECK(rc > 0 && (size_t)rc == n);
    CHECK(again.minor_version == 1 && again.status == resp.status);
    if (opt.framing == RLB_FRAME_LENGTH)
        CHECK(again.body == RLB_BODY_LENGTH && again.content_length == resp.content_length);
    if (opt.framing == RLB_FRAME_CHUNKED)
        CHECK(again.body == RLB_BODY_CHUNKED);
    if (opt.framing == RLB_FRAME_CLOSE)
        CHECK(again.body == RLB_BODY_UNTIL_CLOSE && (again.flags & RLB_MSG_CONN_CLOSE));
    for (uint32_t i = 0; i < again.num_headers; i++) {
        CHECK(!(h2[i].flags & RLB_HF_HOP) || h2[i].id == RLB_HDR_CONNECTION);
        if (route.server_mode == RLB_SERVER_HIDE)
            CHECK(h2[i].id != RLB_HDR_SERVER);
        if (route.hide_powered_by)
            CHECK(h2[i].id != RLB_HDR_X_POWERED_BY);
    }
    rlb_outq_discard(&q, &bufs);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct rlb_http_limits lim = {4096, 8192, NHDR};
    /* The rewrite adds up to six fields (Host, framing, X-Forwarded-*, Via). */
    static struct rlb_http_header h1[NHDR], h2[NHDR + 8];
    static struct rlb_outq q;
    static char out[BUFSZ * 2];
    if (!ready) {
        struct rlb_bufs_spec spec = {.count = {4, 4}, .size = {BUFSZ, BUFSZ}, .linear_cap = 1, .linear_size = BUFSZ};
        CHECK(rlb_bufs_init(&bufs, NULL, &spec) == 0);
        ready = true;
    }
    if (size >= BUFSZ)
        return 0;
    rlb_buf_received(&bufs, RLB_BUF_GROUP_CLIENT, 0, (uint32_t)size);
    char *head = rlb_buf_ptr(&bufs, 0);
    memcpy(head, data, size);

    if (size > 5 && memcmp(head, "HTTP/", 5) == 0) {
        check_response(head, size, &lim);
        rlb_buf_unref(&bufs, 0);
        return 0;
    }
    struct rlb_http_request req = {.headers = h1, .max_headers_capacity = NHDR};
    int rc = rlb_http1_parse_request(head, size, &lim, &req);
    if (rc > 0 && req.method_id != RLB_METHOD_CONNECT) {
        memset(&q, 0, sizeof(q));
        struct rlb_route_cfg route = {.set_host = (size & 1) ? "backend.internal" : NULL};
        struct rlb_req_emit opt = {
            .route = &route,
            .client_ip = {"192.0.2.1", 9},
            .via_line = {"Via: 1.1 ringlb\r\n", 17},
            .proto = {"http", 4},
            .default_host = {"127.0.0.1:9", 11},
            .upstream_keepalive = (size & 2) != 0,
        };
        if (rlb_http1_emit_request(&q, &bufs, 0, head, &req, &opt) == 0) {
            size_t n = gather(&q, out, sizeof(out));
            struct rlb_http_limits big = {BUFSZ, BUFSZ * 2, NHDR + 8};
            struct rlb_http_request again = {.headers = h2, .max_headers_capacity = NHDR + 8};
            int rc2 = rlb_http1_parse_request(out, n, &big, &again);
            CHECK(rc2 > 0 && (size_t)rc2 == n);
            CHECK(again.minor_version == 1 && again.host_index >= 0);
            CHECK(again.method.len == req.method.len && memcmp(again.method.ptr, req.method.ptr, req.method.len) == 0);
            CHECK(again.body == req.body);
            CHECK(again.body != RLB_BODY_LENGTH || again.content_length == req.content_length);
            CHECK((again.flags & RLB_MSG_UPGRADE) == (req.flags & RLB_MSG_UPGRADE));
            bool xff_ours = false;
            for (uint32_t i = 0; i < again.num_headers; i++) {
                const struct rlb_http_header *h = &h2[i];
                /* Only the Connection/Upgrade pair of an upgrade may be hop-by-hop. */
                if (h->flags & RLB_HF_HOP)
                    CHECK((req.flags & RLB_MSG_UPGRADE) || (!opt.upstream_keepalive && h->id == RLB_HDR_CONNECTION));
                if (h->id == RLB_HDR_X_FORWARDED_FOR && h->value_len >= 9 &&
                    memcmp(h->value + h->value_len - 9, "192.0.2.1", 9) == 0)
                    xff_ours = true;
            }
            CHECK(xff_ours);
            rlb_outq_discard(&q, &bufs);
        }
    }
    rlb_buf_unref(&bufs, 0);
    return 0;
}
