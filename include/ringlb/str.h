/* Byte-string helpers for struct rlb_str views. */
#ifndef RINGLB_STR_H
#define RINGLB_STR_H

#include <ringlb/api.h>
#include <string.h>

static inline char rlb_lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c | 0x20) : c;
}

/* Case-insensitive equality; <b> must already be lower case (header names we
 * compare against are literals), which halves the work. */
static inline bool rlb_str_ieq_lit(const char *a, size_t alen, const char *b, size_t blen)
{
    if (alen != blen)
        return false;
    for (size_t i = 0; i < alen; i++)
        if (rlb_lower(a[i]) != b[i])
            return false;
    return true;
}

static inline bool rlb_str_ieq(const char *a, size_t alen, const char *b, size_t blen)
{
    if (alen != blen)
        return false;
    for (size_t i = 0; i < alen; i++)
        if (rlb_lower(a[i]) != rlb_lower(b[i]))
            return false;
    return true;
}

static inline bool rlb_str_has_prefix(const char *s, size_t slen, const char *p, size_t plen)
{
    return slen >= plen && memcmp(s, p, plen) == 0;
}

#endif
