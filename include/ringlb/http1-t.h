/* Types of the HTTP/1.x head parser and the chunked decoder. */
#ifndef RINGLB_HTTP1_T_H
#define RINGLB_HTTP1_T_H

#include <ringlb/api.h>

/* Parser results besides a positive head length. */
#define RLB_HTTP_ERROR (-1)
#define RLB_HTTP_INCOMPLETE (-2)

enum rlb_http_method {
    RLB_METHOD_OTHER = 0,
    RLB_METHOD_GET,
    RLB_METHOD_HEAD,
    RLB_METHOD_POST,
    RLB_METHOD_PUT,
    RLB_METHOD_DELETE,
    RLB_METHOD_CONNECT,
    RLB_METHOD_OPTIONS,
    RLB_METHOD_TRACE,
    RLB_METHOD_PATCH,
};

/* Header names the proxy acts on, interned by the parser so that later code
 * compares small integers instead of strings. */
enum rlb_hdr_id {
    RLB_HDR_OTHER = 0,
    RLB_HDR_HOST,
    RLB_HDR_CONTENT_LENGTH,
    RLB_HDR_TRANSFER_ENCODING,
    RLB_HDR_CONNECTION,
    RLB_HDR_KEEP_ALIVE,
    RLB_HDR_PROXY_CONNECTION,
    RLB_HDR_TE,
    RLB_HDR_TRAILER,
    RLB_HDR_UPGRADE,
    RLB_HDR_EXPECT,
    RLB_HDR_X_FORWARDED_FOR,
    RLB_HDR_X_REAL_IP,
    RLB_HDR_X_FORWARDED_PROTO,
    RLB_HDR_VIA,
    RLB_HDR_SERVER,
    RLB_HDR_X_POWERED_BY,
    RLB_HDR_DATE,
    RLB_HDR_PROXY_AUTHENTICATE,
    RLB_HDR_PROXY_AUTHORIZATION,
    /* the cache's */
    RLB_HDR_AGE,
    RLB_HDR_VARY,
    RLB_HDR_ETAG,
    RLB_HDR_RANGE,
    RLB_HDR_PRAGMA,
    RLB_HDR_COOKIE,
    RLB_HDR_EXPIRES,
    RLB_HDR_IF_RANGE,
    RLB_HDR_IF_MATCH,
    RLB_HDR_LOCATION,
    RLB_HDR_SET_COOKIE,
    RLB_HDR_CACHE_CONTROL,
    RLB_HDR_AUTHORIZATION,
    RLB_HDR_LAST_MODIFIED,
    RLB_HDR_IF_NONE_MATCH,
    RLB_HDR_CONTENT_LOCATION,
    RLB_HDR_IF_MODIFIED_SINCE,
    RLB_HDR_IF_UNMODIFIED_SINCE,
    RLB_HDR__COUNT
};

/* Header flags set by the parser. */
#define RLB_HF_HOP 0x1 /* hop-by-hop: a fixed hop-by-hop name, or named by Connection */

struct rlb_http_header {
    const char *name;   /* into the parsed buffer */
    const char *value;  /* into the parsed buffer, OWS trimmed both sides */
    uint32_t name_len;
    uint32_t value_len;
    uint32_t line_off;  /* offset of the field line from the start of the head */
    uint32_t line_len;  /* whole field line including its CRLF */
    uint16_t id;        /* enum rlb_hdr_id */
    uint16_t flags;     /* RLB_HF_* */
};

enum rlb_body_kind {
    RLB_BODY_NONE = 0,    /* no body follows the head */
    RLB_BODY_LENGTH,      /* exactly content_length bytes follow */
    RLB_BODY_CHUNKED,     /* chunked transfer coding follows */
    RLB_BODY_UNTIL_CLOSE, /* responses only: body ends when the server closes */
};

/* Message flags derived from the head. */
#define RLB_MSG_CONN_CLOSE 0x01      /* Connection: close */
#define RLB_MSG_CONN_KEEPALIVE 0x02  /* Connection: keep-alive */
#define RLB_MSG_EXPECT_CONTINUE 0x04 /* Expect: 100-continue */
#define RLB_MSG_UPGRADE 0x08         /* Upgrade header and "upgrade" listed in Connection */
#define RLB_MSG_HAS_HOP 0x10         /* at least one header carries RLB_HF_HOP */

struct rlb_http_limits {
    uint32_t max_request_line; /* request line including CRLF; longer: 414 */
    uint32_t max_head_size;    /* whole head including the final CRLF; larger: 431 */
    uint32_t max_headers;      /* field lines; more: 431 */
};

struct rlb_http_request {
    /* in: header array and its capacity, provided by the caller */
    struct rlb_http_header *headers;
    uint32_t max_headers_capacity;

    /* out */
    uint32_t num_headers;
    struct rlb_str method;
    struct rlb_str target;
    uint8_t method_id;       /* enum rlb_http_method */
    uint8_t minor_version;   /* HTTP/1.<minor>, 0 or 1 */
    uint8_t body;            /* enum rlb_body_kind: NONE, LENGTH or CHUNKED */
    uint8_t flags;           /* RLB_MSG_* */
    uint32_t request_line_len; /* including CRLF */
    uint32_t head_len;         /* including the empty line */
    uint64_t content_length;
    struct rlb_str host;     /* value of the Host header; empty when absent */
    int32_t host_index;      /* index into headers, -1 when absent */

    /* on RLB_HTTP_ERROR */
    uint16_t error_status;   /* 400, 414, 417, 431, 501 or 505 */
    const char *error_reason; /* static text for logs and tests */
};

struct rlb_http_response {
    struct rlb_http_header *headers;
    uint32_t max_headers_capacity;

    uint32_t num_headers;
    uint16_t status;
    uint8_t minor_version;
    uint8_t body;            /* enum rlb_body_kind, decided per RFC 9112 section 6.3 */
    uint8_t flags;           /* RLB_MSG_* */
    uint32_t status_line_len;
    uint32_t head_len;
    uint64_t content_length;
    struct rlb_str reason;

    const char *error_reason; /* on RLB_HTTP_ERROR (the proxy answers 502) */
};

enum rlb_chunked_result {
    RLB_CHUNKED_ERROR = -1, /* malformed framing */
    RLB_CHUNKED_MORE = 0,   /* all input consumed, need more */
    RLB_CHUNKED_DATA = 1,   /* a span of chunk data is returned */
    RLB_CHUNKED_DONE = 2,   /* last-chunk and trailer section consumed: message complete */
};

/* Streaming decoder state; zero-initialise (or call rlb_chunked_init) per message. */
struct rlb_chunked_decoder {
    uint64_t remaining;      /* data bytes left in the current chunk */
    uint32_t line_bytes;     /* bytes seen in the current size line or trailer line */
    uint32_t trailer_bytes;  /* bytes seen in the trailer section */
    uint8_t state;           /* private */
    uint8_t digits;          /* private */
    const char *error_reason;
};

#endif
