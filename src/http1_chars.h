/* Character classes of RFC 9110/9112, private to the HTTP/1 parsers. */
#ifndef RINGLB_HTTP1_CHARS_H
#define RINGLB_HTTP1_CHARS_H

#include <stdint.h>

enum {
    C_TCHAR = 0x01,  /* token characters, RFC 9110 5.6.2 */
    C_VCHAR = 0x02,  /* 0x21-0x7E: request-target */
    C_VALUE = 0x04,  /* field-value and reason-phrase bytes: HTAB, SP, VCHAR, obs-text */
    C_HOST = 0x08,   /* reg-name, IPv4, [IPv6] and ":port" */
    C_HEX = 0x10,
    C_QDTEXT = 0x20, /* inside a quoted-string */
    C_DIGIT = 0x40,
};

/* Generated from the classes above; indexed by byte value. */
extern const uint8_t rlb_http1_cls[256];

#define IS(c, k) (rlb_http1_cls[(uint8_t)(c)] & (k))
#define IS_OWS(c) ((c) == ' ' || (c) == '\t')

#endif
