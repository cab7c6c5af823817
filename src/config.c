/* The configuration snapshot: defaults, the one-line builder, value parsers and the checks every builder shares.
 * The YAML reader lives in config_parse.c; it only turns text into values, and everything that needs the whole
 * picture (names, references, ordering) happens here so that all builders get the same rules. */
#include <ringlb/api.h>
#include <ringlb/config.h>
#include <ringlb/tls.h>
#include <ringlb/lb.h>
#include <ringlb/maglev.h>

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <strings.h>

#define MAX_LISTENERS 64 /* vhost listener_mask is a uint64_t */
#define MAX_WORKERS 1024
#define MAX_WEIGHT 1000
#define MAX_HOST_LEN 253

/* ---------------------------------------------------------------------------------------------------------------
 * Messages
 */

/* Positions are optional: one-line and demo snapshots have no file to point into. */
RLB_PRINTF(5, 6)
static int fail_at(const struct rlb_config *cfg, struct rlb_config_mark mark, char *err, size_t errlen, const char *fmt,
                   ...)
{
    if (err == NULL || errlen == 0)
        return -1;
    const char *src = cfg->source != NULL ? cfg->source : "<config>";
    int n;
    if (mark.line != 0)
        n = snprintf(err, errlen, "%s:%u:%u: ", src, mark.line, mark.column);
    else
        n = snprintf(err, errlen, "%s: ", src);
    if (n < 0 || (size_t)n >= errlen)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

/* ---------------------------------------------------------------------------------------------------------------
 * Value parsers
 */

/* Digits only: YAML would also read 0x10, +5 or 1_000 as numbers, and accepting them would surprise more people
 * than it helps. */
static int parse_u64(const char *s, size_t len, uint64_t *out)
{
    if (len == 0)
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

int rlb_duration_parse_ms(const char *text, uint32_t *out_ms)
{
    if (text == NULL)
        return -1;
    size_t len = strlen(text), digits = 0;
    while (digits < len && text[digits] >= '0' && text[digits] <= '9')
        digits++;
    const char *unit = text + digits;
    uint64_t mult;
    if (*unit == '\0' || strcmp(unit, "ms") == 0)
        mult = 1;
    else if (strcmp(unit, "s") == 0)
        mult = 1000;
    else if (strcmp(unit, "m") == 0)
        mult = 60 * 1000;
    else if (strcmp(unit, "h") == 0)
        mult = 3600 * 1000;
    else
        return -1;
    uint64_t v;
    if (parse_u64(text, digits, &v) != 0 || v > UINT32_MAX / mult)
        return -1;
    *out_ms = (uint32_t)(v * mult);
    return 0;
}

int rlb_size_parse(const char *text, uint64_t *out)
{
    if (text == NULL)
        return -1;
    size_t len = strlen(text), digits = 0;
    while (digits < len && text[digits] >= '0' && text[digits] <= '9')
        digits++;
    const char *unit = text + digits;
    unsigned shift;
    if (*unit == '\0')
        shift = 0;
    else if (unit[1] != '\0')
        return -1;
    else if (*unit == 'k' || *unit == 'K')
        shift = 10;
    else if (*unit == 'm' || *unit == 'M')
        shift = 20;
    else if (*unit == 'g' || *unit == 'G')
        shift = 30;
    else
        return -1;
    uint64_t v;
    if (parse_u64(text, digits, &v) != 0 || v > (UINT64_MAX >> shift))
        return -1;
    *out = v << shift;
    return 0;
}

int rlb_sockaddr_parse(const char *text, struct rlb_sockaddr *out)
{
    if (text == NULL || out == NULL)
        return -1;
    const char *colon, *host = text;
    size_t host_len;
    bool v6 = false;
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (close == NULL || close[1] != ':')
            return -1;
        host = text + 1;
        host_len = (size_t)(close - host);
        colon = close + 1;
        v6 = true;
    } else {
        /* A bare IPv6 address has colons of its own; brackets are the only way to say where the port starts. */
        colon = strchr(text, ':');
        if (colon == NULL || strchr(colon + 1, ':') != NULL)
            return -1;
        host_len = (size_t)(colon - text);
    }
    const char *port_text = colon + 1;
    uint64_t port;
    if (strlen(port_text) > 5 || parse_u64(port_text, strlen(port_text), &port) != 0 || port == 0 || port > 65535)
        return -1;

    char hostbuf[INET6_ADDRSTRLEN];
    if (host_len == 0 || host_len >= sizeof(hostbuf))
        return -1;
    memcpy(hostbuf, host, host_len);
    hostbuf[host_len] = '\0';

    struct rlb_sockaddr a;
    memset(&a, 0, sizeof(a));
    if (v6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a.ss;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, hostbuf, &sin6->sin6_addr) != 1)
            return -1;
        a.len = sizeof(*sin6);
        char ntop[INET6_ADDRSTRLEN];
        inet_ntop(AF_INET6, &sin6->sin6_addr, ntop, sizeof(ntop));
        snprintf(a.text, sizeof(a.text), "[%s]:%u", ntop, (unsigned)port);
    } else {
        struct sockaddr_in *sin = (struct sockaddr_in *)&a.ss;
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)port);
        if (strcmp(hostbuf, "*") == 0)
            sin->sin_addr.s_addr = htonl(INADDR_ANY);
        else if (strcasecmp(hostbuf, "localhost") == 0)
            sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        else if (inet_pton(AF_INET, hostbuf, &sin->sin_addr) != 1)
            return -1;
        a.len = sizeof(*sin);
        char ntop[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &sin->sin_addr, ntop, sizeof(ntop));
        snprintf(a.text, sizeof(a.text), "%s:%u", ntop, (unsigned)port);
    }
    *out = a;
    return 0;
}

/* ---------------------------------------------------------------------------------------------------------------
 * Building and freeing
 */

/* The one place defaults live; docs/configuration.md and config-t.h describe the same numbers. Each non-NULL
 * argument gets the defaults of its kind, so that every builder, and every listener, pool or backend it adds,
 * starts from the same values. */
static int set_defaults(struct rlb_config *cfg, struct rlb_listener_cfg *l, struct rlb_pool_cfg *p,
                        struct rlb_backend_cfg *b)
{
    if (cfg != NULL) {
        cfg->workers = 0;
        cfg->cpus = NULL;
        cfg->num_cpus = 0;
        cfg->limits.max_request_line = 8192;
        cfg->limits.max_head_size = 65536;
        cfg->limits.max_headers = 100;
        cfg->timeouts.client_header = 10000;
        cfg->timeouts.client_keepalive = 60000;
        cfg->timeouts.upstream_connect = 3000;
        cfg->timeouts.upstream_response = 60000;
        cfg->timeouts.body_idle = 60000;
        cfg->timeouts.drain = 10000;
        cfg->buffers.count = 1024;
        cfg->buffers.size = 32768;
        cfg->buffers.client_count = 1024;
        cfg->buffers.client_size = 16384;
        cfg->buffers.splice_min = 131072;
        cfg->max_connections = 16384;
        if ((cfg->via_name = strdup("ringlb")) == NULL)
            return -1;
    }
    if (l != NULL) {
        l->backlog = 4096; /* name: "listener<N>", given by rlb_config_finish once N is final */
        l->defer_accept = true;
        l->tls.protocols = RLB_TLS_PROTO_12 | RLB_TLS_PROTO_13;
        l->tls.tickets = true;
        l->tls.ticket_rotation_ms = 3600 * 1000;
        l->tls.ktls = true;
        l->tls.handshake_timeout_ms = 10000;
    }
    if (p != NULL) {
        p->balance = RLB_BALANCE_WRR;
        p->keepalive_max_idle = 32;
        p->keepalive_idle_timeout_ms = 60000;
        p->hash.key = RLB_HASH_KEY_CLIENT_IP;
        p->check.status_min = 200;
        p->check.status_max = 399;
        p->check.interval_ms = 2000;
        p->check.timeout_ms = 1000;
        p->check.rise = 2;
        p->check.fall = 3;
        p->passive.eject_ms = 1000;
        p->passive.eject_max_ms = 30000;
        p->passive.consecutive_5xx = 0;
        p->retry.tries = 3;
        p->retry.budget_percent = 20;
        p->retry.budget_min = 10;
        p->retry.on_5xx = true;
        p->tls.verify = true;
    }
    if (b != NULL)
        b->weight = 1;
    return 0;
}

struct rlb_config *rlb_config_new(const char *source)
{
    struct rlb_config *cfg = calloc(1, sizeof(*cfg));
    if (cfg == NULL)
        return NULL;
    cfg->source = strdup(source != NULL ? source : "<config>");
    if (cfg->source == NULL || set_defaults(cfg, NULL, NULL, NULL) != 0) {
        rlb_config_free(cfg);
        return NULL;
    }
    return cfg;
}

int rlb_config_alloc(struct rlb_config *cfg, uint32_t num_listeners, uint32_t num_pools, uint32_t num_vhosts)
{
    /* calloc(0) may return NULL legitimately; one spare element keeps "NULL means out of memory" true. */
    cfg->listeners = calloc(num_listeners + 1, sizeof(*cfg->listeners));
    cfg->pools = calloc(num_pools + 1, sizeof(*cfg->pools));
    cfg->vhosts = calloc(num_vhosts + 1, sizeof(*cfg->vhosts));
    if (cfg->listeners == NULL || cfg->pools == NULL || cfg->vhosts == NULL)
        return -1;
    cfg->num_listeners = num_listeners;
    cfg->num_pools = num_pools;
    cfg->num_vhosts = num_vhosts;
    for (uint32_t i = 0; i < num_listeners; i++)
        set_defaults(NULL, &cfg->listeners[i], NULL, NULL);
    for (uint32_t i = 0; i < num_pools; i++)
        set_defaults(NULL, NULL, &cfg->pools[i], NULL);
    return 0;
}

int rlb_config_alloc_backends(struct rlb_pool_cfg *pool, uint32_t num_backends)
{
    if ((pool->backends = calloc(num_backends + 1, sizeof(*pool->backends))) == NULL)
        return -1;
    pool->num_backends = num_backends;
    for (uint32_t i = 0; i < num_backends; i++)
        set_defaults(NULL, NULL, NULL, &pool->backends[i]);
    return 0;
}

void rlb_config_free(struct rlb_config *cfg)
{
    if (cfg == NULL)
        return;
    free(cfg->source);
    free(cfg->cpus);
    free(cfg->via_name);
    for (uint32_t i = 0; i < cfg->cache.num_key_headers; i++)
        free(cfg->cache.key_headers[i]);
    free(cfg->cache.key_headers);
    free(cfg->cache.key_headers_joined);
    free(cfg->cache.purge_token);
    for (uint32_t i = 0; cfg->listeners != NULL && i < cfg->num_listeners; i++) {
        struct rlb_listener_cfg *l = &cfg->listeners[i];
        free(l->name);
        for (uint32_t j = 0; l->tls.certs != NULL && j < l->tls.num_certs; j++) {
            struct rlb_tls_cert_cfg *c = &l->tls.certs[j];
            free(c->cert);
            free(c->key);
            free(c->ocsp);
            for (uint32_t k = 0; c->names != NULL && k < c->num_names; k++)
                free(c->names[k]);
            free(c->names);
        }
        free(l->tls.certs);
        free(l->tls.ciphers);
        for (uint32_t j = 0; l->tls.alpn != NULL && j < l->tls.num_alpn; j++)
            free(l->tls.alpn[j]);
        free(l->tls.alpn);
        free(l->tls.client_ca);
    }
    free(cfg->listeners);
    for (uint32_t i = 0; cfg->pools != NULL && i < cfg->num_pools; i++) {
        struct rlb_pool_cfg *p = &cfg->pools[i];
        free(p->name);
        for (uint32_t j = 0; p->backends != NULL && j < p->num_backends; j++) {
            free(p->backends[j].zone);
            free(p->backends[j].host_name);
        }
        free(p->tls.ca);
        free(p->tls.sni);
        free(p->tls.name);
        free(p->tls.cert);
        free(p->tls.key);
        free(p->backends);
        free(p->hash.name);
        free(p->check.method);
        free(p->check.path);
        free(p->check.host);
        for (uint32_t j = 0; p->backup_names != NULL && j < p->num_backups; j++)
            free(p->backup_names[j]);
        free(p->backup_names);
        free(p->backup_marks);
        free(p->backups);
        free(p->local_zone);
    }
    free(cfg->pools);
    for (uint32_t i = 0; cfg->vhosts != NULL && i < cfg->num_vhosts; i++) {
        struct rlb_vhost_cfg *v = &cfg->vhosts[i];
        for (uint32_t j = 0; v->hosts != NULL && j < v->num_hosts; j++)
            free(v->hosts[j]);
        free(v->hosts);
        free(v->host_marks);
        for (uint32_t j = 0; v->listener_names != NULL && j < v->num_listener_names; j++)
            free(v->listener_names[j]);
        free(v->listener_names);
        free(v->listener_marks);
        for (uint32_t j = 0; v->routes != NULL && j < v->num_routes; j++) {
            struct rlb_route_cfg *r = &v->routes[j];
            free(r->path_prefix);
            free(r->set_host);
            free(r->server_value);
            free(r->pool_name);
            for (uint32_t k = 0; r->splits != NULL && k < r->num_splits; k++)
                free(r->splits[k].pool_name);
            free(r->splits);
            free(r->split_cookie);
        }
        free(v->routes);
    }
    free(cfg->vhosts);
    free(cfg);
}

/* "host:port" or "host:port@weight"; the weight goes after the last '@' so that no address form can be confused
 * with it. */
static int parse_oneline_backend(const struct rlb_config *cfg, const char *text, struct rlb_backend_cfg *b, char *err,
                                 size_t errlen)
{
    const char *at = strrchr(text, '@');
    size_t addr_len = at != NULL ? (size_t)(at - text) : strlen(text);
    char addr[128];
    if (addr_len >= sizeof(addr))
        return fail_at(cfg, (struct rlb_config_mark){0}, err, errlen,
                       "--backend \"%.100s\": address too long (expected host:port[@weight])", text);
    memcpy(addr, text, addr_len);
    addr[addr_len] = '\0';
    if (rlb_sockaddr_parse(addr, &b->addr) != 0)
        return fail_at(cfg, (struct rlb_config_mark){0}, err, errlen,
                       "--backend \"%.100s\": expected host:port[@weight] with a numeric IPv4 address, [IPv6] or "
                       "localhost and a port 1..65535",
                       text);
    if (at != NULL) {
        uint64_t w;
        if (parse_u64(at + 1, strlen(at + 1), &w) != 0 || w < 1 || w > MAX_WEIGHT)
            return fail_at(cfg, (struct rlb_config_mark){0}, err, errlen,
                           "--backend \"%.100s\": expected a weight 1..%u after '@'", text, MAX_WEIGHT);
        b->weight = (uint32_t)w;
    }
    return 0;
}

/* --balance rr | leastconn | p2c | hash[:client_ip | :uri | :header:NAME | :cookie:NAME] */
static int parse_oneline_balance(const struct rlb_config *cfg, const char *text, struct rlb_pool_cfg *p, char *err,
                                 size_t errlen)
{
    const struct rlb_config_mark none = {0};
    char alg[32];
    const char *colon = strchr(text, ':');
    size_t len = colon != NULL ? (size_t)(colon - text) : strlen(text);
    if (len >= sizeof(alg) || (memcpy(alg, text, len), alg[len] = '\0', rlb_lb_balance_from_name(alg, &p->balance)) != 0)
        return fail_at(cfg, none, err, errlen,
                       "--balance \"%.60s\": expected rr, leastconn, p2c or hash[:client_ip|uri|header:NAME|cookie:NAME]",
                       text);
    if (colon == NULL)
        return 0;
    const char *key = colon + 1;
    if (p->balance != RLB_BALANCE_HASH)
        return fail_at(cfg, none, err, errlen, "--balance \"%.60s\": only hash takes a key", text);
    p->hash.mark = (struct rlb_config_mark){0, 0};
    if (strcmp(key, "client_ip") == 0) {
        p->hash.key = RLB_HASH_KEY_CLIENT_IP;
    } else if (strcmp(key, "uri") == 0) {
        p->hash.key = RLB_HASH_KEY_URI;
    } else if (strncmp(key, "header:", 7) == 0 && key[7]) {
        p->hash.key = RLB_HASH_KEY_HEADER;
        p->hash.name = strdup(key + 7);
    } else if (strncmp(key, "cookie:", 7) == 0 && key[7]) {
        p->hash.key = RLB_HASH_KEY_COOKIE;
        p->hash.name = strdup(key + 7);
    } else {
        return fail_at(cfg, none, err, errlen,
                       "--balance \"%.60s\": expected a key client_ip, uri, header:NAME or cookie:NAME", text);
    }
    if ((p->hash.key == RLB_HASH_KEY_HEADER || p->hash.key == RLB_HASH_KEY_COOKIE) && p->hash.name == NULL)
        return fail_at(cfg, none, err, errlen, "out of memory");
    return 0;
}

struct rlb_config *rlb_config_from_oneline(const struct rlb_oneline_args *args, char *err, size_t errlen)
{
    struct rlb_config *cfg = rlb_config_new("<command line>");
    if (cfg == NULL) {
        snprintf(err, errlen, "<command line>: out of memory");
        return NULL;
    }
    const struct rlb_config_mark none = {0};
    if (args == NULL || args->listen == NULL) {
        fail_at(cfg, none, err, errlen, "--listen is required (e.g. --listen 127.0.0.1:8080)");
        goto fail;
    }
    if (args->num_backends == 0 || args->backends == NULL) {
        fail_at(cfg, none, err, errlen, "at least one --backend is required (e.g. --backend 127.0.0.1:9001)");
        goto fail;
    }
    cfg->workers = args->workers;

    if (rlb_config_alloc(cfg, 1, 1, 1) != 0)
        goto oom;

    struct rlb_listener_cfg *l = &cfg->listeners[0];
    if ((l->name = strdup("main")) == NULL)
        goto oom;
    if (rlb_sockaddr_parse(args->listen, &l->addr) != 0) {
        fail_at(cfg, none, err, errlen,
                "--listen \"%.100s\": expected an address like 127.0.0.1:8080, *:8080, [::]:8080 or localhost:8080",
                args->listen);
        goto fail;
    }

    if ((args->tls_cert == NULL) != (args->tls_key == NULL)) {
        fail_at(cfg, none, err, errlen, "--tls-cert and --tls-key go together");
        goto fail;
    }
    if (args->tls_cert != NULL) {
        l->tls.enabled = true;
        if ((l->tls.certs = calloc(2, sizeof(*l->tls.certs))) == NULL)
            goto oom;
        l->tls.num_certs = 1;
        if ((l->tls.certs[0].cert = strdup(args->tls_cert)) == NULL || (l->tls.certs[0].key = strdup(args->tls_key)) == NULL)
            goto oom;
    }
    if (args->ktls >= 0)
        l->tls.ktls = args->ktls != 0;
    if (args->cache != NULL) {
        uint64_t size;
        if (rlb_size_parse(args->cache, &size) != 0) {
            fail_at(cfg, none, err, errlen, "--cache \"%.60s\": expected a size like 64m or 1g", args->cache);
            goto fail;
        }
        rlb_cache_cfg_enable(&cfg->cache, size);
    }

    struct rlb_pool_cfg *p = &cfg->pools[0];
    if ((p->name = strdup("default")) == NULL || rlb_config_alloc_backends(p, args->num_backends) != 0)
        goto oom;
    for (uint32_t i = 0; i < args->num_backends; i++) {
        const char *b = args->backends[i] != NULL ? args->backends[i] : "";
        if (parse_oneline_backend(cfg, b, &p->backends[i], err, errlen) != 0)
            goto fail;
    }
    if (args->balance != NULL && parse_oneline_balance(cfg, args->balance, p, err, errlen) != 0)
        goto fail;

    struct rlb_vhost_cfg *v = &cfg->vhosts[0];
    if ((v->hosts = calloc(1, sizeof(*v->hosts))) == NULL || (v->hosts[0] = strdup("*")) == NULL)
        goto oom;
    v->num_hosts = 1;
    if ((v->routes = calloc(1, sizeof(*v->routes))) == NULL)
        goto oom;
    v->num_routes = 1;
    if ((v->routes[0].path_prefix = strdup("/")) == NULL)
        goto oom;
    v->routes[0].pool = 0;

    if (rlb_config_finish(cfg, err, errlen) != 0)
        goto fail;
    return cfg;
oom:
    fail_at(cfg, none, err, errlen, "out of memory");
fail:
    rlb_config_free(cfg);
    return NULL;
}

/* ---------------------------------------------------------------------------------------------------------------
 * Checks shared by all builders
 */

static bool is_pow2(uint32_t v)
{
    return v != 0 && (v & (v - 1)) == 0;
}

static bool is_tchar(unsigned char c)
{
    return isalnum(c) || strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static bool is_token(const char *s)
{
    if (s == NULL || *s == '\0')
        return false;
    for (; *s != '\0'; s++)
        if (!is_tchar((unsigned char)*s))
            return false;
    return true;
}

/* Visible ASCII only: these strings are copied verbatim into header lines, so anything else could split or
 * corrupt a message. <spaces> allows inner blanks (a Server value like "ringlb (edge)"). */
static bool is_visible(const char *s, bool spaces)
{
    if (s == NULL || *s == '\0' || *s == ' ')
        return false;
    size_t n = 0;
    for (; s[n] != '\0'; n++) {
        unsigned char c = (unsigned char)s[n];
        if (c == ' ' && spaces)
            continue;
        if (c < 0x21 || c > 0x7e)
            return false;
    }
    return s[n - 1] != ' ';
}

/* A DNS-ish name or an IP literal as it appears in Host after the port is stripped. Underscores are allowed
 * because internal names carry them and a Host header does not care. */
static bool valid_name(const char *s)
{
    size_t len = strlen(s);
    if (len == 0 || len > MAX_HOST_LEN)
        return false;
    if (s[0] == '[') {
        if (len < 3 || s[len - 1] != ']')
            return false;
        for (size_t i = 1; i + 1 < len; i++)
            if (!isxdigit((unsigned char)s[i]) && s[i] != ':' && s[i] != '.')
                return false;
        return true;
    }
    size_t label = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '.') {
            if (label == 0)
                return false;
            label = 0;
        } else if (isalnum(c) || c == '-' || c == '_') {
            if (++label > 63)
                return false;
        } else {
            return false;
        }
    }
    return label != 0;
}

enum host_class { HOST_EXACT = 0, HOST_WILDCARD = 1, HOST_ANY = 2 };

static enum host_class host_class(const char *h)
{
    if (strcmp(h, "*") == 0)
        return HOST_ANY;
    return h[0] == '*' ? HOST_WILDCARD : HOST_EXACT;
}

static bool valid_host(const char *h)
{
    switch (host_class(h)) {
    case HOST_ANY:
        return true;
    case HOST_WILDCARD:
        return h[1] == '.' && valid_name(h + 2);
    case HOST_EXACT:
        return valid_name(h);
    }
    return false;
}

/* Negative when <a> must be tried before <b>: exact names, then wildcards with the longest suffix first (the most
 * specific match wins), then "*". Equal keys keep file order, so sorts using this must be stable. */
static int host_order(const char *a, const char *b)
{
    enum host_class ca = host_class(a), cb = host_class(b);
    if (ca != cb)
        return (int)ca - (int)cb;
    if (ca == HOST_WILDCARD) {
        size_t la = strlen(a), lb = strlen(b);
        if (la != lb)
            return la > lb ? -1 : 1;
    }
    return 0;
}

static uint64_t all_listeners(uint32_t n)
{
    return n >= 64 ? UINT64_MAX : (UINT64_C(1) << n) - 1;
}

static int check_globals(struct rlb_config *cfg, char *err, size_t errlen)
{
    const struct rlb_http_limits *lim = &cfg->limits;
    if (cfg->workers > MAX_WORKERS)
        return fail_at(cfg, cfg->marks.workers, err, errlen, "workers: %u is out of range (expected auto or 1..%u)",
                       cfg->workers, MAX_WORKERS);
    for (uint32_t i = 0; i < cfg->num_cpus; i++)
        if (cfg->cpus[i] < 0 || cfg->cpus[i] >= RLB_CONFIG_MAX_CPUS)
            return fail_at(cfg, (struct rlb_config_mark){0}, err, errlen, "cpus: %d is out of range (expected 0..%d)",
                           (int)cfg->cpus[i], RLB_CONFIG_MAX_CPUS - 1);
    if (cfg->max_connections < 2)
        return fail_at(cfg, cfg->marks.max_connections, err, errlen,
                       "max_connections: %u is too small (a proxied request needs 2 slots)", cfg->max_connections);
    if (!is_token(cfg->via_name))
        return fail_at(cfg, cfg->marks.via, err, errlen,
                       "via: expected a token (letters, digits and !#$%%&'*+-.^_`|~), got \"%.60s\"",
                       cfg->via_name != NULL ? cfg->via_name : "");
    if (lim->max_request_line < 64)
        return fail_at(cfg, cfg->marks.max_request_line, err, errlen,
                       "max_request_line: %u is too small (expected at least 64)", lim->max_request_line);
    if (lim->max_head_size < lim->max_request_line)
        return fail_at(cfg, cfg->marks.max_header_size, err, errlen,
                       "max_header_size: %u is smaller than max_request_line (%u)", lim->max_head_size,
                       lim->max_request_line);
    if (lim->max_headers < 1 || lim->max_headers > 1000)
        return fail_at(cfg, cfg->marks.max_headers, err, errlen, "max_headers: %u is out of range (expected 1..1000)",
                       lim->max_headers);
    if (!is_pow2(cfg->buffers.count) || cfg->buffers.count < 64 || cfg->buffers.count > 65536)
        return fail_at(cfg, cfg->marks.buffers_count, err, errlen,
                       "buffers.count: %u must be a power of two between 64 and 65536", cfg->buffers.count);
    if (!is_pow2(cfg->buffers.size) || cfg->buffers.size < 4096 || cfg->buffers.size > 65536)
        return fail_at(cfg, cfg->marks.buffers_size, err, errlen,
                       "buffers.size: %u must be a power of two between 4k and 64k", cfg->buffers.size);
    if (!is_pow2(cfg->buffers.client_count) || cfg->buffers.client_count < 64 || cfg->buffers.client_count > 65536)
        return fail_at(cfg, cfg->marks.buffers_client_count, err, errlen,
                       "buffers.client_count: %u must be a power of two between 64 and 65536",
                       cfg->buffers.client_count);
    if (!is_pow2(cfg->buffers.client_size) || cfg->buffers.client_size < 4096 || cfg->buffers.client_size > 65536)
        return fail_at(cfg, cfg->marks.buffers_client_size, err, errlen,
                       "buffers.client_size: %u must be a power of two between 4k and 64k", cfg->buffers.client_size);
    return 0;
}

static int check_listeners(struct rlb_config *cfg, char *err, size_t errlen)
{
    if (cfg->num_listeners == 0)
        return fail_at(cfg, cfg->marks.listeners, err, errlen, "at least one listener is required");
    if (cfg->num_listeners > MAX_LISTENERS)
        return fail_at(cfg, cfg->listeners[MAX_LISTENERS].mark, err, errlen, "too many listeners (at most %u)",
                       MAX_LISTENERS);
    for (uint32_t i = 0; i < cfg->num_listeners; i++) {
        struct rlb_listener_cfg *l = &cfg->listeners[i];
        if (l->name == NULL) {
            char name[32];
            snprintf(name, sizeof(name), "listener%u", i);
            if ((l->name = strdup(name)) == NULL)
                return fail_at(cfg, l->mark, err, errlen, "out of memory");
        }
        if (l->addr.len == 0)
            return fail_at(cfg, l->mark, err, errlen, "listener \"%s\" has no address", l->name);
        for (uint32_t j = 0; j < i; j++) {
            const struct rlb_listener_cfg *o = &cfg->listeners[j];
            if (strcmp(o->name, l->name) == 0)
                return fail_at(cfg, l->name_mark.line ? l->name_mark : l->mark, err, errlen,
                               "listener name \"%s\" is already used by listener %u", l->name, j);
            /* With SO_REUSEPORT both would bind and silently share the traffic instead of failing. */
            if (strcmp(o->addr.text, l->addr.text) == 0)
                return fail_at(cfg, l->mark, err, errlen, "address %s is already used by listener \"%s\"", l->addr.text,
                               o->name);
        }
    }
    return 0;
}

/* Maglev wants a prime table well above the backend count (100x keeps every
 * backend's share within about 1% of its weight). */
static int check_pool_balance(struct rlb_config *cfg, struct rlb_pool_cfg *p, char *err, size_t errlen)
{
    struct rlb_hash_cfg *h = &p->hash;
    struct rlb_config_mark at = h->mark.line ? h->mark : p->mark;
    if (p->balance != RLB_BALANCE_HASH) {
        if (h->mark.line)
            return fail_at(cfg, at, err, errlen, "hash settings need balance: hash (pool \"%s\" uses %s)", p->name,
                           rlb_lb_balance_name(p->balance));
        return 0;
    }
    uint64_t floor = 100ull * p->num_backends;
    if (h->table_size == 0) {
        h->table_size = RLB_MAGLEV_DEFAULT_SIZE;
        if (h->table_size <= floor) {
            uint32_t n = (uint32_t)floor + 1;
            while (!rlb_maglev_is_prime(n))
                n++;
            h->table_size = n;
        }
    } else if (!rlb_maglev_is_prime(h->table_size) || h->table_size <= floor) {
        return fail_at(cfg, at, err, errlen,
                       "hash: table_size %u must be a prime above 100 x %u backends (e.g. 65537)", h->table_size,
                       p->num_backends);
    }
    if (h->name != NULL && (h->key == RLB_HASH_KEY_HEADER ? !valid_name(h->name) : !is_token(h->name)))
        return fail_at(cfg, at, err, errlen, "hash: \"%.60s\" is not a valid %s name", h->name,
                       h->key == RLB_HASH_KEY_HEADER ? "header" : "cookie");
    return 0;
}

static int check_pool_health(struct rlb_config *cfg, struct rlb_pool_cfg *p, char *err, size_t errlen)
{
    struct rlb_health_check_cfg *c = &p->check;
    if (p->passive.eject_max_ms < p->passive.eject_ms)
        return fail_at(cfg, p->mark, err, errlen, "passive: eject_max (%u ms) is below eject (%u ms)",
                       p->passive.eject_max_ms, p->passive.eject_ms);
    if (p->retry.tries > RLB_RETRY_MAX_TRIES)
        return fail_at(cfg, p->mark, err, errlen, "retry: tries %u is above %u", p->retry.tries, RLB_RETRY_MAX_TRIES);
    if (!c->enabled)
        return 0;
    if ((c->method == NULL && (c->method = strdup("GET")) == NULL) ||
        (c->path == NULL && (c->path = strdup("/")) == NULL))
        return fail_at(cfg, c->mark, err, errlen, "out of memory");
    if (!is_token(c->method))
        return fail_at(cfg, c->mark, err, errlen, "health_check: method \"%.60s\" is not a valid token", c->method);
    if (c->path[0] != '/' || !is_visible(c->path, false))
        return fail_at(cfg, c->mark, err, errlen,
                       "health_check: expected a path starting with \"/\" (no spaces), got \"%.60s\"", c->path);
    if (c->host != NULL && !valid_host(c->host))
        return fail_at(cfg, c->mark, err, errlen, "health_check: host \"%.60s\" is not a valid host name", c->host);
    if (c->timeout_ms > c->interval_ms)
        return fail_at(cfg, c->mark, err, errlen, "health_check: timeout (%u ms) is longer than interval (%u ms)",
                       c->timeout_ms, c->interval_ms);
    return 0;
}

/* Backup pools by name, in priority order; a pool is never its own backup. */
static int check_pool_tiers(struct rlb_config *cfg, uint32_t index, char *err, size_t errlen)
{
    struct rlb_pool_cfg *p = &cfg->pools[index];
    for (uint32_t i = 0; p->backup_names != NULL && i < p->num_backups; i++) {
        struct rlb_config_mark at = p->backup_marks != NULL ? p->backup_marks[i] : p->mark;
        uint32_t k = 0;
        while (k < cfg->num_pools && strcmp(cfg->pools[k].name, p->backup_names[i]) != 0)
            k++;
        if (k == cfg->num_pools)
            return fail_at(cfg, at, err, errlen, "backup pool \"%.60s\" is not defined", p->backup_names[i]);
        if (k == index)
            return fail_at(cfg, at, err, errlen, "pool \"%s\" cannot be its own backup", p->name);
        for (uint32_t j = 0; j < i; j++)
            if (p->backups[j] == k)
                return fail_at(cfg, at, err, errlen, "backup pool \"%s\" is listed twice", p->backup_names[i]);
        p->backups[i] = k;
    }
    if (p->local_zone != NULL) {
        uint32_t j = 0;
        while (j < p->num_backends && (p->backends[j].zone == NULL || strcmp(p->backends[j].zone, p->local_zone) != 0))
            j++;
        if (j == p->num_backends)
            return fail_at(cfg, p->mark, err, errlen, "local_zone \"%.60s\" matches no backend of pool \"%s\"",
                           p->local_zone, p->name);
    }
    return 0;
}

static int check_pools(struct rlb_config *cfg, char *err, size_t errlen)
{
    if (cfg->num_pools == 0)
        return fail_at(cfg, cfg->marks.pools, err, errlen, "at least one pool is required");
    for (uint32_t i = 0; i < cfg->num_pools; i++) {
        struct rlb_pool_cfg *p = &cfg->pools[i];
        if (p->name == NULL || p->name[0] == '\0')
            return fail_at(cfg, p->mark, err, errlen, "pool %u has no name", i);
        for (uint32_t j = 0; j < i; j++)
            if (strcmp(cfg->pools[j].name, p->name) == 0)
                return fail_at(cfg, p->name_mark, err, errlen, "pool \"%s\" is defined twice", p->name);
        if (p->num_backends == 0)
            return fail_at(cfg, p->mark, err, errlen, "pool \"%s\" has no backends", p->name);
        for (uint32_t j = 0; j < p->num_backends; j++) {
            const struct rlb_backend_cfg *b = &p->backends[j];
            if (b->weight < 1 || b->weight > MAX_WEIGHT)
                return fail_at(cfg, b->weight_mark.line ? b->weight_mark : b->mark, err, errlen,
                               "weight %u is out of range (expected 1..%u)", b->weight, MAX_WEIGHT);
        }
        if (p->num_backends > RLB_LB_MAX_BACKENDS)
            return fail_at(cfg, p->mark, err, errlen, "pool \"%s\" has %u backends (at most %u)", p->name,
                           p->num_backends, RLB_LB_MAX_BACKENDS);
        if (check_pool_balance(cfg, p, err, errlen) != 0 || check_pool_health(cfg, p, err, errlen) != 0 ||
            check_pool_tiers(cfg, i, err, errlen) != 0)
            return -1;
    }
    return 0;
}

static int check_route(struct rlb_config *cfg, struct rlb_route_cfg *r, char *err, size_t errlen)
{
    const char *path = r->path_prefix;
    if (path == NULL || path[0] != '/' || !is_visible(path, false))
        return fail_at(cfg, r->path_mark.line ? r->path_mark : r->mark, err, errlen,
                       "expected a path prefix starting with \"/\" (no spaces or control characters), got \"%.60s\"",
                       path != NULL ? path : "");
    r->path_prefix_len = (uint32_t)strlen(path);
    for (uint32_t i = 0; r->splits != NULL && i < r->num_splits; i++) {
        struct rlb_split_cfg *sp = &r->splits[i];
        uint32_t k = 0;
        while (k < cfg->num_pools && strcmp(cfg->pools[k].name, sp->pool_name) != 0)
            k++;
        if (k == cfg->num_pools)
            return fail_at(cfg, sp->mark, err, errlen, "pool \"%.60s\" is not defined", sp->pool_name);
        for (uint32_t j = 0; j < i; j++)
            if (r->splits[j].pool == k)
                return fail_at(cfg, sp->mark, err, errlen, "pool \"%.60s\" appears twice in the split", sp->pool_name);
        sp->pool = k;
    }
    if (r->splits != NULL) {
        r->pool = r->splits[0].pool;
        if (r->split_cookie == NULL && (r->split_cookie = strdup("rlb_variant")) == NULL)
            return fail_at(cfg, r->mark, err, errlen, "out of memory");
        if (!is_token(r->split_cookie))
            return fail_at(cfg, r->mark, err, errlen, "split_cookie: \"%.60s\" is not a valid cookie name",
                           r->split_cookie);
    } else if (r->split_cookie != NULL) {
        return fail_at(cfg, r->mark, err, errlen, "split_cookie is only used with split");
    }
    if (r->pool_name != NULL) {
        uint32_t k = 0;
        while (k < cfg->num_pools && strcmp(cfg->pools[k].name, r->pool_name) != 0)
            k++;
        if (k == cfg->num_pools)
            return fail_at(cfg, r->pool_mark, err, errlen, "pool \"%.60s\" is not defined", r->pool_name);
        r->pool = k;
    } else if (r->pool >= cfg->num_pools) {
        return fail_at(cfg, r->mark, err, errlen, "route \"%s\" refers to pool %u, which does not exist", path,
                       r->pool);
    }
    if (r->set_host != NULL && !is_visible(r->set_host, false))
        return fail_at(cfg, r->set_host_mark, err, errlen,
                       "set_host: expected a host name of visible ASCII characters, got \"%.60s\"", r->set_host);
    if (r->server_mode == RLB_SERVER_REPLACE && r->server_value == NULL)
        return fail_at(cfg, r->server_mark, err, errlen, "server_header: replace needs server_value");
    if (r->server_mode != RLB_SERVER_REPLACE && r->server_value != NULL)
        return fail_at(cfg, r->server_value_mark, err, errlen, "server_value is only used with server_header: replace");
    if (r->server_value != NULL && !is_visible(r->server_value, true))
        return fail_at(cfg, r->server_value_mark, err, errlen,
                       "server_value: expected visible ASCII characters and inner spaces, got \"%.60s\"",
                       r->server_value);
    return 0;
}

static int check_vhost(struct rlb_config *cfg, struct rlb_vhost_cfg *v, char *err, size_t errlen)
{
    if (v->num_hosts == 0)
        return fail_at(cfg, v->mark, err, errlen, "vhost has no hosts");
    for (uint32_t j = 0; j < v->num_hosts; j++) {
        char *h = v->hosts[j];
        struct rlb_config_mark m = v->host_marks != NULL ? v->host_marks[j] : v->mark;
        /* Host matching is case-insensitive; lower-casing once here keeps the request path to a plain compare. */
        for (char *c = h; *c != '\0'; c++)
            *c = (char)tolower((unsigned char)*c);
        if (!valid_host(h))
            return fail_at(cfg, m, err, errlen,
                           "expected a host name like shop.example.com, a wildcard like *.example.com, or \"*\", "
                           "got \"%.60s\"",
                           h);
    }
    if (v->num_listener_names > 0) {
        v->listener_mask = 0;
        for (uint32_t j = 0; j < v->num_listener_names; j++) {
            uint32_t k = 0;
            while (k < cfg->num_listeners && strcmp(cfg->listeners[k].name, v->listener_names[j]) != 0)
                k++;
            if (k == cfg->num_listeners)
                return fail_at(cfg, v->listener_marks != NULL ? v->listener_marks[j] : v->mark, err, errlen,
                               "listener \"%.60s\" is not defined", v->listener_names[j]);
            v->listener_mask |= UINT64_C(1) << k;
        }
    } else if (v->listener_mask == 0) {
        v->listener_mask = all_listeners(cfg->num_listeners);
    } else if ((v->listener_mask & ~all_listeners(cfg->num_listeners)) != 0) {
        return fail_at(cfg, v->mark, err, errlen, "vhost is attached to a listener that does not exist");
    }
    if (v->num_routes == 0)
        return fail_at(cfg, v->mark, err, errlen, "vhost has no routes");
    for (uint32_t j = 0; j < v->num_routes; j++) {
        if (check_route(cfg, &v->routes[j], err, errlen) != 0)
            return -1;
        for (uint32_t k = 0; k < j; k++)
            if (strcmp(v->routes[k].path_prefix, v->routes[j].path_prefix) == 0)
                return fail_at(cfg, v->routes[j].path_mark, err, errlen, "route \"%.60s\" appears twice in this vhost",
                               v->routes[j].path_prefix);
    }
    return 0;
}

/* The same host on two vhosts that share a listener would make the second one unreachable, which is never what
 * the author meant. */
static int check_host_overlap(struct rlb_config *cfg, char *err, size_t errlen)
{
    for (uint32_t i = 0; i < cfg->num_vhosts; i++) {
        const struct rlb_vhost_cfg *v = &cfg->vhosts[i];
        for (uint32_t j = 0; j < v->num_hosts; j++) {
            for (uint32_t k = 0; k <= i; k++) {
                const struct rlb_vhost_cfg *w = &cfg->vhosts[k];
                if ((v->listener_mask & w->listener_mask) == 0)
                    continue;
                uint32_t end = k == i ? j : w->num_hosts;
                for (uint32_t l = 0; l < end; l++) {
                    if (strcmp(w->hosts[l], v->hosts[j]) != 0)
                        continue;
                    struct rlb_config_mark m = v->host_marks != NULL ? v->host_marks[j] : v->mark;
                    return fail_at(cfg, m, err, errlen, "host \"%.60s\" is already served by %s", v->hosts[j],
                                   k == i ? "this vhost" : "an earlier vhost on the same listener");
                }
            }
        }
    }
    return 0;
}

static void swap_hosts(struct rlb_vhost_cfg *v, uint32_t a, uint32_t b)
{
    char *t = v->hosts[a];
    v->hosts[a] = v->hosts[b];
    v->hosts[b] = t;
    if (v->host_marks != NULL) {
        struct rlb_config_mark m = v->host_marks[a];
        v->host_marks[a] = v->host_marks[b];
        v->host_marks[b] = m;
    }
}

/* Insertion sorts: they are stable (ties keep the order of the file, which is the only order the author can see)
 * and the lists are short. */
static void sort_config(struct rlb_config *cfg)
{
    for (uint32_t i = 0; i < cfg->num_vhosts; i++) {
        struct rlb_vhost_cfg *v = &cfg->vhosts[i];
        for (uint32_t j = 1; j < v->num_hosts; j++)
            for (uint32_t k = j; k > 0 && host_order(v->hosts[k], v->hosts[k - 1]) < 0; k--)
                swap_hosts(v, k, k - 1);
        for (uint32_t j = 1; j < v->num_routes; j++) {
            struct rlb_route_cfg r = v->routes[j];
            uint32_t k = j;
            for (; k > 0 && v->routes[k - 1].path_prefix_len < r.path_prefix_len; k--)
                v->routes[k] = v->routes[k - 1];
            v->routes[k] = r;
        }
    }
    /* Hosts inside each vhost are sorted now, so a vhost's first host is its most specific one. */
    for (uint32_t j = 1; j < cfg->num_vhosts; j++) {
        struct rlb_vhost_cfg v = cfg->vhosts[j];
        uint32_t k = j;
        for (; k > 0 && host_order(v.hosts[0], cfg->vhosts[k - 1].hosts[0]) < 0; k--)
            cfg->vhosts[k] = cfg->vhosts[k - 1];
        cfg->vhosts[k] = v;
    }
}

/* Certificates, keys and CA files are read now, so that a bad one stops the start (or a config check) with its
 * place in the file rather than failing every handshake later. */
static int check_tls(struct rlb_config *cfg, char *err, size_t errlen)
{
    for (uint32_t i = 0; i < cfg->num_listeners; i++) {
        struct rlb_tls_listener_cfg *t = &cfg->listeners[i].tls;
        if (!t->enabled)
            continue;
        if (t->protocols == 0)
            return fail_at(cfg, t->mark, err, errlen, "tls: protocols must name tls1.2, tls1.3 or both");
        if (!t->verify_client_set && t->client_ca != NULL)
            t->verify_client = RLB_TLS_VERIFY_REQUIRED;
        if (t->verify_client != RLB_TLS_VERIFY_OFF && t->client_ca == NULL)
            return fail_at(cfg, t->mark, err, errlen, "tls: verify_client needs client_ca");
        if (t->alpn == NULL) {
            if ((t->alpn = calloc(2, sizeof(*t->alpn))) == NULL || (t->alpn[0] = strdup("http/1.1")) == NULL)
                return fail_at(cfg, t->mark, err, errlen, "out of memory");
            t->num_alpn = 1;
        }
        if (cfg->listeners[i].redirect_https)
            return fail_at(cfg, t->mark, err, errlen, "redirect_https belongs on a plain listener, not a TLS one");
    }
    char msg[400];
    struct rlb_config_mark where;
    if (rlb_tls_check(cfg, &where, msg, sizeof(msg)) != 0)
        return fail_at(cfg, where, err, errlen, "%s", msg);
    return 0;
}

void rlb_cache_cfg_enable(struct rlb_cache_cfg *c, uint64_t size)
{
    c->enabled = true;
    c->size = size;
    c->status_header = true;
    c->key_host = true;
    if (!c->max_object)
        c->max_object = 8u << 20;
    if (!c->heuristic_percent)
        c->heuristic_percent = 10;
    if (!c->heuristic_max_s)
        c->heuristic_max_s = 86400;
    if (!c->lock_timeout_ms)
        c->lock_timeout_ms = 5000;
    if (!c->splice_min_set)
        c->splice_min = 16u << 10;
}

static int check_cache(struct rlb_config *cfg, char *err, size_t errlen)
{
    struct rlb_cache_cfg *c = &cfg->cache;
    if (!c->enabled)
        return 0;
    if (c->size < (64u << 10))
        return fail_at(cfg, c->mark, err, errlen, "cache: size must be at least 64k");
    /* One object may not take more than a quarter of the budget: it would flush everything else. */
    if (c->max_object > c->size / 4)
        c->max_object = c->size / 4;
    size_t len = 0;
    for (uint32_t i = 0; i < c->num_key_headers; i++)
        len += strlen(c->key_headers[i]) + 2;
    if (c->num_key_headers) {
        if ((c->key_headers_joined = calloc(1, len + 1)) == NULL)
            return fail_at(cfg, c->mark, err, errlen, "out of memory");
        for (uint32_t i = 0; i < c->num_key_headers; i++) {
            if (i)
                strcat(c->key_headers_joined, ", ");
            strcat(c->key_headers_joined, c->key_headers[i]);
        }
    }
    return 0;
}

int rlb_config_finish(struct rlb_config *cfg, char *err, size_t errlen)
{
    if (check_cache(cfg, err, errlen) != 0)
        return -1;
    if (check_globals(cfg, err, errlen) != 0 || check_listeners(cfg, err, errlen) != 0 ||
        check_pools(cfg, err, errlen) != 0)
        return -1;
    if (cfg->num_vhosts == 0)
        return fail_at(cfg, cfg->marks.vhosts, err, errlen, "at least one vhost is required");
    for (uint32_t i = 0; i < cfg->num_vhosts; i++)
        if (check_vhost(cfg, &cfg->vhosts[i], err, errlen) != 0)
            return -1;
    if (check_host_overlap(cfg, err, errlen) != 0)
        return -1;
    if (check_tls(cfg, err, errlen) != 0)
        return -1;
    sort_config(cfg);
    return 0;
}
