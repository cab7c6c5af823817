/* The YAML front end of the configuration: turns a libyaml document into a snapshot, one value at a time, and leaves
 * every check that needs more than one value to rlb_config_finish (config.c). Every message starts with
 * "FILE:LINE:COLUMN: " so that an editor can jump to it; libyaml counts from 0, people count from 1. */
#include <ringlb/api.h>
#include <ringlb/cache_policy.h>
#include <ringlb/config.h>
#include <ringlb/lb.h>

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <stdarg.h>
#include <string.h>
#include <yaml.h>

#define MAX_FILE_SIZE (16u << 20) /* a configuration this large is a mistake, not a configuration */
#define MAX_WORKERS 1024
#define MAX_LIMIT_SIZE (16u << 20)

struct parser {
    const char *name;
    yaml_document_t *doc;
    struct rlb_config *cfg;
    char *err;
    size_t errlen;
};

static struct rlb_config_mark mark_of(const yaml_node_t *n)
{
    return (struct rlb_config_mark){(uint32_t)n->start_mark.line + 1, (uint32_t)n->start_mark.column + 1};
}

RLB_PRINTF(3, 4)
static int fail(struct parser *p, const yaml_node_t *n, const char *fmt, ...)
{
    struct rlb_config_mark m = n != NULL ? mark_of(n) : (struct rlb_config_mark){1, 1};
    int len = snprintf(p->err, p->errlen, "%s:%u:%u: ", p->name, m.line, m.column);
    if (len < 0 || (size_t)len >= p->errlen)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->err + len, p->errlen - (size_t)len, fmt, ap);
    va_end(ap);
    return -1;
}

static int out_of_memory(struct parser *p, const yaml_node_t *n)
{
    return fail(p, n, "out of memory");
}

/* YAML's spellings of "nothing": a key written with no value reads as one of these. */
static bool is_null(const yaml_node_t *n)
{
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    const char *v = (const char *)n->data.scalar.value;
    return *v == '\0' || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 || strcmp(v, "Null") == 0 ||
           strcmp(v, "NULL") == 0;
}

/* Text for "got ...": the value itself (shortened, control characters masked, so the message stays one line), or
 * what kind of node it was. */
static const char *describe(const yaml_node_t *n, char *buf, size_t len)
{
    if (n->type == YAML_MAPPING_NODE)
        return "a mapping";
    if (n->type == YAML_SEQUENCE_NODE)
        return "a sequence";
    if (is_null(n))
        return "an empty value";
    const unsigned char *v = n->data.scalar.value;
    size_t o = 0, i = 0, max = len - 6; /* room for the quotes, "..." and the NUL */
    buf[o++] = '"';
    for (; i < n->data.scalar.length && o < max; i++)
        buf[o++] = v[i] < 0x20 || v[i] == 0x7f ? '?' : (char)v[i];
    if (i < n->data.scalar.length) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}

#define DESCRIBE(n) describe((n), (char[80]){0}, 80)

static int expect_type(struct parser *p, const yaml_node_t *n, yaml_node_type_t type)
{
    if (n->type == type && !(type == YAML_SCALAR_NODE && is_null(n)))
        return 0;
    const char *want = type == YAML_MAPPING_NODE    ? "a mapping"
                       : type == YAML_SEQUENCE_NODE ? "a sequence"
                                                    : "a single value";
    return fail(p, n, "expected %s, got %s", want, DESCRIBE(n));
}

static yaml_node_t *node(struct parser *p, int id)
{
    return yaml_document_get_node(p->doc, id);
}

static uint32_t seq_len(const yaml_node_t *seq)
{
    return (uint32_t)(seq->data.sequence.items.top - seq->data.sequence.items.start);
}

static yaml_node_t *seq_item(struct parser *p, const yaml_node_t *seq, uint32_t i)
{
    return node(p, seq->data.sequence.items.start[i]);
}

/* ---------------------------------------------------------------------------------------------------------------
 * Mappings: every key known, none twice, required ones present
 */

static int check_keys(struct parser *p, const yaml_node_t *map, const char *what, const char *const *keys,
                      size_t num_keys)
{
    if (expect_type(p, map, YAML_MAPPING_NODE) != 0)
        return -1;
    for (yaml_node_pair_t *pair = map->data.mapping.pairs.start; pair < map->data.mapping.pairs.top; pair++) {
        yaml_node_t *k = node(p, pair->key);
        if (k->type != YAML_SCALAR_NODE)
            return fail(p, k, "expected a key name in %s, got %s", what, DESCRIBE(k));
        const char *key = (const char *)k->data.scalar.value;
        size_t i = 0;
        while (i < num_keys && strcmp(keys[i], key) != 0)
            i++;
        if (i == num_keys) {
            char list[256];
            size_t o = 0;
            for (size_t j = 0; j < num_keys && o < sizeof(list); j++)
                o += (size_t)snprintf(list + o, sizeof(list) - o, "%s%s", j ? ", " : "", keys[j]);
            return fail(p, k, "unknown key %s in %s (expected one of: %s)", DESCRIBE(k), what, list);
        }
        for (yaml_node_pair_t *prev = map->data.mapping.pairs.start; prev < pair; prev++) {
            yaml_node_t *pk = node(p, prev->key);
            if (strcmp((const char *)pk->data.scalar.value, key) == 0)
                return fail(p, k, "duplicate key \"%s\" in %s (first at %u:%u)", key, what, mark_of(pk).line,
                            mark_of(pk).column);
        }
    }
    return 0;
}

static yaml_node_t *get(struct parser *p, const yaml_node_t *map, const char *key)
{
    for (yaml_node_pair_t *pair = map->data.mapping.pairs.start; pair < map->data.mapping.pairs.top; pair++) {
        yaml_node_t *k = node(p, pair->key);
        if (strcmp((const char *)k->data.scalar.value, key) == 0)
            return node(p, pair->value);
    }
    return NULL;
}

/* The message points at the mapping that lacks the key: there is no text of the key itself to point at. */
static yaml_node_t *require(struct parser *p, const yaml_node_t *map, const char *key, const char *what)
{
    yaml_node_t *v = get(p, map, key);
    if (v == NULL)
        fail(p, map, "missing required key \"%s\" in %s", key, what);
    return v;
}

/* A sequence, or a single scalar standing for a sequence of one ("hosts: '*'"). */
static int list_len(struct parser *p, const yaml_node_t *n, const char *what, uint32_t *out)
{
    if (n->type == YAML_SCALAR_NODE && !is_null(n)) {
        *out = 1;
        return 0;
    }
    if (expect_type(p, n, YAML_SEQUENCE_NODE) != 0)
        return -1;
    if ((*out = seq_len(n)) == 0)
        return fail(p, n, "expected at least one %s", what);
    return 0;
}

static yaml_node_t *list_item(struct parser *p, yaml_node_t *n, uint32_t i)
{
    return n->type == YAML_SCALAR_NODE ? n : seq_item(p, n, i);
}

/* ---------------------------------------------------------------------------------------------------------------
 * Scalars
 */

static const char *scalar(struct parser *p, const yaml_node_t *n)
{
    if (expect_type(p, n, YAML_SCALAR_NODE) != 0)
        return NULL;
    const char *v = (const char *)n->data.scalar.value;
    if (strlen(v) != n->data.scalar.length) {
        fail(p, n, "unexpected NUL character in a value");
        return NULL;
    }
    return v;
}

/* Single-line text: every string here ends up in a log line or a header. */
static int get_string(struct parser *p, const yaml_node_t *n, char **out)
{
    const char *v = scalar(p, n);
    if (v == NULL)
        return -1;
    if (*v == '\0')
        return fail(p, n, "expected a non-empty string, got \"\"");
    for (const char *c = v; *c != '\0'; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f)
            return fail(p, n, "expected a single-line string without control characters, got %s", DESCRIBE(n));
    char *copy = strdup(v);
    if (copy == NULL)
        return out_of_memory(p, n);
    free(*out);
    *out = copy;
    return 0;
}

static int get_u32(struct parser *p, const yaml_node_t *n, uint32_t min, uint32_t max, uint32_t *out)
{
    const char *v = scalar(p, n);
    if (v == NULL)
        return -1;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (v[0] < '0' || v[0] > '9' || *end != '\0' || errno != 0 || x < min || x > max)
        return fail(p, n, "expected an integer %u..%u, got %s", min, max, DESCRIBE(n));
    *out = (uint32_t)x;
    return 0;
}

static int get_duration(struct parser *p, const yaml_node_t *n, uint32_t min, uint32_t *out)
{
    const char *v = scalar(p, n);
    if (v == NULL)
        return -1;
    uint32_t ms;
    if (rlb_duration_parse_ms(v, &ms) != 0)
        return fail(p, n, "expected a duration like 250ms, 10s, 2m, got %s", DESCRIBE(n));
    if (ms < min)
        return fail(p, n, "expected a duration of at least %ums, got %s", min, DESCRIBE(n));
    *out = ms;
    return 0;
}

static int get_size(struct parser *p, const yaml_node_t *n, uint64_t max, uint32_t *out)
{
    const char *v = scalar(p, n);
    if (v == NULL)
        return -1;
    uint64_t size;
    if (rlb_size_parse(v, &size) != 0)
        return fail(p, n, "expected a size like 16384, 16k, 1m, got %s", DESCRIBE(n));
    if (size > max)
        return fail(p, n, "expected a size of at most %llu, got %s", (unsigned long long)max, DESCRIBE(n));
    *out = (uint32_t)size;
    return 0;
}

/* YAML 1.2 core spellings only: "yes"/"no"/"on" as booleans surprise people more often than they help. */
static int get_bool(struct parser *p, const yaml_node_t *n, bool *out)
{
    const char *v = scalar(p, n);
    if (v == NULL)
        return -1;
    if (strcmp(v, "true") == 0 || strcmp(v, "True") == 0 || strcmp(v, "TRUE") == 0)
        *out = true;
    else if (strcmp(v, "false") == 0 || strcmp(v, "False") == 0 || strcmp(v, "FALSE") == 0)
        *out = false;
    else
        return fail(p, n, "expected true or false, got %s", DESCRIBE(n));
    return 0;
}

static int get_addr(struct parser *p, const yaml_node_t *n, struct rlb_sockaddr *out)
{
    const char *v = scalar(p, n);
    if (v == NULL)
        return -1;
    if (rlb_sockaddr_parse(v, out) != 0)
        return fail(p, n,
                    "expected an address like 127.0.0.1:8080, *:8080, [::1]:8080 or localhost:8080 (port 1..65535), "
                    "got %s",
                    DESCRIBE(n));
    return 0;
}

/* ---------------------------------------------------------------------------------------------------------------
 * Sections
 */

static int parse_limits(struct parser *p, const yaml_node_t *map)
{
    static const char *const keys[] = {"max_request_line", "max_header_size", "max_headers"};
    if (check_keys(p, map, "limits", keys, RLB_ARRAY_SIZE(keys)) != 0)
        return -1;
    struct rlb_config *cfg = p->cfg;
    yaml_node_t *v;
    if ((v = get(p, map, "max_request_line")) != NULL) {
        cfg->marks.max_request_line = mark_of(v);
        if (get_size(p, v, MAX_LIMIT_SIZE, &cfg->limits.max_request_line) != 0)
            return -1;
    }
    if ((v = get(p, map, "max_header_size")) != NULL) {
        cfg->marks.max_header_size = mark_of(v);
        if (get_size(p, v, MAX_LIMIT_SIZE, &cfg->limits.max_head_size) != 0)
            return -1;
    }
    if ((v = get(p, map, "max_headers")) != NULL) {
        cfg->marks.max_headers = mark_of(v);
        if (get_u32(p, v, 0, UINT32_MAX, &cfg->limits.max_headers) != 0)
            return -1;
    }
    return 0;
}

static int parse_timeouts(struct parser *p, const yaml_node_t *map)
{
    struct rlb_timeouts_cfg *t = &p->cfg->timeouts;
    /* A zero timeout would fire at once; only drain may be zero ("stop now"). */
    const struct {
        const char *key;
        uint32_t *out;
        uint32_t min;
    } fields[] = {
        {"client_header", &t->client_header, 1},
        {"client_keepalive", &t->client_keepalive, 1},
        {"upstream_connect", &t->upstream_connect, 1},
        {"upstream_response", &t->upstream_response, 1},
        {"body_idle", &t->body_idle, 1},
        {"drain", &t->drain, 0},
    };
    const char *keys[RLB_ARRAY_SIZE(fields)];
    for (size_t i = 0; i < RLB_ARRAY_SIZE(fields); i++)
        keys[i] = fields[i].key;
    if (check_keys(p, map, "timeouts", keys, RLB_ARRAY_SIZE(keys)) != 0)
        return -1;
    for (size_t i = 0; i < RLB_ARRAY_SIZE(fields); i++) {
        yaml_node_t *v = get(p, map, fields[i].key);
        if (v != NULL && get_duration(p, v, fields[i].min, fields[i].out) != 0)
            return -1;
    }
    return 0;
}

static int parse_buffers(struct parser *p, const yaml_node_t *map)
{
    static const char *const keys[] = {"count", "size", "client_count", "client_size", "zerocopy_min", "splice_min"};
    if (check_keys(p, map, "buffers", keys, RLB_ARRAY_SIZE(keys)) != 0)
        return -1;
    struct rlb_config *cfg = p->cfg;
    yaml_node_t *v;
    if ((v = get(p, map, "count")) != NULL) {
        cfg->marks.buffers_count = mark_of(v);
        if (get_u32(p, v, 0, UINT32_MAX, &cfg->buffers.count) != 0)
            return -1;
    }
    if ((v = get(p, map, "size")) != NULL) {
        cfg->marks.buffers_size = mark_of(v);
        if (get_size(p, v, UINT32_MAX, &cfg->buffers.size) != 0)
            return -1;
    }
    if ((v = get(p, map, "client_count")) != NULL) {
        cfg->marks.buffers_client_count = mark_of(v);
        if (get_u32(p, v, 0, UINT32_MAX, &cfg->buffers.client_count) != 0)
            return -1;
    }
    if ((v = get(p, map, "client_size")) != NULL) {
        cfg->marks.buffers_client_size = mark_of(v);
        if (get_size(p, v, UINT32_MAX, &cfg->buffers.client_size) != 0)
            return -1;
    }
    if ((v = get(p, map, "splice_min")) != NULL && get_size(p, v, UINT32_MAX, &cfg->buffers.splice_min) != 0)
        return -1;
    if ((v = get(p, map, "zerocopy_min")) != NULL && get_size(p, v, UINT32_MAX, &cfg->buffers.zerocopy_min) != 0)
        return -1;
    return 0;
}

static int parse_cpus(struct parser *p, const yaml_node_t *seq)
{
    if (expect_type(p, seq, YAML_SEQUENCE_NODE) != 0)
        return -1;
    uint32_t n = seq_len(seq);
    if (n == 0)
        return fail(p, seq, "expected at least one CPU number (omit cpus for no pinning)");
    struct rlb_config *cfg = p->cfg;
    if ((cfg->cpus = calloc(n, sizeof(*cfg->cpus))) == NULL)
        return out_of_memory(p, seq);
    cfg->num_cpus = n;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t cpu;
        if (get_u32(p, seq_item(p, seq, i), 0, RLB_CONFIG_MAX_CPUS - 1, &cpu) != 0)
            return -1;
        cfg->cpus[i] = (int32_t)cpu;
    }
    return 0;
}

/* A file named in the configuration: relative paths are read from the configuration file's directory, so that a
 * configuration and its certificates can move together. */
static int get_path(struct parser *p, const yaml_node_t *n, char **out)
{
    if (get_string(p, n, out) != 0)
        return -1;
    const char *slash = strrchr(p->name, '/');
    if ((*out)[0] == '/' || slash == NULL || p->name[0] == '<')
        return 0;
    size_t dir = (size_t)(slash - p->name) + 1, len = strlen(*out);
    char *full = malloc(dir + len + 1);
    if (full == NULL)
        return out_of_memory(p, n);
    memcpy(full, p->name, dir);
    memcpy(full + dir, *out, len + 1);
    free(*out);
    *out = full;
    return 0;
}

static int get_string_list(struct parser *p, yaml_node_t *n, const char *what, char ***out, uint32_t *count)
{
    uint32_t len;
    if (list_len(p, n, what, &len) != 0)
        return -1;
    if ((*out = calloc(len + 1, sizeof(**out))) == NULL)
        return out_of_memory(p, n);
    *count = len;
    for (uint32_t i = 0; i < len; i++)
        if (get_string(p, list_item(p, n, i), &(*out)[i]) != 0)
            return -1;
    return 0;
}

static int parse_tls_cert(struct parser *p, yaml_node_t *map, struct rlb_tls_cert_cfg *c)
{
    static const char *const keys[] = {"cert", "key", "names", "ocsp"};
    if (check_keys(p, map, "certificate", keys, RLB_ARRAY_SIZE(keys)) != 0)
        return -1;
    c->mark = mark_of(map);
    yaml_node_t *v;
    if ((v = require(p, map, "cert", "certificate")) == NULL)
        return -1;
    c->cert_mark = mark_of(v);
    if (get_path(p, v, &c->cert) != 0)
        return -1;
    if ((v = require(p, map, "key", "certificate")) == NULL)
        return -1;
    c->key_mark = mark_of(v);
    if (get_path(p, v, &c->key) != 0)
        return -1;
    if ((v = get(p, map, "ocsp")) != NULL) {
        c->ocsp_mark = mark_of(v);
        if (get_path(p, v, &c->ocsp) != 0)
            return -1;
    }
    if ((v = get(p, map, "names")) != NULL && get_string_list(p, v, "name", &c->names, &c->num_names) != 0)
        return -1;
    return 0;
}

static int parse_listener_tls(struct parser *p, yaml_node_t *map, struct rlb_tls_listener_cfg *t)
{
    static const char *const keys[] = {"certificates", "protocols", "ciphers", "alpn", "tickets", "ticket_rotation",
                                       "client_ca", "verify_client", "ktls", "handshake_timeout"};
    if (check_keys(p, map, "tls", keys, RLB_ARRAY_SIZE(keys)) != 0)
        return -1;
    t->enabled = true;
    t->mark = mark_of(map);
    yaml_node_t *v;
    if ((v = require(p, map, "certificates", "tls")) == NULL)
        return -1;
    if (expect_type(p, v, YAML_SEQUENCE_NODE) != 0)
        return -1;
    if (seq_len(v) == 0)
        return fail(p, v, "expected at least one certificate");
    if ((t->certs = calloc(seq_len(v) + 1, sizeof(*t->certs))) == NULL)
        return out_of_memory(p, v);
    t->num_certs = seq_len(v);
    for (uint32_t i = 0; i < t->num_certs; i++)
        if (parse_tls_cert(p, seq_item(p, v, i), &t->certs[i]) != 0)
            return -1;
    if ((v = get(p, map, "protocols")) != NULL) {
        uint32_t n;
        if (list_len(p, v, "protocol", &n) != 0)
            return -1;
        t->protocols = 0;
        for (uint32_t i = 0; i < n; i++) {
            yaml_node_t *item = list_item(p, v, i);
            const char *s = scalar(p, item);
            if (s == NULL)
                return -1;
            if (strcmp(s, "tls1.2") == 0 || strcmp(s, "TLSv1.2") == 0)
                t->protocols |= RLB_TLS_PROTO_12;
            else if (strcmp(s, "tls1.3") == 0 || strcmp(s, "TLSv1.3") == 0)
                t->protocols |= RLB_TLS_PROTO_13;
            else
                return fail(p, item, "expected tls1.2 or tls1.3 (nothing older is offered), got %s", DESCRIBE(item));
        }
    }
    if ((v = get(p, map, "ciphers")) != NULL) {
        t->ciphers_mark = mark_of(v);
        if (get_string(p, v, &t->ciphers) != 0)
            return -1;
    }
    if ((v = get(p, map, "alpn")) != NULL) {
        for (uint32_t i = 0; i < t->num_alpn; i++)
            free(t->alpn[i]);
        free(t->alpn);
        t->alpn = NULL;
        t->alpn_mark = mark_of(v);
        if (get_string_list(p, v, "protocol", &t->alpn, &t->num_alpn) != 0)
            return -1;
        for (uint32_t i = 0; i < t->num_alpn; i++)
            if (strlen(t->alpn[i]) > 255)
                return fail(p, v, "an ALPN protocol name has at most 255 bytes");
    }
    if ((v = get(p, map, "tickets")) != NULL && get_bool(p, v, &t->tickets) != 0)
        return -1;
    if ((v = get(p, map, "ticket_rotation")) != NULL && get_duration(p, v, 1000, &t->ticket_rotation_ms) != 0)
        return -1;
    if ((v = get(p, map, "client_ca")) != NULL) {
        t->client_ca_mark = mark_of(v);
        if (get_path(p, v, &t->client_ca) != 0)
            return -1;
    }
    if ((v = get(p, map, "verify_client")) != NULL) {
        const char *s = scalar(p, v);
        if (s == NULL)
            return -1;
        if (strcmp(s, "off") == 0 || strcmp(s, "false") == 0)
            t->verify_client = RLB_TLS_VERIFY_OFF;
        else if (strcmp(s, "optional") == 0)
            t->verify_client = RLB_TLS_VERIFY_OPTIONAL;
        else if (strcmp(s, "required") == 0 || strcmp(s, "true") == 0)
            t->verify_client = RLB_TLS_VERIFY_REQUIRED;
        else
            return fail(p, v, "expected off, optional or required, got %s", DESCRIBE(v));
        t->verify_client_set = true;
    }
    if ((v = get(p, map, "ktls")) != NULL && get_bool(p, v, &t->ktls) != 0)
        return -1;
    if ((v = get(p, map, "handshake_timeout")) != NULL && get_duration(p, v, 1, &t->handshake_timeout_ms) != 0)
        return -1;
    return 0;
}

static int parse_redirect_https(struct parser *p, const yaml_node_t *v, uint16_t *port)
{
    const char *s = scalar(p, v);
    if (s == NULL)
        return -1;
    if (strcmp(s, "true") == 0) {
        *port = 443;
        return 0;
    }
    if (strcmp(s, "false") == 0) {
        *port = 0;
        return 0;
    }
    uint32_t n;
    if (get_u32(p, v, 1, 65535, &n) != 0)
        return fail(p, v, "expected true, false or an HTTPS port 1..65535, got %s", DESCRIBE(v));
    *port = (uint16_t)n;
    return 0;
}

static int parse_listener(struct parser *p, const yaml_node_t *map, struct rlb_listener_cfg *l)
{
    static const char *const keys[] = {"name", "address", "backlog", "defer_accept", "tls", "redirect_https"};
    if (check_keys(p, map, "listener", keys, RLB_ARRAY_SIZE(keys)) != 0)
        return -1;
    l->mark = mark_of(map);
    yaml_node_t *v;
    if ((v = get(p, map, "name")) != NULL) {
        l->name_mark = mark_of(v);
        if (get_string(p, v, &l->name) != 0)
            return -1;
    }
    if ((v = require(p, map, "address", "listener")) == NULL || get_addr(p, v, &l->addr) != 0)
        return -1;
    if ((v = get(p, map, "defer_accept")) != NULL && get_bool(p, v, &l->defer_accept) != 0)
        return -1;
    if ((v = get(p, map, "backlog")) != NULL && get_u32(p, v, 1, 1u << 20, &l->backlog) != 0)
        return -1;
    if ((v = get(p, map, "tls")) != NULL && parse_listener_tls(p, v, &l->tls) != 0)
        return -1;
    if ((v = get(p, map, "redirect_https")) != NULL && parse_redirect_https(p, v, &l->redirect_https) != 0)
        return -1;
    return 0;
}

/* "name:port" keeps its name, the default TLS server name for that backend; addresses have none. */
static int note_host_name(struct parser *p, const yaml_node_t *n, struct rlb_backend_cfg *b)
{
    const char *v = (const char *)n->data.scalar.value;
    const char *colon = strrchr(v, ':');
    if (v[0] == '[' || colon == NULL || colon == v)
        return 0;
    size_t len = (size_t)(colon - v);
    char host[256];
    if (len >= sizeof(host))
        return 0;
    memcpy(host, v, len);
    host[len] = '\0';
    struct in_addr a4;
    if (inet_pton(AF_INET, host, &a4) == 1 || strcmp(host, "*") == 0)
        return 0;
    if ((b->host_name = strdup(host)) == NULL)
        return out_of_memory(p, n);
    return 0;
}

static int parse_backend(struct parser *p, const yaml_node_t *n, struct rlb_backend_cfg *b)
{
    b->mark = mark_of(n);
    const yaml_node_t *addr = n;
    if (n->type == YAML_MAPPING_NODE) {
        static const char *const keys[] = {"address", "weight", "zone"};
        if (check_keys(p, n, "backend", keys, RLB_ARRAY_SIZE(keys)) != 0)
            return -1;
        yaml_node_t *z = get(p, n, "zone");
        if (z != NULL && get_string(p, z, &b->zone) != 0)
            return -1;
        if ((addr = require(p, n, "address", "backend")) == NULL)
            return -1;
        yaml_node_t *w = get(p, n, "weight");
        if (w != NULL) {
            b->weight_mark = mark_of(w);
            if (get_u32(p, w, 0, UINT32_MAX, &b->weight) != 0)
                return -1;
        }
    } else if (n->type != YAML_SCALAR_NODE || is_null(n)) {
        return fail(p, n, "expected a backend address or a mapping with address and weight, got %s", DESCRIBE(n));
    }
    if (get_addr(p, addr, &b->addr) != 0)
        return -1;
    if (note_host_name(p, addr, b) != 0)
        return -1;
    /* The wildcard address means "any local address" to bind(), but nothing sensible to connect() to. */
    const struct sockaddr_in *sin = (const struct sockaddr_in *)&b->addr.ss;
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&b->addr.ss;
    if ((sin->sin_family == AF_INET && sin->sin_addr.s_addr == htonl(INADDR_ANY)) ||
        (sin6->sin6_family == AF_INET6 && IN6_IS_ADDR_UNSPECIFIED(&sin6->sin6_addr)))
        return fail(p, addr, "a backend needs a concrete address, got the wildcard %s", DESCRIBE(addr));
    return 0;
}

/* hash: {key: client_ip | uri | header | cookie, name: NAME, table_size: PRIME, bounded_load: 1.25} */
static int parse_hash(struct parser *p, const yaml_node_t *map, struct rlb_hash_cfg *h)
{
    static const char *const keys[] = {"key", "name", "table_size", "bounded_load"};
    if (check_keys(p, map, "hash", keys, RLB_ARRAY_SIZE(keys)) != 0)
        return -1;
    h->mark = mark_of(map);
    yaml_node_t *v;
    if ((v = get(p, map, "key")) != NULL) {
        const char *s = scalar(p, v);
        if (s == NULL)
            return -1;
        if (strcmp(s, "client_ip") == 0)
            h->key = RLB_HASH_KEY_CLIENT_IP;
        else if (strcmp(s, "uri") == 0)
            h->key = RLB_HASH_KEY_URI;
        else if (strcmp(s, "header") == 0)
            h->key = RLB_HASH_KEY_HEADER;
        else if (strcmp(s, "cookie") == 0)
            h->key = RLB_HASH_KEY_COOKIE;
        else
            return fail(p, v, "expected client_ip, uri, header or cookie, got %s", DESCRIBE(v));
    }
    if ((v = get(p, map, "name")) != NULL && get_string(p, v, &h->name) != 0)
        return -1;
    if ((h->key == RLB_HASH_KEY_HEADER || h->key == RLB_HASH_KEY_COOKIE) && h->name == NULL)
        return fail(p, map, "hash: key %s needs a name", h->key == RLB_HASH_KEY_HEADER ? "header" : "cookie");
    if ((v = get(p, map, "table_size")) != NULL && get_u32(p, v, 3, 65521 * 16 + 1, &h->table_size) != 0)
        return -1;
    if ((v = get(p, map, "bounded_load")) != NULL) {
        const char *s = scalar(p, v);
        char *end;
        if (s == NULL)
            return -1;
        double f = strtod(s, &end);
        if (end == s || *end != '\0' || !(f >= 1.0 && f <= 100.0))
            return fail(p, v, "expected a load factor from 1.0 to 100 (e.g. 1.25), got %s", DESCRIBE(v));
        h->bounded_load = (uint32_t)(f * 100.0 + 0.5);
    }
    return 0;
}

/* health_check: {path, method, host, status: "200-399", interval, timeout, rise, fall} */
static int parse_health_check(struct parser *p, const yaml_node_t *map, struct rlb_health_check_cfg *c)
{
    static const char *const keys[] = {"path", "method", "host", "status", "interval", "timeout", "rise", "fall"};
    if (check_keys(p, map, "health_check", keys, RLB_ARRAY_SIZE(keys)) != 0)
        return -1;
    c->enabled = true;
    c->mark = mark_of(map);
    yaml_node_t *v;
    if ((v = get(p, map, "path")) != NULL && get_string(p, v, &c->path) != 0)
        return -1;
    if ((v = get(p, map, "method")) != NULL && get_string(p, v, &c->method) != 0)
        return -1;
    if ((v = get(p, map, "host")) != NULL && get_string(p, v, &c->host) != 0)
        return -1;
    if ((v = get(p, map, "status")) != NULL) {
        const char *s = scalar(p, v);
        unsigned lo, hi;
        int used = 0;
        if (s == NULL)
            return -1;
        if (sscanf(s, "%u-%u%n", &lo, &hi, &used) == 2 && s[used] == '\0') {
        } else if (sscanf(s, "%u%n", &lo, &used) == 1 && s[used] == '\0') {
            hi = lo;
        } else {
            return fail(p, v, "expected a status or a range like 200-399, got %s", DESCRIBE(v));
        }
        if (lo < 100 || hi > 599 || lo > hi)
            return fail(p, v, "expected statuses within 100-599, low to high, got %s", DESCRIBE(v));
        c->status_min = (uint16_t)lo;
        c->status_max = (uint16_t)hi;
    }
    if ((v = get(p, map, "interval")) != NULL && get_duration(p, v, 10, &c->interval_ms) != 0)
        return -1;
    if ((v = get(p, map, "timeout")) != NULL && get_duration(p, v, 1, &c->timeout_ms) != 0)
        return -1;
    if ((v = get(p, map, "rise")) != NULL && get_u32(p, v, 1, 100, &c->rise) != 0)
        return -1;
    if ((v = get(p, map, "fall")) != NULL && get_u32(p, v, 1, 100, &c->fall) != 0)
        return -1;
    return 0;
}

static int parse_passive(struct parser *p, const yaml_node_t *map, struct rlb_pool_cfg *pool)
{
    static const char *const keys[] = {"eject", "eject_max", "consecutive_5xx"};
    if (check_keys(p, map, "passive", keys, RLB_ARRAY_SIZE(keys)) != 0)
        return -1;
    yaml_node_t *v;
    if ((v = get(p, map, "eject")) != NULL && get_duration(p, v, 1, &pool->passive.eject_ms) != 0)
        return -1;
    if ((v = get(p, map, "eject_max")) != NULL && get_duration(p, v, 1, &pool->passive.eject_max_ms) != 0)
        return -1;
    if ((v = get(p, map, "consecutive_5xx")) != NULL && get_u32(p, v, 0, 1000, &pool->passive.consecutive_5xx) != 0)
        return -1;
    return 0;
}

static int parse_retry(struct parser *p, const yaml_node_t *map, struct rlb_pool_cfg *pool)
{
    static const char *const keys[] = {"tries", "budget_percent", "budget_min", "on_5xx"};
    if (check_keys(p, map, "retry", keys, RLB_ARRAY_SIZE(keys)) != 0)
        return -1;
    yaml_node_t *v;
    if ((v = get(p, map, "tries")) != NULL && get_u32(p, v, 1, 16, &pool->retry.tries) != 0)
        return -1;
    if ((v = get(p, map, "budget_percent")) != NULL && get_u32(p, v, 0, 1000, &pool->retry.budget_percent) != 0)
        return -1;
    if ((v = get(p, map, "budget_min")) != NULL && get_u32(p, v, 0, 1000000, &pool->retry.budget_min) != 0)
        return -1;
    if ((v = get(p, map, "on_5xx")) != NULL && get_bool(p, v, &pool->retry.on_5xx) != 0)
        return -1;
    return 0;
}

static int parse_backups(struct parser *p, yaml_node_t *list, struct rlb_pool_cfg *pool)
{
    uint32_t n;
    if (list_len(p, list, "pool name", &n) != 0)
        return -1;
    if ((pool->backup_names = calloc(n + 1, sizeof(*pool->backup_names))) == NULL ||
        (pool->backup_marks = calloc(n + 1, sizeof(*pool->backup_marks))) == NULL ||
        (pool->backups = calloc(n + 1, sizeof(*pool->backups))) == NULL)
        return out_of_memory(p, list);
    pool->num_backups = n;
    for (uint32_t i = 0; i < n; i++) {
        yaml_node_t *item = list_item(p, list, i);
        pool->backup_marks[i] = mark_of(item);
        if (get_string(p, item, &pool->backup_names[i]) != 0)
            return -1;
    }
    return 0;
}

static int parse_pool_tls(struct parser *p, const yaml_node_t *map, struct rlb_pool_cfg *pool)
{
    static const char *const keys[] = {"verify", "ca", "sni", "name", "cert", "key"};
    if (check_keys(p, map, "pool tls", keys, RLB_ARRAY_SIZE(keys)) != 0)
        return -1;
    pool->tls.enabled = true;
    pool->tls.mark = mark_of(map);
    yaml_node_t *v;
    if ((v = get(p, map, "verify")) != NULL && get_bool(p, v, &pool->tls.verify) != 0)
        return -1;
    if ((v = get(p, map, "ca")) != NULL) {
        pool->tls.ca_mark = mark_of(v);
        if (get_path(p, v, &pool->tls.ca) != 0)
            return -1;
    }
    if ((v = get(p, map, "sni")) != NULL && get_string(p, v, &pool->tls.sni) != 0)
        return -1;
    if ((v = get(p, map, "name")) != NULL && get_string(p, v, &pool->tls.name) != 0)
        return -1;
    if ((v = get(p, map, "cert")) != NULL) {
        pool->tls.cert_mark = mark_of(v);
        if (get_path(p, v, &pool->tls.cert) != 0)
            return -1;
    }
    if ((v = get(p, map, "key")) != NULL) {
        pool->tls.key_mark = mark_of(v);
        if (get_path(p, v, &pool->tls.key) != 0)
            return -1;
    }
    if ((pool->tls.cert == NULL) != (pool->tls.key == NULL))
        return fail(p, map, "a client certificate needs both cert and key");
    return 0;
}

static int parse_pool(struct parser *p, const yaml_node_t *map, struct rlb_pool_cfg *pool)
{
    static const char *const keys[] = {"name",  "balance", "hash",   "keepalive",  "health_check", "passive",
                                       "slow_start", "retry", "backup", "local_zone", "backends", "tls"};
    if (check_keys(p, map, "pool", keys, RLB_ARRAY_SIZE(keys)) != 0)
        return -1;
    pool->mark = mark_of(map);
    yaml_node_t *v;
    if ((v = require(p, map, "name", "pool")) == NULL)
        return -1;
    pool->name_mark = mark_of(v);
    if (get_string(p, v, &pool->name) != 0)
        return -1;
    if ((v = get(p, map, "balance")) != NULL) {
        const char *s = scalar(p, v);
        if (s == NULL)
            return -1;
        pool->balance_mark = mark_of(v);
        if (rlb_lb_balance_from_name(s, &pool->balance) != 0)
            return fail(p, v, "expected a balance algorithm (round_robin, least_conn, p2c or hash), got %s",
                        DESCRIBE(v));
    }
    if ((v = get(p, map, "hash")) != NULL && parse_hash(p, v, &pool->hash) != 0)
        return -1;
    if ((v = get(p, map, "health_check")) != NULL && parse_health_check(p, v, &pool->check) != 0)
        return -1;
    if ((v = get(p, map, "passive")) != NULL && parse_passive(p, v, pool) != 0)
        return -1;
    if ((v = get(p, map, "slow_start")) != NULL && get_duration(p, v, 0, &pool->slow_start_ms) != 0)
        return -1;
    if ((v = get(p, map, "retry")) != NULL && parse_retry(p, v, pool) != 0)
        return -1;
    if ((v = get(p, map, "backup")) != NULL && parse_backups(p, v, pool) != 0)
        return -1;
    if ((v = get(p, map, "local_zone")) != NULL && get_string(p, v, &pool->local_zone) != 0)
        return -1;
    if ((v = get(p, map, "tls")) != NULL && parse_pool_tls(p, v, pool) != 0)
        return -1;
    if ((v = get(p, map, "keepalive")) != NULL) {
        static const char *const ka_keys[] = {"max_idle", "idle_timeout"};
        if (check_keys(p, v, "keepalive", ka_keys, RLB_ARRAY_SIZE(ka_keys)) != 0)
            return -1;
        yaml_node_t *w;
        if ((w = get(p, v, "max_idle")) != NULL && get_u32(p, w, 0, 65536, &pool->keepalive_max_idle) != 0)
            return -1;
        if ((w = get(p, v, "idle_timeout")) != NULL && get_duration(p, w, 1, &pool->keepalive_idle_timeout_ms) != 0)
            return -1;
    }
    if ((v = require(p, map, "backends", "pool")) == NULL)
        return -1;
    if (expect_type(p, v, YAML_SEQUENCE_NODE) != 0)
        return -1;
    if (seq_len(v) == 0)
        return fail(p, v, "expected at least one backend");
    if (rlb_config_alloc_backends(pool, seq_len(v)) != 0)
        return out_of_memory(p, v);
    for (uint32_t i = 0; i < pool->num_backends; i++)
        if (parse_backend(p, seq_item(p, v, i), &pool->backends[i]) != 0)
            return -1;
    return 0;
}

/* split: [{pool: shop-a, weight: 95}, {pool: shop-b, weight: 5}] */
static int parse_split(struct parser *p, const yaml_node_t *seq, struct rlb_route_cfg *r)
{
    if (expect_type(p, seq, YAML_SEQUENCE_NODE) != 0)
        return -1;
    uint32_t n = seq_len(seq);
    if (n < 2 || n > 16)
        return fail(p, seq, "a split needs at least two variants (at most 16), got %u", n);
    if ((r->splits = calloc(n, sizeof(*r->splits))) == NULL)
        return out_of_memory(p, seq);
    r->num_splits = n;
    r->pool_mark = mark_of(seq);
    for (uint32_t i = 0; i < n; i++) {
        static const char *const keys[] = {"pool", "weight"};
        yaml_node_t *item = seq_item(p, seq, i), *v;
        if (check_keys(p, item, "split variant", keys, RLB_ARRAY_SIZE(keys)) != 0)
            return -1;
        struct rlb_split_cfg *sp = &r->splits[i];
        sp->mark = mark_of(item);
        if ((v = require(p, item, "pool", "split variant")) == NULL || get_string(p, v, &sp->pool_name) != 0)
            return -1;
        if ((v = require(p, item, "weight", "split variant")) == NULL || get_u32(p, v, 1, 1000000, &sp->weight) != 0)
            return -1;
    }
    return 0;
}

static int parse_route(struct parser *p, const yaml_node_t *map, struct rlb_route_cfg *r)
{
    static const char *const keys[] = {"path",     "pool",          "split",        "split_cookie",
                                       "set_host", "server_header", "server_value", "hide_powered_by", "cache"};
    if (check_keys(p, map, "route", keys, RLB_ARRAY_SIZE(keys)) != 0)
        return -1;
    r->mark = mark_of(map);
    yaml_node_t *v;
    if ((v = require(p, map, "path", "route")) == NULL)
        return -1;
    r->path_mark = mark_of(v);
    if (get_string(p, v, &r->path_prefix) != 0)
        return -1;
    yaml_node_t *split = get(p, map, "split");
    if ((v = get(p, map, "pool")) != NULL) {
        if (split != NULL)
            return fail(p, split, "a route takes either pool or split, not both");
        r->pool_mark = mark_of(v);
        if (get_string(p, v, &r->pool_name) != 0)
            return -1;
    } else if (split == NULL) {
        return fail(p, map, "missing required key \"pool\" in route (or split)");
    } else if (parse_split(p, split, r) != 0) {
        return -1;
    }
    if ((v = get(p, map, "split_cookie")) != NULL && get_string(p, v, &r->split_cookie) != 0)
        return -1;
    if ((v = get(p, map, "set_host")) != NULL) {
        r->set_host_mark = mark_of(v);
        if (get_string(p, v, &r->set_host) != 0)
            return -1;
    }
    if ((v = get(p, map, "server_header")) != NULL) {
        r->server_mark = mark_of(v);
        const char *s = scalar(p, v);
        if (s == NULL)
            return -1;
        if (strcmp(s, "pass") == 0)
            r->server_mode = RLB_SERVER_PASS;
        else if (strcmp(s, "hide") == 0)
            r->server_mode = RLB_SERVER_HIDE;
        else if (strcmp(s, "replace") == 0)
            r->server_mode = RLB_SERVER_REPLACE;
        else
            return fail(p, v, "expected pass, hide or replace, got %s", DESCRIBE(v));
    }
    if ((v = get(p, map, "server_value")) != NULL) {
        r->server_value_mark = mark_of(v);
        if (get_string(p, v, &r->server_value) != 0)
            return -1;
    }
    if ((v = get(p, map, "hide_powered_by")) != NULL && get_bool(p, v, &r->hide_powered_by) != 0)
        return -1;
    bool cache = true;
    if ((v = get(p, map, "cache")) != NULL && get_bool(p, v, &cache) != 0)
        return -1;
    r->cache_off = !cache;
    return 0;
}

static int parse_vhost(struct parser *p, const yaml_node_t *map, struct rlb_vhost_cfg *vh)
{
    static const char *const keys[] = {"hosts", "listeners", "routes"};
    if (check_keys(p, map, "vhost", keys, RLB_ARRAY_SIZE(keys)) != 0)
        return -1;
    vh->mark = mark_of(map);
    yaml_node_t *v;
    uint32_t n;
    if ((v = require(p, map, "hosts", "vhost")) == NULL || list_len(p, v, "host", &n) != 0)
        return -1;
    if ((vh->hosts = calloc(n, sizeof(*vh->hosts))) == NULL ||
        (vh->host_marks = calloc(n, sizeof(*vh->host_marks))) == NULL)
        return out_of_memory(p, v);
    vh->num_hosts = n;
    for (uint32_t i = 0; i < n; i++) {
        yaml_node_t *h = list_item(p, v, i);
        vh->host_marks[i] = mark_of(h);
        if (get_string(p, h, &vh->hosts[i]) != 0)
            return -1;
    }
    if ((v = get(p, map, "listeners")) != NULL) {
        if (list_len(p, v, "listener name", &n) != 0)
            return -1;
        if ((vh->listener_names = calloc(n, sizeof(*vh->listener_names))) == NULL ||
            (vh->listener_marks = calloc(n, sizeof(*vh->listener_marks))) == NULL)
            return out_of_memory(p, v);
        vh->num_listener_names = n;
        for (uint32_t i = 0; i < n; i++) {
            yaml_node_t *l = list_item(p, v, i);
            vh->listener_marks[i] = mark_of(l);
            if (get_string(p, l, &vh->listener_names[i]) != 0)
                return -1;
        }
    }
    if ((v = require(p, map, "routes", "vhost")) == NULL || expect_type(p, v, YAML_SEQUENCE_NODE) != 0)
        return -1;
    if ((n = seq_len(v)) == 0)
        return fail(p, v, "expected at least one route");
    if ((vh->routes = calloc(n, sizeof(*vh->routes))) == NULL)
        return out_of_memory(p, v);
    vh->num_routes = n;
    for (uint32_t i = 0; i < n; i++)
        if (parse_route(p, seq_item(p, v, i), &vh->routes[i]) != 0)
            return -1;
    return 0;
}

/* The three required lists must exist before anything is allocated for them. */
static yaml_node_t *required_list(struct parser *p, const yaml_node_t *root, const char *key, const char *what,
                                  struct rlb_config_mark *mark)
{
    yaml_node_t *v = require(p, root, key, "the top level");
    if (v == NULL || expect_type(p, v, YAML_SEQUENCE_NODE) != 0)
        return NULL;
    *mark = mark_of(v);
    if (seq_len(v) == 0) {
        fail(p, v, "expected at least one %s", what);
        return NULL;
    }
    return v;
}

static int parse_cache_key(struct parser *p, yaml_node_t *map, struct rlb_cache_cfg *c)
{
    static const char *const keys[] = {"host", "query", "headers"};
    if (check_keys(p, map, "cache key", keys, RLB_ARRAY_SIZE(keys)) != 0)
        return -1;
    yaml_node_t *v;
    if ((v = get(p, map, "host")) != NULL && get_bool(p, v, &c->key_host) != 0)
        return -1;
    if ((v = get(p, map, "query")) != NULL) {
        const char *s = scalar(p, v);
        if (s == NULL)
            return -1;
        if (strcmp(s, "full") == 0)
            c->key_query = RLB_CACHE_QUERY_FULL;
        else if (strcmp(s, "sorted") == 0)
            c->key_query = RLB_CACHE_QUERY_SORTED;
        else if (strcmp(s, "ignore") == 0)
            c->key_query = RLB_CACHE_QUERY_IGNORE;
        else
            return fail(p, v, "expected full, sorted or ignore, got %s", DESCRIBE(v));
    }
    if ((v = get(p, map, "headers")) != NULL) {
        if (expect_type(p, v, YAML_SEQUENCE_NODE) != 0)
            return -1;
        uint32_t n = seq_len(v);
        if ((c->key_headers = calloc(n + 1, sizeof(*c->key_headers))) == NULL)
            return out_of_memory(p, v);
        for (uint32_t i = 0; i < n; i++) {
            yaml_node_t *h = seq_item(p, v, i);
            if (get_string(p, h, &c->key_headers[i]) != 0)
                return -1;
            c->num_key_headers = i + 1;
            for (const char *ch = c->key_headers[i]; *ch; ch++)
                if (!isalnum((unsigned char)*ch) && !strchr("!#$%&'*+-.^_`|~", *ch))
                    return fail(p, h, "expected a header name, got %s", DESCRIBE(h));
        }
    }
    return 0;
}

static int parse_cache(struct parser *p, yaml_node_t *map)
{
    static const char *const keys[] = {"size",         "max_object",   "heuristic",     "heuristic_percent",
                                       "heuristic_max", "key",         "status_header", "lock_timeout",
                                       "store_set_cookie", "purge_token", "splice_min"};
    if (check_keys(p, map, "cache", keys, RLB_ARRAY_SIZE(keys)) != 0)
        return -1;
    struct rlb_cache_cfg *c = &p->cfg->cache;
    c->mark = mark_of(map);
    yaml_node_t *v;
    uint64_t size = 0;
    if ((v = require(p, map, "size", "cache")) == NULL)
        return -1;
    const char *s = scalar(p, v);
    if (s == NULL)
        return -1;
    if (rlb_size_parse(s, &size) != 0 || size < (64u << 10))
        return fail(p, v, "expected a size of at least 64k, like 256m or 1g, got %s", DESCRIBE(v));
    rlb_cache_cfg_enable(c, size);
    if ((v = get(p, map, "max_object")) != NULL) {
        if ((s = scalar(p, v)) == NULL)
            return -1;
        if (rlb_size_parse(s, &c->max_object) != 0 || c->max_object == 0)
            return fail(p, v, "expected a size like 1m, got %s", DESCRIBE(v));
    }
    if ((v = get(p, map, "heuristic")) != NULL && get_bool(p, v, &c->heuristic) != 0)
        return -1;
    if ((v = get(p, map, "heuristic_percent")) != NULL && get_u32(p, v, 1, 100, &c->heuristic_percent) != 0)
        return -1;
    uint32_t ms;
    if ((v = get(p, map, "heuristic_max")) != NULL) {
        if (get_duration(p, v, 1000, &ms) != 0)
            return -1;
        c->heuristic_max_s = ms / 1000;
    }
    if ((v = get(p, map, "key")) != NULL && parse_cache_key(p, v, c) != 0)
        return -1;
    if ((v = get(p, map, "status_header")) != NULL && get_bool(p, v, &c->status_header) != 0)
        return -1;
    if ((v = get(p, map, "lock_timeout")) != NULL && get_duration(p, v, 1, &c->lock_timeout_ms) != 0)
        return -1;
    if ((v = get(p, map, "store_set_cookie")) != NULL && get_bool(p, v, &c->store_set_cookie) != 0)
        return -1;
    if ((v = get(p, map, "splice_min")) != NULL) {
        if (get_size(p, v, UINT32_MAX, &c->splice_min) != 0)
            return -1;
        c->splice_min_set = true;
    }
    if ((v = get(p, map, "purge_token")) != NULL) {
        if (get_string(p, v, &c->purge_token) != 0)
            return -1;
        if (strlen(c->purge_token) < 16)
            return fail(p, v, "purge_token must be at least 16 characters (it is the only thing guarding PURGE)");
    }
    return 0;
}

static int parse_root(struct parser *p, const yaml_node_t *root)
{
    static const char *const keys[] = {"workers",  "cpus",    "max_connections", "via",   "limits",
                                       "timeouts", "buffers", "listeners",       "pools", "vhosts", "cache"};
    if (check_keys(p, root, "the top level", keys, RLB_ARRAY_SIZE(keys)) != 0)
        return -1;
    struct rlb_config *cfg = p->cfg;
    yaml_node_t *v;
    if ((v = get(p, root, "workers")) != NULL) {
        cfg->marks.workers = mark_of(v);
        const char *s = scalar(p, v);
        if (s == NULL)
            return -1;
        if (strcmp(s, "auto") == 0)
            cfg->workers = 0;
        else if (get_u32(p, v, 1, MAX_WORKERS, &cfg->workers) != 0)
            return fail(p, v, "expected auto or an integer 1..%u, got %s", MAX_WORKERS, DESCRIBE(v));
    }
    if ((v = get(p, root, "cpus")) != NULL && parse_cpus(p, v) != 0)
        return -1;
    if ((v = get(p, root, "max_connections")) != NULL) {
        cfg->marks.max_connections = mark_of(v);
        if (get_u32(p, v, 2, 1u << 24, &cfg->max_connections) != 0)
            return -1;
    }
    if ((v = get(p, root, "via")) != NULL) {
        cfg->marks.via = mark_of(v);
        if (get_string(p, v, &cfg->via_name) != 0)
            return -1;
    }
    if ((v = get(p, root, "limits")) != NULL && parse_limits(p, v) != 0)
        return -1;
    if ((v = get(p, root, "timeouts")) != NULL && parse_timeouts(p, v) != 0)
        return -1;
    if ((v = get(p, root, "buffers")) != NULL && parse_buffers(p, v) != 0)
        return -1;
    if ((v = get(p, root, "cache")) != NULL && parse_cache(p, v) != 0)
        return -1;

    yaml_node_t *listeners, *pools, *vhosts;
    if ((listeners = required_list(p, root, "listeners", "listener", &cfg->marks.listeners)) == NULL ||
        (pools = required_list(p, root, "pools", "pool", &cfg->marks.pools)) == NULL ||
        (vhosts = required_list(p, root, "vhosts", "vhost", &cfg->marks.vhosts)) == NULL)
        return -1;
    if (rlb_config_alloc(cfg, seq_len(listeners), seq_len(pools), seq_len(vhosts)) != 0)
        return out_of_memory(p, root);
    for (uint32_t i = 0; i < cfg->num_listeners; i++)
        if (parse_listener(p, seq_item(p, listeners, i), &cfg->listeners[i]) != 0)
            return -1;
    for (uint32_t i = 0; i < cfg->num_pools; i++)
        if (parse_pool(p, seq_item(p, pools, i), &cfg->pools[i]) != 0)
            return -1;
    for (uint32_t i = 0; i < cfg->num_vhosts; i++)
        if (parse_vhost(p, seq_item(p, vhosts, i), &cfg->vhosts[i]) != 0)
            return -1;
    return 0;
}

/* ---------------------------------------------------------------------------------------------------------------
 * Entry points
 */

/* Reader errors (bad UTF-8) carry a byte offset instead of a position. */
static void offset_to_mark(const char *text, size_t len, size_t offset, size_t *line, size_t *column)
{
    *line = *column = 0;
    for (size_t i = 0; i < offset && i < len; i++) {
        if (text[i] == '\n') {
            (*line)++;
            *column = 0;
        } else {
            (*column)++;
        }
    }
}

static void syntax_error(const char *name, const yaml_parser_t *yp, const char *text, size_t len, char *err,
                         size_t errlen)
{
    size_t line = yp->problem_mark.line, column = yp->problem_mark.column;
    if (yp->error == YAML_READER_ERROR)
        offset_to_mark(text, len, yp->problem_offset, &line, &column);
    const char *problem = yp->problem != NULL ? yp->problem : "cannot parse";
    /* "address: *:8080" is the mistake people make most: YAML reads "*" as the start of an alias. */
    const char *hint = yp->context != NULL && strcmp(yp->context, "while scanning an alias") == 0
                           ? "; a value starting with \"*\" must be quoted, e.g. \"*:8080\""
                           : "";
    if (yp->context != NULL)
        snprintf(err, errlen, "%s:%zu:%zu: YAML syntax error: %s (%s at %zu:%zu)%s", name, line + 1, column + 1,
                 problem, yp->context, yp->context_mark.line + 1, yp->context_mark.column + 1, hint);
    else
        snprintf(err, errlen, "%s:%zu:%zu: YAML syntax error: %s", name, line + 1, column + 1, problem);
}

struct rlb_config *rlb_config_load_string(const char *name, const char *yaml, size_t len, char *err, size_t errlen)
{
    char dummy[1];
    if (err == NULL || errlen == 0) {
        err = dummy;
        errlen = sizeof(dummy);
    }
    if (name == NULL)
        name = "<string>";
    struct rlb_config *cfg = rlb_config_new(name);
    if (cfg == NULL) {
        snprintf(err, errlen, "%s: out of memory", name);
        return NULL;
    }
    yaml_parser_t yp;
    yaml_document_t doc, extra;
    bool have_doc = false;
    int rc = -1;
    if (!yaml_parser_initialize(&yp)) {
        snprintf(err, errlen, "%s: out of memory", name);
        rlb_config_free(cfg);
        return NULL;
    }
    yaml_parser_set_input_string(&yp, (const unsigned char *)yaml, len);
    if (!yaml_parser_load(&yp, &doc)) {
        syntax_error(name, &yp, yaml, len, err, errlen);
        goto out;
    }
    have_doc = true;
    struct parser p = {.name = name, .doc = &doc, .cfg = cfg, .err = err, .errlen = errlen};
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root == NULL) {
        snprintf(err, errlen,
                 "%s:1:1: the configuration is empty (expected a mapping with listeners, pools and vhosts)", name);
        goto out;
    }
    /* A second document would be silently ignored; say so instead. */
    if (!yaml_parser_load(&yp, &extra)) {
        syntax_error(name, &yp, yaml, len, err, errlen);
        goto out;
    }
    yaml_node_t *extra_root = yaml_document_get_root_node(&extra);
    if (extra_root != NULL) {
        fail(&p, extra_root, "only one YAML document is allowed in a configuration file");
        yaml_document_delete(&extra);
        goto out;
    }
    yaml_document_delete(&extra);
    if (parse_root(&p, root) != 0 || rlb_config_finish(cfg, err, errlen) != 0)
        goto out;
    rc = 0;
out:
    if (have_doc)
        yaml_document_delete(&doc);
    yaml_parser_delete(&yp);
    if (rc != 0) {
        rlb_config_free(cfg);
        return NULL;
    }
    return cfg;
}

struct rlb_config *rlb_config_load_file(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    char *text = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            cap = cap != 0 ? cap * 2 : 8192;
            char *t = cap <= MAX_FILE_SIZE + 1 ? realloc(text, cap) : NULL;
            if (t == NULL) {
                snprintf(err, errlen, "%s: cannot read: %s", path,
                         cap > MAX_FILE_SIZE + 1 ? "file larger than 16 MiB" : strerror(ENOMEM));
                goto fail;
            }
            text = t;
        }
        size_t n = fread(text + len, 1, cap - len, f);
        len += n;
        if (n == 0) {
            if (ferror(f)) {
                snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
                goto fail;
            }
            break;
        }
    }
    fclose(f);
    struct rlb_config *cfg = rlb_config_load_string(path, text, len, err, errlen);
    free(text);
    return cfg;
fail:
    fclose(f);
    free(text);
    return NULL;
}
