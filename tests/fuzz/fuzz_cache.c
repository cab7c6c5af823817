/* libFuzzer harness for the pure rules of the HTTP cache (src/cache_policy.c): Cache-Control parsing
 * (whole, split into two field lines, repeated), delta-seconds, HTTP dates (parse, format, parse again),
 * freshness and storability on what was parsed, cache keys in the three query modes and in small rooms,
 * and Vary values over a header array cut from the input. No crash, no access outside the buffers
 * (every output buffer is an exactly sized heap block), lengths within bounds, results consistent. */
#include <ringlb/cache_policy.h>

#include <stdlib.h>
#include <string.h>

#include "fuzz.h"

static void check_delta_field(int64_t v)
{
    CHECK(v == RLB_CC_ABSENT || (v >= 0 && v <= RLB_DELTA_MAX));
}

static void check_cc(const struct rlb_cc *cc)
{
    CHECK((cc->flags & ~(uint32_t)0x1fff) == 0);
    check_delta_field(cc->max_age);
    check_delta_field(cc->s_maxage);
    check_delta_field(cc->max_stale);
    check_delta_field(cc->min_fresh);
    check_delta_field(cc->stale_while_revalidate);
    check_delta_field(cc->stale_if_error);
}

static bool cc_equal(const struct rlb_cc *a, const struct rlb_cc *b)
{
    return a->flags == b->flags && a->max_age == b->max_age && a->s_maxage == b->s_maxage &&
           a->max_stale == b->max_stale && a->min_fresh == b->min_fresh &&
           a->stale_while_revalidate == b->stale_while_revalidate && a->stale_if_error == b->stale_if_error;
}

static uint64_t rd64(const uint8_t *d, size_t n, size_t at)
{
    uint64_t v = 0;
    for (size_t i = 0; i < 8; i++)
        v = v << 8 | (n ? d[(at + i) % n] : 0);
    return v;
}

/* Freshness, usability and storability on a parsed Cache-Control, with times taken from the input. */
static void policy(const struct rlb_cc *cc, const uint8_t *d, size_t n)
{
    uint64_t r = rd64(d, n, 1);
    struct rlb_cache_times t = {
        .request_time = 1000000000 + (int64_t)(r & 0xffff),
        .response_time = 1000000000 + (int64_t)((r >> 16) & 0xffff),
        .date = 1000000000 + (int64_t)((r >> 32) & 0xffff) - 0x8000,
        .age = (int64_t)((r >> 48) & 0xff) * 1000,
        .expires = (r & 0x100000000000000ull) ? -1 : 1000000000 + (int64_t)((r >> 20) & 0xfffff) - 0x80000,
        .last_modified = (r & 0x200000000000000ull) ? -1 : 999000000 + (int64_t)((r >> 8) & 0xffffff),
    };
    if (r & 0x400000000000000ull)
        t.expires = 0; /* invalid */
    int64_t init = rlb_cache_initial_age(&t);
    CHECK(init >= 0 && init <= RLB_DELTA_MAX);
    CHECK(init >= (t.response_time > t.date ? t.response_time - t.date : 0));
    CHECK(init >= t.age);
    int64_t now = t.response_time + (int64_t)(r >> 40 & 0xfff);
    int64_t age = rlb_cache_current_age(init, t.response_time, now);
    CHECK(age >= init);

    struct rlb_cache_heuristic heur = {.enabled = (r >> 60) & 1, .percent = (uint32_t)(r >> 61) * 5, .max_s = 86400};
    int status = 100 + (n ? d[0] % 5 : 1) * 100 + (n > 1 ? d[1] % 16 : 0);
    int64_t life = rlb_cache_freshness_lifetime(cc, &t, status, &heur);
    CHECK(life >= 0);
    /* An unusable lifetime directive is stale, never guessed from the next rule down. */
    if (cc->flags & RLB_CC_BAD_S_MAXAGE)
        CHECK(life == 0);
    else if (cc->s_maxage != RLB_CC_ABSENT)
        CHECK(life == cc->s_maxage);
    else if (cc->flags & RLB_CC_BAD_MAX_AGE)
        CHECK(life == 0);
    else if (cc->max_age != RLB_CC_ABSENT)
        CHECK(life == cc->max_age);
    else if (t.expires >= 0)
        CHECK(life == (t.expires > t.date ? t.expires - t.date : 0));
    else if (!heur.enabled || t.last_modified < 0)
        CHECK(life == 0);
    else
        CHECK(life <= heur.max_s);
    /* No heuristic at all: never more than what explicit information gives. */
    int64_t plain = rlb_cache_freshness_lifetime(cc, &t, status, NULL);
    CHECK(plain >= 0 && plain <= life);

    /* The same Cache-Control, seen as the request's and as the response's. */
    struct rlb_cache_freshness f = {.age = age, .lifetime = life, .resp_flags = cc->flags,
                                    .swr = cc->stale_while_revalidate};
    enum rlb_cache_use u = rlb_cache_usable(&f, cc);
    CHECK(u >= RLB_USE_FRESH && u <= RLB_USE_VALIDATE);
    if (cc->flags & RLB_CC_NO_CACHE)
        CHECK(u == RLB_USE_VALIDATE);
    if (u == RLB_USE_FRESH)
        CHECK(life > age);
    if (u == RLB_USE_STALE_OK || u == RLB_USE_SWR)
        CHECK(life <= age && !(cc->flags & (RLB_CC_MUST_REVALIDATE | RLB_CC_PROXY_REVALIDATE)));
    struct rlb_cc none;
    rlb_cc_init(&none);
    enum rlb_cache_use u2 = rlb_cache_usable(&f, &none);
    CHECK(u2 == RLB_USE_FRESH || u2 == RLB_USE_SWR || u2 == RLB_USE_VALIDATE);
    bool sie = rlb_cache_stale_if_error(&f, cc, cc->stale_if_error);
    if (sie)
        CHECK(!(cc->flags & (RLB_CC_MUST_REVALIDATE | RLB_CC_PROXY_REVALIDATE | RLB_CC_NO_CACHE)));

    struct rlb_cache_store_ctx s = {
        .method = (uint8_t)(r >> 56) % 10,
        .status = status,
        .req_cc = &none,
        .resp_cc = cc,
        .authorization = (r >> 3) & 1,
        .set_cookie = (r >> 4) & 1,
        .store_set_cookie = (r >> 5) & 1,
        .vary_star = (r >> 6) & 1,
        .has_expires = t.expires >= 0,
        .has_validator = (r >> 7) & 1,
        .lifetime = life,
    };
    const char *why = rlb_cache_unstorable(&s);
    CHECK(!why || why[0]);
    if (s.method != RLB_METHOD_GET || s.vary_star || (s.set_cookie && !s.store_set_cookie) ||
        (cc->flags & RLB_CC_PRIVATE) || status < 200 || status == 206 || status == 304 ||
        ((cc->flags & RLB_CC_MUST_UNDERSTAND) && !rlb_cache_status_understood(status)))
        CHECK(why != NULL);
    if ((cc->flags & RLB_CC_NO_STORE) && !(cc->flags & RLB_CC_MUST_UNDERSTAND))
        CHECK(why != NULL);
    if (!why)
        CHECK(life > 0 || s.has_validator || cc->stale_if_error > 0 || cc->stale_while_revalidate > 0);
}

static void cache_control(const uint8_t *d, size_t n)
{
    const char *s = (const char *)d;
    struct rlb_cc whole, again, twice, split, empty;
    rlb_cc_init(&whole);
    rlb_cc_parse(&whole, s, n);
    check_cc(&whole);
    /* Deterministic. */
    rlb_cc_init(&again);
    rlb_cc_parse(&again, s, n);
    CHECK(cc_equal(&whole, &again));
    /* The same field line twice (a repeated header) changes nothing: repeats keep their first values, and
     * any conflict the second copy could raise is already raised by the first. */
    rlb_cc_init(&twice);
    rlb_cc_parse(&twice, s, n);
    rlb_cc_parse(&twice, s, n);
    CHECK(cc_equal(&whole, &twice));
    /* An empty field line adds nothing. */
    rlb_cc_init(&empty);
    rlb_cc_parse(&empty, s, n);
    rlb_cc_parse(&empty, s, 0);
    CHECK(cc_equal(&whole, &empty));
    /* Split into two field lines at a point the input chooses: whatever comes out is in range. */
    size_t k = n ? d[n - 1] % (n + 1) : 0;
    rlb_cc_init(&split);
    rlb_cc_parse(&split, s, k);
    rlb_cc_parse(&split, s + k, n - k);
    check_cc(&split);
    /* Without quoted strings, splitting at a comma is the same as one line (RFC 9110 5.3). */
    const char *comma = memchr(s + k, ',', n - k);
    if (comma && !memchr(s, '"', n)) {
        struct rlb_cc at_comma;
        rlb_cc_init(&at_comma);
        size_t at = (size_t)(comma - s);
        rlb_cc_parse(&at_comma, s, at);
        rlb_cc_parse(&at_comma, comma + 1, n - at - 1);
        CHECK(cc_equal(&whole, &at_comma));
    }
    policy(&whole, d, n);
    policy(&split, d, n);
}

static void delta_seconds(const uint8_t *d, size_t n)
{
    int64_t v = rlb_delta_seconds((const char *)d, n);
    bool digits = n > 0;
    for (size_t i = 0; i < n; i++)
        digits &= d[i] >= '0' && d[i] <= '9';
    if (!digits) {
        CHECK(v == -1);
        return;
    }
    CHECK(v >= 0 && v <= RLB_DELTA_MAX);
    /* The value, or 2^31 when it does not fit. */
    int64_t want = 0;
    for (size_t i = 0; i < n; i++) {
        want = want * 10 + (d[i] - '0');
        if (want >= RLB_DELTA_MAX) {
            want = RLB_DELTA_MAX;
            break;
        }
    }
    CHECK(v == want);
}

static void dates(const uint8_t *d, size_t n)
{
    int64_t t = rlb_http_date_parse((const char *)d, n);
    CHECK(t >= -1);
    char out[30];
    if (t >= 0) {
        CHECK(t <= 253402300799LL); /* four-digit years */
        rlb_http_date_format(t, out);
        CHECK(out[29] == 0 && strlen(out) == 29 && memcmp(out + 25, " GMT", 4) == 0);
        char *copy = malloc(29);
        CHECK(copy);
        memcpy(copy, out, 29);
        CHECK(rlb_http_date_parse(copy, 29) == t);
        free(copy);
    }
    /* Any time of 1970..9999 formats to a date that parses back to it. */
    int64_t u = (int64_t)(rd64(d, n, 0) % 253402300800ULL);
    rlb_http_date_format(u, out);
    CHECK(strlen(out) == 29);
    CHECK(rlb_http_date_parse(out, 29) == u);
}

/* The non-empty '&'-separated parameters of a query, sorted, joined by '&': the canonical multiset. */
static size_t params_sorted(const char *q, size_t n, char *out)
{
    struct p {
        const char *s;
        size_t n;
    } *v = malloc((n / 2 + 2) * sizeof(*v));
    CHECK(v);
    size_t np = 0, start = 0;
    for (size_t i = 0; i <= n; i++)
        if (i == n || q[i] == '&') {
            if (i > start)
                v[np++] = (struct p){q + start, i - start};
            start = i + 1;
        }
    /* insertion sort, memcmp then length, like the key builder's */
    for (size_t i = 1; i < np; i++)
        for (size_t j = i; j > 0; j--) {
            size_t m = v[j - 1].n < v[j].n ? v[j - 1].n : v[j].n;
            int c = memcmp(v[j - 1].s, v[j].s, m);
            if (c < 0 || (c == 0 && v[j - 1].n <= v[j].n))
                break;
            struct p tmp = v[j - 1];
            v[j - 1] = v[j];
            v[j] = tmp;
        }
    size_t o = 0;
    for (size_t i = 0; i < np; i++) {
        if (i)
            out[o++] = '&';
        memcpy(out + o, v[i].s, v[i].n);
        o += v[i].n;
    }
    free(v);
    return o;
}

static void keys(const uint8_t *d, size_t n)
{
    /* host = up to the first space, target = the rest */
    const char *s = (const char *)d;
    const char *sp = memchr(s, ' ', n);
    struct rlb_str host = {s, sp ? (size_t)(sp - s) : 0};
    struct rlb_str target = sp ? (struct rlb_str){sp + 1, n - host.len - 1} : (struct rlb_str){s, n};
    size_t big_cap = host.len + target.len + 2;
    char *big[3];
    size_t len[3];
    bool with_host = n ? d[0] & 1 : true;
    for (int q = 0; q < 3; q++) {
        big[q] = malloc(big_cap);
        CHECK(big[q]);
        len[q] = rlb_cache_key_build(big[q], big_cap, with_host, (enum rlb_cache_query)q, host, target);
        CHECK(len[q] <= big_cap);
    }
    size_t full = len[RLB_CACHE_QUERY_FULL], sorted = len[RLB_CACHE_QUERY_SORTED], ign = len[RLB_CACHE_QUERY_IGNORE];
    /* Room for everything: full and ignore always fit. */
    CHECK(full > 0 && ign > 0);
    CHECK(full == (with_host ? host.len : 0) + 1 + target.len ||
          (with_host && host.len >= 3 && full == host.len - 3 + 1 + target.len));
    /* All three share "host path"; ignore is exactly that. */
    CHECK(ign <= full && memcmp(big[0], big[2], ign) == 0);
    const char *qm = memchr(target.ptr, '?', target.len);
    CHECK(qm ? full > ign && big[0][ign] == '?' : full == ign);
    /* Sorted: the same non-empty parameters, sorted; refused only past 64 of them (the request then
     * bypasses the cache). */
    size_t nparams = 0;
    if (qm)
        for (const char *x = qm + 1, *qe = target.ptr + target.len; x < qe; x++)
            nparams += *x != '&' && (x + 1 == qe || x[1] == '&');
    CHECK(sorted > 0 || nparams > 64);
    if (sorted) {
        CHECK(sorted <= full && sorted >= ign && memcmp(big[1], big[2], ign) == 0);
        if (qm) {
            size_t qlen = target.len - (size_t)(qm + 1 - target.ptr);
            char *canon = malloc(qlen + 1);
            CHECK(canon);
            size_t cl = params_sorted(qm + 1, qlen, canon);
            if (cl == 0) {
                CHECK(sorted == ign);
            } else {
                CHECK(sorted == ign + 1 + cl && big[1][ign] == '?');
                CHECK(memcmp(big[1] + ign + 1, canon, cl) == 0);
            }
            free(canon);
        } else {
            CHECK(sorted == ign);
        }
    }
    /* Small rooms: refused (0) or the very same key; never a write past the room (exact heap blocks). */
    size_t caps[3] = {n ? d[0] % 8 : 0, n ? d[n / 2] % 64 : 1, full > 0 ? full - 1 : 0};
    for (int q = 0; q < 3; q++)
        for (int c = 0; c < 3; c++) {
            size_t cap = caps[c];
            char *small = malloc(cap ? cap : 1);
            CHECK(small);
            size_t l = rlb_cache_key_build(small, cap, with_host, (enum rlb_cache_query)q, host, target);
            CHECK(l <= cap);
            if (l)
                CHECK(l == len[q] && memcmp(small, big[q], l) == 0);
            else if (len[q] && len[q] <= cap && !(with_host && host.len > cap))
                CHECK(0); /* it fit, yet was refused */
            free(small);
        }
    for (int q = 0; q < 3; q++)
        free(big[q]);
}

#define MAXH 16

static bool ows(char c)
{
    return c == ' ' || c == '\t';
}

static void vary(const uint8_t *d, size_t n)
{
    /* First line: the names. Each further line "name:value" is a header (no colon: a name with an empty value). */
    const char *s = (const char *)d;
    const char *nl = memchr(s, '\n', n);
    struct rlb_str names = {s, nl ? (size_t)(nl - s) : n};
    struct rlb_http_header h[MAXH];
    uint32_t nh = 0;
    size_t sumv = 0;
    const char *p = nl ? nl + 1 : s + n, *end = s + n;
    while (p < end && nh < MAXH) {
        const char *e = memchr(p, '\n', (size_t)(end - p));
        if (!e)
            e = end;
        const char *colon = memchr(p, ':', (size_t)(e - p));
        memset(&h[nh], 0, sizeof(h[nh]));
        h[nh].name = p;
        h[nh].name_len = (uint32_t)((colon ? colon : e) - p);
        h[nh].value = colon ? colon + 1 : e;
        h[nh].value_len = (uint32_t)(e - h[nh].value);
        sumv += h[nh].value_len + 2;
        nh++;
        p = e + 1;
    }
    /* The names as the function reads them. */
    size_t ntok = 0;
    bool star = false;
    for (size_t i = 0; i < names.len;) {
        while (i < names.len && (ows(names.ptr[i]) || names.ptr[i] == ','))
            i++;
        size_t st = i;
        while (i < names.len && names.ptr[i] != ',' && !ows(names.ptr[i]))
            i++;
        if (i > st) {
            ntok++;
            star |= i - st == 1 && names.ptr[st] == '*';
        }
    }
    size_t bound = ntok * (sumv + 2) + 1;
    if (bound > (1u << 18))
        return;
    char *big = malloc(bound);
    CHECK(big);
    int r = rlb_cache_vary_values(big, bound, names, h, nh);
    if (star) {
        CHECK(r == -1);
    } else {
        CHECK(r >= 0 && (size_t)r <= bound);
        /* One line per name: values (from lines without '\n') never hold one. */
        size_t lines = 0;
        for (int i = 0; i < r; i++)
            lines += big[i] == '\n';
        CHECK(lines == ntok);
        CHECK(r == 0 || big[r - 1] == '\n');
        /* Deterministic, and insensitive to the case of the names. */
        char *lc = malloc(names.len ? names.len : 1);
        CHECK(lc);
        for (size_t i = 0; i < names.len; i++)
            lc[i] = (names.ptr[i] >= 'a' && names.ptr[i] <= 'z') ? (char)(names.ptr[i] - 32) : names.ptr[i];
        char *big2 = malloc(bound);
        CHECK(big2);
        int r2 = rlb_cache_vary_values(big2, bound, (struct rlb_str){lc, names.len}, h, nh);
        CHECK(r2 == r && memcmp(big, big2, (size_t)r) == 0);
        free(big2);
        free(lc);
    }
    /* Small rooms: -1 or the same bytes, nothing written past the room. */
    size_t caps[2] = {n ? d[0] % 16 : 0, r > 0 ? (size_t)r + 1 : 0};
    for (int c = 0; c < 2; c++) {
        char *small = malloc(caps[c] ? caps[c] : 1);
        CHECK(small);
        int rs = rlb_cache_vary_values(small, caps[c], names, h, nh);
        CHECK(rs == -1 || (rs >= 0 && (size_t)rs <= caps[c]));
        if (rs >= 0)
            CHECK(rs == r && memcmp(small, big, (size_t)rs) == 0);
        else if (c == 1 && r >= 0)
            CHECK(0); /* one byte to spare, yet refused */
        free(small);
    }
    free(big);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cache_control(data, size);
    delta_seconds(data, size);
    dates(data, size);
    keys(data, size);
    vary(data, size);
    return 0;
}
