/* The HTTP cache: the RFC 9111 / RFC 5861 rules of cache_policy.c (Cache-Control parsing, delta-seconds,
 * HTTP dates, age and freshness arithmetic, storability, usability, stale-if-error, keys, Vary values),
 * table-driven, then the per-worker store of cache.c (LRU under a budget, Vary variants, fetches in
 * progress, abandon, pins, invalidation, the purge log). Inputs are copied to exactly sized heap blocks
 * so that ASan catches any read past their end. */
#include <criterion/criterion.h>

#include <ringlb/cache.h>
#include <ringlb/cache_policy.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ABS RLB_CC_ABSENT

/* An exactly sized heap copy of <s> (never NUL-terminated), for ASan. */
static char *heap_copy(const char *s, size_t n)
{
    char *p = malloc(n ? n : 1);
    cr_assert_not_null(p);
    memcpy(p, s, n);
    return p;
}

static void cc_add(struct rlb_cc *cc, const char *s)
{
    size_t n = strlen(s);
    char *p = heap_copy(s, n);
    rlb_cc_parse(cc, p, n);
    free(p);
}

static struct rlb_cc cc_of(const char *s)
{
    struct rlb_cc cc;
    rlb_cc_init(&cc);
    if (s)
        cc_add(&cc, s);
    return cc;
}

static int64_t delta(const char *s)
{
    size_t n = strlen(s);
    char *p = heap_copy(s, n);
    int64_t v = rlb_delta_seconds(p, n);
    free(p);
    return v;
}

static int64_t date(const char *s)
{
    size_t n = strlen(s);
    char *p = heap_copy(s, n);
    int64_t v = rlb_http_date_parse(p, n);
    free(p);
    return v;
}

/* ---------------------------------------------------------------------------------------------------- */
/* Cache-Control directives (RFC 9111 5.2, RFC 5861) */

struct cc_case {
    const char *in;
    uint32_t flags;
    int64_t max_age, s_maxage, max_stale, min_fresh, swr, sie;
};

static const struct cc_case cc_cases[] = {
    /* Every directive of RFC 9111 5.2, request and response side. */
    {"max-age=60", 0, 60, ABS, ABS, ABS, ABS, ABS},
    {"max-age=0", 0, 0, ABS, ABS, ABS, ABS, ABS},
    {"s-maxage=120", 0, ABS, 120, ABS, ABS, ABS, ABS},
    {"no-store", RLB_CC_NO_STORE, ABS, ABS, ABS, ABS, ABS, ABS},
    {"no-cache", RLB_CC_NO_CACHE, ABS, ABS, ABS, ABS, ABS, ABS},
    {"no-cache=\"Set-Cookie, X-Foo\"", RLB_CC_NO_CACHE, ABS, ABS, ABS, ABS, ABS, ABS},
    {"private", RLB_CC_PRIVATE, ABS, ABS, ABS, ABS, ABS, ABS},
    {"private=\"Set-Cookie\"", RLB_CC_PRIVATE, ABS, ABS, ABS, ABS, ABS, ABS},
    {"public", RLB_CC_PUBLIC, ABS, ABS, ABS, ABS, ABS, ABS},
    {"must-revalidate", RLB_CC_MUST_REVALIDATE, ABS, ABS, ABS, ABS, ABS, ABS},
    {"proxy-revalidate", RLB_CC_PROXY_REVALIDATE, ABS, ABS, ABS, ABS, ABS, ABS},
    {"must-understand", RLB_CC_MUST_UNDERSTAND, ABS, ABS, ABS, ABS, ABS, ABS},
    {"only-if-cached", RLB_CC_ONLY_IF_CACHED, ABS, ABS, ABS, ABS, ABS, ABS},
    {"max-stale", RLB_CC_MAX_STALE_ANY, ABS, ABS, ABS, ABS, ABS, ABS},
    {"max-stale=30", 0, ABS, ABS, 30, ABS, ABS, ABS},
    {"min-fresh=10", 0, ABS, ABS, ABS, 10, ABS, ABS},
    {"no-transform", RLB_CC_NO_TRANSFORM, ABS, ABS, ABS, ABS, ABS, ABS},
    {"immutable", RLB_CC_IMMUTABLE, ABS, ABS, ABS, ABS, ABS, ABS},
    /* RFC 5861 */
    {"stale-while-revalidate=30", 0, ABS, ABS, ABS, ABS, 30, ABS},
    {"stale-if-error=600", 0, ABS, ABS, ABS, ABS, ABS, 600},
    {"max-age=60, stale-while-revalidate=30, stale-if-error=86400", 0, 60, ABS, ABS, ABS, 30, 86400},
    /* Directive names are case-insensitive (RFC 9111 5.2). */
    {"MAX-AGE=5", 0, 5, ABS, ABS, ABS, ABS, ABS},
    {"Max-Age=5, S-MaxAge=7", 0, 5, 7, ABS, ABS, ABS, ABS},
    {"No-Store, NO-CACHE, Private, PUBLIC", RLB_CC_NO_STORE | RLB_CC_NO_CACHE | RLB_CC_PRIVATE | RLB_CC_PUBLIC, ABS,
     ABS, ABS, ABS, ABS, ABS},
    {"Must-Revalidate, Proxy-Revalidate, Must-Understand",
     RLB_CC_MUST_REVALIDATE | RLB_CC_PROXY_REVALIDATE | RLB_CC_MUST_UNDERSTAND, ABS, ABS, ABS, ABS, ABS, ABS},
    {"ONLY-IF-CACHED, No-Transform, Immutable, MAX-STALE",
     RLB_CC_ONLY_IF_CACHED | RLB_CC_NO_TRANSFORM | RLB_CC_IMMUTABLE | RLB_CC_MAX_STALE_ANY, ABS, ABS, ABS, ABS, ABS,
     ABS},
    {"Stale-While-Revalidate=1, Stale-If-Error=2, Min-Fresh=3, Max-Stale=4", 0, ABS, ABS, 4, 3, 1, 2},
    /* Quoted-string arguments are accepted like tokens. */
    {"max-age=\"60\"", 0, 60, ABS, ABS, ABS, ABS, ABS},
    {"s-maxage=\"7\", max-stale=\"9\", min-fresh=\"3\"", 0, ABS, 7, 9, 3, ABS, ABS},
    {"stale-while-revalidate=\"30\", stale-if-error=\"40\"", 0, ABS, ABS, ABS, ABS, 30, 40},
    /* Whitespace and empty list elements (RFC 9110 5.6.1). */
    {"  max-age=5  ,  no-cache  ", RLB_CC_NO_CACHE, 5, ABS, ABS, ABS, ABS, ABS},
    {"\tpublic,\tmax-age=5\t", RLB_CC_PUBLIC, 5, ABS, ABS, ABS, ABS, ABS},
    {"public,max-age=5", RLB_CC_PUBLIC, 5, ABS, ABS, ABS, ABS, ABS},
    {",, ,public ,, max-age=5,,", RLB_CC_PUBLIC, 5, ABS, ABS, ABS, ABS, ABS},
    {"", 0, ABS, ABS, ABS, ABS, ABS, ABS},
    {" \t , ", 0, ABS, ABS, ABS, ABS, ABS, ABS},
    /* Malformed max-age: unusable, the response is stale (BAD_MAX_AGE), other directives unaffected. */
    {"max-age=abc", RLB_CC_BAD_MAX_AGE, ABS, ABS, ABS, ABS, ABS, ABS},
    {"max-age=-1", RLB_CC_BAD_MAX_AGE, ABS, ABS, ABS, ABS, ABS, ABS},
    {"max-age=", RLB_CC_BAD_MAX_AGE, ABS, ABS, ABS, ABS, ABS, ABS},
    {"max-age", RLB_CC_BAD_MAX_AGE, ABS, ABS, ABS, ABS, ABS, ABS},
    {"max-age=\"60", RLB_CC_BAD_MAX_AGE, ABS, ABS, ABS, ABS, ABS, ABS},
    {"max-age=\"\"", RLB_CC_BAD_MAX_AGE, ABS, ABS, ABS, ABS, ABS, ABS},
    {"max-age=5x", RLB_CC_BAD_MAX_AGE, ABS, ABS, ABS, ABS, ABS, ABS},
    {"max-age=1.5", RLB_CC_BAD_MAX_AGE, ABS, ABS, ABS, ABS, ABS, ABS},
    {"max-age=+5", RLB_CC_BAD_MAX_AGE, ABS, ABS, ABS, ABS, ABS, ABS},
    {"max-age=5 6", RLB_CC_BAD_MAX_AGE, ABS, ABS, ABS, ABS, ABS, ABS},
    {"max-age=abc, public", RLB_CC_BAD_MAX_AGE | RLB_CC_PUBLIC, ABS, ABS, ABS, ABS, ABS, ABS},
    {"s-maxage=x", RLB_CC_BAD_S_MAXAGE, ABS, ABS, ABS, ABS, ABS, ABS},
    {"s-maxage", RLB_CC_BAD_S_MAXAGE, ABS, ABS, ABS, ABS, ABS, ABS},
    /* Malformed values of the other delta-seconds directives are ignored. */
    {"min-fresh=x, stale-if-error=, stale-while-revalidate", 0, ABS, ABS, ABS, ABS, ABS, ABS},
    {"max-stale=x", 0, ABS, ABS, ABS, ABS, ABS, ABS},
    /* Duplicates: the same value is fine; two max-age values make the response stale; others keep the first. */
    {"max-age=5, max-age=5", 0, 5, ABS, ABS, ABS, ABS, ABS},
    {"max-age=5, max-age=\"5\"", 0, 5, ABS, ABS, ABS, ABS, ABS},
    {"max-age=5, max-age=6", RLB_CC_BAD_MAX_AGE, 5, ABS, ABS, ABS, ABS, ABS},
    {"s-maxage=5, s-maxage=6", RLB_CC_BAD_S_MAXAGE, ABS, 5, ABS, ABS, ABS, ABS},
    {"min-fresh=5, min-fresh=9", 0, ABS, ABS, ABS, 5, ABS, ABS},
    {"max-stale=5, max-stale=9", 0, ABS, ABS, 5, ABS, ABS, ABS},
    {"stale-if-error=5, stale-if-error=9", 0, ABS, ABS, ABS, ABS, ABS, 5},
    {"no-store, no-store", RLB_CC_NO_STORE, ABS, ABS, ABS, ABS, ABS, ABS},
    /* Unknown directives are ignored (RFC 9111 5.2.3), quoted commas included. */
    {"foo=\"a,b\", max-age=5", 0, 5, ABS, ABS, ABS, ABS, ABS},
    {"foo=\"a, no-store, b\", max-age=5", 0, 5, ABS, ABS, ABS, ABS, ABS},
    {"foo=\"a\\\",b\", max-age=5", 0, 5, ABS, ABS, ABS, ABS, ABS},
    {"community=\"UCI\", bar, baz=qux, max-age=5", 0, 5, ABS, ABS, ABS, ABS, ABS},
    {"max-ages=5, no-stored, max, private-ish", 0, ABS, ABS, ABS, ABS, ABS, ABS},
    {"foo bar, max-age=5", 0, 5, ABS, ABS, ABS, ABS, ABS},
    /* delta-seconds too large to represent: 2^31 (RFC 9111 1.2.2). */
    {"max-age=99999999999999999999", 0, RLB_DELTA_MAX, ABS, ABS, ABS, ABS, ABS},
    {"max-age=2147483648", 0, RLB_DELTA_MAX, ABS, ABS, ABS, ABS, ABS},
    {"max-age=2147483647", 0, 2147483647, ABS, ABS, ABS, ABS, ABS},
    {"s-maxage=4294967296, max-stale=18446744073709551617", 0, ABS, RLB_DELTA_MAX, RLB_DELTA_MAX, ABS, ABS, ABS},
    /* A realistic mix. */
    {"public, max-age=60, s-maxage=120, must-revalidate", RLB_CC_PUBLIC | RLB_CC_MUST_REVALIDATE, 60, 120, ABS, ABS,
     ABS, ABS},
    {"private, no-cache, no-store, max-age=0", RLB_CC_PRIVATE | RLB_CC_NO_CACHE | RLB_CC_NO_STORE, 0, ABS, ABS, ABS,
     ABS, ABS},
};

static void expect_cc(const struct rlb_cc *cc, const struct cc_case *k, const char *what)
{
    cr_expect_eq(cc->flags, k->flags, "%s [%s]: flags %#x, want %#x", what, k->in, cc->flags, k->flags);
    cr_expect_eq(cc->max_age, k->max_age, "%s [%s]: max_age %lld", what, k->in, (long long)cc->max_age);
    cr_expect_eq(cc->s_maxage, k->s_maxage, "%s [%s]: s_maxage %lld", what, k->in, (long long)cc->s_maxage);
    cr_expect_eq(cc->max_stale, k->max_stale, "%s [%s]: max_stale %lld", what, k->in, (long long)cc->max_stale);
    cr_expect_eq(cc->min_fresh, k->min_fresh, "%s [%s]: min_fresh %lld", what, k->in, (long long)cc->min_fresh);
    cr_expect_eq(cc->stale_while_revalidate, k->swr, "%s [%s]: swr %lld", what, k->in,
                 (long long)cc->stale_while_revalidate);
    cr_expect_eq(cc->stale_if_error, k->sie, "%s [%s]: sie %lld", what, k->in, (long long)cc->stale_if_error);
}

Test(cc, directives_table)
{
    for (size_t i = 0; i < sizeof(cc_cases) / sizeof(cc_cases[0]); i++) {
        struct rlb_cc cc = cc_of(cc_cases[i].in);
        expect_cc(&cc, &cc_cases[i], "one line");
        /* The same field line twice (a repeated header): nothing changes. */
        cc_add(&cc, cc_cases[i].in);
        expect_cc(&cc, &cc_cases[i], "line repeated");
    }
}

Test(cc, init_is_all_absent)
{
    struct rlb_cc cc;
    memset(&cc, 0x5a, sizeof(cc));
    rlb_cc_init(&cc);
    cr_expect_eq(cc.flags, 0);
    cr_expect_eq(cc.max_age, ABS);
    cr_expect_eq(cc.s_maxage, ABS);
    cr_expect_eq(cc.max_stale, ABS);
    cr_expect_eq(cc.min_fresh, ABS);
    cr_expect_eq(cc.stale_while_revalidate, ABS);
    cr_expect_eq(cc.stale_if_error, ABS);
}

Test(cc, several_field_lines_combine)
{
    struct rlb_cc cc = cc_of("max-age=5");
    cc_add(&cc, "no-cache, public");
    cr_expect_eq(cc.max_age, 5);
    cr_expect_eq(cc.flags, RLB_CC_NO_CACHE | RLB_CC_PUBLIC);

    /* The same max-age in two lines: fine. */
    cc = cc_of("max-age=5");
    cc_add(&cc, "max-age=\"5\"");
    cr_expect_eq(cc.max_age, 5);
    cr_expect_eq(cc.flags, 0);

    /* Conflicting max-age across lines: stale. */
    cc = cc_of("max-age=5");
    cc_add(&cc, "max-age=50");
    cr_expect(cc.flags & RLB_CC_BAD_MAX_AGE);

    /* A bad max-age in one line poisons the other's good one. */
    cc = cc_of("max-age=oops");
    cc_add(&cc, "max-age=50");
    cr_expect(cc.flags & RLB_CC_BAD_MAX_AGE);

    /* min-fresh in two lines keeps the first. */
    cc = cc_of("min-fresh=7");
    cc_add(&cc, "min-fresh=1");
    cr_expect_eq(cc.min_fresh, 7);
    cr_expect_eq(cc.flags, 0);

    /* A directive is not split across field lines: "max-" + "age=5" is two unknown names. */
    cc = cc_of("max-");
    cc_add(&cc, "age=5");
    cr_expect_eq(cc.max_age, ABS);
    cr_expect_eq(cc.flags, 0);

    /* An empty line adds nothing. */
    cc = cc_of("no-store");
    cc_add(&cc, "");
    cr_expect_eq(cc.flags, RLB_CC_NO_STORE);
}

Test(cc, unterminated_quote_swallows_the_rest)
{
    /* Everything after an unterminated quote belongs to the quoted string: no directive comes out of it. */
    struct rlb_cc cc = cc_of("foo=\"bar, no-store, max-age=5");
    cr_expect_eq(cc.flags, 0);
    cr_expect_eq(cc.max_age, ABS);
    cc = cc_of("public, max-age=\"60, s-maxage=5");
    cr_expect_eq(cc.flags, RLB_CC_PUBLIC | RLB_CC_BAD_MAX_AGE);
    cr_expect_eq(cc.s_maxage, ABS);
}

Test(cc, bad_max_age_gives_lifetime_zero)
{
    static const char *const bad[] = {"max-age=abc", "max-age=-1", "max-age=", "max-age", "max-age=\"60",
                                      "max-age=5, max-age=6"};
    struct rlb_cache_times t = {.request_time = 1000, .response_time = 1000, .date = 1000, .age = 0,
                                .expires = 1000 + 3600, .last_modified = 1};
    struct rlb_cache_heuristic heur = {.enabled = true, .percent = 10, .max_s = 86400};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct rlb_cc cc = cc_of(bad[i]);
        cr_expect(cc.flags & RLB_CC_BAD_MAX_AGE, "%s", bad[i]);
        /* Neither Expires nor the heuristic stand in for an unusable max-age. */
        cr_expect_eq(rlb_cache_freshness_lifetime(&cc, &t, 200, &heur), 0, "%s", bad[i]);
        /* A valid s-maxage still wins for a shared cache. */
        cc_add(&cc, "s-maxage=30");
        cr_expect_eq(rlb_cache_freshness_lifetime(&cc, &t, 200, &heur), 30, "%s", bad[i]);
    }
}

/* ---------------------------------------------------------------------------------------------------- */
/* delta-seconds (RFC 9111 1.2.2) */

Test(cc, delta_seconds)
{
    static const struct {
        const char *in;
        int64_t want;
    } cases[] = {
        {"0", 0},
        {"5", 5},
        {"007", 7},
        {"86400", 86400},
        {"2147483647", 2147483647},
        {"2147483648", RLB_DELTA_MAX},
        {"2147483649", RLB_DELTA_MAX},
        {"9223372036854775807", RLB_DELTA_MAX},
        {"99999999999999999999999999999999999999", RLB_DELTA_MAX},
        {"0000000000000000000000000000000000000001", 1},
        {"", -1},
        {"-1", -1},
        {"+5", -1},
        {" 5", -1},
        {"5 ", -1},
        {"1e3", -1},
        {"0x10", -1},
        {"5\"", -1},
        {"1.0", -1},
        {"99999999999999999999x", -1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        cr_expect_eq(delta(cases[i].in), cases[i].want, "[%s] -> %lld", cases[i].in, (long long)delta(cases[i].in));
}

/* ---------------------------------------------------------------------------------------------------- */
/* HTTP dates (RFC 9110 5.6.7) */

#define NOV_6_1994 784111777LL

Test(date, three_formats)
{
    static const struct {
        const char *in;
        int64_t want;
    } cases[] = {
        {"Sun, 06 Nov 1994 08:49:37 GMT", NOV_6_1994},  /* IMF-fixdate */
        {"Sunday, 06-Nov-94 08:49:37 GMT", NOV_6_1994}, /* obsolete RFC 850 */
        {"Sun Nov  6 08:49:37 1994", NOV_6_1994},       /* obsolete asctime, day padded with a space */
        {"Sun Nov 16 08:49:37 1994", NOV_6_1994 + 10 * 86400},
        {"Thu, 01 Jan 1970 00:00:00 GMT", 0},
        {"Thu, 01 Jan 1970 00:00:01 GMT", 1},
        {"Tue, 29 Feb 2000 00:00:00 GMT", 951782400},
        {"Fri, 31 Dec 9999 23:59:59 GMT", 253402300799LL},
        {"Tue, 19 Jan 2038 03:14:08 GMT", 2147483648LL},
        {"Wednesday, 09-Dec-26 10:00:00 GMT", 1796810400LL},
        {"Thu Jan  1 00:00:00 1970", 0},
        /* OWS around the field value is not part of it. */
        {"  Sun, 06 Nov 1994 08:49:37 GMT \t", NOV_6_1994},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        cr_expect_eq(date(cases[i].in), cases[i].want, "[%s] -> %lld", cases[i].in, (long long)date(cases[i].in));
}

Test(date, invalid)
{
    static const char *const bad[] = {
        "",
        "0",
        "-1",
        "garbage",
        "Sun, 06 Nov 1994 08:49:37 UTC",
        "Sun, 06 Nov 1994 08:49:37",
        "Sun, 06 Nov 1994 08:49:37 GMT junk",
        "Sun, 6 Nov 1994 08:49:37 GMT",
        "Sun, 06 nov 1994 08:49:37 GMT",
        "Sun, 06 Foo 1994 08:49:37 GMT",
        "Sun, 32 Nov 1994 08:49:37 GMT",
        "Sun, 00 Nov 1994 08:49:37 GMT",
        "Sun, 31 Nov 1994 08:49:37 GMT",
        "Thu, 29 Feb 2001 00:00:00 GMT",
        "Sun, 06 Nov 1994 24:00:00 GMT",
        "Sun, 06 Nov 1994 08:60:00 GMT",
        "Sun, 06 Nov 1994 08:49:61 GMT",
        "Sun, 06 Nov 1994 08-49-37 GMT",
        "Sun, 06 Nov 94 08:49:37 GMT",
        "Sun, 06 Nov 1994 8:49:37 GMT",
        "Sun, 0x Nov 1994 08:49:37 GMT",
        "Sunday, 06-Nov-1994 08:49:37 GMT",
        "Sunday, 06 Nov 94 08:49:37 GMT",
        "Sunday, 06-Nov-94 08:49:37 UTC",
        "Sunday, 6-Nov-94 08:49:37 GMT",
        "Sun Nov 6 08:49:37 1994",
        "Sun Nov  6 08:49:37 94",
        "Sun Nov  6 08:49:37 1994 GMT",
        "Sun Nov x6 08:49:37 1994",
        "Sun Nox  6 08:49:37 1994",
        "Sun, 06 Nov 1994 08:49:37 GMT Sun, 06 Nov 1994 08:49:37 GMT",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_expect_eq(date(bad[i]), -1, "[%s] -> %lld", bad[i], (long long)date(bad[i]));
}

Test(date, format_and_round_trip)
{
    char out[30];
    memset(out, 'x', sizeof(out));
    rlb_http_date_format(NOV_6_1994, out);
    cr_expect_str_eq(out, "Sun, 06 Nov 1994 08:49:37 GMT");
    rlb_http_date_format(0, out);
    cr_expect_str_eq(out, "Thu, 01 Jan 1970 00:00:00 GMT");
    rlb_http_date_format(951782400, out);
    cr_expect_str_eq(out, "Tue, 29 Feb 2000 00:00:00 GMT");
    rlb_http_date_format(253402300799LL, out);
    cr_expect_str_eq(out, "Fri, 31 Dec 9999 23:59:59 GMT");

    /* Every second of a leap day, then a sweep over 1970..9999. */
    for (int64_t t = 951782400; t < 951782400 + 86400; t += 1) {
        rlb_http_date_format(t, out);
        cr_assert_eq(strlen(out), 29);
        cr_assert_eq(date(out), t, "%lld -> %s", (long long)t, out);
    }
    for (int64_t t = 0; t <= 253402300799LL; t += 987654321) {
        rlb_http_date_format(t, out);
        cr_assert_eq(date(out), t, "%lld -> %s", (long long)t, out);
    }
}

/* RFC 9110 5.6.7: "Recipients of a timestamp value in rfc850-date format, which uses a two-digit year, MUST
 * interpret a timestamp that appears to be more than 50 years in the future as representing the most recent
 * year in the past that had the same last two digits." The window moves with the clock: the expectations
 * are computed from today, and years within a year of the edge are left out. */
Test(date, rfc850_two_digit_year_window)
{
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    int year = tm.tm_year + 1900;
    for (int yy = 0; yy < 100; yy++) {
        int y = year - year % 100 + yy;
        if (y > year + 50)
            y -= 100;
        else if (y <= year - 50)
            y += 100;
        if (y - year >= 49 && y - year <= 51)
            continue; /* on the edge: depends on the day */
        if (year + 50 - y >= 99)
            continue; /* "most recent year in the past" vs a century back: likewise on the edge */
        char in[40];
        snprintf(in, sizeof(in), "Monday, 01-Mar-%02d 00:00:00 GMT", yy);
        struct tm want = {.tm_year = y - 1900, .tm_mon = 2, .tm_mday = 1};
        int64_t expect = y < 1970 ? -1 : (int64_t)timegm(&want);
        cr_expect_eq(date(in), expect, "[%s]: want the year %d, got %lld", in, y, (long long)date(in));
    }
}

/* ---------------------------------------------------------------------------------------------------- */
/* Age (RFC 9111 4.2.3) */

Test(age, initial_age_by_hand)
{
    static const struct {
        struct rlb_cache_times t;
        int64_t want;
        const char *why;
    } cases[] = {
        /* apparent_age = 1002 - 995 = 7; response_delay = 2; corrected_age_value = 0 + 2 = 2 -> 7 */
        {{.request_time = 1000, .response_time = 1002, .date = 995, .age = 0, .expires = -1, .last_modified = -1}, 7,
         "apparent age wins"},
        /* apparent 1; corrected 30 + 2 = 32 -> 32 */
        {{.request_time = 1000, .response_time = 1002, .date = 1001, .age = 30, .expires = -1, .last_modified = -1}, 32,
         "Age header plus the response delay"},
        /* Date in the future (clock skew): apparent 0; corrected 0 + 2 = 2 */
        {{.request_time = 1000, .response_time = 1002, .date = 1010, .age = 0, .expires = -1, .last_modified = -1}, 2,
         "apparent age never negative"},
        /* No delay, no Age, Date = response_time */
        {{.request_time = 1000, .response_time = 1000, .date = 1000, .age = 0, .expires = -1, .last_modified = -1}, 0,
         "nothing"},
        /* apparent 10 vs corrected 5 + 3 = 8 -> 10 */
        {{.request_time = 997, .response_time = 1000, .date = 990, .age = 5, .expires = -1, .last_modified = -1}, 10,
         "max of the two"},
        /* apparent 10 vs corrected 9 + 3 = 12 -> 12 */
        {{.request_time = 997, .response_time = 1000, .date = 990, .age = 9, .expires = -1, .last_modified = -1}, 12,
         "max of the two, other way"},
        /* A huge Age is capped at 2^31. */
        {{.request_time = 1000, .response_time = 1000, .date = 1000, .age = RLB_DELTA_MAX, .expires = -1,
          .last_modified = -1},
         RLB_DELTA_MAX, "capped"},
        {{.request_time = 0, .response_time = 1000, .date = 1000, .age = RLB_DELTA_MAX, .expires = -1,
          .last_modified = -1},
         RLB_DELTA_MAX, "capped with a delay"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        cr_expect_eq(rlb_cache_initial_age(&cases[i].t), cases[i].want, "%s: %lld", cases[i].why,
                     (long long)rlb_cache_initial_age(&cases[i].t));
}

Test(age, current_age_adds_resident_time)
{
    /* RFC 9111 4.2.3: resident_time = now - response_time; current_age = corrected_initial_age + resident_time. */
    struct rlb_cache_times t = {.request_time = 1000, .response_time = 1002, .date = 995, .age = 0, .expires = -1,
                                .last_modified = -1};
    int64_t initial = rlb_cache_initial_age(&t);
    cr_expect_eq(initial, 7);
    cr_expect_eq(rlb_cache_current_age(initial, 1002, 1002), 7);
    cr_expect_eq(rlb_cache_current_age(initial, 1002, 1010), 15);
    cr_expect_eq(rlb_cache_current_age(initial, 1002, 1002 + 3600), 3607);
    /* The clock going back never makes a response younger than it arrived. */
    cr_expect_eq(rlb_cache_current_age(initial, 1002, 900), 7);
}

/* ---------------------------------------------------------------------------------------------------- */
/* Freshness lifetime (RFC 9111 4.2.1, 4.2.2) */

static const struct rlb_cache_heuristic heur_on = {.enabled = true, .percent = 10, .max_s = 86400};
static const struct rlb_cache_heuristic heur_off = {.enabled = false, .percent = 10, .max_s = 86400};

Test(lifetime, precedence_and_expires)
{
    struct rlb_cache_times t = {.request_time = 10000, .response_time = 10000, .date = 10000, .age = 0,
                                .expires = 10000 + 300, .last_modified = 10000 - 100000};
    struct rlb_cc cc = cc_of("max-age=50, s-maxage=100");
    cr_expect_eq(rlb_cache_freshness_lifetime(&cc, &t, 200, &heur_on), 100, "s-maxage over max-age (shared cache)");
    cc = cc_of("max-age=50");
    cr_expect_eq(rlb_cache_freshness_lifetime(&cc, &t, 200, &heur_on), 50, "max-age over Expires");
    cc = cc_of("max-age=0");
    cr_expect_eq(rlb_cache_freshness_lifetime(&cc, &t, 200, &heur_on), 0, "max-age=0 over Expires");
    cc = cc_of("s-maxage=0, max-age=50");
    cr_expect_eq(rlb_cache_freshness_lifetime(&cc, &t, 200, &heur_on), 0, "s-maxage=0 over max-age");
    cc = cc_of(NULL);
    cr_expect_eq(rlb_cache_freshness_lifetime(&cc, &t, 200, &heur_on), 300, "Expires - Date over the heuristic");
    cc = cc_of("public");
    cr_expect_eq(rlb_cache_freshness_lifetime(&cc, &t, 200, &heur_on), 300, "Expires - Date");
    /* Expires - Date, not Expires - now: the Date header is the origin's clock. */
    t.date = 9900;
    cr_expect_eq(rlb_cache_freshness_lifetime(&cc, &t, 200, &heur_off), 400);
    t.date = 10000;
    /* Expires at or before Date: stale at once. */
    t.expires = 10000;
    cr_expect_eq(rlb_cache_freshness_lifetime(&cc, &t, 200, &heur_on), 0);
    t.expires = 5000;
    cr_expect_eq(rlb_cache_freshness_lifetime(&cc, &t, 200, &heur_on), 0);
    /* An invalid Expires ("0", garbage: 0 here) means already expired (RFC 9111 5.3), never the heuristic. */
    t.expires = 0;
    cr_expect_eq(rlb_cache_freshness_lifetime(&cc, &t, 200, &heur_on), 0);
    /* A bad s-maxage makes it stale whatever max-age says. */
    cc = cc_of("s-maxage=x, max-age=50");
    t.expires = 10000 + 300;
    cr_expect_eq(rlb_cache_freshness_lifetime(&cc, &t, 200, &heur_on), 0);
    /* Huge values stay capped. */
    cc = cc_of("max-age=999999999999");
    cr_expect_eq(rlb_cache_freshness_lifetime(&cc, &t, 200, &heur_on), RLB_DELTA_MAX);
}

Test(lifetime, heuristic)
{
    struct rlb_cache_times t = {.request_time = 1000000, .response_time = 1000000, .date = 1000000, .age = 0,
                                .expires = -1, .last_modified = 1000000 - 100000};
    struct rlb_cc cc = cc_of(NULL);
    cr_expect_eq(rlb_cache_freshness_lifetime(&cc, &t, 200, &heur_on), 10000, "10%% of Date - Last-Modified");
    struct rlb_cache_heuristic h25 = {.enabled = true, .percent = 25, .max_s = 86400};
    cr_expect_eq(rlb_cache_freshness_lifetime(&cc, &t, 200, &h25), 25000);
    /* Capped. */
    t.last_modified = 1000000 - 999999;
    struct rlb_cache_heuristic small = {.enabled = true, .percent = 10, .max_s = 3600};
    cr_expect_eq(rlb_cache_freshness_lifetime(&cc, &t, 200, &small), 3600);
    t.date = 100000000;
    t.last_modified = 0;
    cr_expect_eq(rlb_cache_freshness_lifetime(&cc, &t, 200, &heur_on), 86400, "capped at max_s");
    t.date = 1000000;
    t.last_modified = 1000000 - 100000;
    /* Only when enabled, only with Last-Modified, only for heuristically cacheable statuses or public. */
    cr_expect_eq(rlb_cache_freshness_lifetime(&cc, &t, 200, &heur_off), 0, "disabled");
    cr_expect_eq(rlb_cache_freshness_lifetime(&cc, &t, 200, NULL), 0, "no heuristic given");
    for (int s = 100; s < 600; s++)
        cr_expect_eq(rlb_cache_freshness_lifetime(&cc, &t, s, &heur_on), rlb_cache_status_heuristic(s) ? 10000 : 0,
                     "status %d", s);
    cr_expect_eq(rlb_cache_freshness_lifetime(&cc, &t, 302, &heur_on), 0, "302 is not heuristically cacheable");
    struct rlb_cc pub = cc_of("public");
    cr_expect_eq(rlb_cache_freshness_lifetime(&pub, &t, 302, &heur_on), 10000, "unless public");
    t.last_modified = -1;
    cr_expect_eq(rlb_cache_freshness_lifetime(&cc, &t, 200, &heur_on), 0, "no Last-Modified");
    t.last_modified = t.date + 10;
    cr_expect_eq(rlb_cache_freshness_lifetime(&cc, &t, 200, &heur_on), 0, "Last-Modified after Date");
    t.last_modified = t.date;
    cr_expect_eq(rlb_cache_freshness_lifetime(&cc, &t, 200, &heur_on), 0, "Last-Modified = Date");
}

Test(lifetime, status_sets)
{
    /* RFC 9110 15.1: heuristically cacheable by default. */
    static const int heuristic[] = {200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501};
    int nh = 0;
    for (int s = 0; s < 1000; s++)
        nh += rlb_cache_status_heuristic(s);
    cr_expect_eq(nh, (int)(sizeof(heuristic) / sizeof(heuristic[0])));
    for (size_t i = 0; i < sizeof(heuristic) / sizeof(heuristic[0]); i++)
        cr_expect(rlb_cache_status_heuristic(heuristic[i]), "%d", heuristic[i]);
    cr_expect(!rlb_cache_status_heuristic(302));
    cr_expect(!rlb_cache_status_understood(206), "partial content is never stored");
    cr_expect(rlb_cache_status_understood(200));
    cr_expect(rlb_cache_status_understood(302));
    cr_expect(!rlb_cache_status_understood(299));
    cr_expect(!rlb_cache_status_understood(500));

    cr_expect(!rlb_cache_method_unsafe(RLB_METHOD_GET));
    cr_expect(!rlb_cache_method_unsafe(RLB_METHOD_HEAD));
    cr_expect(!rlb_cache_method_unsafe(RLB_METHOD_OPTIONS));
    cr_expect(!rlb_cache_method_unsafe(RLB_METHOD_TRACE));
    cr_expect(rlb_cache_method_unsafe(RLB_METHOD_POST));
    cr_expect(rlb_cache_method_unsafe(RLB_METHOD_PUT));
    cr_expect(rlb_cache_method_unsafe(RLB_METHOD_DELETE));
    cr_expect(rlb_cache_method_unsafe(RLB_METHOD_PATCH));
    cr_expect(rlb_cache_method_unsafe(RLB_METHOD_OTHER));
}

/* ---------------------------------------------------------------------------------------------------- */
/* Storability (RFC 9111 3, 3.5, 5.2.2) */

struct store_case {
    const char *name;
    uint8_t method;
    int status;
    const char *req_cc;
    const char *resp_cc;
    bool authorization, set_cookie, store_set_cookie, vary_star, has_expires, has_validator;
    const char *why; /* NULL: storable; else a word of the reason */
};

#define GET RLB_METHOD_GET
static const struct store_case store_cases[] = {
    {"plain max-age", GET, 200, NULL, "max-age=60", false, false, false, false, false, false, NULL},
    {"s-maxage", GET, 200, NULL, "s-maxage=60", false, false, false, false, false, false, NULL},
    {"Expires only", GET, 200, NULL, NULL, false, false, false, false, true, false, NULL},
    {"heuristic status with a validator", GET, 200, NULL, NULL, false, false, false, false, false, true, NULL},
    {"404 with max-age", GET, 404, NULL, "max-age=60", false, false, false, false, false, false, NULL},
    {"response no-cache is stored", GET, 200, NULL, "no-cache, max-age=0", false, false, false, false, false, true,
     NULL},
    {"request no-cache does not prevent storing", GET, 200, "no-cache", "max-age=60", false, false, false, false,
     false, false, NULL},
    {"HEAD", RLB_METHOD_HEAD, 200, NULL, "max-age=60", false, false, false, false, false, false, "method"},
    {"POST", RLB_METHOD_POST, 200, NULL, "max-age=60", false, false, false, false, false, false, "method"},
    {"no-store", GET, 200, NULL, "no-store, max-age=60", false, false, false, false, false, false, "no-store"},
    {"must-understand overrides no-store for 200", GET, 200, NULL, "no-store, must-understand, max-age=60", false,
     false, false, false, false, false, NULL},
    {"must-understand overrides no-store for 404", GET, 404, NULL, "must-understand, no-store, max-age=60", false,
     false, false, false, false, false, NULL},
    {"must-understand and no-store with an unknown status", GET, 299, NULL, "no-store, must-understand, max-age=60",
     false, false, false, false, false, false, "must-understand"},
    {"must-understand with 206", GET, 206, NULL, "must-understand, max-age=60", false, false, false, false, false,
     false, "status"},
    {"unknown status with explicit freshness (RFC 9111 3)", GET, 299, NULL, "max-age=60", false, false, false, false,
     false, false, NULL},
    {"500 with explicit freshness", GET, 500, NULL, "max-age=60", false, false, false, false, false, false, NULL},
    {"unknown status without explicit freshness", GET, 299, NULL, NULL, false, false, false, false, false, true,
     "no explicit freshness"},
    {"304 is never stored", GET, 304, NULL, "max-age=60", false, false, false, false, false, false, "status"},
    {"partial content", GET, 206, NULL, "max-age=60", false, false, false, false, false, false, "status"},
    {"request no-store", GET, 200, "no-store", "max-age=60", false, false, false, false, false, false, "no-store"},
    {"private", GET, 200, NULL, "private, max-age=60", false, false, false, false, false, false, "private"},
    {"qualified private", GET, 200, NULL, "private=\"Set-Cookie\", max-age=60", false, false, false, false, false,
     false, "private"},
    {"public does not override private", GET, 200, NULL, "public, private, max-age=60", false, false, false, false,
     false, false, "private"},
    {"Authorization", GET, 200, NULL, "max-age=60", true, false, false, false, false, true, "Authorization"},
    {"Authorization, proxy-revalidate is not enough", GET, 200, NULL, "proxy-revalidate, max-age=60", true, false,
     false, false, false, true, "Authorization"},
    {"Authorization with public", GET, 200, NULL, "public, max-age=60", true, false, false, false, false, false, NULL},
    {"Authorization with s-maxage", GET, 200, NULL, "s-maxage=60", true, false, false, false, false, false, NULL},
    {"Authorization with must-revalidate", GET, 200, NULL, "must-revalidate, max-age=60", true, false, false, false,
     false, false, NULL},
    {"Vary: *", GET, 200, NULL, "max-age=60", false, false, false, true, false, false, "Vary"},
    {"Set-Cookie", GET, 200, NULL, "max-age=60", false, true, false, false, false, false, "Set-Cookie"},
    {"Set-Cookie allowed", GET, 200, NULL, "max-age=60", false, true, true, false, false, false, NULL},
    {"302 without explicit freshness", GET, 302, NULL, NULL, false, false, false, false, false, true, "explicit"},
    {"307 without explicit freshness", GET, 307, NULL, "must-revalidate", false, false, false, false, false, true,
     "explicit"},
    {"302 with max-age", GET, 302, NULL, "max-age=60", false, false, false, false, false, false, NULL},
    {"302 with Expires", GET, 302, NULL, NULL, false, false, false, false, true, true, NULL},
    {"302 with public and a validator", GET, 302, NULL, "public", false, false, false, false, false, true, NULL},
    {"302 with a bad max-age counts as explicit, then stale without validator", GET, 302, NULL, "max-age=x", false,
     false, false, false, false, false, "validator"},
    {"stale at once without a validator", GET, 200, NULL, "max-age=0", false, false, false, false, false, false,
     "validator"},
    {"heuristic status, no lifetime, no validator", GET, 404, NULL, NULL, false, false, false, false, false, false,
     "validator"},
    {"expired Expires without validator", GET, 200, NULL, NULL, false, false, false, false, true, false, "validator"},
    {"stale at once with a validator", GET, 200, NULL, "max-age=0", false, false, false, false, false, true, NULL},
    {"stale at once with stale-if-error", GET, 200, NULL, "max-age=0, stale-if-error=60", false, false, false, false,
     false, false, NULL},
    {"stale at once with stale-while-revalidate", GET, 200, NULL, "max-age=0, stale-while-revalidate=30", false,
     false, false, false, false, false, NULL},
};
#undef GET

Test(store_policy, unstorable_table)
{
    for (size_t i = 0; i < sizeof(store_cases) / sizeof(store_cases[0]); i++) {
        const struct store_case *k = &store_cases[i];
        struct rlb_cc rq = cc_of(k->req_cc), rs = cc_of(k->resp_cc);
        /* The lifetime the proxy would compute: Date = now, Expires (when given) one minute later, except in
         * the "expired Expires" row where it is invalid. */
        bool expired = strstr(k->name, "expired") != NULL;
        struct rlb_cache_times t = {.request_time = 5000, .response_time = 5000, .date = 5000, .age = 0,
                                    .expires = k->has_expires ? (expired ? 0 : 5060) : -1, .last_modified = -1};
        struct rlb_cache_store_ctx s = {
            .method = k->method,
            .status = k->status,
            .req_cc = &rq,
            .resp_cc = &rs,
            .authorization = k->authorization,
            .set_cookie = k->set_cookie,
            .store_set_cookie = k->store_set_cookie,
            .vary_star = k->vary_star,
            .has_expires = k->has_expires,
            .has_validator = k->has_validator,
            .lifetime = rlb_cache_freshness_lifetime(&rs, &t, k->status, &heur_off),
        };
        const char *why = rlb_cache_unstorable(&s);
        if (!k->why) {
            cr_expect_null(why, "%s: refused (%s)", k->name, why ? why : "");
        } else {
            cr_expect_not_null(why, "%s: stored", k->name);
            if (why)
                cr_expect(strstr(why, k->why) != NULL, "%s: reason \"%s\", want one about \"%s\"", k->name, why,
                          k->why);
        }
    }
}

/* ---------------------------------------------------------------------------------------------------- */
/* Serving a stored response (RFC 9111 4.2.4, 4.3, 5.2.1, RFC 5861) */

struct use_case {
    int64_t age, lifetime;
    uint32_t resp_flags;
    int64_t swr;
    const char *req_cc;
    enum rlb_cache_use want;
};

static const char *use_name(enum rlb_cache_use u)
{
    switch (u) {
    case RLB_USE_FRESH:
        return "FRESH";
    case RLB_USE_STALE_OK:
        return "STALE_OK";
    case RLB_USE_SWR:
        return "SWR";
    case RLB_USE_VALIDATE:
        return "VALIDATE";
    }
    return "?";
}

static const struct use_case use_cases[] = {
    {10, 60, 0, -1, NULL, RLB_USE_FRESH},
    {0, 60, 0, -1, NULL, RLB_USE_FRESH},
    {59, 60, 0, -1, NULL, RLB_USE_FRESH},
    {60, 60, 0, -1, NULL, RLB_USE_VALIDATE}, /* fresh means lifetime > age */
    {70, 60, 0, -1, NULL, RLB_USE_VALIDATE},
    {0, 0, 0, -1, NULL, RLB_USE_VALIDATE},
    /* Request max-age (5.2.1.1): an older response needs validating. */
    {10, 60, 0, -1, "max-age=5", RLB_USE_VALIDATE},
    {10, 60, 0, -1, "max-age=10", RLB_USE_FRESH},
    {0, 60, 0, -1, "max-age=0", RLB_USE_FRESH},
    {1, 60, 0, -1, "max-age=0", RLB_USE_VALIDATE},
    /* Request min-fresh (5.2.1.3): lifetime >= age + min-fresh. */
    {10, 60, 0, -1, "min-fresh=50", RLB_USE_FRESH},
    {10, 60, 0, -1, "min-fresh=51", RLB_USE_VALIDATE},
    /* Request max-stale (5.2.1.2): any, or bounded. */
    {1000, 60, 0, -1, "max-stale", RLB_USE_STALE_OK},
    {90, 60, 0, -1, "max-stale=30", RLB_USE_STALE_OK},
    {91, 60, 0, -1, "max-stale=30", RLB_USE_VALIDATE},
    {60, 60, 0, -1, "max-stale=0", RLB_USE_STALE_OK},
    {80, 60, 0, -1, "max-age=100, max-stale=50", RLB_USE_STALE_OK},
    {80, 60, 0, -1, "max-age=70, max-stale=50", RLB_USE_VALIDATE},
    {10, 60, 0, -1, "max-stale", RLB_USE_FRESH}, /* fresh stays fresh */
    /* must-revalidate / proxy-revalidate (5.2.2.2, 5.2.2.8) forbid serving stale, whatever the request says. */
    {1000, 60, RLB_CC_MUST_REVALIDATE, -1, "max-stale", RLB_USE_VALIDATE},
    {61, 60, RLB_CC_PROXY_REVALIDATE, -1, "max-stale=100", RLB_USE_VALIDATE},
    {61, 60, RLB_CC_BAD_S_MAXAGE, -1, "max-stale", RLB_USE_VALIDATE},
    {10, 60, RLB_CC_MUST_REVALIDATE, -1, NULL, RLB_USE_FRESH}, /* but fresh is fine */
    /* no-cache, response (5.2.2.4) or request (5.2.1.4): validate even when fresh. */
    {0, 60, RLB_CC_NO_CACHE, -1, NULL, RLB_USE_VALIDATE},
    {0, 60, 0, -1, "no-cache", RLB_USE_VALIDATE},
    {100, 60, RLB_CC_NO_CACHE, 1000, "max-stale", RLB_USE_VALIDATE},
    /* stale-while-revalidate (RFC 5861 3). */
    {80, 60, 0, 30, NULL, RLB_USE_SWR},
    {90, 60, 0, 30, NULL, RLB_USE_SWR},
    {91, 60, 0, 30, NULL, RLB_USE_VALIDATE},
    {60, 60, 0, 0, NULL, RLB_USE_SWR},
    {10, 60, 0, 30, NULL, RLB_USE_FRESH},
    {80, 60, RLB_CC_MUST_REVALIDATE, 30, NULL, RLB_USE_VALIDATE},
    {80, 60, RLB_CC_PROXY_REVALIDATE, 30, NULL, RLB_USE_VALIDATE},
    {80, 60, 0, 30, "no-cache", RLB_USE_VALIDATE},
    {80, 60, 0, 30, "max-stale=10", RLB_USE_SWR},      /* beyond max-stale, within the window */
    {80, 60, 0, 30, "max-stale=100", RLB_USE_STALE_OK}, /* the request accepts it: no revalidation needed */
};

Test(use, usable_table)
{
    for (size_t i = 0; i < sizeof(use_cases) / sizeof(use_cases[0]); i++) {
        const struct use_case *k = &use_cases[i];
        struct rlb_cc rq = cc_of(k->req_cc);
        struct rlb_cache_freshness f = {.age = k->age, .lifetime = k->lifetime, .resp_flags = k->resp_flags,
                                        .swr = k->swr};
        enum rlb_cache_use u = rlb_cache_usable(&f, &rq);
        cr_expect_eq(u, k->want, "row %zu (age %lld, lifetime %lld, flags %#x, swr %lld, req \"%s\"): %s, want %s", i,
                     (long long)k->age, (long long)k->lifetime, k->resp_flags, (long long)k->swr,
                     k->req_cc ? k->req_cc : "", use_name(u), use_name(k->want));
    }
}

struct sie_case {
    int64_t age, lifetime;
    uint32_t resp_flags;
    const char *req_cc;
    int64_t resp_sie;
    bool want;
};

static const struct sie_case sie_cases[] = {
    {100, 60, 0, NULL, 60, true},  /* 40 s stale, window 60 */
    {120, 60, 0, NULL, 60, true},  /* on the edge */
    {121, 60, 0, NULL, 60, false}, /* past it */
    {100, 60, 0, NULL, 30, false},
    {100, 60, 0, NULL, -1, false}, /* none */
    {10, 60, 0, NULL, 0, true},    /* not stale at all */
    {10, 60, 0, NULL, -1, false},
    /* The request's own stale-if-error wins over the response's (RFC 5861 4). */
    {100, 60, 0, "stale-if-error=100", 10, true},
    {100, 60, 0, "stale-if-error=100", -1, true},
    {100, 60, 0, "stale-if-error=10", 100, false},
    {100, 60, 0, "stale-if-error=0", 100, false},
    /* must-revalidate, proxy-revalidate (and s-maxage, folded in), no-cache forbid it. */
    {100, 60, RLB_CC_MUST_REVALIDATE, NULL, 1000, false},
    {100, 60, RLB_CC_PROXY_REVALIDATE, NULL, 1000, false},
    {100, 60, RLB_CC_PROXY_REVALIDATE, "stale-if-error=1000", 1000, false},
    {100, 60, RLB_CC_BAD_S_MAXAGE, NULL, 1000, false},
    {100, 60, RLB_CC_NO_CACHE, NULL, 1000, false},
    {100, 60, RLB_CC_PUBLIC | RLB_CC_IMMUTABLE, NULL, 1000, true},
};

Test(use, stale_if_error_table)
{
    for (size_t i = 0; i < sizeof(sie_cases) / sizeof(sie_cases[0]); i++) {
        const struct sie_case *k = &sie_cases[i];
        struct rlb_cc rq = cc_of(k->req_cc);
        struct rlb_cache_freshness f = {.age = k->age, .lifetime = k->lifetime, .resp_flags = k->resp_flags,
                                        .swr = -1};
        cr_expect_eq(rlb_cache_stale_if_error(&f, &rq, k->resp_sie), k->want,
                     "row %zu (age %lld, lifetime %lld, flags %#x, req \"%s\", resp sie %lld)", i, (long long)k->age,
                     (long long)k->lifetime, k->resp_flags, k->req_cc ? k->req_cc : "", (long long)k->resp_sie);
    }
}

/* ---------------------------------------------------------------------------------------------------- */
/* Cache keys */

struct key_case {
    const char *host, *target;
    bool with_host;
    enum rlb_cache_query q;
    const char *want;
};

#define FULL RLB_CACHE_QUERY_FULL
#define SORTED RLB_CACHE_QUERY_SORTED
#define IGNORE RLB_CACHE_QUERY_IGNORE
static const struct key_case key_cases[] = {
    {"example.com", "/a", true, FULL, "example.com /a"},
    {"Example.COM", "/A/b", true, FULL, "example.com /A/b"}, /* host lower-cased, path kept */
    {"example.com:80", "/a", true, FULL, "example.com /a"},  /* the default port dropped */
    {"EXAMPLE.com:80", "/a", true, FULL, "example.com /a"},
    {"example.com:8080", "/a", true, FULL, "example.com:8080 /a"},
    {"example.com:443", "/a", true, FULL, "example.com:443 /a"},
    {"example.com:180", "/a", true, FULL, "example.com:180 /a"},
    {"[::1]:80", "/a", true, FULL, "[::1] /a"},
    {"example.com", "/a", false, FULL, " /a"},
    {"", "/a", true, FULL, " /a"},
    /* Query: full */
    {"h", "/p?b=2&a=1", true, FULL, "h /p?b=2&a=1"},
    {"h", "/p?", true, FULL, "h /p?"},
    {"h", "/p?b=2&&a=1&", true, FULL, "h /p?b=2&&a=1&"},
    /* Query: ignore */
    {"h", "/p?b=2&a=1", true, IGNORE, "h /p"},
    {"h", "/p?", true, IGNORE, "h /p"},
    {"h", "/p", true, IGNORE, "h /p"},
    /* Query: sorted, parameter by parameter; empty parameters dropped; "?" alone is no query. */
    {"h", "/p?b=2&a=1&c=3", true, SORTED, "h /p?a=1&b=2&c=3"},
    {"h", "/p?b=2&&a=1&", true, SORTED, "h /p?a=1&b=2"},
    {"h", "/p?&&&", true, SORTED, "h /p"},
    {"h", "/p?", true, SORTED, "h /p"},
    {"h", "/p", true, SORTED, "h /p"},
    {"h", "/p?a", true, SORTED, "h /p?a"},
    {"h", "/p?a=2&a=1", true, SORTED, "h /p?a=1&a=2"},
    {"h", "/p?ab&a=&a", true, SORTED, "h /p?a&a=&ab"},
    {"h", "/p?z=1&y=%20&x=?", true, SORTED, "h /p?x=?&y=%20&z=1"},
    {"H:80", "/p?b&a", false, SORTED, " /p?a&b"},
};
#undef FULL
#undef SORTED
#undef IGNORE

static size_t key(char *out, size_t cap, const struct key_case *k)
{
    size_t hl = strlen(k->host), tl = strlen(k->target);
    char *h = heap_copy(k->host, hl), *t = heap_copy(k->target, tl);
    size_t n = rlb_cache_key_build(out, cap, k->with_host, k->q, (struct rlb_str){h, hl}, (struct rlb_str){t, tl});
    free(h);
    free(t);
    return n;
}

Test(key, build_table)
{
    for (size_t i = 0; i < sizeof(key_cases) / sizeof(key_cases[0]); i++) {
        const struct key_case *k = &key_cases[i];
        char out[256];
        size_t n = key(out, sizeof(out), k);
        cr_expect_eq(n, strlen(k->want), "[%s %s mode %d]: length %zu, want %zu", k->host, k->target, k->q, n,
                     strlen(k->want));
        cr_expect(n == strlen(k->want) && memcmp(out, k->want, n) == 0, "[%s %s mode %d]: \"%.*s\", want \"%s\"",
                  k->host, k->target, k->q, (int)n, out, k->want);
    }
}

Test(key, too_small_buffer)
{
    for (size_t i = 0; i < sizeof(key_cases) / sizeof(key_cases[0]); i++) {
        const struct key_case *k = &key_cases[i];
        size_t want = strlen(k->want);
        /* Exactly the room it needs: fits (in an exact heap block, so an overrun shows under ASan). */
        char *exact = malloc(want);
        cr_assert_not_null(exact);
        size_t n = key(exact, want, k);
        cr_expect_eq(n, want, "[%s %s] in exactly %zu bytes: %zu", k->host, k->target, want, n);
        if (n == want)
            cr_expect(memcmp(exact, k->want, want) == 0);
        free(exact);
        /* Every smaller room: 0, and nothing written past it. */
        for (size_t cap = 0; cap < want; cap++) {
            char buf[300];
            memset(buf, '#', sizeof(buf));
            n = key(buf, cap, k);
            cr_expect_eq(n, 0, "[%s %s] in %zu bytes: %zu, want 0", k->host, k->target, cap, n);
            for (size_t j = cap; j < sizeof(buf); j++)
                cr_assert_eq(buf[j], '#', "[%s %s] cap %zu: byte %zu written", k->host, k->target, cap, j);
        }
    }
}

Test(key, many_parameters)
{
    /* 100 parameters, given in reverse: the sorted key is either refused (0: the request bypasses the cache)
     * or complete and sorted; never truncated. */
    char target[1024], want[1024];
    size_t tl = 0, wl = 0;
    tl += (size_t)snprintf(target + tl, sizeof(target) - tl, "/p?");
    for (int i = 99; i >= 0; i--)
        tl += (size_t)snprintf(target + tl, sizeof(target) - tl, "k%02d=%d%s", i, i, i ? "&" : "");
    wl += (size_t)snprintf(want + wl, sizeof(want) - wl, "h /p?");
    for (int i = 0; i < 100; i++)
        wl += (size_t)snprintf(want + wl, sizeof(want) - wl, "k%02d=%d%s", i, i, i < 99 ? "&" : "");
    char out[2048];
    size_t n = rlb_cache_key_build(out, sizeof(out), true, RLB_CACHE_QUERY_SORTED, (struct rlb_str){"h", 1},
                                   (struct rlb_str){target, tl});
    cr_expect(n == 0 || (n == wl && memcmp(out, want, wl) == 0), "%zu: %.*s", n, (int)n, out);
    n = rlb_cache_key_build(out, sizeof(out), true, RLB_CACHE_QUERY_FULL, (struct rlb_str){"h", 1},
                            (struct rlb_str){target, tl});
    cr_expect_eq(n, 2 + tl);
}

/* ---------------------------------------------------------------------------------------------------- */
/* Vary values (RFC 9111 4.1) */

#define HDR(n, v) {.name = n, .value = v, .name_len = sizeof(n) - 1, .value_len = sizeof(v) - 1}

static int vary(char *out, size_t cap, const char *names, const struct rlb_http_header *h, uint32_t n)
{
    size_t nl = strlen(names);
    char *p = heap_copy(names, nl);
    int r = rlb_cache_vary_values(out, cap, (struct rlb_str){p, nl}, h, n);
    free(p);
    return r;
}

static void expect_vary(const char *names, const struct rlb_http_header *h, uint32_t n, const char *want, size_t wl)
{
    char out[512];
    int r = vary(out, sizeof(out), names, h, n);
    cr_expect_eq(r, (int)wl, "[%s]: %d, want %zu", names, r, wl);
    if (r == (int)wl)
        cr_expect(memcmp(out, want, wl) == 0, "[%s]: \"%.*s\"", names, r, out);
}
#define EXPECT_VARY(names, h, n, lit) expect_vary(names, h, n, lit, sizeof(lit) - 1)

Test(vary, values)
{
    static const struct rlb_http_header none[1] = {HDR("Host", "h")};
    static const struct rlb_http_header gzip[] = {HDR("Host", "h"), HDR("Accept-Encoding", "gzip")};
    static const struct rlb_http_header empty[] = {HDR("Accept-Encoding", "")};
    static const struct rlb_http_header two_lines[] = {HDR("Accept-Encoding", "gzip"), HDR("Host", "h"),
                                                       HDR("accept-encoding", "br")};
    static const struct rlb_http_header spaced[] = {HDR("Accept-Encoding", "gzip,   deflate\t\tbr  ")};
    static const struct rlb_http_header both[] = {HDR("ACCEPT-LANGUAGE", "en"), HDR("accept-encoding", "gzip")};

    /* Absent and empty differ. */
    EXPECT_VARY("Accept-Encoding", none, 1, "\x01\n");
    EXPECT_VARY("Accept-Encoding", empty, 1, "\n");
    EXPECT_VARY("Accept-Encoding", gzip, 2, "gzip\n");
    /* Several field lines: joined by ", " (RFC 9110 5.3). */
    EXPECT_VARY("Accept-Encoding", two_lines, 3, "gzip, br\n");
    /* Whitespace runs collapsed, trailing whitespace gone. */
    EXPECT_VARY("Accept-Encoding", spaced, 1, "gzip, deflate br\n");
    /* Names are case-insensitive on both sides. */
    EXPECT_VARY("accept-encoding", gzip, 2, "gzip\n");
    EXPECT_VARY("ACCEPT-ENCODING", gzip, 2, "gzip\n");
    /* Several names, in the order of the Vary value; OWS and empty elements around them. */
    EXPECT_VARY("Accept-Encoding, Accept-Language", both, 2, "gzip\nen\n");
    EXPECT_VARY("Accept-Language,Accept-Encoding", both, 2, "en\ngzip\n");
    EXPECT_VARY(" , Accept-Encoding ,, ", gzip, 2, "gzip\n");
    EXPECT_VARY("Accept-Encoding, X-Missing", gzip, 2, "gzip\n\x01\n");
    /* No names: nothing. */
    EXPECT_VARY("", gzip, 2, "");
    EXPECT_VARY(" , ", gzip, 2, "");
    /* No headers at all. */
    EXPECT_VARY("Accept-Encoding", NULL, 0, "\x01\n");
}

Test(vary, star_and_small_buffers)
{
    static const struct rlb_http_header gzip[] = {HDR("Accept-Encoding", "gzip, deflate, br")};
    char out[512];
    cr_expect_eq(vary(out, sizeof(out), "*", gzip, 1), -1);
    cr_expect_eq(vary(out, sizeof(out), "Accept-Encoding, *", gzip, 1), -1);
    cr_expect_eq(vary(out, sizeof(out), " * ", gzip, 1), -1);
    /* "*" only as a whole name. */
    cr_expect_eq(vary(out, sizeof(out), "X-*", gzip, 1), 2);

    int full = vary(out, sizeof(out), "Accept-Encoding, X-Missing", gzip, 1);
    cr_assert_eq(full, (int)strlen("gzip, deflate, br\n\x01\n"));
    /* Too small: -1, and nothing written past the room given. */
    for (size_t cap = 0; cap < (size_t)full; cap++) {
        char buf[64];
        memset(buf, '#', sizeof(buf));
        cr_expect_eq(vary(buf, cap, "Accept-Encoding, X-Missing", gzip, 1), -1, "cap %zu", cap);
        for (size_t j = cap; j < sizeof(buf); j++)
            cr_assert_eq(buf[j], '#', "cap %zu: byte %zu written", cap, j);
    }
    /* Some room to spare: the same bytes. */
    char *b = malloc((size_t)full + 2);
    cr_assert_not_null(b);
    cr_expect_eq(vary(b, (size_t)full + 2, "Accept-Encoding, X-Missing", gzip, 1), full);
    cr_expect(memcmp(b, out, (size_t)full) == 0);
    free(b);
}

/* ---------------------------------------------------------------------------------------------------- */
/* The store (cache.c) */

static struct rlb_cache_cfg scfg;
static struct rlb_cache cache;

static void store_setup(void)
{
    memset(&scfg, 0, sizeof(scfg));
    scfg.enabled = true;
    scfg.size = 200000;
    scfg.max_object = 50000;
    cr_assert_eq(rlb_cache_init(&cache, &scfg, 16, NULL), 0);
}

static void store_teardown(void)
{
    rlb_cache_destroy(&cache);
}

static const char REQ[] = "GET / HTTP/1.1\r\nHost: h\r\n\r\n";
static const char HEAD[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n";

static void check_budget(const struct rlb_cache *c)
{
    cr_assert_leq(c->used, c->cfg->size, "used %llu > size %llu", (unsigned long long)c->used,
                  (unsigned long long)c->cfg->size);
    /* The LRU list holds exactly the READY entries, each charged. */
    uint64_t n = 0, charged = 0;
    for (const struct rlb_cache_entry *e = c->lru.lru_next; e != &c->lru; e = e->lru_next) {
        cr_assert_eq(e->state, RLB_CE_READY);
        cr_assert_eq(e->lru_next->lru_prev, e);
        n++;
        charged += e->charge;
    }
    cr_assert_eq(n, c->objects, "%llu on the list, objects %llu", (unsigned long long)n,
                 (unsigned long long)c->objects);
    cr_assert_leq(charged, c->used);
}

static struct rlb_cache_entry *begin_kh(struct rlb_cache *c, const char *key, const char *kh)
{
    uint32_t kl = (uint32_t)strlen(key), khl = (uint32_t)strlen(kh);
    char ident[512];
    memcpy(ident, key, kl);
    memcpy(ident + kl, kh, khl);
    /* The hash is of the primary key (cache-t.h): invalidation finds every variant by it. */
    struct rlb_cache_entry *e =
        rlb_cache_fill_begin(c, rlb_cache_hash(key, kl), ident, kl, khl, REQ, sizeof(REQ) - 1, NULL);
    if (e) {
        cr_assert_eq(e->state, RLB_CE_FILLING);
        check_budget(c);
    }
    return e;
}

static struct rlb_cache_entry *begin(struct rlb_cache *c, const char *key)
{
    return begin_kh(c, key, "");
}

/* Installs a response block the way the proxy lays it out: the head, the Vary names, the storing request's
 * values of them, then <pad> bytes standing for the rest. */
static bool meta(struct rlb_cache *c, struct rlb_cache_entry *e, const char *vary_names,
                 const struct rlb_http_header *h, uint32_t n, size_t pad)
{
    char values[512];
    size_t vnl = strlen(vary_names);
    int vl = vnl ? rlb_cache_vary_values(values, sizeof(values), (struct rlb_str){vary_names, vnl}, h, n) : 0;
    cr_assert_geq(vl, 0);
    size_t hl = sizeof(HEAD) - 1, size = hl + vnl + (size_t)vl + pad;
    char *m = malloc(size);
    cr_assert_not_null(m);
    memcpy(m, HEAD, hl);
    memcpy(m + hl, vary_names, vnl);
    memcpy(m + hl + vnl, values, (size_t)vl);
    memset(m + hl + vnl + vl, 'm', pad);
    if (!rlb_cache_set_meta(c, e, m, (uint32_t)size))
        return false;
    e->head = m;
    e->head_len = (uint32_t)hl;
    e->vary = m + hl;
    e->vary_len = (uint32_t)vnl;
    e->vary_values = m + hl + vnl;
    e->vary_values_len = (uint32_t)vl;
    e->status = 200;
    e->lifetime = 60;
    check_budget(c);
    return true;
}

/* Appends <len> body bytes in pieces of <piece> (the way a relayed body arrives); the byte value is <fill>. */
static bool body(struct rlb_cache *c, struct rlb_cache_entry *e, size_t len, size_t piece, char fill)
{
    static char chunk[65536];
    memset(chunk, fill, sizeof(chunk));
    while (len) {
        size_t n = len < piece ? len : piece;
        if (!rlb_cache_fill_append(c, e, chunk, n))
            return false;
        check_budget(c);
        len -= n;
    }
    return true;
}

static struct rlb_cache_entry *put_vary(struct rlb_cache *c, const char *key, const char *vary_names,
                                        const struct rlb_http_header *h, uint32_t n, size_t body_len)
{
    struct rlb_cache_entry *e = begin(c, key);
    cr_assert_not_null(e, "fill_begin %s", key);
    cr_assert(meta(c, e, vary_names, h, n, 32), "meta %s", key);
    cr_assert(body(c, e, body_len, 4096, key[strlen(key) - 1]), "body %s", key);
    rlb_cache_fill_finish(c, e);
    cr_assert_eq(e->state, RLB_CE_READY);
    cr_assert_eq(e->body_len, body_len);
    /* Bodies from RLB_CACHE_MAP_MIN on live in whole pages. */
    size_t cap = e->body_mapped ? (body_len + RLB_CACHE_PAGE - 1) / RLB_CACHE_PAGE * RLB_CACHE_PAGE : body_len;
    if (body_len >= RLB_CACHE_MAP_MIN)
        cr_assert(e->body_mapped, "a body of %zu bytes in pages of its own", body_len);
    cr_assert_eq(e->body_cap, cap, "slack given back");
    check_budget(c);
    return e;
}

static struct rlb_cache_entry *put(struct rlb_cache *c, const char *key, size_t body_len)
{
    return put_vary(c, key, "", NULL, 0, body_len);
}

static struct rlb_cache_found find_h(struct rlb_cache *c, const char *key, const struct rlb_http_header *h, uint32_t n)
{
    struct rlb_cache_found f;
    uint32_t kl = (uint32_t)strlen(key);
    rlb_cache_lookup(c, rlb_cache_hash(key, kl), key, kl, 0, h, n, &f);
    return f;
}

static struct rlb_cache_entry *ready(struct rlb_cache *c, const char *key)
{
    return find_h(c, key, NULL, 0).ready;
}

TestSuite(store, .init = store_setup, .fini = store_teardown);

Test(store, lru_eviction_under_budget)
{
    /* Four 40 kB objects fit in 200 kB, not five. */
    struct rlb_cache_entry *a = put(&cache, "h /a", 40000);
    put(&cache, "h /b", 40000);
    put(&cache, "h /c", 40000);
    put(&cache, "h /d", 40000);
    cr_expect_eq(cache.objects, 4);
    cr_expect_eq(cache.count, 4);
    cr_expect_eq(ready(&cache, "h /a"), a);
    /* Touched: /a is the hottest, /b the coldest. */
    rlb_cache_touch(&cache, a);
    cr_expect_eq(cache.lru.lru_next, a);
    put(&cache, "h /e", 40000);
    cr_expect_null(ready(&cache, "h /b"), "the coldest goes first");
    cr_expect_not_null(ready(&cache, "h /a"), "touched: saved");
    cr_expect_not_null(ready(&cache, "h /c"));
    cr_expect_not_null(ready(&cache, "h /d"));
    cr_expect_not_null(ready(&cache, "h /e"));
    cr_expect_eq(cache.objects, 4);
    /* A lookup and a touch (what a hit does) save /c, the coldest now: /d goes instead. */
    struct rlb_cache_entry *c = ready(&cache, "h /c");
    rlb_cache_touch(&cache, c);
    put(&cache, "h /f", 40000);
    cr_expect_null(ready(&cache, "h /d"));
    cr_expect_not_null(ready(&cache, "h /c"));
    cr_expect_not_null(ready(&cache, "h /a"));
    cr_expect_eq(cache.objects, 4);
    /* Touching the hottest again changes nothing. */
    struct rlb_cache_entry *f = ready(&cache, "h /f");
    rlb_cache_touch(&cache, f);
    rlb_cache_touch(&cache, f);
    cr_expect_eq(cache.lru.lru_next, f);
    check_budget(&cache);
    /* Many small objects: the budget still holds, the oldest ones go. */
    char k[32];
    for (int i = 0; i < 400; i++) {
        snprintf(k, sizeof(k), "h /small/%d", i);
        put(&cache, k, 1000);
    }
    cr_expect_null(ready(&cache, "h /small/0"));
    cr_expect_not_null(ready(&cache, "h /small/399"));
    cr_expect_null(ready(&cache, "h /a"));
    check_budget(&cache);
    /* Everything removed: nothing charged. */
    rlb_cache_invalidate(&cache, "", 0, true);
    cr_expect_eq(cache.objects, 0);
    cr_expect_eq(cache.count, 0);
    cr_expect_eq(cache.used, 0);
}

Test(store, objects_and_used_by_hand)
{
    cr_expect_eq(cache.used, 0);
    struct rlb_cache_entry *e = begin(&cache, "h /x");
    cr_assert_not_null(e);
    uint64_t base = sizeof(struct rlb_cache_entry) + 4;
    cr_expect_eq(cache.used, base + sizeof(REQ) - 1, "entry, key and the request copy");
    cr_expect_eq(cache.objects, 0, "a fetch is no object");
    cr_expect_eq(cache.count, 1);
    cr_assert(meta(&cache, e, "", NULL, 0, 100));
    uint64_t meta_size = sizeof(HEAD) - 1 + 100;
    cr_expect_eq(cache.used, base + sizeof(REQ) - 1 + meta_size);
    cr_assert(rlb_cache_reserve_body(&cache, e, 1234));
    cr_expect_eq(e->body_cap, 1234);
    cr_assert(body(&cache, e, 1234, 1000, 'x'));
    cr_expect_eq(cache.used, base + sizeof(REQ) - 1 + meta_size + 1234);
    rlb_cache_fill_finish(&cache, e);
    cr_expect_eq(cache.used, base + meta_size + 1234, "the request copy goes when the fetch ends");
    cr_expect_eq(e->charge, cache.used);
    cr_expect_eq(cache.objects, 1);
    rlb_cache_remove(&cache, e);
    cr_expect_eq(cache.used, 0);
    cr_expect_eq(cache.objects, 0);
    cr_expect_eq(cache.count, 0);
}

Test(store, vary_variants)
{
    static const struct rlb_http_header gz[] = {HDR("Host", "h"), HDR("Accept-Encoding", "gzip")};
    static const struct rlb_http_header br[] = {HDR("Accept-Encoding", "br"), HDR("Host", "h")};
    static const struct rlb_http_header gz_lc[] = {HDR("accept-encoding", "gzip")};
    static const struct rlb_http_header deflate[] = {HDR("Accept-Encoding", "deflate")};
    static const struct rlb_http_header none[] = {HDR("Host", "h")};
    static const struct rlb_http_header empty[] = {HDR("Accept-Encoding", "")};

    struct rlb_cache_entry *g = put_vary(&cache, "h /v", "Accept-Encoding", gz, 2, 100);
    struct rlb_cache_entry *b = put_vary(&cache, "h /v", "Accept-Encoding", br, 2, 100);
    struct rlb_cache_entry *n = put_vary(&cache, "h /v", "Accept-Encoding", none, 1, 100);
    cr_expect_eq(cache.objects, 3, "variants coexist");
    cr_expect_eq(find_h(&cache, "h /v", gz, 2).ready, g);
    cr_expect_eq(find_h(&cache, "h /v", gz_lc, 1).ready, g, "header names case-insensitive");
    cr_expect_eq(find_h(&cache, "h /v", br, 2).ready, b);
    cr_expect_eq(find_h(&cache, "h /v", none, 1).ready, n, "absent selects the variant stored without it");
    cr_expect_null(find_h(&cache, "h /v", empty, 1).ready, "empty is not absent");
    cr_expect_null(find_h(&cache, "h /v", deflate, 1).ready);
    cr_expect_null(find_h(&cache, "h /w", gz, 2).ready);

    /* A new response for the gzip variant replaces it and leaves the others. */
    struct rlb_cache_entry *g2 = put_vary(&cache, "h /v", "Accept-Encoding", gz, 2, 200);
    cr_expect_eq(cache.objects, 3);
    cr_expect_eq(find_h(&cache, "h /v", gz, 2).ready, g2);
    cr_expect_eq(find_h(&cache, "h /v", br, 2).ready, b);
    cr_expect_eq(find_h(&cache, "h /v", none, 1).ready, n);
    check_budget(&cache);

    /* A response without Vary for the same key: a separate entry, newest first for any request. */
    struct rlb_cache_entry *plain = put(&cache, "h /v", 50);
    cr_expect_eq(cache.objects, 4);
    cr_expect_eq(find_h(&cache, "h /v", gz, 2).ready, plain, "the newest matching response");
    cr_expect_eq(find_h(&cache, "h /v", deflate, 1).ready, plain);
    /* And a newer response without Vary replaces it. */
    struct rlb_cache_entry *plain2 = put(&cache, "h /v", 60);
    cr_expect_eq(cache.objects, 4);
    cr_expect_eq(find_h(&cache, "h /v", deflate, 1).ready, plain2);
}

/* RFC 9111 4.1: of several stored responses that match, the most recent is used. Growing the table must not
 * change which one that is. */
Test(store, newest_variant_survives_table_growth)
{
    scfg.size = 64u << 20;
    static const struct rlb_http_header gz[] = {HDR("Accept-Encoding", "gzip")};
    struct rlb_cache_entry *old = put_vary(&cache, "h /n", "Accept-Encoding", gz, 1, 10);
    struct rlb_cache_entry *newer = put(&cache, "h /n", 10);
    cr_assert_neq(old, newer);
    cr_expect_eq(cache.objects, 2);
    cr_assert_eq(find_h(&cache, "h /n", gz, 1).ready, newer, "newest first");
    uint32_t mask = cache.mask;
    char k[32];
    for (int i = 0; cache.mask == mask && i < 100000; i++) {
        snprintf(k, sizeof(k), "h /grow/%d", i);
        put(&cache, k, 1);
    }
    cr_assert_neq(cache.mask, mask, "the table grew");
    cr_expect_eq(find_h(&cache, "h /n", gz, 1).ready, newer, "still the newest after the table grew");
}

Test(store, filling_is_not_ready)
{
    struct rlb_cache_entry *f = begin(&cache, "h /f");
    cr_assert_not_null(f);
    struct rlb_cache_found found = find_h(&cache, "h /f", NULL, 0);
    cr_expect_eq(found.filling, f);
    cr_expect_null(found.ready, "nobody is served from a fetch");
    cr_expect_eq(cache.objects, 0);

    /* With a stored response being revalidated: both reported. */
    struct rlb_cache_entry *old = put(&cache, "h /g", 100);
    struct rlb_cache_entry *g = rlb_cache_fill_begin(&cache, rlb_cache_hash("h /g", 4), "h /g", 4, 0, REQ,
                                                     sizeof(REQ) - 1, old);
    cr_assert_not_null(g);
    cr_expect_eq(g->stale, old);
    found = find_h(&cache, "h /g", NULL, 0);
    cr_expect_eq(found.ready, old);
    cr_expect_eq(found.filling, g);

    /* Finished: ready, and the stale one it replaces is gone. */
    cr_assert(meta(&cache, g, "", NULL, 0, 10));
    cr_assert(body(&cache, g, 50, 50, 'g'));
    rlb_cache_fill_finish(&cache, g);
    found = find_h(&cache, "h /g", NULL, 0);
    cr_expect_eq(found.ready, g);
    cr_expect_null(found.filling);
    cr_expect_eq(cache.objects, 1);

    rlb_cache_fill_abandon(&cache, f);
    found = find_h(&cache, "h /f", NULL, 0);
    cr_expect_null(found.ready);
    cr_expect_null(found.filling);
    check_budget(&cache);
}

Test(store, abandon_frees_and_wakes_waiters)
{
    put(&cache, "h /keep", 1000);
    uint64_t before = cache.used;
    uint32_t count = cache.count;
    struct rlb_cache_entry *e = begin(&cache, "h /gone");
    cr_assert_not_null(e);
    cr_assert(rlb_cache_wait(&cache, e, 3, 7));
    cr_assert(rlb_cache_wait(&cache, e, 4, 9));
    for (uint32_t i = 0; i < 20; i++) /* past the first allocation of the waiter list */
        cr_assert(rlb_cache_wait(&cache, e, 100 + i, i));
    cr_assert(meta(&cache, e, "", NULL, 0, 500));
    cr_assert(body(&cache, e, 30000, 3000, 'z'));
    cr_expect_gt(cache.used, before);
    rlb_cache_fill_abandon(&cache, e);
    cr_expect_eq(cache.used, before, "used back to its previous value");
    cr_expect_eq(cache.count, count);
    cr_expect_eq(cache.num_wake, 22, "the waiters queued for the worker loop");
    cr_expect_eq(cache.wake[0], (uint64_t)3 << 32 | 7);
    cr_expect_eq(cache.wake[1], (uint64_t)4 << 32 | 9);
    cr_expect_eq(cache.wake[21], (uint64_t)119 << 32 | 19);
    struct rlb_cache_found found = find_h(&cache, "h /gone", NULL, 0);
    cr_expect_null(found.ready);
    cr_expect_null(found.filling);
    cr_expect_not_null(ready(&cache, "h /keep"));

    /* A finished fetch wakes its waiters too. */
    cache.num_wake = 0;
    e = begin(&cache, "h /done");
    cr_assert(rlb_cache_wait(&cache, e, 5, 1));
    cr_assert(meta(&cache, e, "", NULL, 0, 10));
    rlb_cache_fill_finish(&cache, e);
    cr_expect_eq(cache.num_wake, 1);
    cr_expect_eq(cache.wake[0], (uint64_t)5 << 32 | 1);
    cr_expect_eq(e->num_waiters, 0);
}

Test(store, max_object)
{
    uint64_t before = cache.used;
    struct rlb_cache_entry *e = begin(&cache, "h /big");
    cr_assert(meta(&cache, e, "", NULL, 0, 10));
    cr_expect(!rlb_cache_reserve_body(&cache, e, 50001), "a known length past max_object");
    cr_expect(rlb_cache_reserve_body(&cache, e, 50000));
    cr_expect(body(&cache, e, 50000, 7000, 'b'), "exactly max_object fits");
    cr_expect(!rlb_cache_fill_append(&cache, e, "x", 1), "one byte more does not");
    cr_expect_eq(e->body_len, 50000);
    check_budget(&cache);
    rlb_cache_fill_abandon(&cache, e);
    cr_expect_eq(cache.used, before);

    /* Growing by doubling: refused at the first append past max_object, not before. */
    e = begin(&cache, "h /big2");
    cr_assert(meta(&cache, e, "", NULL, 0, 10));
    cr_expect(body(&cache, e, 49999, 1000, 'c'));
    cr_expect(!body(&cache, e, 2, 2, 'c'));
    cr_expect(body(&cache, e, 1, 1, 'c'));
    cr_expect(!body(&cache, e, 1, 1, 'c'));
    rlb_cache_fill_abandon(&cache, e);
    cr_expect_eq(cache.used, before);

    /* An empty body is fine. */
    e = begin(&cache, "h /empty");
    cr_assert(meta(&cache, e, "", NULL, 0, 10));
    cr_assert(rlb_cache_reserve_body(&cache, e, 0));
    rlb_cache_fill_finish(&cache, e);
    cr_expect_eq(ready(&cache, "h /empty"), e);
    cr_expect_eq(e->body_len, 0);
}

Test(store, pinned_entries_outlive_removal)
{
    struct rlb_cache_entry *a = put(&cache, "h /a", 20000);
    uint64_t charge = a->charge, used = cache.used;
    int32_t id = rlb_cache_pin(&cache, a);
    cr_expect_lt(id, -1, "handles are buffer ids below -1");
    cr_expect_eq(rlb_cache_handle_id(id), a->handle);
    int32_t id2 = rlb_cache_pin(&cache, a);
    cr_expect_eq(id2, id, "one handle per entry");
    rlb_cache_remove(&cache, a);
    cr_expect_eq(a->state, RLB_CE_DEAD);
    cr_expect_null(ready(&cache, "h /a"), "out of the table");
    cr_expect_eq(cache.objects, 0);
    cr_expect_eq(cache.used, used, "still charged while sends refer to it");
    /* The bytes are still readable (ASan says so if not). */
    cr_expect_eq(a->body[0], 'a');
    cr_expect_eq(a->body[19999], 'a');
    cr_expect_eq(memcmp(a->head, HEAD, sizeof(HEAD) - 1), 0);
    rlb_cache_remove(&cache, a); /* twice is harmless */
    rlb_cache_ext_ref(&cache, id);
    rlb_cache_ext_unref(&cache, id);
    rlb_cache_ext_unref(&cache, id2);
    cr_expect_eq(cache.used, used, "one reference left");
    rlb_cache_ext_unref(&cache, id);
    cr_expect_eq(cache.used, used - charge, "freed with the last reference");

    /* The handle is reused. */
    struct rlb_cache_entry *b = put(&cache, "h /b", 100);
    int32_t idb = rlb_cache_pin(&cache, b);
    cr_expect_eq(idb, id);
    rlb_cache_ext_unref(&cache, idb);
    cr_expect_eq(ready(&cache, "h /b"), b, "still stored after its send");
}

Test(store, pinned_entries_outlive_eviction)
{
    struct rlb_cache_entry *e[4];
    int32_t id[4];
    char k[16];
    for (int i = 0; i < 4; i++) {
        snprintf(k, sizeof(k), "h /p%d", i);
        e[i] = put(&cache, k, 40000);
        id[i] = rlb_cache_pin(&cache, e[i]);
    }
    /* Every entry is being sent: evicting them all frees nothing, so the new object does not fit. */
    uint64_t before = cache.used;
    struct rlb_cache_entry *x = begin(&cache, "h /x");
    cr_assert_not_null(x);
    cr_assert(meta(&cache, x, "", NULL, 0, 10));
    cr_expect(!body(&cache, x, 40000, 4096, 'x'), "no room: abandon");
    check_budget(&cache);
    rlb_cache_fill_abandon(&cache, x);
    cr_expect_eq(cache.used, before, "the pinned entries are still charged");
    cr_expect_eq(cache.objects, 0, "but all evicted");
    for (int i = 0; i < 4; i++) {
        cr_expect_eq(e[i]->state, RLB_CE_DEAD);
        cr_expect_eq(e[i]->body[39999], (char)('0' + i));
    }
    /* The sends complete: the memory comes back, and the object fits. */
    for (int i = 0; i < 4; i++)
        rlb_cache_ext_unref(&cache, id[i]);
    cr_expect_eq(cache.used, 0);
    put(&cache, "h /x", 40000);

    /* A pinned entry evicted by an ordinary insertion lives on; the unpinned ones just go. */
    struct rlb_cache_entry *p = ready(&cache, "h /x");
    int32_t pid = rlb_cache_pin(&cache, p);
    put(&cache, "h /y", 40000);
    put(&cache, "h /z", 40000);
    put(&cache, "h /w", 40000);
    put(&cache, "h /v", 40000);
    cr_expect_null(ready(&cache, "h /x"));
    cr_expect_eq(p->state, RLB_CE_DEAD);
    cr_expect_eq(p->body[0], 'x');
    check_budget(&cache);
    rlb_cache_ext_unref(&cache, pid);
    check_budget(&cache);
}

Test(store, stale_entry_lives_while_revalidated)
{
    struct rlb_cache_entry *old = put(&cache, "h /r", 1000);
    uint64_t charge = old->charge;
    struct rlb_cache_entry *f =
        rlb_cache_fill_begin(&cache, rlb_cache_hash("h /r", 4), "h /r", 4, 0, REQ, sizeof(REQ) - 1, old);
    cr_assert_not_null(f);
    uint64_t with_fetch = cache.used;
    /* Invalidated meanwhile: out of the table, alive for the fetch. */
    rlb_cache_remove(&cache, old);
    cr_expect_eq(old->state, RLB_CE_DEAD);
    cr_expect_eq(cache.used, with_fetch);
    cr_expect_eq(old->body[999], 'r');
    rlb_cache_fill_abandon(&cache, f);
    cr_expect_eq(cache.used, 0, "fetch and stale entry both gone (stale's charge %llu)", (unsigned long long)charge);
}

Test(store, set_meta_refresh_of_a_ready_entry)
{
    /* A 304 refresh installs a new block on a READY entry: the old one is released, the new one charged. */
    struct rlb_cache_entry *e = put(&cache, "h /m", 1000);
    uint64_t used = cache.used;
    uint32_t old_size = e->meta_size;
    cr_assert(meta(&cache, e, "", NULL, 0, 500));
    cr_expect_eq(cache.used, used - old_size + e->meta_size);
    cr_expect_eq(e->state, RLB_CE_READY);
    cr_expect_eq(ready(&cache, "h /m"), e);
    check_budget(&cache);
}

/* A refresh that does not fit must not leave a READY entry whose block is gone: its head, Vary names and
 * values point into that block, and lookups and hits read them. Either the old block stays, or the entry
 * leaves the table. */
Test(store, failed_set_meta_leaves_no_dangling_ready_entry)
{
    static const struct rlb_http_header gz[] = {HDR("Accept-Encoding", "gzip")};
    struct rlb_cache_entry *e = put_vary(&cache, "h /m", "Accept-Encoding", gz, 1, 1000);
    /* Fetches in flight hold the rest of the budget (they cannot be evicted). */
    struct rlb_cache_entry *fill[4];
    char k[16];
    for (int i = 0; i < 4; i++) {
        snprintf(k, sizeof(k), "h /fill%d", i);
        fill[i] = begin(&cache, k);
        cr_assert_not_null(fill[i]);
        cr_assert(rlb_cache_reserve_body(&cache, fill[i], 45000));
    }
    check_budget(&cache);
    char *big = malloc(30000);
    cr_assert_not_null(big);
    memset(big, 'n', 30000);
    cr_expect(!rlb_cache_set_meta(&cache, e, big, 30000), "no room for the refreshed block");
    check_budget(&cache);
    cr_assert(e->meta != NULL || e->state != RLB_CE_READY,
              "a READY entry without its block: head/vary/vary_values dangle (state %d, meta %p)", e->state,
              (void *)e->meta);
    struct rlb_cache_found found = find_h(&cache, "h /m", gz, 1);
    if (e->state == RLB_CE_READY) {
        cr_expect_eq(found.ready, e);
        cr_expect_eq(memcmp(e->head, HEAD, sizeof(HEAD) - 1), 0);
    } else {
        cr_expect_null(found.ready);
    }
    for (int i = 0; i < 4; i++)
        rlb_cache_fill_abandon(&cache, fill[i]);
}

Test(store, invalidate_exact_and_prefix)
{
    static const struct rlb_http_header gz[] = {HDR("Accept-Encoding", "gzip")};
    static const struct rlb_http_header br[] = {HDR("Accept-Encoding", "br")};
    put_vary(&cache, "h /a", "Accept-Encoding", gz, 1, 10);
    put_vary(&cache, "h /a", "Accept-Encoding", br, 1, 10);
    put(&cache, "h /a?x=1", 10);
    put(&cache, "h /ab", 10);
    put(&cache, "h /b", 10);
    put(&cache, "g /a", 10);
    struct rlb_cache_entry *f = begin(&cache, "h /a");
    cr_assert_not_null(f);
    cr_expect_eq(cache.objects, 6);

    /* Exact: every variant and the fetch of that key, nothing else. */
    cr_expect_eq(rlb_cache_invalidate(&cache, "h /a", 4, false), 3);
    cr_expect_null(find_h(&cache, "h /a", gz, 1).ready);
    cr_expect_null(find_h(&cache, "h /a", br, 1).ready);
    cr_expect_null(find_h(&cache, "h /a", gz, 1).filling, "a purged fetch is not waited for");
    cr_expect(f->purged);
    cr_expect(!rlb_cache_fill_append(&cache, f, "x", 1), "nor filled");
    rlb_cache_fill_finish(&cache, f); /* nor published */
    cr_expect_null(ready(&cache, "h /a"));
    cr_expect_not_null(ready(&cache, "h /a?x=1"));
    cr_expect_not_null(ready(&cache, "h /ab"));
    cr_expect_eq(cache.objects, 4);
    cr_expect_eq(rlb_cache_invalidate(&cache, "h /nothing", 10, false), 0);
    cr_expect_eq(rlb_cache_invalidate(&cache, "h /", 3, false), 0, "exact is exact");

    /* Prefix. */
    cr_expect_eq(rlb_cache_invalidate(&cache, "h /a", 4, true), 2);
    cr_expect_null(ready(&cache, "h /a?x=1"));
    cr_expect_null(ready(&cache, "h /ab"));
    cr_expect_not_null(ready(&cache, "h /b"));
    cr_expect_not_null(ready(&cache, "g /a"));
    cr_expect_eq(rlb_cache_invalidate(&cache, "h /zzz", 6, true), 0);
    cr_expect_eq(rlb_cache_invalidate(&cache, "h ", 2, true), 1);
    cr_expect_not_null(ready(&cache, "g /a"));
    cr_expect_eq(cache.objects, 1);
    check_budget(&cache);
}

Test(store, invalidate_reaches_key_header_values)
{
    /* With key headers, the identity is the primary key followed by their values: invalidation by the
     * primary key reaches every such entry. */
    struct rlb_cache_entry *m = begin_kh(&cache, "h /k", "mobile\n");
    cr_assert(meta(&cache, m, "", NULL, 0, 10));
    rlb_cache_fill_finish(&cache, m);
    struct rlb_cache_entry *d = begin_kh(&cache, "h /k", "desktop\n");
    cr_assert(meta(&cache, d, "", NULL, 0, 10));
    rlb_cache_fill_finish(&cache, d);
    struct rlb_cache_found found;
    rlb_cache_lookup(&cache, rlb_cache_hash("h /k", 4), "h /kmobile\n", 4, 7, NULL, 0, &found);
    cr_expect_eq(found.ready, m);
    rlb_cache_lookup(&cache, rlb_cache_hash("h /k", 4), "h /kdesktop\n", 4, 8, NULL, 0, &found);
    cr_expect_eq(found.ready, d);
    cr_expect_eq(rlb_cache_invalidate(&cache, "h /k", 4, false), 2);
    cr_expect_eq(cache.objects, 0);
}

Test(store, purge_log_reaches_other_workers)
{
    struct rlb_cache_purges *p = rlb_cache_purges_new();
    cr_assert_not_null(p);
    struct rlb_cache w1, w2;
    cr_assert_eq(rlb_cache_init(&w1, &scfg, 16, p), 0);
    cr_assert_eq(rlb_cache_init(&w2, &scfg, 16, p), 0);
    put(&w2, "h /a", 10);
    put(&w2, "h /b", 10);
    put(&w2, "h /dir/1", 10);
    put(&w2, "h /dir/2", 10);
    struct rlb_cache_entry *f = begin(&w2, "h /b");

    /* Worker 1 takes a PURGE: its own entries at once, the log for the others. */
    put(&w1, "h /a", 10);
    cr_expect_eq(rlb_cache_invalidate(&w1, "h /a", 4, false), 1);
    cr_assert(rlb_cache_purge_post(p, "h /a", 4, false));
    /* Worker 2's next lookup, of another key, applies it first. */
    cr_expect_not_null(ready(&w2, "h /dir/1"));
    cr_expect_eq(w2.objects, 3);
    cr_expect_null(ready(&w2, "h /a"));
    cr_expect_not_null(ready(&w2, "h /b"));

    /* A prefix purge, and one for a key being fetched. */
    cr_assert(rlb_cache_purge_post(p, "h /dir/", 7, true));
    cr_assert(rlb_cache_purge_post(p, "h /b", 4, false));
    struct rlb_cache_found found = find_h(&w2, "h /b", NULL, 0);
    cr_expect_null(found.ready);
    cr_expect_null(found.filling, "the purged fetch is not waited for");
    cr_expect_null(ready(&w2, "h /dir/1"));
    cr_expect_null(ready(&w2, "h /dir/2"));
    cr_expect_eq(w2.objects, 0);
    rlb_cache_fill_finish(&w2, f);
    cr_expect_null(ready(&w2, "h /b"), "what a purged fetch brings is not stored");
    /* Applied once: a new entry under a purged key stays. */
    put(&w2, "h /a", 10);
    cr_expect_not_null(ready(&w2, "h /a"));
    cr_expect_eq(w2.purge_seen, 3);
    /* A worker created after the purges does not replay them. */
    struct rlb_cache w3;
    cr_assert_eq(rlb_cache_init(&w3, &scfg, 16, p), 0);
    cr_expect_eq(w3.purge_seen, 3);
    put(&w3, "h /dir/1", 10);
    cr_expect_not_null(ready(&w3, "h /dir/1"));
    rlb_cache_destroy(&w3);

    rlb_cache_destroy(&w1);
    rlb_cache_destroy(&w2);
    rlb_cache_purges_free(p);
}

Test(store, purge_log_overrun_drops_everything)
{
    struct rlb_cache_purges *p = rlb_cache_purges_new();
    cr_assert_not_null(p);
    struct rlb_cache w;
    cr_assert_eq(rlb_cache_init(&w, &scfg, 16, p), 0);
    put(&w, "h /keep", 10);
    put(&w, "h /purged", 10);
    /* Exactly a log's worth behind: every purge is still known, only the named key goes. */
    cr_assert(rlb_cache_purge_post(p, "h /purged", 9, false));
    for (int i = 1; i < RLB_CACHE_PURGE_LOG; i++)
        cr_assert(rlb_cache_purge_post(p, "h /other", 8, false));
    cr_expect_not_null(ready(&w, "h /keep"));
    cr_expect_null(ready(&w, "h /purged"));
    cr_expect_eq(w.objects, 1);
    /* More than a log's worth behind: nothing can be known, everything goes. */
    for (int i = 0; i < RLB_CACHE_PURGE_LOG + 1; i++)
        cr_assert(rlb_cache_purge_post(p, "h /other", 8, false));
    cr_expect_null(ready(&w, "h /keep"));
    cr_expect_eq(w.objects, 0);
    cr_expect_eq(w.used, 0);
    cr_expect_eq(w.purge_seen, 2 * RLB_CACHE_PURGE_LOG + 1);
    rlb_cache_destroy(&w);
    rlb_cache_purges_free(p);
}
