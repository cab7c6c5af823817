/* HTTP/1.x head parser (RFC 9110/9112, strict) and chunked body decoder.
 *
 * Heads are parsed in place: every pointer a parse result holds points into
 * the caller's buffer. Nothing is allocated. */
#ifndef RINGLB_HTTP1_H
#define RINGLB_HTTP1_H

#include <ringlb/http1-t.h>

/* Parses a request head at the start of <buf>.
 * Returns the head length (> 0) when a whole, valid head is present,
 * RLB_HTTP_INCOMPLETE when more bytes are needed (and no limit is exceeded yet),
 * RLB_HTTP_ERROR with req->error_status/error_reason set otherwise.
 * Leading empty lines are not skipped here: the caller drops them.
 * Content-Length: 0 gives body RLB_BODY_NONE (content_length 0), so callers
 * test body only; the same holds for responses. Expect: 100-continue sets
 * RLB_MSG_EXPECT_CONTINUE on HTTP/1.1 only (RFC 9110 10.1.1). A Connection
 * option naming Content-Length or Transfer-Encoding does not mark them
 * RLB_HF_HOP: framing is the proxy's own. CONNECT must use authority-form. */
int rlb_http1_parse_request(const char *buf, size_t len, const struct rlb_http_limits *limits,
                            struct rlb_http_request *req);

/* Parses a response head. <request_method> (enum rlb_http_method) decides
 * whether a body follows (HEAD, 2xx to CONNECT), as does the status (1xx, 204, 304).
 * Same return convention; errors (including exceeded limits) set
 * resp->error_reason only. RLB_MSG_UPGRADE is set on a 101 carrying Upgrade. */
int rlb_http1_parse_response(const char *buf, size_t len, const struct rlb_http_limits *limits, int request_method,
                             struct rlb_http_response *resp);

void rlb_chunked_init(struct rlb_chunked_decoder *dec);

/* Consumes chunked framing from <buf>. Sets *consumed to the number of bytes
 * of <buf> used by this call. On RLB_CHUNKED_DATA, *data and *data_len are a span
 * of payload inside <buf> (already counted in *consumed); call again with the
 * rest. On RLB_CHUNKED_DONE, bytes after *consumed belong to the next message.
 * Chunk extensions are validated and discarded; trailer fields are validated
 * and discarded (bounded by 8 KiB). */
int rlb_chunked_decode(struct rlb_chunked_decoder *dec, const char *buf, size_t len, size_t *consumed,
                       const char **data, size_t *data_len);

/* Name of a known header id in lower case, for the rewriter and tests. */
struct rlb_str rlb_http1_header_name(enum rlb_hdr_id id);

/* Canonical reason phrase for a status code ("Bad Request"); "Unknown" otherwise. */
const char *rlb_http_reason(int status);

#endif
