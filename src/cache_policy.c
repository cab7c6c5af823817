/* RFC 9111 (and RFC 5861) as arithmetic and predicates; see cache_policy.h. */
#include <ringlb/cache_policy.h>
#include <ringlb/str.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void rlb_cc_init(struct rlb_cc *cc)
{
    memset(cc, 0, sizeof(*cc));
    cc->max_age = cc->s_maxage = cc->max_stale = cc->min_fresh = RLB_CC_ABSENT;
    cc->stale_while_revalidate = cc->stale_if_error = RLB_CC_ABSENT;
}

int64_t rlb_delta_seconds(const char *s, size_t len)
{
    if (len == 0)
        return -1;
    int64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        if (v < RLB_DELTA_MAX)
            v = v * 10 + (s[i] - '0');
    }
    return v > RLB_DELTA_MAX ? RLB_DELTA_MAX : v;
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* Sets a delta-seconds directive; a repeat keeps the first value. For the lifetimes (<bad_flag> set), an
 * unusable or conflicting value makes the response stale instead of guessing. */
static void set_delta(struct rlb_cc *cc, int64_t *field, const char *arg, size_t alen, bool has_arg, uint32_t bad_flag)
{
    int64_t v = has_arg ? rlb_delta_seconds(arg, alen) : -1;
    if (v < 0) {
        cc->flags |= bad_flag;
        return;
    }
    if (*field == RLB_CC_ABSENT)
        *field = v;
    else if (*field != v)
        cc->flags |= bad_flag;
}

void rlb_cc_parse(struct rlb_cc *cc, const char *v, size_t len)
{
    size_t i = 0;
    while (i < len) {
        while (i < len && (is_ows(v[i]) || v[i] == ','))
            i++;
        size_t ns = i;
        while (i < len && v[i] != '=' && v[i] != ',' && !is_ows(v[i]))
            i++;
        size_t nlen = i - ns;
        while (i < len && is_ows(v[i]))
            i++;
        const char *arg = NULL;
        size_t alen = 0;
        bool has_arg = false, malformed = false;
        if (i < len && v[i] == '=') {
            i++;
            while (i < len && is_ows(v[i]))
                i++;
            has_arg = true;
            if (i < len && v[i] == '"') {
                i++;
                arg = v + i;
                while (i < len && v[i] != '"') {
                    if (v[i] == '\\' && i + 1 < len)
                        i++;
                    i++;
                }
                alen = (size_t)(v + i - arg);
                if (i < len)
                    i++; /* closing quote */
                else
                    malformed = true;
            } else {
                arg = v + i;
                while (i < len && v[i] != ',' && !is_ows(v[i]))
                    i++;
                alen = (size_t)(v + i - arg);
            }
        }
        /* Anything else before the next comma makes this directive garbage: skip to the comma. */
        while (i < len && v[i] != ',') {
            if (!is_ows(v[i]))
                malformed = true;
            i++;
        }
        if (nlen == 0)
            continue;
        const char *n = v + ns;
#define IS(lit) rlb_str_ieq_lit(n, nlen, lit, sizeof(lit) - 1)
        if (IS("max-age"))
            set_delta(cc, &cc->max_age, arg, malformed ? 0 : alen, has_arg && !malformed, RLB_CC_BAD_MAX_AGE);
        else if (IS("s-maxage"))
            set_delta(cc, &cc->s_maxage, arg, malformed ? 0 : alen, has_arg && !malformed, RLB_CC_BAD_S_MAXAGE);
        else if (IS("max-stale")) {
            if (!has_arg)
                cc->flags |= RLB_CC_MAX_STALE_ANY;
            else
                set_delta(cc, &cc->max_stale, arg, alen, !malformed, 0);
        } else if (IS("min-fresh"))
            set_delta(cc, &cc->min_fresh, arg, alen, has_arg && !malformed, 0);
        else if (IS("stale-while-revalidate"))
            set_delta(cc, &cc->stale_while_revalidate, arg, alen, has_arg && !malformed, 0);
        else if (IS("stale-if-error"))
            set_delta(cc, &cc->stale_if_error, arg, alen, has_arg && !malformed, 0);
        /* no-cache and private may list field names (RFC 9111 5.2.2.4, 5.2.2.7); this cache treats the
         * qualified forms like the plain ones, which is always allowed (stricter). */
        else if (IS("no-cache"))
            cc->flags |= RLB_CC_NO_CACHE;
        else if (IS("private"))
            cc->flags |= RLB_CC_PRIVATE;
        else if (IS("no-store"))
            cc->flags |= RLB_CC_NO_STORE;
        else if (IS("public"))
            cc->flags |= RLB_CC_PUBLIC;
        else if (IS("must-revalidate"))
            cc->flags |= RLB_CC_MUST_REVALIDATE;
        else if (IS("proxy-revalidate"))
            cc->flags |= RLB_CC_PROXY_REVALIDATE;
        else if (IS("must-understand"))
            cc->flags |= RLB_CC_MUST_UNDERSTAND;
        else if (IS("only-if-cached"))
            cc->flags |= RLB_CC_ONLY_IF_CACHED;
        else if (IS("no-transform"))
            cc->flags |= RLB_CC_NO_TRANSFORM;
        else if (IS("immutable"))
            cc->flags |= RLB_CC_IMMUTABLE;
#undef IS
    }
}

static int month_index(const char *m)
{
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    for (int i = 0; i < 12; i++)
        if (memcmp(months + 3 * i, m, 3) == 0)
            return i;
    return -1;
}

static bool digits(const char *s, size_t n, int *out)
{
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

/* "HH:MM:SS" */
static bool clock_of(const char *s, int *h, int *m, int *sec)
{
    return s[2] == ':' && s[5] == ':' && digits(s, 2, h) && digits(s + 3, 2, m) && digits(s + 6, 2, sec) && *h < 24 &&
           *m < 60 && *sec <= 60;
}

static int64_t to_epoch(int year, int mon, int day, int h, int m, int s)
{
    if (day < 1 || day > 31 || mon < 0 || year < 1900)
        return -1;
    struct tm tm = {.tm_year = year - 1900, .tm_mon = mon, .tm_mday = day, .tm_hour = h, .tm_min = m, .tm_sec = s};
    time_t t = timegm(&tm);
    if (t < 0 || tm.tm_mday != day) /* 31 Feb and the like */
        return -1;
    return (int64_t)t;
}

int64_t rlb_http_date_parse(const char *s, size_t len)
{
    char b[64];
    while (len && is_ows(*s))
        s++, len--;
    while (len && is_ows(s[len - 1]))
        len--;
    if (len < 24 || len >= sizeof(b))
        return -1;
    memcpy(b, s, len);
    b[len] = 0;
    int day, year, h, m, sec, mon;
    const char *comma = memchr(b, ',', len);
    if (comma && comma - b == 3 && len == 29) {
        /* IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT */
        if (b[4] != ' ' || b[7] != ' ' || b[11] != ' ' || b[16] != ' ' || memcmp(b + 25, " GMT", 4) != 0)
            return -1;
        if (!digits(b + 5, 2, &day) || (mon = month_index(b + 8)) < 0 || !digits(b + 12, 4, &year) ||
            !clock_of(b + 17, &h, &m, &sec))
            return -1;
        return to_epoch(year, mon, day, h, m, sec);
    }
    if (comma) {
        /* obsolete RFC 850: Sunday, 06-Nov-94 08:49:37 GMT */
        const char *d = comma + 1;
        size_t rest = len - (size_t)(d - b);
        if (rest != 23 || d[0] != ' ' || d[3] != '-' || d[7] != '-' || d[10] != ' ' || memcmp(d + 19, " GMT", 4) != 0)
            return -1;
        if (!digits(d + 1, 2, &day) || (mon = month_index(d + 4)) < 0 || !digits(d + 8, 2, &year) ||
            !clock_of(d + 11, &h, &m, &sec))
            return -1;
        /* RFC 9110 5.6.7: a two-digit year more than 50 years in the future is the latest past year with
         * those digits. */
        time_t now = time(NULL);
        struct tm nt;
        gmtime_r(&now, &nt);
        int this_year = nt.tm_year + 1900;
        year += this_year - this_year % 100;
        if (year > this_year + 50)
            year -= 100;
        return to_epoch(year, mon, day, h, m, sec);
    }
    /* obsolete asctime: Sun Nov  6 08:49:37 1994 */
    if (len != 24 || b[3] != ' ' || b[7] != ' ' || b[10] != ' ' || b[19] != ' ')
        return -1;
    if ((mon = month_index(b + 4)) < 0 || !clock_of(b + 11, &h, &m, &sec) || !digits(b + 20, 4, &year))
        return -1;
    if (b[8] == ' ') {
        if (!digits(b + 9, 1, &day))
            return -1;
    } else if (!digits(b + 8, 2, &day)) {
        return -1;
    }
    return to_epoch(year, mon, day, h, m, sec);
}

void rlb_http_date_format(int64_t t, char out[30])
{
    static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    char tmp[64]; /* room for what the compiler cannot rule out; real dates take 29 */
    snprintf(tmp, sizeof(tmp), "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday], tm.tm_mday, months[tm.tm_mon],
             (tm.tm_year + 1900) % 10000, tm.tm_hour, tm.tm_min, tm.tm_sec);
    memcpy(out, tmp, 29);
    out[29] = 0;
}

int64_t rlb_cache_initial_age(const struct rlb_cache_times *t)
{
    int64_t apparent = t->response_time > t->date ? t->response_time - t->date : 0;
    int64_t delay = t->response_time > t->request_time ? t->response_time - t->request_time : 0;
    int64_t corrected_age_value = t->age + delay;
    int64_t v = apparent > corrected_age_value ? apparent : corrected_age_value;
    return v > RLB_DELTA_MAX ? RLB_DELTA_MAX : v;
}

bool rlb_cache_status_heuristic(int status)
{
    switch (status) {
    case 200: case 203: case 204: case 206: case 300: case 301: case 308:
    case 404: case 405: case 410: case 414: case 501:
        return true;
    default:
        return false;
    }
}

bool rlb_cache_status_understood(int status)
{
    /* 206 is left out on purpose: this cache never stores partial content. */
    switch (status) {
    case 200: case 203: case 204: case 300: case 301: case 302: case 303: case 307: case 308:
    case 404: case 405: case 410: case 414: case 501:
        return true;
    default:
        return false;
    }
}

int64_t rlb_cache_freshness_lifetime(const struct rlb_cc *cc, const struct rlb_cache_times *t, int status,
                                     const struct rlb_cache_heuristic *heuristic)
{
    if (cc->s_maxage != RLB_CC_ABSENT || (cc->flags & RLB_CC_BAD_S_MAXAGE))
        return (cc->flags & RLB_CC_BAD_S_MAXAGE) ? 0 : cc->s_maxage;
    if (cc->max_age != RLB_CC_ABSENT || (cc->flags & RLB_CC_BAD_MAX_AGE))
        return (cc->flags & RLB_CC_BAD_MAX_AGE) ? 0 : cc->max_age;
    if (t->expires >= 0)
        return t->expires > t->date ? t->expires - t->date : 0;
    if (heuristic && heuristic->enabled && t->last_modified >= 0 && t->last_modified < t->date &&
        (rlb_cache_status_heuristic(status) || (cc->flags & RLB_CC_PUBLIC))) {
        int64_t h = (t->date - t->last_modified) * heuristic->percent / 100;
        return h > heuristic->max_s ? heuristic->max_s : h;
    }
    return 0;
}

const char *rlb_cache_unstorable(const struct rlb_cache_store_ctx *s)
{
    if (s->method != RLB_METHOD_GET)
        return "method";
    const struct rlb_cc *rq = s->req_cc, *rs = s->resp_cc;
    /* Any final status may be stored (RFC 9111 3) but partial content, which this cache never stores, and
     * 304, which only refreshes what is stored. */
    if (s->status < 200 || s->status == 206 || s->status == 304)
        return "status";
    if (rs->flags & RLB_CC_MUST_UNDERSTAND) {
        /* must-understand overrides no-store for status codes the cache knows (RFC 9111 5.2.2.3). */
        if (!rlb_cache_status_understood(s->status))
            return "must-understand with a status this cache does not know";
    } else if (rs->flags & RLB_CC_NO_STORE) {
        return "no-store";
    }
    if (rq->flags & RLB_CC_NO_STORE)
        return "request no-store";
    if (rs->flags & RLB_CC_PRIVATE)
        return "private";
    if (s->authorization &&
        !(rs->flags & (RLB_CC_MUST_REVALIDATE | RLB_CC_PUBLIC)) && rs->s_maxage == RLB_CC_ABSENT)
        return "request with Authorization";
    if (s->vary_star)
        return "Vary: *";
    if (s->set_cookie && !s->store_set_cookie)
        return "Set-Cookie";
    bool explicit = (rs->flags & (RLB_CC_PUBLIC | RLB_CC_BAD_MAX_AGE | RLB_CC_BAD_S_MAXAGE)) ||
                    rs->max_age != RLB_CC_ABSENT || rs->s_maxage != RLB_CC_ABSENT || s->has_expires;
    if (!explicit && !rlb_cache_status_heuristic(s->status))
        return "no explicit freshness and a status not heuristically cacheable";
    /* Stale at once and nothing to revalidate with: storing it could never save a request. */
    if (s->lifetime <= 0 && !s->has_validator && rs->stale_if_error <= 0 && rs->stale_while_revalidate <= 0)
        return "stale at once without a validator";
    return NULL;
}

enum rlb_cache_use rlb_cache_usable(const struct rlb_cache_freshness *f, const struct rlb_cc *req_cc)
{
    /* no-cache in the response, or in the request (Pragma: no-cache counts when Cache-Control is absent, the
     * caller folds it in): validate first. */
    if ((f->resp_flags & RLB_CC_NO_CACHE) || (req_cc->flags & RLB_CC_NO_CACHE))
        return RLB_USE_VALIDATE;
    if (req_cc->max_age != RLB_CC_ABSENT && f->age > req_cc->max_age)
        return RLB_USE_VALIDATE;
    int64_t left = f->lifetime - f->age; /* > 0: fresh */
    if (req_cc->min_fresh != RLB_CC_ABSENT && left < req_cc->min_fresh)
        return RLB_USE_VALIDATE;
    if (left > 0)
        return RLB_USE_FRESH;
    int64_t staleness = -left;
    /* A shared cache never serves stale what must-revalidate, proxy-revalidate or s-maxage forbid
     * (RFC 9111 5.2.2.2, 5.2.2.8, 5.2.2.10). */
    if (f->resp_flags & (RLB_CC_MUST_REVALIDATE | RLB_CC_PROXY_REVALIDATE | RLB_CC_BAD_S_MAXAGE))
        return RLB_USE_VALIDATE;
    if ((req_cc->flags & RLB_CC_MAX_STALE_ANY) ||
        (req_cc->max_stale != RLB_CC_ABSENT && staleness <= req_cc->max_stale))
        return RLB_USE_STALE_OK;
    if (f->swr >= 0 && staleness <= f->swr)
        return RLB_USE_SWR;
    return RLB_USE_VALIDATE;
}

bool rlb_cache_stale_if_error(const struct rlb_cache_freshness *f, const struct rlb_cc *req_cc, int64_t resp_sie)
{
    if (f->resp_flags & (RLB_CC_MUST_REVALIDATE | RLB_CC_PROXY_REVALIDATE | RLB_CC_BAD_S_MAXAGE | RLB_CC_NO_CACHE))
        return false;
    int64_t staleness = f->age - f->lifetime;
    if (staleness < 0)
        staleness = 0;
    /* The request's own stale-if-error (RFC 5861 4) wins over the response's. */
    int64_t allowed = req_cc->stale_if_error != RLB_CC_ABSENT ? req_cc->stale_if_error : resp_sie;
    return allowed >= 0 && staleness <= allowed;
}

bool rlb_cache_method_unsafe(uint8_t method)
{
    return method != RLB_METHOD_GET && method != RLB_METHOD_HEAD && method != RLB_METHOD_OPTIONS &&
           method != RLB_METHOD_TRACE;
}

struct span {
    const char *p;
    size_t n;
};

static int span_cmp(const void *a, const void *b)
{
    const struct span *x = a, *y = b;
    size_t n = x->n < y->n ? x->n : y->n;
    int c = memcmp(x->p, y->p, n);
    return c ? c : (x->n > y->n) - (x->n < y->n);
}

size_t rlb_cache_key_build(char *out, size_t cap, bool with_host, enum rlb_cache_query query, struct rlb_str host,
                           struct rlb_str target)
{
    size_t o = 0;
    if (with_host) {
        /* A port equal to the default would make two keys for one resource; the Host as sent is kept
         * otherwise (lower-cased: host names are case-insensitive). */
        if (host.len > cap)
            return 0;
        for (size_t i = 0; i < host.len; i++)
            out[o++] = rlb_lower(host.ptr[i]);
        if (o >= 3 && memcmp(out + o - 3, ":80", 3) == 0)
            o -= 3;
    }
    if (o + 1 > cap)
        return 0;
    out[o++] = ' ';
    const char *q = memchr(target.ptr, '?', target.len);
    size_t path_len = q ? (size_t)(q - target.ptr) : target.len;
    if (o + path_len > cap)
        return 0;
    memcpy(out + o, target.ptr, path_len);
    o += path_len;
    if (!q || query == RLB_CACHE_QUERY_IGNORE)
        return o;
    const char *qs = q + 1;
    size_t qlen = target.len - path_len - 1;
    if (query == RLB_CACHE_QUERY_FULL) {
        if (o + 1 + qlen > cap)
            return 0;
        out[o++] = '?';
        memcpy(out + o, qs, qlen);
        return o + qlen;
    }
    struct span parts[64];
    size_t np = 0, start = 0;
    for (size_t i = 0; i <= qlen; i++) {
        if (i == qlen || qs[i] == '&') {
            if (i > start) {
                if (np == 64)
                    return 0;
                parts[np++] = (struct span){qs + start, i - start};
            }
            start = i + 1;
        }
    }
    if (np == 0)
        return o;
    qsort(parts, np, sizeof(parts[0]), span_cmp);
    for (size_t i = 0; i < np; i++) {
        if (o + 1 + parts[i].n > cap)
            return 0;
        out[o++] = i ? '&' : '?';
        memcpy(out + o, parts[i].p, parts[i].n);
        o += parts[i].n;
    }
    return o;
}

/* Appends one header's combined value, whitespace runs collapsed to one space. */
static bool append_value(char *out, size_t cap, size_t *o, const char *v, size_t n, bool *first)
{
    if (!*first) {
        if (*o + 2 > cap)
            return false;
        out[(*o)++] = ',';
        out[(*o)++] = ' ';
    }
    *first = false;
    bool space = false;
    for (size_t i = 0; i < n; i++) {
        if (is_ows(v[i])) {
            space = true;
            continue;
        }
        if (*o + 2 > cap)
            return false;
        if (space)
            out[(*o)++] = ' ';
        space = false;
        out[(*o)++] = v[i];
    }
    return true;
}

int rlb_cache_vary_values(char *out, size_t cap, struct rlb_str names, const struct rlb_http_header *h, uint32_t n)
{
    size_t o = 0, i = 0;
    while (i < names.len) {
        while (i < names.len && (is_ows(names.ptr[i]) || names.ptr[i] == ','))
            i++;
        size_t s = i;
        while (i < names.len && names.ptr[i] != ',' && !is_ows(names.ptr[i]))
            i++;
        if (i == s)
            continue;
        const char *name = names.ptr + s;
        size_t nlen = i - s;
        if (nlen == 1 && name[0] == '*')
            return -1;
        bool first = true;
        for (uint32_t k = 0; k < n; k++)
            if (rlb_str_ieq(h[k].name, h[k].name_len, name, nlen) &&
                !append_value(out, cap, &o, h[k].value, h[k].value_len, &first))
                return -1;
        if (o + 2 > cap)
            return -1;
        if (first)
            out[o++] = '\x01';
        out[o++] = '\n';
    }
    return (int)o;
}
