#include <ringlb/buf.h>
#include <ringlb/http1.h>
#include <ringlb/http1_emit.h>
#include <ringlb/route.h>

#include <stdio.h>
#include <string.h>

#define LIT(q, s) rlb_outq_push_static((q), (s), sizeof(s) - 1)

/* Walks the field lines, keeping runs of consecutive kept lines as single
 * slices so that a head with nothing to drop costs one piece. */
struct runs {
    struct rlb_outq *q;
    struct rlb_bufs *b;
    int32_t bid;
    const char *head;
    uint32_t start;
};

static void run_flush(struct runs *r, uint32_t end)
{
    if (end > r->start)
        rlb_outq_push_buf(r->q, r->b, r->bid, r->head + r->start, end - r->start);
}

static void run_drop(struct runs *r, const struct rlb_http_header *h)
{
    run_flush(r, h->line_off);
    r->start = h->line_off + h->line_len;
}

static void push_printf(struct rlb_outq *q, const char *fmt, unsigned long long v)
{
    char *dst = rlb_outq_reserve(q, 40);
    int n = snprintf(dst, 40, fmt, v);
    rlb_outq_commit(q, (size_t)n);
}

/* Validators of the client's own copy: a cache fetch replaces them with its own. */
static bool conditional(uint16_t id)
{
    return id == RLB_HDR_IF_NONE_MATCH || id == RLB_HDR_IF_MODIFIED_SINCE;
}

/* Worst case pieces: two per header that may be dropped or re-emitted (only
 * the names the proxy acts on and hop-by-hop ones can be), two more for each X-Forwarded-For
 * value joined into our list, plus the generated lines. */
static bool has_room(const struct rlb_outq *q, const struct rlb_http_header *h, uint32_t n)
{
    uint32_t pieces = 24;
    for (uint32_t i = 0; i < n; i++) {
        if ((h[i].id != RLB_HDR_OTHER && h[i].id < RLB_HDR_AGE) || (h[i].flags & RLB_HF_HOP) || conditional(h[i].id))
            pieces += 2;
        if (h[i].id == RLB_HDR_X_FORWARDED_FOR)
            pieces += 2;
    }
    return rlb_outq_room(q, pieces, 160);
}

/* A lone Content-Length of plain digits can be forwarded as it came: the
 * parser already validated it. Lists ("5, 5") and repeats are re-emitted in
 * canonical form, so the receiver never sees anything but one clean value. */
static bool length_is_canonical(const struct rlb_http_header *h, uint32_t n)
{
    const struct rlb_http_header *cl = NULL;
    for (uint32_t i = 0; i < n; i++) {
        if (h[i].id != RLB_HDR_CONTENT_LENGTH)
            continue;
        if (cl)
            return false;
        cl = &h[i];
    }
    if (!cl || cl->value_len == 0 || cl->value_len > 19 || (cl->value[0] == '0' && cl->value_len > 1))
        return false;
    for (uint32_t i = 0; i < cl->value_len; i++)
        if (cl->value[i] < '0' || cl->value[i] > '9')
            return false;
    return true;
}

static bool origin_form(const struct rlb_str *target)
{
    return target->len && (target->ptr[0] == '/' || (target->len == 1 && target->ptr[0] == '*'));
}

int rlb_http1_emit_request(struct rlb_outq *q, struct rlb_bufs *b, int32_t bid, const char *head,
                           const struct rlb_http_request *req, const struct rlb_req_emit *opt)
{
    if (!has_room(q, req->headers, req->num_headers) || !rlb_outq_room(q, 0, 160 + opt->extra_lines.len))
        return -1;
    struct runs r = {q, b, bid, head, 0};
    struct rlb_str host = {NULL, 0};
    struct rlb_str path = req->target;

    /* Upstream always gets HTTP/1.1 in origin-form: rewrite only when the
     * client's line differs from that. */
    bool absolute = !origin_form(&req->target) && req->method_id != RLB_METHOD_CONNECT;
    if (req->minor_version != 1 || absolute) {
        if (absolute)
            rlb_route_split_target(req->target.ptr, req->target.len, &host, &path);
        rlb_outq_push_buf(q, b, bid, req->method.ptr, req->method.len);
        LIT(q, " ");
        rlb_outq_push_buf(q, b, bid, path.ptr, path.len);
        LIT(q, " HTTP/1.1\r\n");
        r.start = req->request_line_len;
    }

    const struct rlb_route_cfg *rt = opt->route;
    bool replace_host = (rt && rt->set_host) || host.len;
    bool keep_length = req->body == RLB_BODY_LENGTH && length_is_canonical(req->headers, req->num_headers);
    uint32_t xff_count = 0;
    const struct rlb_http_header *upgrade = NULL;

    for (uint32_t i = 0; i < req->num_headers; i++) {
        const struct rlb_http_header *h = &req->headers[i];
        bool drop = false;
        switch (h->id) {
        case RLB_HDR_CONTENT_LENGTH:
            drop = req->body != RLB_BODY_NONE && !keep_length;
            break;
        case RLB_HDR_TRANSFER_ENCODING:
            drop = req->body != RLB_BODY_NONE;
            break;
        case RLB_HDR_HOST:
            drop = replace_host;
            break;
        case RLB_HDR_X_FORWARDED_FOR:
            xff_count++;
            drop = true;
            break;
        case RLB_HDR_X_REAL_IP:
        case RLB_HDR_X_FORWARDED_PROTO:
            /* Ours replace whatever the client claims. */
            drop = true;
            break;
        case RLB_HDR_UPGRADE:
            upgrade = h;
            drop = true;
            break;
        case RLB_HDR_IF_NONE_MATCH:
        case RLB_HDR_IF_MODIFIED_SINCE:
            drop = opt->drop_conditionals || (h->flags & RLB_HF_HOP);
            break;
        default:
            drop = h->flags & RLB_HF_HOP;
        }
        if (drop)
            run_drop(&r, h);
    }
    run_flush(&r, req->head_len - 2);
    if (opt->extra_lines.len)
        rlb_outq_push_copy(q, opt->extra_lines.ptr, opt->extra_lines.len);

    if (rt && rt->set_host) {
        LIT(q, "Host: ");
        rlb_outq_push_static(q, rt->set_host, strlen(rt->set_host));
        LIT(q, "\r\n");
    } else if (host.len) {
        LIT(q, "Host: ");
        rlb_outq_push_buf(q, b, bid, host.ptr, host.len);
        LIT(q, "\r\n");
    } else if (req->host_index < 0) {
        LIT(q, "Host: ");
        rlb_outq_push_copy(q, opt->default_host.ptr, opt->default_host.len);
        LIT(q, "\r\n");
    }

    if (req->body == RLB_BODY_LENGTH && !keep_length)
        push_printf(q, "Content-Length: %llu\r\n", (unsigned long long)req->content_length);
    else if (req->body == RLB_BODY_CHUNKED)
        LIT(q, "Transfer-Encoding: chunked\r\n");

    if ((req->flags & RLB_MSG_UPGRADE) && upgrade) {
        LIT(q, "Connection: upgrade\r\nUpgrade: ");
        rlb_outq_push_buf(q, b, bid, upgrade->value, upgrade->value_len);
        LIT(q, "\r\n");
    } else if (!opt->upstream_keepalive) {
        LIT(q, "Connection: close\r\n");
    }

    /* Several X-Forwarded-For lines are one comma list (RFC 9110 5.3). */
    LIT(q, "X-Forwarded-For: ");
    for (uint32_t i = 0; i < req->num_headers && xff_count; i++) {
        const struct rlb_http_header *h = &req->headers[i];
        if (h->id != RLB_HDR_X_FORWARDED_FOR || h->value_len == 0)
            continue;
        rlb_outq_push_buf(q, b, bid, h->value, h->value_len);
        LIT(q, ", ");
    }
    rlb_outq_push_copy(q, opt->client_ip.ptr, opt->client_ip.len);
    LIT(q, "\r\nX-Real-IP: ");
    rlb_outq_push_copy(q, opt->client_ip.ptr, opt->client_ip.len);
    LIT(q, "\r\nX-Forwarded-Proto: ");
    rlb_outq_push_static(q, opt->proto.ptr, opt->proto.len);
    LIT(q, "\r\n");
    rlb_outq_push_static(q, opt->via_line.ptr, opt->via_line.len);
    LIT(q, "\r\n");
    return 0;
}

int rlb_http1_emit_response(struct rlb_outq *q, struct rlb_bufs *b, int32_t bid, const char *head,
                            const struct rlb_http_response *resp, const struct rlb_resp_emit *opt)
{
    if (!has_room(q, resp->headers, resp->num_headers) || !rlb_outq_room(q, 0, 160 + opt->extra_line.len))
        return -1;
    struct runs r = {q, b, bid, head, 0};
    const struct rlb_route_cfg *rt = opt->route;
    const struct rlb_http_header *upgrade = NULL;
    bool keep_length = opt->framing == RLB_FRAME_LENGTH && length_is_canonical(resp->headers, resp->num_headers);

    /* We speak HTTP/1.1 to the client whatever the backend speaks. */
    if (resp->minor_version != 1) {
        LIT(q, "HTTP/1.1");
        r.start = 8;
    }
    for (uint32_t i = 0; i < resp->num_headers; i++) {
        const struct rlb_http_header *h = &resp->headers[i];
        bool drop;
        switch (h->id) {
        case RLB_HDR_CONTENT_LENGTH:
            drop = opt->framing != RLB_FRAME_NONE && !keep_length;
            break;
        case RLB_HDR_TRANSFER_ENCODING:
            drop = opt->framing != RLB_FRAME_NONE;
            break;
        case RLB_HDR_SERVER:
            drop = rt && rt->server_mode != RLB_SERVER_PASS;
            break;
        case RLB_HDR_X_POWERED_BY:
            drop = rt && rt->hide_powered_by;
            break;
        case RLB_HDR_UPGRADE:
            upgrade = h;
            drop = true;
            break;
        default:
            drop = h->flags & RLB_HF_HOP;
        }
        if (drop)
            run_drop(&r, h);
    }
    run_flush(&r, resp->head_len - 2);

    if (rt && rt->server_mode == RLB_SERVER_REPLACE && rt->server_value) {
        LIT(q, "Server: ");
        rlb_outq_push_static(q, rt->server_value, strlen(rt->server_value));
        LIT(q, "\r\n");
    }
    if (opt->framing == RLB_FRAME_LENGTH && !keep_length)
        push_printf(q, "Content-Length: %llu\r\n", (unsigned long long)resp->content_length);
    else if (opt->framing == RLB_FRAME_CHUNKED)
        LIT(q, "Transfer-Encoding: chunked\r\n");

    if (opt->upgrade && upgrade) {
        LIT(q, "Connection: upgrade\r\nUpgrade: ");
        rlb_outq_push_buf(q, b, bid, upgrade->value, upgrade->value_len);
        LIT(q, "\r\n");
    } else if (!opt->interim) {
        if (opt->client_close)
            LIT(q, "Connection: close\r\n");
        else if (opt->client_keepalive10)
            LIT(q, "Connection: keep-alive\r\n");
    }
    if (opt->extra_line.len)
        rlb_outq_push_copy(q, opt->extra_line.ptr, opt->extra_line.len);
    rlb_outq_push_static(q, opt->via_line.ptr, opt->via_line.len);
    LIT(q, "\r\n");
    return 0;
}

void rlb_http1_emit_error(struct rlb_outq *q, int status)
{
    const char *reason = rlb_http_reason(status);
    char *dst = rlb_outq_reserve(q, 256);
    int body = snprintf(NULL, 0, "%d %s\n", status, reason);
    int n = snprintf(dst, 256,
                     "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                     "%d %s\n",
                     status, reason, body, status, reason);
    rlb_outq_commit(q, (size_t)(n < 256 ? n : 255));
}

void rlb_http1_emit_chunk_header(struct rlb_outq *q, size_t len)
{
    char *dst = rlb_outq_reserve(q, 20);
    int n = snprintf(dst, 20, "%zx\r\n", len);
    rlb_outq_commit(q, (size_t)n);
}
