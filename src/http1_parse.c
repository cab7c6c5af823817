/* Strict HTTP/1.x head parser (RFC 9110/9112).
 *
 * This is the proxy's front door against request smuggling: anything two
 * implementations could read differently (bare LF, obs-fold, whitespace
 * before the colon, conflicting framing) is rejected rather than repaired.
 * One forward pass over the bytes, character classes from a table, and an
 * 8-byte SWAR fast path for the long runs (request-target, field values). */
#include <ringlb/api.h>
#include <ringlb/http1.h>
#include <ringlb/str.h>

#include "http1_chars.h"

#include <limits.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

/* Character classes (RLB_C_*) shared with the chunked decoder. */
const uint8_t rlb_http1_cls[256] = {
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x24, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x24, 0x2f, 0x06, 0x27, 0x2f, 0x2f, 0x2f, 0x2f, 0x2e, 0x2e, 0x2f, 0x2f, 0x2e, 0x2f, 0x2f, 0x26,
    0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x2e, 0x2e, 0x26, 0x2e, 0x26, 0x26,
    0x26, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f,
    0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2e, 0x06, 0x2e, 0x27, 0x2f,
    0x27, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f,
    0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x26, 0x27, 0x26, 0x2f, 0x00,
    0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24,
    0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24,
    0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24,
    0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24,
    0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24,
    0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24,
    0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24,
    0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24,
};


#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

/* Internal verdict of the sub-parsers; mapped to a status by each entry point. */
struct verdict {
    uint16_t status;
    const char *reason;
};

#define PARSE_ERROR(v, st, why)                                                                                        \
    do {                                                                                                               \
        (v)->status = (st);                                                                                            \
        (v)->reason = (why);                                                                                           \
        return RLB_HTTP_ERROR;                                                                                         \
    } while (0)

/* Little-endian view so that the lowest set bit of a SWAR mask is the first byte. */
static inline uint64_t load64(const char *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof(v));
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

/* Any byte below n (n <= 128)? A borrow can only start at a byte that is
 * itself below n, so the lowest flagged byte is exact (higher ones may not be). */
static inline uint64_t has_less(uint64_t x, uint64_t n)
{
    return (x - ONES * n) & ~x & HIGHS;
}

static inline uint64_t has_zero(uint64_t x)
{
    return (x - ONES) & ~x & HIGHS;
}

/* Offset of the first byte at or after <pos> outside 0x21-0x7E, or <lim>. */
static inline size_t scan_vchar(const char *buf, size_t pos, size_t lim)
{
#ifdef __SSE2__
    /* x86-64 baseline, no dispatch needed: 16 bytes per step. Unsigned
     * compares via max_epu8 since SSE2 only compares bytes as signed. */
    for (; pos + 16 <= lim; pos += 16) {
        __m128i x = _mm_loadu_si128((const __m128i *)(const void *)(buf + pos));
        __m128i ge21 = _mm_cmpeq_epi8(_mm_max_epu8(x, _mm_set1_epi8(0x21)), x);
        __m128i le7e = _mm_cmpeq_epi8(_mm_min_epu8(x, _mm_set1_epi8(0x7e)), x);
        unsigned bad = (unsigned)_mm_movemask_epi8(_mm_and_si128(ge21, le7e)) ^ 0xffffu;
        if (bad)
            return pos + (size_t)__builtin_ctz(bad);
    }
#endif
    for (; pos + 8 <= lim; pos += 8) {
        uint64_t x = load64(buf + pos);
        uint64_t bad = has_less(x, 0x21) | (x & HIGHS) | has_zero(x ^ (ONES * 0x7f));
        if (bad)
            return pos + ((size_t)__builtin_ctzll(bad) >> 3);
    }
    while (pos < lim && IS(buf[pos], C_VCHAR))
        pos++;
    return pos;
}

/* Offset of the first byte that cannot be in a field value (or reason
 * phrase), or <lim>. HTAB is valid but rare, so the word test treats it as a
 * stop and steps over it, keeping the common case to three operations. */
static inline size_t scan_value(const char *buf, size_t pos, size_t lim)
{
    for (;;) {
#ifdef __SSE2__
        if (pos + 16 <= lim) {
            __m128i x = _mm_loadu_si128((const __m128i *)(const void *)(buf + pos));
            __m128i ctl = _mm_cmpeq_epi8(_mm_min_epu8(x, _mm_set1_epi8(0x1f)), x);
            __m128i del = _mm_cmpeq_epi8(x, _mm_set1_epi8(0x7f));
            unsigned bad = (unsigned)_mm_movemask_epi8(_mm_or_si128(ctl, del));
            if (!bad) {
                pos += 16;
                continue;
            }
            pos += (size_t)__builtin_ctz(bad);
        } else
#endif
        if (pos + 8 <= lim) {
            uint64_t x = load64(buf + pos);
            uint64_t bad = has_less(x, 0x20) | has_zero(x ^ (ONES * 0x7f));
            if (!bad) {
                pos += 8;
                continue;
            }
            pos += (size_t)__builtin_ctzll(bad) >> 3;
        } else {
            while (pos < lim && IS(buf[pos], C_VALUE))
                pos++;
            if (pos >= lim)
                return lim;
        }
        if (buf[pos] != '\t')
            return pos;
        pos++;
    }
}

/* <lit> is lower case letters and '-'. Setting bit 0x20 folds A-Z and maps no
 * other tchar onto a letter or '-', so names (all tchar) compare correctly
 * eight bytes at a time. */
static inline bool name_is(const char *p, const char *lit, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        if ((load64(p + i) | (ONES * 0x20)) != load64(lit + i))
            return false;
    for (; i < n; i++)
        if ((uint8_t)(p[i] | 0x20) != (uint8_t)lit[i])
            return false;
    return true;
}

static uint16_t header_id(const char *p, size_t n)
{
#define ID(lit, id)                                                                                                    \
    if (name_is(p, lit, sizeof(lit) - 1))                                                                              \
    return id
    switch (n) {
    case 2:
        ID("te", RLB_HDR_TE);
        break;
    case 3:
        ID("via", RLB_HDR_VIA);
        ID("age", RLB_HDR_AGE);
        break;
    case 4:
        ID("host", RLB_HDR_HOST);
        ID("date", RLB_HDR_DATE);
        ID("vary", RLB_HDR_VARY);
        ID("etag", RLB_HDR_ETAG);
        break;
    case 6:
        ID("expect", RLB_HDR_EXPECT);
        ID("server", RLB_HDR_SERVER);
        ID("pragma", RLB_HDR_PRAGMA);
        ID("cookie", RLB_HDR_COOKIE);
        break;
    case 7:
        ID("upgrade", RLB_HDR_UPGRADE);
        ID("trailer", RLB_HDR_TRAILER);
        ID("expires", RLB_HDR_EXPIRES);
        break;
    case 9:
        ID("x-real-ip", RLB_HDR_X_REAL_IP);
        break;
    case 10:
        ID("connection", RLB_HDR_CONNECTION);
        ID("keep-alive", RLB_HDR_KEEP_ALIVE);
        ID("set-cookie", RLB_HDR_SET_COOKIE);
        break;
    case 12:
        ID("x-powered-by", RLB_HDR_X_POWERED_BY);
        break;
    case 14:
        ID("content-length", RLB_HDR_CONTENT_LENGTH);
        break;
    case 15:
        ID("x-forwarded-for", RLB_HDR_X_FORWARDED_FOR);
        break;
    case 16:
        ID("proxy-connection", RLB_HDR_PROXY_CONNECTION);
        ID("content-location", RLB_HDR_CONTENT_LOCATION);
        break;
    case 17:
        ID("transfer-encoding", RLB_HDR_TRANSFER_ENCODING);
        ID("x-forwarded-proto", RLB_HDR_X_FORWARDED_PROTO);
        ID("if-modified-since", RLB_HDR_IF_MODIFIED_SINCE);
        break;
    case 18:
        ID("proxy-authenticate", RLB_HDR_PROXY_AUTHENTICATE);
        break;
    case 19:
        ID("proxy-authorization", RLB_HDR_PROXY_AUTHORIZATION);
        ID("if-unmodified-since", RLB_HDR_IF_UNMODIFIED_SINCE);
        break;
    case 5:
        ID("range", RLB_HDR_RANGE);
        break;
    case 8:
        ID("if-range", RLB_HDR_IF_RANGE);
        ID("if-match", RLB_HDR_IF_MATCH);
        ID("location", RLB_HDR_LOCATION);
        break;
    case 13:
        ID("cache-control", RLB_HDR_CACHE_CONTROL);
        ID("authorization", RLB_HDR_AUTHORIZATION);
        ID("last-modified", RLB_HDR_LAST_MODIFIED);
        ID("if-none-match", RLB_HDR_IF_NONE_MATCH);
        break;
    default:
        break;
    }
#undef ID
    return RLB_HDR_OTHER;
}

static const struct rlb_str header_names[RLB_HDR__COUNT] = {
    [RLB_HDR_OTHER] = {"", 0},
    [RLB_HDR_HOST] = RLB_STRLIT("host"),
    [RLB_HDR_CONTENT_LENGTH] = RLB_STRLIT("content-length"),
    [RLB_HDR_TRANSFER_ENCODING] = RLB_STRLIT("transfer-encoding"),
    [RLB_HDR_CONNECTION] = RLB_STRLIT("connection"),
    [RLB_HDR_KEEP_ALIVE] = RLB_STRLIT("keep-alive"),
    [RLB_HDR_PROXY_CONNECTION] = RLB_STRLIT("proxy-connection"),
    [RLB_HDR_TE] = RLB_STRLIT("te"),
    [RLB_HDR_TRAILER] = RLB_STRLIT("trailer"),
    [RLB_HDR_UPGRADE] = RLB_STRLIT("upgrade"),
    [RLB_HDR_EXPECT] = RLB_STRLIT("expect"),
    [RLB_HDR_X_FORWARDED_FOR] = RLB_STRLIT("x-forwarded-for"),
    [RLB_HDR_X_REAL_IP] = RLB_STRLIT("x-real-ip"),
    [RLB_HDR_X_FORWARDED_PROTO] = RLB_STRLIT("x-forwarded-proto"),
    [RLB_HDR_VIA] = RLB_STRLIT("via"),
    [RLB_HDR_SERVER] = RLB_STRLIT("server"),
    [RLB_HDR_X_POWERED_BY] = RLB_STRLIT("x-powered-by"),
    [RLB_HDR_DATE] = RLB_STRLIT("date"),
    [RLB_HDR_PROXY_AUTHENTICATE] = RLB_STRLIT("proxy-authenticate"),
    [RLB_HDR_PROXY_AUTHORIZATION] = RLB_STRLIT("proxy-authorization"),
    [RLB_HDR_AGE] = RLB_STRLIT("age"),
    [RLB_HDR_VARY] = RLB_STRLIT("vary"),
    [RLB_HDR_ETAG] = RLB_STRLIT("etag"),
    [RLB_HDR_RANGE] = RLB_STRLIT("range"),
    [RLB_HDR_PRAGMA] = RLB_STRLIT("pragma"),
    [RLB_HDR_COOKIE] = RLB_STRLIT("cookie"),
    [RLB_HDR_EXPIRES] = RLB_STRLIT("expires"),
    [RLB_HDR_IF_RANGE] = RLB_STRLIT("if-range"),
    [RLB_HDR_IF_MATCH] = RLB_STRLIT("if-match"),
    [RLB_HDR_LOCATION] = RLB_STRLIT("location"),
    [RLB_HDR_SET_COOKIE] = RLB_STRLIT("set-cookie"),
    [RLB_HDR_CACHE_CONTROL] = RLB_STRLIT("cache-control"),
    [RLB_HDR_AUTHORIZATION] = RLB_STRLIT("authorization"),
    [RLB_HDR_LAST_MODIFIED] = RLB_STRLIT("last-modified"),
    [RLB_HDR_IF_NONE_MATCH] = RLB_STRLIT("if-none-match"),
    [RLB_HDR_CONTENT_LOCATION] = RLB_STRLIT("content-location"),
    [RLB_HDR_IF_MODIFIED_SINCE] = RLB_STRLIT("if-modified-since"),
    [RLB_HDR_IF_UNMODIFIED_SINCE] = RLB_STRLIT("if-unmodified-since"),
};

struct rlb_str rlb_http1_header_name(enum rlb_hdr_id id)
{
    if ((unsigned)id >= RLB_HDR__COUNT)
        return header_names[RLB_HDR_OTHER];
    return header_names[id];
}

const char *rlb_http_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 421: return "Misdirected Request";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

/* Field lines from <pos> up to and including the empty line, shared by
 * requests and responses. Only the first <lim> bytes are looked at, so a
 * caller enforces the head size limit by passing it as <lim>; running out
 * within <lim> is INCOMPLETE and the caller decides whether a limit is hit.
 * Returns the head length. */
static int parse_fields(const char *buf, size_t pos, size_t lim, struct rlb_http_header *hdrs, uint32_t max,
                        uint32_t *num, struct verdict *v)
{
    uint32_t n = 0;

    for (;;) {
        if (pos >= lim)
            goto incomplete;
        char c = buf[pos];
        if (c == '\r') {
            if (pos + 1 >= lim)
                goto incomplete;
            if (buf[pos + 1] != '\n')
                PARSE_ERROR(v, 400, "bare CR");
            *num = n;
            return (int)(pos + 2);
        }
        if (rlb_unlikely(!IS(c, C_TCHAR))) {
            if (c == '\n')
                PARSE_ERROR(v, 400, "bare LF");
            if (IS_OWS(c))
                PARSE_ERROR(v, 400, "obsolete line folding");
            if (c == ':')
                PARSE_ERROR(v, 400, "empty field name");
            PARSE_ERROR(v, 400, "invalid field name");
        }
        /* Rejected as soon as the extra line starts: no need to wait for the
         * rest of a head that is already too big. */
        if (rlb_unlikely(n >= max))
            PARSE_ERROR(v, 431, "too many header fields");

        size_t line = pos;
        for (pos++; pos < lim && IS(buf[pos], C_TCHAR); pos++)
            ;
        if (pos >= lim)
            goto incomplete;
        if (rlb_unlikely(buf[pos] != ':'))
            PARSE_ERROR(v, 400, IS_OWS(buf[pos]) ? "whitespace before colon" : "invalid field name");
        size_t name_len = pos - line;

        for (pos++; pos < lim && IS_OWS(buf[pos]); pos++)
            ;
        size_t vstart = pos;
        pos = scan_value(buf, pos, lim);
        if (pos >= lim)
            goto incomplete;
        if (rlb_unlikely(buf[pos] != '\r'))
            PARSE_ERROR(v, 400, buf[pos] == '\n' ? "bare LF" : "invalid character in field value");
        if (pos + 1 >= lim)
            goto incomplete;
        if (rlb_unlikely(buf[pos + 1] != '\n'))
            PARSE_ERROR(v, 400, "bare CR");
        size_t vend = pos;
        while (vend > vstart && IS_OWS(buf[vend - 1]))
            vend--;
        pos += 2;

        struct rlb_http_header *h = &hdrs[n++];
        h->name = buf + line;
        h->name_len = (uint32_t)name_len;
        h->value = buf + vstart;
        h->value_len = (uint32_t)(vend - vstart);
        h->line_off = (uint32_t)line;
        h->line_len = (uint32_t)(pos - line);
        h->id = header_id(buf + line, name_len);
        h->flags = 0;
    }

incomplete:
    *num = n;
    return RLB_HTTP_INCOMPLETE;
}

/* Runs <body> with <ep>/<elen> set to every non-empty element of a
 * comma-separated list, OWS trimmed (RFC 9110 5.6.1: empty elements are
 * ignored). A break in <body> ends the walk. */
#define FOR_EACH_ELEMENT(val, vlen, ep, elen, body)                                                                    \
    do {                                                                                                               \
        const char *p_ = (val), *end_ = (val) + (vlen);                                                                \
        while (p_ < end_) {                                                                                            \
            const char *s_ = p_;                                                                                       \
            while (p_ < end_ && *p_ != ',')                                                                            \
                p_++;                                                                                                  \
            const char *e_ = p_;                                                                                       \
            if (p_ < end_)                                                                                             \
                p_++;                                                                                                  \
            while (s_ < e_ && IS_OWS(*s_))                                                                             \
                s_++;                                                                                                  \
            while (e_ > s_ && IS_OWS(e_[-1]))                                                                          \
                e_--;                                                                                                  \
            if (s_ == e_)                                                                                              \
                continue;                                                                                              \
            const char *ep = s_;                                                                                       \
            size_t elen = (size_t)(e_ - s_);                                                                           \
            body                                                                                                       \
        }                                                                                                              \
    } while (0)

static bool is_token(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!IS(p[i], C_TCHAR))
            return false;
    return n > 0;
}

/* Content-Length = 1*DIGIT, or a list of identical values (RFC 9110 8.6 lets
 * a recipient accept "5, 5"). Values above INT64_MAX are refused so that
 * later code can use signed offsets. */
static bool parse_content_length(const char *p, size_t n, uint64_t *out)
{
    const char *end = p + n;
    bool have = false;
    uint64_t first = 0;

    for (;;) {
        while (p < end && IS_OWS(*p))
            p++;
        if (p == end || !IS(*p, C_DIGIT))
            return false;
        uint64_t x = 0;
        while (p < end && IS(*p, C_DIGIT)) {
            unsigned d = (unsigned)(*p - '0');
            if (x > ((uint64_t)INT64_MAX - d) / 10)
                return false;
            x = x * 10 + d;
            p++;
        }
        if (have && x != first)
            return false;
        first = x;
        have = true;
        while (p < end && IS_OWS(*p))
            p++;
        if (p == end)
            break;
        if (*p != ',')
            return false;
        p++;
    }
    *out = first;
    return true;
}

/* What the header section says, before request/response specific rules. */
struct framing {
    uint8_t flags;
    bool has_cl;
    bool has_te;
    bool has_upgrade;
    bool conn_upgrade;
    uint32_t te_codings;  /* transfer codings over all TE headers */
    uint32_t te_chunked;  /* how many of them are "chunked" */
    bool te_last_chunked;
    bool expect_other;    /* an Expect other than 100-continue */
    bool expect_continue;
    uint32_t host_count;
    int32_t host_index;
    uint64_t content_length;
};

static int mark_connection_options(struct rlb_http_header *hdrs, uint32_t n, const struct rlb_http_header *conn,
                                   struct framing *f, struct verdict *v)
{
    bool bad = false;
    FOR_EACH_ELEMENT(conn->value, conn->value_len, tok, tlen, {
        if (!is_token(tok, tlen)) {
            bad = true;
            break;
        }
        if (rlb_str_ieq_lit(tok, tlen, "close", 5)) {
            f->flags |= RLB_MSG_CONN_CLOSE;
        } else if (rlb_str_ieq_lit(tok, tlen, "keep-alive", 10)) {
            /* Names a header that is hop-by-hop anyway: skip the search. */
            f->flags |= RLB_MSG_CONN_KEEPALIVE;
            continue;
        } else if (rlb_str_ieq_lit(tok, tlen, "upgrade", 7)) {
            f->conn_upgrade = true;
            continue;
        }
        /* Framing and Host stay the proxy's business: naming Content-Length,
         * Transfer-Encoding or Host as a connection option must not make us
         * drop them (a request without Host is not HTTP/1.1). */
        for (uint32_t i = 0; i < n; i++)
            if (hdrs[i].name_len == tlen && hdrs[i].id != RLB_HDR_CONTENT_LENGTH &&
                hdrs[i].id != RLB_HDR_TRANSFER_ENCODING && hdrs[i].id != RLB_HDR_HOST &&
                rlb_str_ieq(hdrs[i].name, hdrs[i].name_len, tok, tlen)) {
                hdrs[i].flags |= RLB_HF_HOP;
                f->flags |= RLB_MSG_HAS_HOP;
            }
    });
    if (bad)
        PARSE_ERROR(v, 400, "invalid Connection header");
    return 0;
}

static int scan_framing(struct rlb_http_header *hdrs, uint32_t n, struct framing *f, struct verdict *v)
{
    memset(f, 0, sizeof(*f));
    f->host_index = -1;

    for (uint32_t i = 0; i < n; i++) {
        struct rlb_http_header *h = &hdrs[i];
        switch (h->id) {
        case RLB_HDR_OTHER:
            break;
        case RLB_HDR_CONNECTION:
            h->flags |= RLB_HF_HOP;
            f->flags |= RLB_MSG_HAS_HOP;
            if (mark_connection_options(hdrs, n, h, f, v) < 0)
                return RLB_HTTP_ERROR;
            break;
        case RLB_HDR_UPGRADE:
            f->has_upgrade = true;
            h->flags |= RLB_HF_HOP;
            f->flags |= RLB_MSG_HAS_HOP;
            break;
        case RLB_HDR_KEEP_ALIVE:
        case RLB_HDR_PROXY_CONNECTION:
        case RLB_HDR_TE:
        case RLB_HDR_TRAILER:
            h->flags |= RLB_HF_HOP;
            f->flags |= RLB_MSG_HAS_HOP;
            break;
        case RLB_HDR_EXPECT:
            if (rlb_str_ieq_lit(h->value, h->value_len, "100-continue", 12))
                f->expect_continue = true;
            else
                f->expect_other = true;
            break;
        case RLB_HDR_HOST:
            if (f->host_count++ == 0)
                f->host_index = (int32_t)i;
            break;
        case RLB_HDR_CONTENT_LENGTH: {
            uint64_t cl;
            if (!parse_content_length(h->value, h->value_len, &cl))
                PARSE_ERROR(v, 400, "invalid Content-Length");
            if (f->has_cl && cl != f->content_length)
                PARSE_ERROR(v, 400, "conflicting Content-Length");
            f->has_cl = true;
            f->content_length = cl;
            break;
        }
        case RLB_HDR_TRANSFER_ENCODING: {
            uint32_t before = f->te_codings;
            f->has_te = true;
            FOR_EACH_ELEMENT(h->value, h->value_len, cod, clen, {
                bool chunked = rlb_str_ieq_lit(cod, clen, "chunked", 7);
                f->te_codings++;
                f->te_chunked += chunked;
                f->te_last_chunked = chunked;
            });
            if (f->te_codings == before)
                PARSE_ERROR(v, 400, "empty Transfer-Encoding");
            break;
        }
        default:
            break;
        }
    }
    return 0;
}

static uint8_t method_id(const char *m, size_t n)
{
    switch (n) {
    case 3:
        if (memcmp(m, "GET", 3) == 0)
            return RLB_METHOD_GET;
        if (memcmp(m, "PUT", 3) == 0)
            return RLB_METHOD_PUT;
        break;
    case 4:
        if (memcmp(m, "POST", 4) == 0)
            return RLB_METHOD_POST;
        if (memcmp(m, "HEAD", 4) == 0)
            return RLB_METHOD_HEAD;
        break;
    case 5:
        if (memcmp(m, "PATCH", 5) == 0)
            return RLB_METHOD_PATCH;
        if (memcmp(m, "TRACE", 5) == 0)
            return RLB_METHOD_TRACE;
        break;
    case 6:
        if (memcmp(m, "DELETE", 6) == 0)
            return RLB_METHOD_DELETE;
        break;
    case 7:
        if (memcmp(m, "OPTIONS", 7) == 0)
            return RLB_METHOD_OPTIONS;
        if (memcmp(m, "CONNECT", 7) == 0)
            return RLB_METHOD_CONNECT;
        break;
    default:
        break;
    }
    return RLB_METHOD_OTHER;
}

static bool host_chars(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!IS(p[i], C_HOST))
            return false;
    return true;
}

/* RFC 9112 3.2: which request-target form each method may use. */
static bool target_form_ok(uint8_t method, const char *t, size_t n)
{
    if (method == RLB_METHOD_CONNECT)
        return t[0] != '/' && !(n == 1 && t[0] == '*') && host_chars(t, n);
    if (t[0] == '/')
        return true;
    if (n == 1 && t[0] == '*')
        return method == RLB_METHOD_OPTIONS;
    size_t scheme;
    if (n > 7 && rlb_str_ieq_lit(t, 7, "http://", 7))
        scheme = 7;
    else if (n > 8 && rlb_str_ieq_lit(t, 8, "https://", 8))
        scheme = 8;
    else
        return false;
    /* The authority of an absolute-form target replaces Host (RFC 9112
     * 3.2.2), so it must be a host as valid as a Host header's, with no
     * userinfo: "http://a@b/" and "http://e|x/" are refused. */
    size_t a = scheme;
    while (a < n && t[a] != '/' && t[a] != '?')
        a++;
    return a > scheme && host_chars(t + scheme, a - scheme);
}

/* "HTTP/" DIGIT "." DIGIT checked byte by byte so that garbage is refused
 * before the line is complete. Returns bytes matched, or -1. */
static int match_version(const char *p, size_t avail)
{
    static const char pat[] = "HTTP/0.0";
    size_t n = avail < 8 ? avail : 8;
    for (size_t k = 0; k < n; k++) {
        if (k == 5 || k == 7) {
            if (!IS(p[k], C_DIGIT))
                return -1;
        } else if (p[k] != pat[k]) {
            return -1;
        }
    }
    return (int)n;
}

/* Request line; returns its length including CRLF. */
static int parse_request_line(const char *buf, size_t lim, struct rlb_http_request *req, struct verdict *v)
{
    size_t i = 0;

    while (i < lim && IS(buf[i], C_TCHAR))
        i++;
    if (i >= lim)
        return RLB_HTTP_INCOMPLETE;
    if (buf[i] != ' ' || i == 0)
        PARSE_ERROR(v, 400, i == 0 ? "invalid method" : "invalid request line");
    req->method.ptr = buf;
    req->method.len = i;

    size_t t = ++i;
    i = scan_vchar(buf, i, lim);
    if (i >= lim)
        return RLB_HTTP_INCOMPLETE;
    if (buf[i] != ' ')
        PARSE_ERROR(v, 400, buf[i] == '\r' || buf[i] == '\n' ? "missing HTTP version" : "invalid request-target");
    if (i == t)
        PARSE_ERROR(v, 400, "empty request-target");
    req->target.ptr = buf + t;
    req->target.len = i - t;

    const char *ver = buf + ++i;
    int m = match_version(ver, lim - i);
    if (m < 0)
        PARSE_ERROR(v, 400, "invalid HTTP version");
    i += (size_t)m;
    if (m < 8 || i >= lim)
        return RLB_HTTP_INCOMPLETE;
    if (buf[i] != '\r')
        PARSE_ERROR(v, 400, buf[i] == '\n' ? "bare LF" : "invalid HTTP version");
    if (i + 1 >= lim)
        return RLB_HTTP_INCOMPLETE;
    if (buf[i + 1] != '\n')
        PARSE_ERROR(v, 400, "bare CR");
    if (ver[5] != '1' || (ver[7] != '0' && ver[7] != '1'))
        PARSE_ERROR(v, 505, "unsupported HTTP version");
    req->minor_version = (uint8_t)(ver[7] - '0');
    return (int)(i + 2);
}

static size_t clamp_len(size_t len, uint32_t limit)
{
    size_t lim = len < limit ? len : limit;
    return lim < INT_MAX ? lim : INT_MAX;
}

static int request_error(struct rlb_http_request *req, uint16_t status, const char *reason)
{
    req->error_status = status;
    req->error_reason = reason;
    return RLB_HTTP_ERROR;
}

int rlb_http1_parse_request(const char *buf, size_t len, const struct rlb_http_limits *limits,
                            struct rlb_http_request *req)
{
    struct verdict v = {0, NULL};
    struct framing f;

    req->num_headers = 0;
    req->method = (struct rlb_str){"", 0};
    req->target = (struct rlb_str){"", 0};
    req->method_id = RLB_METHOD_OTHER;
    req->minor_version = 0;
    req->body = RLB_BODY_NONE;
    req->flags = 0;
    req->request_line_len = 0;
    req->head_len = 0;
    req->content_length = 0;
    req->host = (struct rlb_str){"", 0};
    req->host_index = -1;
    req->error_status = 0;
    req->error_reason = NULL;

    size_t lim = clamp_len(len, limits->max_head_size);
    int rl = parse_request_line(buf, clamp_len(lim, limits->max_request_line), req, &v);
    if (rl == RLB_HTTP_INCOMPLETE) {
        if (len >= limits->max_request_line)
            return request_error(req, 414, "request line too long");
        if (lim < len || len >= limits->max_head_size)
            return request_error(req, 431, "request head too large");
        return RLB_HTTP_INCOMPLETE;
    }
    if (rl < 0)
        return request_error(req, v.status, v.reason);
    req->request_line_len = (uint32_t)rl;
    req->method_id = method_id(req->method.ptr, req->method.len);
    if (!target_form_ok(req->method_id, req->target.ptr, req->target.len))
        return request_error(req, 400, "request-target form not allowed for method");

    uint32_t max = limits->max_headers < req->max_headers_capacity ? limits->max_headers : req->max_headers_capacity;
    int hl = parse_fields(buf, (size_t)rl, lim, req->headers, max, &req->num_headers, &v);
    if (hl == RLB_HTTP_INCOMPLETE) {
        if (lim < len || len >= limits->max_head_size)
            return request_error(req, 431, "request head too large");
        return RLB_HTTP_INCOMPLETE;
    }
    if (hl < 0)
        return request_error(req, v.status, v.reason);

    if (scan_framing(req->headers, req->num_headers, &f, &v) < 0)
        return request_error(req, v.status, v.reason);

    if (f.host_count > 1)
        return request_error(req, 400, "multiple Host headers");
    if (f.host_count == 0 && req->minor_version == 1)
        return request_error(req, 400, "missing Host header");
    if (f.host_index >= 0) {
        const struct rlb_http_header *h = &req->headers[f.host_index];
        if (!host_chars(h->value, h->value_len))
            return request_error(req, 400, "invalid Host header");
        req->host = (struct rlb_str){h->value, h->value_len};
        req->host_index = f.host_index;
    }
    if (f.has_te) {
        if (f.has_cl)
            return request_error(req, 400, "Content-Length with Transfer-Encoding");
        if (req->minor_version == 0)
            return request_error(req, 400, "Transfer-Encoding in HTTP/1.0");
        if (f.te_chunked > 1)
            return request_error(req, 400, "chunked applied more than once");
        if (f.te_chunked == 1 && !f.te_last_chunked)
            return request_error(req, 400, "chunked is not the final transfer coding");
        if (f.te_codings != 1 || f.te_chunked != 1)
            return request_error(req, 501, "unsupported transfer coding");
        req->body = RLB_BODY_CHUNKED;
    } else if (f.has_cl && f.content_length > 0) {
        req->body = RLB_BODY_LENGTH;
        req->content_length = f.content_length;
    }

    if (f.expect_other)
        return request_error(req, 417, "unsupported expectation");
    /* RFC 9110 10.1.1: an HTTP/1.0 client cannot handle 100 Continue. */
    if (f.expect_continue && req->minor_version == 1)
        f.flags |= RLB_MSG_EXPECT_CONTINUE;
    if (f.conn_upgrade && f.has_upgrade)
        f.flags |= RLB_MSG_UPGRADE;
    req->flags = f.flags;
    req->head_len = (uint32_t)hl;
    return hl;
}

/* "HTTP/1.x SP 3DIGIT [SP reason] CRLF"; returns its length including CRLF. */
static int parse_status_line(const char *buf, size_t lim, struct rlb_http_response *resp, struct verdict *v)
{
    int m = match_version(buf, lim);
    if (m < 0)
        PARSE_ERROR(v, 502, "invalid HTTP version");
    if (m < 8)
        return RLB_HTTP_INCOMPLETE;
    if (buf[5] != '1' || (buf[7] != '0' && buf[7] != '1'))
        PARSE_ERROR(v, 502, "unsupported HTTP version");
    resp->minor_version = (uint8_t)(buf[7] - '0');

    size_t i = 8;
    if (i >= lim)
        return RLB_HTTP_INCOMPLETE;
    if (buf[i++] != ' ')
        PARSE_ERROR(v, 502, "invalid status line");
    unsigned status = 0;
    for (; i < 12; i++) {
        if (i >= lim)
            return RLB_HTTP_INCOMPLETE;
        if (!IS(buf[i], C_DIGIT))
            PARSE_ERROR(v, 502, "invalid status code");
        status = status * 10 + (unsigned)(buf[i] - '0');
    }
    if (status < 100)
        PARSE_ERROR(v, 502, "invalid status code");
    resp->status = (uint16_t)status;

    if (i >= lim)
        return RLB_HTTP_INCOMPLETE;
    size_t rs = i;
    if (buf[i] == ' ') {
        rs = ++i;
        i = scan_value(buf, i, lim);
        if (i >= lim)
            return RLB_HTTP_INCOMPLETE;
    }
    if (buf[i] != '\r')
        PARSE_ERROR(v, 502, buf[i] == '\n' ? "bare LF" : "invalid status line");
    if (i + 1 >= lim)
        return RLB_HTTP_INCOMPLETE;
    if (buf[i + 1] != '\n')
        PARSE_ERROR(v, 502, "bare CR");
    resp->reason = (struct rlb_str){buf + rs, i - rs};
    return (int)(i + 2);
}

static int response_error(struct rlb_http_response *resp, const char *reason)
{
    resp->error_reason = reason;
    return RLB_HTTP_ERROR;
}

int rlb_http1_parse_response(const char *buf, size_t len, const struct rlb_http_limits *limits, int request_method,
                             struct rlb_http_response *resp)
{
    struct verdict v = {0, NULL};
    struct framing f;

    resp->num_headers = 0;
    resp->status = 0;
    resp->minor_version = 0;
    resp->body = RLB_BODY_NONE;
    resp->flags = 0;
    resp->status_line_len = 0;
    resp->head_len = 0;
    resp->content_length = 0;
    resp->reason = (struct rlb_str){"", 0};
    resp->error_reason = NULL;

    size_t lim = clamp_len(len, limits->max_head_size);
    int sl = parse_status_line(buf, clamp_len(lim, limits->max_request_line), resp, &v);
    if (sl == RLB_HTTP_INCOMPLETE) {
        if (len >= limits->max_request_line)
            return response_error(resp, "status line too long");
        if (lim < len || len >= limits->max_head_size)
            return response_error(resp, "response head too large");
        return RLB_HTTP_INCOMPLETE;
    }
    if (sl < 0)
        return response_error(resp, v.reason);
    resp->status_line_len = (uint32_t)sl;

    uint32_t max = limits->max_headers < resp->max_headers_capacity ? limits->max_headers : resp->max_headers_capacity;
    int hl = parse_fields(buf, (size_t)sl, lim, resp->headers, max, &resp->num_headers, &v);
    if (hl == RLB_HTTP_INCOMPLETE) {
        if (lim < len || len >= limits->max_head_size)
            return response_error(resp, "response head too large");
        return RLB_HTTP_INCOMPLETE;
    }
    if (hl < 0)
        return response_error(resp, v.reason);
    if (scan_framing(resp->headers, resp->num_headers, &f, &v) < 0)
        return response_error(resp, v.reason);

    if (f.has_te) {
        if (f.has_cl)
            return response_error(resp, "Content-Length with Transfer-Encoding");
        if (resp->minor_version == 0)
            return response_error(resp, "Transfer-Encoding in HTTP/1.0");
        if (f.te_codings != 1 || f.te_chunked != 1)
            return response_error(resp, "unsupported transfer coding");
    }

    /* RFC 9112 6.3, in its order. */
    unsigned st = resp->status;
    if (request_method == RLB_METHOD_HEAD || st < 200 || st == 204 || st == 304 ||
        (request_method == RLB_METHOD_CONNECT && st < 300)) {
        resp->body = RLB_BODY_NONE;
    } else if (f.has_te) {
        resp->body = RLB_BODY_CHUNKED;
    } else if (f.has_cl) {
        resp->body = f.content_length > 0 ? RLB_BODY_LENGTH : RLB_BODY_NONE;
        resp->content_length = f.content_length;
    } else {
        resp->body = RLB_BODY_UNTIL_CLOSE;
    }

    /* A 101 switches protocols whatever Connection says; the proxy must know. */
    if (st == 101 && f.has_upgrade)
        f.flags |= RLB_MSG_UPGRADE;
    resp->flags = f.flags;
    resp->head_len = (uint32_t)hl;
    return hl;
}
