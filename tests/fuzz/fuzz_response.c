/* libFuzzer harness for rlb_http1_parse_response. The first input byte picks
 * the request method, which decides whether a body may follow. */
#include <ringlb/api.h>
#include <ringlb/http1.h>

#include <string.h>

#include "fuzz.h"

#define NHDR 32

static bool inside(const char *buf, size_t len, const char *p, size_t n)
{
    return p >= buf && p <= buf + len && n <= (size_t)(buf + len - p);
}

static int parse(const char *buf, size_t len, const struct rlb_http_limits *lim, int method,
                 struct rlb_http_response *resp, struct rlb_http_header *hdrs)
{
    memset(resp, 0, sizeof(*resp));
    resp->headers = hdrs;
    resp->max_headers_capacity = NHDR;
    int r = rlb_http1_parse_response(buf, len, lim, method, resp);
    CHECK(r > 0 || r == RLB_HTTP_ERROR || r == RLB_HTTP_INCOMPLETE);
    if (r == RLB_HTTP_ERROR)
        CHECK(resp->error_reason && resp->error_reason[0]);
    if (r < 0)
        return r;

    size_t head = (size_t)r;
    CHECK(head <= len && head == resp->head_len && head <= lim->max_head_size);
    CHECK(resp->status_line_len >= 14 && resp->status_line_len <= head);
    CHECK(resp->status >= 100 && resp->status <= 999);
    CHECK(resp->num_headers <= NHDR && resp->num_headers <= lim->max_headers);
    CHECK(inside(buf, resp->status_line_len, resp->reason.ptr, resp->reason.len));
    CHECK(resp->body <= RLB_BODY_UNTIL_CLOSE);
    if (method == RLB_METHOD_HEAD || resp->status < 200 || resp->status == 204 || resp->status == 304)
        CHECK(resp->body == RLB_BODY_NONE);
    size_t off = resp->status_line_len;
    for (uint32_t i = 0; i < resp->num_headers; i++) {
        const struct rlb_http_header *h = &hdrs[i];
        CHECK(h->line_off == off && (size_t)h->line_off + h->line_len <= head - 2);
        CHECK(h->name == buf + h->line_off && h->name_len > 0);
        CHECK(inside(buf, head, h->value, h->value_len));
        CHECK(h->value + h->value_len <= buf + h->line_off + h->line_len - 2);
        CHECK(h->id < RLB_HDR__COUNT);
        off += h->line_len;
    }
    CHECK(off + 2 == head);
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct rlb_http_limits wide = {8192, 65536, NHDR};
    static const struct rlb_http_limits tight = {40, 160, 4};
    struct rlb_http_header hdrs[NHDR];
    struct rlb_http_response resp;

    if (size < 1)
        return 0;
    int method = data[0] % (RLB_METHOD_PATCH + 1);
    const char *buf = (const char *)data + 1;
    size--;

    int r = parse(buf, size, &wide, method, &resp, hdrs);
    if (r > 0)
        CHECK(parse(buf, (size_t)r - 1, &wide, method, &resp, hdrs) == RLB_HTTP_INCOMPLETE);
    parse(buf, size, &tight, method, &resp, hdrs);
    return 0;
}
