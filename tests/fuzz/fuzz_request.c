/* libFuzzer harness for rlb_http1_parse_request: no crash, no read outside
 * the input, and the result is self-consistent. */
#include <ringlb/api.h>
#include <ringlb/http1.h>

#include <string.h>

#include "fuzz.h"

#define NHDR 32

static bool inside(const char *buf, size_t len, const char *p, size_t n)
{
    return p >= buf && p <= buf + len && n <= (size_t)(buf + len - p);
}

static int parse(const char *buf, size_t len, const struct rlb_http_limits *lim, struct rlb_http_request *req,
                 struct rlb_http_header *hdrs)
{
    memset(req, 0, sizeof(*req));
    req->headers = hdrs;
    req->max_headers_capacity = NHDR;
    int r = rlb_http1_parse_request(buf, len, lim, req);
    CHECK(r > 0 || r == RLB_HTTP_ERROR || r == RLB_HTTP_INCOMPLETE);
    if (r == RLB_HTTP_ERROR) {
        uint16_t st = req->error_status;
        CHECK(st == 400 || st == 414 || st == 417 || st == 431 || st == 501 || st == 505);
        CHECK(req->error_reason && req->error_reason[0]);
        return r;
    }
    if (r < 0)
        return r;

    size_t head = (size_t)r;
    CHECK(head <= len && head == req->head_len);
    CHECK(head <= lim->max_head_size && req->request_line_len <= lim->max_request_line);
    CHECK(req->request_line_len >= 14 && req->request_line_len <= head);
    CHECK(buf[head - 2] == '\r' && buf[head - 1] == '\n');
    CHECK(req->num_headers <= NHDR && req->num_headers <= lim->max_headers);
    CHECK(inside(buf, head, req->method.ptr, req->method.len) && req->method.len > 0);
    CHECK(inside(buf, head, req->target.ptr, req->target.len) && req->target.len > 0);
    CHECK(req->minor_version <= 1);
    CHECK(req->body <= RLB_BODY_CHUNKED);
    CHECK(req->body != RLB_BODY_LENGTH || req->content_length > 0);
    CHECK(req->minor_version == 0 || req->host_index >= 0);
    size_t off = req->request_line_len;
    for (uint32_t i = 0; i < req->num_headers; i++) {
        const struct rlb_http_header *h = &hdrs[i];
        CHECK(h->line_off == off);
        CHECK(h->line_len >= 4 && (size_t)h->line_off + h->line_len <= head - 2);
        CHECK(h->name == buf + h->line_off && h->name_len > 0);
        CHECK(inside(buf, head, h->value, h->value_len));
        CHECK(h->value >= h->name + h->name_len + 1);
        CHECK(h->value + h->value_len <= buf + h->line_off + h->line_len - 2);
        CHECK(h->id < RLB_HDR__COUNT);
        if (h->flags & RLB_HF_HOP)
            CHECK(req->flags & RLB_MSG_HAS_HOP);
        off += h->line_len;
    }
    CHECK(off + 2 == head);
    if (req->host_index >= 0) {
        CHECK((uint32_t)req->host_index < req->num_headers);
        CHECK(hdrs[req->host_index].id == RLB_HDR_HOST);
        CHECK(req->host.ptr == hdrs[req->host_index].value);
    }
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct rlb_http_limits wide = {8192, 65536, NHDR};
    static const struct rlb_http_limits tight = {40, 160, 4};
    struct rlb_http_header hdrs[NHDR];
    struct rlb_http_request req;
    const char *buf = (const char *)data;

    int r = parse(buf, size, &wide, &req, hdrs);
    if (r > 0) {
        /* A complete head is INCOMPLETE one byte short of it, and trailing
         * bytes (a body, a pipelined request) do not change the verdict. */
        struct rlb_http_request req2;
        struct rlb_http_header hdrs2[NHDR];
        CHECK(parse(buf, (size_t)r - 1, &wide, &req2, hdrs2) == RLB_HTTP_INCOMPLETE);
        CHECK(parse(buf, (size_t)r, &wide, &req2, hdrs2) == r);
        CHECK(req2.body == req.body && req2.flags == req.flags && req2.content_length == req.content_length);
    }
    /* Verdicts are monotonic in the input: once a prefix is complete or
     * rejected, more bytes cannot change that (early rejection is final). */
    struct rlb_http_request pre;
    struct rlb_http_header hdrs2[NHDR];
    int rp = parse(buf, size / 2, &wide, &pre, hdrs2);
    if (rp > 0)
        CHECK(r == rp);
    if (rp == RLB_HTTP_ERROR)
        CHECK(r == RLB_HTTP_ERROR && req.error_status == pre.error_status);
    parse(buf, size, &tight, &req, hdrs);
    return 0;
}
