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
