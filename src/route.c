#include <ringlb/route.h>
#include <ringlb/str.h>

#include <string.h>

static size_t strip_port(const char *host, size_t len)
{
    if (len && host[0] == '[') {
        const char *end = memchr(host, ']', len);
        return end ? (size_t)(end - host) + 1 : len;
    }
    const char *colon = memchr(host, ':', len);
    return colon ? (size_t)(colon - host) : len;
}

static bool host_matches(const char *pattern, const char *host, size_t len)
{
    if (pattern[0] == '*' && pattern[1] == '\0')
        return true;
    if (pattern[0] == '*' && pattern[1] == '.') {
        /* "*.example.com" needs at least one label before ".example.com". */
        size_t slen = strlen(pattern + 1);
        return len > slen && rlb_str_ieq_lit(host + len - slen, slen, pattern + 1, slen);
    }
    return rlb_str_ieq_lit(host, len, pattern, strlen(pattern));
}

const struct rlb_route_cfg *rlb_route_find(const struct rlb_config *cfg, uint32_t listener, const char *host,
                                           size_t host_len, const char *path, size_t path_len)
{
    host_len = strip_port(host, host_len);
    while (host_len && host[host_len - 1] == '.')
        host_len--; /* "example.com." is the same name */
    for (uint32_t v = 0; v < cfg->num_vhosts; v++) {
        const struct rlb_vhost_cfg *vh = &cfg->vhosts[v];
        if (!((vh->listener_mask >> listener) & 1))
            continue;
        bool hit = false;
        for (uint32_t h = 0; h < vh->num_hosts && !hit; h++)
            hit = host_matches(vh->hosts[h], host, host_len);
        if (!hit)
            continue;
        /* Routes are sorted longest prefix first: the first match is the best. */
        for (uint32_t r = 0; r < vh->num_routes; r++) {
            const struct rlb_route_cfg *rt = &vh->routes[r];
            if (rlb_str_has_prefix(path, path_len, rt->path_prefix, rt->path_prefix_len))
                return rt;
        }
        return NULL;
    }
    return NULL;
}

void rlb_route_split_target(const char *target, size_t len, struct rlb_str *host, struct rlb_str *path)
{
    path->ptr = target;
    path->len = len;
    size_t scheme;
    if (len >= 7 && rlb_str_ieq_lit(target, 7, "http://", 7))
        scheme = 7;
    else if (len >= 8 && rlb_str_ieq_lit(target, 8, "https://", 8))
        scheme = 8;
    else
        return;
    const char *auth = target + scheme;
    size_t rest = len - scheme;
    const char *slash = memchr(auth, '/', rest);
    size_t alen = slash ? (size_t)(slash - auth) : rest;
    const char *q = memchr(auth, '?', alen);
    if (q)
        alen = (size_t)(q - auth);
    host->ptr = auth;
    host->len = alen;
    if (slash && (!q || slash < q)) {
        path->ptr = slash;
        path->len = len - (size_t)(slash - target);
    } else {
        path->ptr = "/";
        path->len = 1;
    }
}

int rlb_split_from_cookie(const struct rlb_config *cfg, const struct rlb_route_cfg *r, const char *v, size_t len)
{
    for (uint32_t i = 0; i < r->num_splits; i++) {
        const char *name = cfg->pools[r->splits[i].pool].name;
        if (strlen(name) == len && memcmp(name, v, len) == 0)
            return (int)i;
    }
    return -1;
}

uint32_t rlb_split_choose(const struct rlb_route_cfg *r, uint64_t random)
{
    uint64_t total = 0;
    for (uint32_t i = 0; i < r->num_splits; i++)
        total += r->splits[i].weight;
    /* Multiply-shift maps 64 random bits onto [0, total) without the bias of a modulo. */
    uint64_t x = (uint64_t)(((unsigned __int128)random * total) >> 64);
    for (uint32_t i = 0; i < r->num_splits; i++) {
        if (x < r->splits[i].weight)
            return i;
        x -= r->splits[i].weight;
    }
    return r->num_splits - 1;
}

/* Cookie: a=1; b=2 (RFC 6265 5.4: pairs separated by "; "). Tolerates
 * missing spaces and several Cookie fields. */
bool rlb_cookie_find(const struct rlb_http_header *headers, uint32_t n, const char *name, size_t name_len,
                     struct rlb_str *value)
{
    for (uint32_t i = 0; i < n; i++) {
        const struct rlb_http_header *h = &headers[i];
        if (!rlb_str_ieq(h->name, h->name_len, "cookie", 6))
            continue;
        const char *p = h->value, *end = h->value + h->value_len;
        while (p < end) {
            while (p < end && (*p == ' ' || *p == ';'))
                p++;
            const char *pair_end = memchr(p, ';', (size_t)(end - p));
            if (!pair_end)
                pair_end = end;
            const char *eq = memchr(p, '=', (size_t)(pair_end - p));
            if (eq && (size_t)(eq - p) == name_len && memcmp(p, name, name_len) == 0) {
                const char *v = eq + 1, *ve = pair_end;
                while (ve > v && ve[-1] == ' ')
                    ve--;
                if (ve - v >= 2 && v[0] == '"' && ve[-1] == '"') {
                    v++;
                    ve--;
                }
                value->ptr = v;
                value->len = (size_t)(ve - v);
                return true;
            }
            p = pair_end;
        }
    }
    return false;
}
