/* Streaming decoder for the chunked transfer coding (RFC 9112 7.1).
 *
 * A byte-at-a-time state machine for the framing, so that any split of the
 * input gives the same result; chunk data itself is handed out as spans of
 * the caller's buffer, never copied. */
#include <ringlb/api.h>
#include <ringlb/http1.h>

#include <string.h>

#include "http1_chars.h"

/* A size line longer than this is an attack (or a broken peer), not framing. */
#define MAX_SIZE_LINE 4096
#define MAX_TRAILER 8192
#define MAX_HEX_DIGITS 15 /* 2^60 - 1: cannot overflow uint64_t */

enum {
    S_SIZE = 0,      /* chunk-size digits; zero-initialised decoders start here */
    S_SIZE_BWS,      /* whitespace after the size or an extension: only ';' may follow */
    S_EXT_NAME0,     /* after ';': BWS then the first name byte */
    S_EXT_NAME,
    S_EXT_NAME_BWS,  /* whitespace after a name: '=' or ';' must follow */
    S_EXT_VAL0,      /* after '=': BWS then a token or a quoted-string */
    S_EXT_TOKEN,
    S_EXT_QUOTED,
    S_EXT_QPAIR,
    S_EXT_QEND,      /* after the closing quote */
    S_SIZE_LF,
    S_DATA,
    S_DATA_CR,
    S_DATA_LF,
    S_TRAILER0,      /* start of a trailer line, or the final CRLF */
    S_TRAILER_NAME,
    S_TRAILER_VALUE,
    S_TRAILER_LF,
    S_END_LF,
    S_DONE,
    S_ERROR,
};

void rlb_chunked_init(struct rlb_chunked_decoder *dec)
{
    memset(dec, 0, sizeof(*dec));
}

/* After the size or an extension value: what may end it. */
static uint8_t after_ext(char c)
{
    if (c == ';')
        return S_EXT_NAME0;
    if (c == '\r')
        return S_SIZE_LF;
    if (IS_OWS(c))
        return S_SIZE_BWS;
    return S_ERROR;
}

static int fail(struct rlb_chunked_decoder *dec, size_t pos, size_t *consumed, const char *why)
{
    dec->state = S_ERROR;
    dec->error_reason = why;
    *consumed = pos;
    return RLB_CHUNKED_ERROR;
}

int rlb_chunked_decode(struct rlb_chunked_decoder *dec, const char *buf, size_t len, size_t *consumed,
                       const char **data, size_t *data_len)
{
    size_t pos = 0;

    *data = NULL;
    *data_len = 0;

    while (pos < len) {
        uint8_t st = dec->state;

        if (st == S_DATA) {
            size_t n = len - pos;
            if (n > dec->remaining)
                n = (size_t)dec->remaining;
            *data = buf + pos;
            *data_len = n;
            dec->remaining -= n;
            if (dec->remaining == 0)
                dec->state = S_DATA_CR;
            *consumed = pos + n;
            return RLB_CHUNKED_DATA;
        }
        if (st == S_DONE) {
            *consumed = pos;
            return RLB_CHUNKED_DONE;
        }
        if (st == S_ERROR)
            return fail(dec, pos, consumed, dec->error_reason ? dec->error_reason : "decoder in error state");

        char c = buf[pos++];

        if (st <= S_SIZE_LF) {
            if (++dec->line_bytes > MAX_SIZE_LINE)
                return fail(dec, pos, consumed, "chunk size line too long");
        } else if (st >= S_TRAILER0) {
            if (++dec->trailer_bytes > MAX_TRAILER)
                return fail(dec, pos, consumed, "trailer section too large");
        }

        switch (st) {
        case S_SIZE:
            if (IS(c, C_HEX)) {
                if (++dec->digits > MAX_HEX_DIGITS)
                    return fail(dec, pos, consumed, "chunk size too large");
                unsigned d = (unsigned)(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
                dec->remaining = (dec->remaining << 4) | d;
                break;
            }
            if (dec->digits == 0)
                return fail(dec, pos, consumed, "invalid chunk size");
            dec->state = after_ext(c);
            if (dec->state == S_ERROR)
                return fail(dec, pos, consumed, c == '\n' ? "bare LF in chunk size line" : "invalid chunk size");
            break;
        case S_SIZE_BWS:
            if (c == ';')
                dec->state = S_EXT_NAME0;
            else if (!IS_OWS(c))
                return fail(dec, pos, consumed, "invalid chunk extension");
            break;
        case S_EXT_NAME0:
            if (IS(c, C_TCHAR))
                dec->state = S_EXT_NAME;
            else if (!IS_OWS(c))
                return fail(dec, pos, consumed, "invalid chunk extension name");
            break;
        case S_EXT_NAME:
            if (IS(c, C_TCHAR))
                break;
            if (c == '=')
                dec->state = S_EXT_VAL0;
            else if (c == ';')
                dec->state = S_EXT_NAME0;
            else if (c == '\r')
                dec->state = S_SIZE_LF;
            else if (IS_OWS(c))
                dec->state = S_EXT_NAME_BWS;
            else
                return fail(dec, pos, consumed, "invalid chunk extension name");
            break;
        case S_EXT_NAME_BWS:
            if (c == '=')
                dec->state = S_EXT_VAL0;
            else if (c == ';')
                dec->state = S_EXT_NAME0;
            else if (!IS_OWS(c))
                return fail(dec, pos, consumed, "invalid chunk extension");
            break;
        case S_EXT_VAL0:
            if (IS(c, C_TCHAR))
                dec->state = S_EXT_TOKEN;
            else if (c == '"')
                dec->state = S_EXT_QUOTED;
            else if (!IS_OWS(c))
                return fail(dec, pos, consumed, "invalid chunk extension value");
            break;
        case S_EXT_TOKEN:
            if (IS(c, C_TCHAR))
                break;
            __attribute__((fallthrough));
        case S_EXT_QEND:
            dec->state = after_ext(c);
            if (dec->state == S_ERROR)
                return fail(dec, pos, consumed, "invalid chunk extension value");
            break;
        case S_EXT_QUOTED:
            if (c == '"')
                dec->state = S_EXT_QEND;
            else if (c == '\\')
                dec->state = S_EXT_QPAIR;
            else if (!IS(c, C_QDTEXT))
                return fail(dec, pos, consumed, "invalid quoted chunk extension value");
            break;
        case S_EXT_QPAIR:
            if (!IS(c, C_VALUE))
                return fail(dec, pos, consumed, "invalid quoted-pair in chunk extension");
            dec->state = S_EXT_QUOTED;
            break;
        case S_SIZE_LF:
            if (c != '\n')
                return fail(dec, pos, consumed, "bare CR in chunk size line");
            dec->line_bytes = 0;
            dec->digits = 0;
            dec->state = dec->remaining ? S_DATA : S_TRAILER0;
            break;
        case S_DATA_CR:
            if (c != '\r')
                return fail(dec, pos, consumed, "missing CRLF after chunk data");
            dec->state = S_DATA_LF;
            break;
        case S_DATA_LF:
            if (c != '\n')
                return fail(dec, pos, consumed, "missing CRLF after chunk data");
            dec->state = S_SIZE;
            break;
        case S_TRAILER0:
            if (c == '\r')
                dec->state = S_END_LF;
            else if (IS(c, C_TCHAR))
                dec->state = S_TRAILER_NAME;
            else
                return fail(dec, pos, consumed, "invalid trailer field");
            break;
        case S_TRAILER_NAME:
            if (c == ':')
                dec->state = S_TRAILER_VALUE;
            else if (!IS(c, C_TCHAR))
                return fail(dec, pos, consumed, "invalid trailer field name");
            break;
        case S_TRAILER_VALUE:
            if (c == '\r')
                dec->state = S_TRAILER_LF;
            else if (!IS(c, C_VALUE))
                return fail(dec, pos, consumed, "invalid trailer field value");
            break;
        case S_TRAILER_LF:
            if (c != '\n')
                return fail(dec, pos, consumed, "bare CR in trailer section");
            dec->state = S_TRAILER0;
            break;
        case S_END_LF:
            if (c != '\n')
                return fail(dec, pos, consumed, "bare CR after last chunk");
            dec->state = S_DONE;
            *consumed = pos;
            return RLB_CHUNKED_DONE;
        default:
            return fail(dec, pos, consumed, "decoder state corrupt");
        }
    }
    *consumed = pos;
    return dec->state == S_DONE ? RLB_CHUNKED_DONE : RLB_CHUNKED_MORE;
}
