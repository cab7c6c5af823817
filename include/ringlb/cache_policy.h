/* The rules of HTTP caching (RFC 9111, RFC 5861) as pure functions: Cache-Control parsing, HTTP dates,
 * freshness and age arithmetic, storability, cache keys and Vary matching. No state, no I/O: the store
 * (cache.h) and the proxy call these, and the unit tests drive them directly. */
#ifndef RINGLB_CACHE_POLICY_H
#define RINGLB_CACHE_POLICY_H

#include <ringlb/config-t.h>
#include <ringlb/http1-t.h>

/* Directive flags (request and response share one set; each side uses its own). */
#define RLB_CC_NO_STORE 0x0001
#define RLB_CC_NO_CACHE 0x0002
#define RLB_CC_PRIVATE 0x0004
#define RLB_CC_PUBLIC 0x0008
#define RLB_CC_MUST_REVALIDATE 0x0010
#define RLB_CC_PROXY_REVALIDATE 0x0020
#define RLB_CC_MUST_UNDERSTAND 0x0040
#define RLB_CC_ONLY_IF_CACHED 0x0080
#define RLB_CC_NO_TRANSFORM 0x0100
#define RLB_CC_IMMUTABLE 0x0200
#define RLB_CC_MAX_STALE_ANY 0x0400 /* max-stale without a value: any staleness */
#define RLB_CC_BAD_MAX_AGE 0x0800   /* max-age present but unusable (bad or conflicting values): stale */
#define RLB_CC_BAD_S_MAXAGE 0x1000

#define RLB_CC_ABSENT (-1)
/* RFC 9111 1.2.2: a delta-seconds too large to represent is taken as 2^31. */
#define RLB_DELTA_MAX 2147483648LL

/* Cache-Control of one message, every field line of it combined. Seconds; RLB_CC_ABSENT when not given. */
struct rlb_cc {
    uint32_t flags;
    int64_t max_age;
    int64_t s_maxage;
    int64_t max_stale;
    int64_t min_fresh;
    int64_t stale_while_revalidate;
    int64_t stale_if_error;
};

void rlb_cc_init(struct rlb_cc *cc);
/* Adds the directives of one Cache-Control field value. Unknown directives are ignored (RFC 9111 5.2.3);
 * a directive given twice keeps its first value, except that a second max-age or s-maxage with another
 * value makes the response stale (RFC 9111 4.2.1 allows either), and an invalid value of max-age or
 * s-maxage makes it stale too. Both token and quoted-string arguments are accepted. */
void rlb_cc_parse(struct rlb_cc *cc, const char *value, size_t len);

/* delta-seconds (RFC 9111 1.2.2): digits only, capped at RLB_DELTA_MAX; -1 when malformed. */
int64_t rlb_delta_seconds(const char *s, size_t len);

/* An HTTP-date in any of the three formats of RFC 9110 5.6.7, as seconds since the epoch; -1 when invalid. */
int64_t rlb_http_date_parse(const char *s, size_t len);
/* IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT"), 29 characters plus NUL. */
void rlb_http_date_format(int64_t t, char out[30]);

/* What a stored response needs for freshness and age (RFC 9111 4.2), all in epoch seconds. */
struct rlb_cache_times {
    int64_t request_time;  /* when the request that fetched it was sent */
    int64_t response_time; /* when the response head arrived */
    int64_t date;          /* Date header; response_time when absent or invalid */
    int64_t age;           /* Age header; 0 when absent or invalid */
    int64_t expires;       /* Expires header; -1 absent, 0 invalid (already expired) */
    int64_t last_modified; /* -1 absent */
};

/* corrected_initial_age of RFC 9111 4.2.3. */
int64_t rlb_cache_initial_age(const struct rlb_cache_times *t);
/* current_age at <now>, given the initial age computed once at storing time. */
static inline int64_t rlb_cache_current_age(int64_t initial_age, int64_t response_time, int64_t now)
{
    int64_t resident = now > response_time ? now - response_time : 0;
    return initial_age + resident;
}

/* Heuristic freshness (RFC 9111 4.2.2), allowed only when the configuration says so. */
struct rlb_cache_heuristic {
    bool enabled;
    uint32_t percent; /* of the time since Last-Modified */
    uint32_t max_s;   /* cap */
};

/* Status codes heuristically cacheable (RFC 9110 15.1). */
bool rlb_cache_status_heuristic(int status);
/* Status codes this cache understands (must-understand, RFC 9111 5.2.2.3): their storing is what
 * must-understand asks about; other final statuses are stored only with explicit freshness. */
bool rlb_cache_status_understood(int status);

/* freshness_lifetime of RFC 9111 4.2.1 for a shared cache; 0 when none can be given (stale at once). */
int64_t rlb_cache_freshness_lifetime(const struct rlb_cc *resp_cc, const struct rlb_cache_times *t, int status,
                                     const struct rlb_cache_heuristic *heuristic);

/* Why a response is not stored; NULL when it may be (RFC 9111 3, 3.5 for a shared cache). */
struct rlb_cache_store_ctx {
    uint8_t method;            /* of the request */
    int status;
    const struct rlb_cc *req_cc;
    const struct rlb_cc *resp_cc;
    bool authorization;        /* the request carried Authorization */
    bool set_cookie;           /* the response carries Set-Cookie */
    bool store_set_cookie;     /* configured: responses with Set-Cookie may be stored */
    bool vary_star;            /* Vary: * */
    bool has_expires;          /* an Expires field, valid or not */
    bool has_validator;        /* ETag or Last-Modified */
    int64_t lifetime;          /* freshness lifetime (rlb_cache_freshness_lifetime) */
};
const char *rlb_cache_unstorable(const struct rlb_cache_store_ctx *s);

/* How a stored response may answer a request (RFC 9111 4.2.4, 4.3, RFC 5861). */
enum rlb_cache_use {
    RLB_USE_FRESH = 0,  /* serve it */
    RLB_USE_STALE_OK,   /* stale, but the request accepts it (max-stale) */
    RLB_USE_SWR,        /* stale within stale-while-revalidate: serve and revalidate in the background */
    RLB_USE_VALIDATE,   /* must be validated with the origin first */
};

struct rlb_cache_freshness {
    int64_t age;           /* current age */
    int64_t lifetime;
    uint32_t resp_flags;   /* RLB_CC_* of the stored response */
    int64_t swr;           /* stale-while-revalidate of the stored response, -1 none */
};
enum rlb_cache_use rlb_cache_usable(const struct rlb_cache_freshness *f, const struct rlb_cc *req_cc);
/* Whether a stale response may stand in for an error (stale-if-error, RFC 5861 4). */
bool rlb_cache_stale_if_error(const struct rlb_cache_freshness *f, const struct rlb_cc *req_cc, int64_t resp_sie);

/* Methods whose success invalidates stored responses (RFC 9111 4.4): all but the safe ones. */
bool rlb_cache_method_unsafe(uint8_t method);

/* Query strings in cache keys. */
enum rlb_cache_query { RLB_CACHE_QUERY_FULL = 0, RLB_CACHE_QUERY_SORTED, RLB_CACHE_QUERY_IGNORE };

/* Writes the primary key: lower-cased host (when <with_host>), a space, then the path with the query as
 * configured (parameters sorted with '&' between, or dropped). Returns the length, or 0 when it does not
 * fit in <cap> (the request then bypasses the cache). */
size_t rlb_cache_key_build(char *out, size_t cap, bool with_host, enum rlb_cache_query query, struct rlb_str host,
                           struct rlb_str target);

/* Writes, for each name of <names> (a Vary value or the configured key headers), the request's combined
 * value of that header (field lines joined by ", ", whitespace collapsed), each followed by '\n'; an absent
 * header writes "\x01\n" so that "absent" and "empty" differ. Returns the length, or -1 when <cap> is too
 * small or <names> holds '*'. */
int rlb_cache_vary_values(char *out, size_t cap, struct rlb_str names, const struct rlb_http_header *h,
                          uint32_t n);

#endif
