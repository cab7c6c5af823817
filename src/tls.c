/* TLS contexts: certificates chosen by SNI, protocols and suites, ALPN,
 * session tickets whose keys every worker derives alike, OCSP stapling,
 * client and upstream verification. Each worker builds its own contexts:
 * nothing BoringSSL counts or locks is shared between cores. */
#include "tls_internal.h"

#include <ringlb/config.h>
#include <ringlb/log.h>
#include <ringlb/worker-t.h>

#include <openssl/err.h>
#include <openssl/hkdf.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define SYSTEM_CA_BUNDLE "/etc/ssl/certs/ca-certificates.crt"

/* ECDHE and AEAD only: forward secrecy, and every suite is one the kernel can take over. */
static const char DEFAULT_CIPHERS[] = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                                      "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
                                      "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

const char *rlb_tls_library(void)
{
    return OpenSSL_version(OPENSSL_VERSION);
}

void rlb__tls_error(char *msg, size_t len, const char *what)
{
    uint32_t e = ERR_get_error();
    char reason[160] = "unknown error";
    if (e != 0)
        ERR_error_string_n(e, reason, sizeof(reason));
    else if (errno != 0)
        snprintf(reason, sizeof(reason), "%s", strerror(errno));
    ERR_clear_error();
    snprintf(msg, len, "%s: %s", what, reason);
}

/* ---------------------------------------------------------------------------------------------------------------
 * Session tickets. One secret per process, drawn at start; the key of each rotation period is derived from it, so
 * every worker computes the same keys on its own and a ticket resumes on whichever core the client lands.
 */

static uint8_t ticket_master[32];
static pthread_once_t ticket_once = PTHREAD_ONCE_INIT;

static void draw_ticket_master(void)
{
    RAND_bytes(ticket_master, sizeof(ticket_master));
}

static const struct rlb_tls_ticket_key *ticket_key(struct rlb_tls_worker *tw, uint64_t epoch)
{
    struct rlb_tls_ticket_key *k = &tw->keys[epoch & 1];
    if (k->valid && k->epoch == epoch)
        return k;
    uint8_t info[24] = "ringlb ticket key";
    for (int i = 0; i < 7; i++)
        info[17 + i] = (uint8_t)(epoch >> (8 * i));
    uint8_t out[72];
    if (!HKDF(out, sizeof(out), EVP_sha256(), ticket_master, sizeof(ticket_master), NULL, 0, info, sizeof(info)))
        return NULL;
    memcpy(k->aes, out, 32);
    memcpy(k->hmac, out + 32, 32);
    memcpy(k->tag, out + 64, 8);
    k->epoch = epoch;
    k->valid = true;
    return k;
}

/* Key name: 8 bytes of rotation period, then 8 bytes that only this process's secret gives. */
static int ticket_key_cb(SSL *ssl, uint8_t *name, uint8_t *iv, EVP_CIPHER_CTX *ectx, HMAC_CTX *hctx, int encrypt)
{
    struct rlb_tls_server *srv = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    uint64_t period_ms = srv->cfg->ticket_rotation_ms;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    uint64_t current = ((uint64_t)now.tv_sec * 1000 + (uint64_t)now.tv_nsec / 1000000) / period_ms;
    uint64_t epoch = current;
    if (!encrypt) {
        epoch = 0;
        for (int i = 0; i < 8; i++)
            epoch = epoch << 8 | name[i];
        /* The previous period's key still opens tickets (renewed on use); older ones have expired. */
        if (epoch != current && epoch + 1 != current)
            return 0;
    }
    const struct rlb_tls_ticket_key *k = ticket_key(srv->tw, epoch);
    if (k == NULL)
        return -1;
    if (encrypt) {
        for (int i = 0; i < 8; i++)
            name[i] = (uint8_t)(epoch >> (56 - 8 * i));
        memcpy(name + 8, k->tag, 8);
        if (!RAND_bytes(iv, EVP_MAX_IV_LENGTH) || !EVP_EncryptInit_ex(ectx, EVP_aes_256_cbc(), NULL, k->aes, iv))
            return -1;
    } else {
        if (memcmp(name + 8, k->tag, 8) != 0)
            return 0;
        if (!EVP_DecryptInit_ex(ectx, EVP_aes_256_cbc(), NULL, k->aes, iv))
            return -1;
    }
    if (!HMAC_Init_ex(hctx, k->hmac, sizeof(k->hmac), EVP_sha256(), NULL))
        return -1;
    return encrypt || epoch == current ? 1 : 2;
}

/* ---------------------------------------------------------------------------------------------------------------
 * Server contexts
 */

static int alpn_select_cb(SSL *ssl, const uint8_t **out, uint8_t *out_len, const uint8_t *in, unsigned in_len, void *arg)
{
    (void)ssl;
    const struct rlb_tls_server *srv = arg;
    uint8_t *sel;
    uint8_t sel_len;
    /* Server preference order. No protocol in common is a fatal alert (RFC 7301 3.2): answering in HTTP/1.1 a
     * client that offered only h2 would fail later and less clearly. */
    if (SSL_select_next_proto(&sel, &sel_len, srv->alpn_wire, (unsigned)srv->alpn_len, in, in_len) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    *out = sel;
    *out_len = sel_len;
    return SSL_TLSEXT_ERR_OK;
}

static bool name_matches(const struct rlb_tls_name *n, const char *host, size_t len)
{
    if (!n->wildcard)
        return strlen(n->name) == len && strncasecmp(n->name, host, len) == 0;
    /* "*.example.com" covers exactly one more label. */
    const char *dot = memchr(host, '.', len);
    if (dot == NULL || dot == host)
        return false;
    size_t rest = len - (size_t)(dot + 1 - host);
    return strlen(n->name) == rest && strncasecmp(n->name, dot + 1, rest) == 0;
}

static int servername_cb(SSL *ssl, int *alert, void *arg)
{
    (void)alert;
    const struct rlb_tls_server *srv = arg;
    const char *host = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (host == NULL)
        return SSL_TLSEXT_ERR_OK;
    size_t len = strlen(host);
    /* Exact names win over wildcards, whatever the order they were written in. */
    for (int pass = 0; pass < 2; pass++)
        for (uint32_t i = 0; i < srv->num_names; i++) {
            const struct rlb_tls_name *n = &srv->names[i];
            if (n->wildcard == (pass == 1) && name_matches(n, host, len)) {
                if (n->ctx != 0)
                    SSL_set_SSL_CTX(ssl, srv->ctx[n->ctx]);
                return SSL_TLSEXT_ERR_OK;
            }
        }
    return SSL_TLSEXT_ERR_OK; /* the default certificate answers unknown names, as every web server does */
}

static int read_file(const char *path, uint8_t **data, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return -1;
    size_t cap = 4096, n = 0;
    uint8_t *buf = malloc(cap);
    for (;;) {
        if (buf == NULL)
            break;
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap || cap >= (1u << 20))
            break;
        uint8_t *bigger = realloc(buf, cap * 2);
        if (bigger == NULL) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = bigger;
        cap *= 2;
    }
    bool bad = ferror(f);
    fclose(f);
    if (buf == NULL || bad) {
        free(buf);
        errno = buf == NULL ? ENOMEM : EIO;
        return -1;
    }
    *data = buf;
    *len = n;
    return 0;
}

static int add_name(struct rlb_tls_server *srv, const char *name, size_t len, uint32_t ctx)
{
    bool wildcard = len > 2 && name[0] == '*' && name[1] == '.';
    if (wildcard) {
        name += 2;
        len -= 2;
    }
    struct rlb_tls_name *grown = realloc(srv->names, (srv->num_names + 1) * sizeof(*grown));
    if (grown == NULL)
        return -1;
    srv->names = grown;
    char *copy = strndup(name, len);
    if (copy == NULL)
        return -1;
    for (char *p = copy; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    srv->names[srv->num_names++] = (struct rlb_tls_name){copy, wildcard, ctx};
    return 0;
}

/* The names a certificate answers for when the configuration names none: its DNS names, else its common name. */
static int add_certificate_names(struct rlb_tls_server *srv, SSL_CTX *ctx, uint32_t idx)
{
    X509 *x = SSL_CTX_get0_certificate(ctx);
    if (x == NULL)
        return 0;
    GENERAL_NAMES *sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    int added = 0, rc = 0;
    for (size_t i = 0; sans != NULL && i < sk_GENERAL_NAME_num(sans); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
        if (g->type != GEN_DNS)
            continue;
        if (add_name(srv, (const char *)ASN1_STRING_get0_data(g->d.dNSName), (size_t)ASN1_STRING_length(g->d.dNSName),
                     idx) != 0)
            rc = -1;
        added++;
    }
    GENERAL_NAMES_free(sans);
    if (added == 0) {
        char cn[256];
        int n = X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof(cn));
        if (n > 0 && add_name(srv, cn, (size_t)n, idx) != 0)
            rc = -1;
    }
    return rc;
}

static void set_protocols(SSL_CTX *ctx, uint8_t protocols)
{
    SSL_CTX_set_min_proto_version(ctx, (protocols & RLB_TLS_PROTO_12) ? TLS1_2_VERSION : TLS1_3_VERSION);
    SSL_CTX_set_max_proto_version(ctx, (protocols & RLB_TLS_PROTO_13) ? TLS1_3_VERSION : TLS1_2_VERSION);
}

static SSL_CTX *new_server_ctx(struct rlb_tls_server *srv, const struct rlb_tls_cert_cfg *cert,
                               struct rlb_config_mark *where, char *msg, size_t len)
{
    const struct rlb_tls_listener_cfg *t = srv->cfg;
    SSL_CTX *ctx = SSL_CTX_new(TLS_method());
    if (ctx == NULL) {
        rlb__tls_error(msg, len, "creating a TLS context");
        *where = t->mark;
        return NULL;
    }
    SSL_CTX_set_app_data(ctx, srv);
    set_protocols(ctx, t->protocols);
    errno = 0;
    if (!SSL_CTX_use_certificate_chain_file(ctx, cert->cert)) {
        char what[300];
        snprintf(what, sizeof(what), "cannot load certificate %.200s", cert->cert);
        rlb__tls_error(msg, len, what);
        *where = cert->cert_mark;
        goto fail;
    }
    errno = 0;
    if (!SSL_CTX_use_PrivateKey_file(ctx, cert->key, SSL_FILETYPE_PEM) || !SSL_CTX_check_private_key(ctx)) {
        char what[300];
        snprintf(what, sizeof(what), "cannot use key %.200s for certificate %.60s", cert->key, cert->cert);
        rlb__tls_error(msg, len, what);
        *where = cert->key_mark;
        goto fail;
    }
    if (!SSL_CTX_set_strict_cipher_list(ctx, t->ciphers != NULL ? t->ciphers : DEFAULT_CIPHERS)) {
        rlb__tls_error(msg, len, "bad cipher list");
        *where = t->ciphers_mark;
        goto fail;
    }
    if (cert->ocsp != NULL) {
        uint8_t *der;
        size_t der_len;
        if (read_file(cert->ocsp, &der, &der_len) != 0) {
            snprintf(msg, len, "cannot read OCSP response %.200s: %s", cert->ocsp, strerror(errno));
            *where = cert->ocsp_mark;
            goto fail;
        }
        int ok = SSL_CTX_set_ocsp_response(ctx, der, der_len);
        free(der);
        if (!ok) {
            rlb__tls_error(msg, len, "cannot staple the OCSP response");
            *where = cert->ocsp_mark;
            goto fail;
        }
    }
    if (t->client_ca != NULL && t->verify_client != RLB_TLS_VERIFY_OFF) {
        errno = 0;
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(t->client_ca);
        if (names == NULL || !SSL_CTX_load_verify_locations(ctx, t->client_ca, NULL)) {
            sk_X509_NAME_pop_free(names, X509_NAME_free);
            char what[300];
            snprintf(what, sizeof(what), "cannot load client CA %.200s", t->client_ca);
            rlb__tls_error(msg, len, what);
            *where = t->client_ca_mark;
            goto fail;
        }
        SSL_CTX_set_client_CA_list(ctx, names);
        SSL_CTX_set_verify(ctx,
                           SSL_VERIFY_PEER |
                               (t->verify_client == RLB_TLS_VERIFY_REQUIRED ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
                           NULL);
    }
    /* Resumption by ticket only: a session cache would be one more thing per core that a client on another core
     * cannot find. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    if (t->tickets)
        SSL_CTX_set_tlsext_ticket_key_cb(ctx, ticket_key_cb);
    else
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select_cb, srv);
    SSL_CTX_set_tlsext_servername_callback(ctx, servername_cb);
    SSL_CTX_set_tlsext_servername_arg(ctx, srv);
    if (t->ktls)
        SSL_CTX_set_keylog_callback(ctx, rlb_ktls_keylog);
    /* Memory per idle connection: BoringSSL frees its record buffers whenever they are empty. */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

static void server_destroy(struct rlb_tls_server *srv)
{
    for (uint32_t i = 0; i < srv->num_ctx; i++)
        SSL_CTX_free(srv->ctx[i]);
    free(srv->ctx);
    for (uint32_t i = 0; i < srv->num_names; i++)
        free(srv->names[i].name);
    free(srv->names);
    free(srv->alpn_wire);
    memset(srv, 0, sizeof(*srv));
}

static int server_init(struct rlb_tls_server *srv, struct rlb_tls_worker *tw, const struct rlb_tls_listener_cfg *t,
                       struct rlb_config_mark *where, char *msg, size_t len)
{
    srv->cfg = t;
    srv->tw = tw;
    *where = t->mark;
    size_t wire = 0;
    for (uint32_t i = 0; i < t->num_alpn; i++)
        wire += 1 + strlen(t->alpn[i]);
    srv->alpn_wire = malloc(wire + 1);
    srv->ctx = calloc(t->num_certs, sizeof(*srv->ctx));
    if (srv->alpn_wire == NULL || srv->ctx == NULL)
        goto oom;
    for (uint32_t i = 0; i < t->num_alpn; i++) {
        size_t n = strlen(t->alpn[i]);
        srv->alpn_wire[srv->alpn_len++] = (uint8_t)n;
        memcpy(srv->alpn_wire + srv->alpn_len, t->alpn[i], n);
        srv->alpn_len += n;
    }
    for (uint32_t i = 0; i < t->num_certs; i++) {
        const struct rlb_tls_cert_cfg *cert = &t->certs[i];
        if ((srv->ctx[i] = new_server_ctx(srv, cert, where, msg, len)) == NULL)
            goto fail;
        srv->num_ctx++;
        int rc = 0;
        for (uint32_t j = 0; j < cert->num_names && rc == 0; j++)
            rc = add_name(srv, cert->names[j], strlen(cert->names[j]), i);
        if (cert->num_names == 0)
            rc = add_certificate_names(srv, srv->ctx[i], i);
        if (rc != 0)
            goto oom;
    }
    return 0;
oom:
    snprintf(msg, len, "out of memory");
fail:
    server_destroy(srv);
    return -1;
}

/* ---------------------------------------------------------------------------------------------------------------
 * Upstream (client) contexts
 */

static int new_session_cb(SSL *ssl, SSL_SESSION *session)
{
    struct rlb_tls_conn *t = SSL_get_app_data(ssl);
    struct rlb_tls_client *cl = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    if (t == NULL || cl == NULL || cl->sessions == NULL)
        return 0;
    const struct rlb_conn *u = &t->w->conns[t->slot];
    SSL_SESSION **slot = &cl->sessions[u->backend];
    SSL_SESSION_free(*slot);
    *slot = session;
    return 1; /* we keep the reference */
}

/* What the proxy and the health checker share when they talk TLS to a pool's backends. */
static SSL_CTX *new_client_ctx(const struct rlb_pool_cfg *p, struct rlb_config_mark *where, char *msg, size_t len)
{
    *where = p->tls.mark;
    SSL_CTX *ctx = SSL_CTX_new(TLS_method());
    if (ctx == NULL) {
        rlb__tls_error(msg, len, "creating a TLS context");
        return NULL;
    }
    set_protocols(ctx, RLB_TLS_PROTO_12 | RLB_TLS_PROTO_13);
    SSL_CTX_set_strict_cipher_list(ctx, DEFAULT_CIPHERS);
    if (p->tls.verify) {
        const char *ca = p->tls.ca != NULL ? p->tls.ca : SYSTEM_CA_BUNDLE;
        errno = 0;
        if (!SSL_CTX_load_verify_locations(ctx, ca, NULL)) {
            char what[300];
            snprintf(what, sizeof(what), "cannot load CA %.200s", ca);
            rlb__tls_error(msg, len, what);
            if (p->tls.ca != NULL)
                *where = p->tls.ca_mark;
            goto fail;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    }
    if (p->tls.cert != NULL) {
        errno = 0;
        if (!SSL_CTX_use_certificate_chain_file(ctx, p->tls.cert)) {
            rlb__tls_error(msg, len, "cannot load the client certificate");
            *where = p->tls.cert_mark;
            goto fail;
        }
        errno = 0;
        if (!SSL_CTX_use_PrivateKey_file(ctx, p->tls.key, SSL_FILETYPE_PEM) || !SSL_CTX_check_private_key(ctx)) {
            rlb__tls_error(msg, len, "cannot use the client key");
            *where = p->tls.key_mark;
            goto fail;
        }
    }
    static const uint8_t http11[] = "\x08http/1.1";
    SSL_CTX_set_alpn_protos(ctx, http11, sizeof(http11) - 1);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

SSL_CTX *rlb_tls_client_ctx_new(const struct rlb_pool_cfg *p, char *msg, size_t len)
{
    struct rlb_config_mark where;
    return new_client_ctx(p, &where, msg, len);
}

int rlb_tls_client_setup(SSL *ssl, const struct rlb_pool_cfg *p, const struct rlb_backend_cfg *be)
{
    SSL_set_connect_state(ssl);
    const char *sni = p->tls.sni != NULL ? p->tls.sni : be->host_name;
    if (sni != NULL && !SSL_set_tlsext_host_name(ssl, sni))
        return -1;
    if (!p->tls.verify)
        return 0;
    const char *name = p->tls.name != NULL ? p->tls.name : sni;
    X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
    if (name != NULL)
        return X509_VERIFY_PARAM_set1_host(param, name, strlen(name)) ? 0 : -1;
    /* No name to check: the certificate must carry the address we connect to. */
    char ip[INET6_ADDRSTRLEN] = "";
    const struct sockaddr *sa = (const struct sockaddr *)&be->addr.ss;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, ip, sizeof(ip));
    else
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, ip, sizeof(ip));
    return X509_VERIFY_PARAM_set1_ip_asc(param, ip) ? 0 : -1;
}

static int client_init(struct rlb_tls_client *cl, const struct rlb_pool_cfg *p, struct rlb_config_mark *where,
                       char *msg, size_t len)
{
    cl->cfg = p;
    SSL_CTX *ctx = new_client_ctx(p, where, msg, len);
    if (ctx == NULL)
        return -1;
    cl->ctx = ctx;
    SSL_CTX_set_app_data(ctx, cl);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
    SSL_CTX_sess_set_new_cb(ctx, new_session_cb);
    cl->sessions = calloc(p->num_backends, sizeof(*cl->sessions));
    if (cl->sessions == NULL) {
        snprintf(msg, len, "out of memory");
        return -1;
    }
    return 0;
}

static void client_destroy(struct rlb_tls_client *cl)
{
    for (uint32_t i = 0; cl->sessions != NULL && i < cl->cfg->num_backends; i++)
        SSL_SESSION_free(cl->sessions[i]);
    free(cl->sessions);
    SSL_CTX_free(cl->ctx);
    memset(cl, 0, sizeof(*cl));
}

/* ---------------------------------------------------------------------------------------------------------------
 * Per worker
 */

static void tw_destroy(struct rlb_tls_worker *tw)
{
    for (uint32_t i = 0; tw->servers != NULL && i < tw->num_servers; i++)
        server_destroy(&tw->servers[i]);
    free(tw->servers);
    for (uint32_t i = 0; tw->clients != NULL && i < tw->num_clients; i++)
        client_destroy(&tw->clients[i]);
    free(tw->clients);
    while (tw->out_free != NULL) {
        void *next = *(void **)tw->out_free;
        free(tw->out_free);
        tw->out_free = next;
    }
    while (tw->conn_free != NULL) {
        struct rlb_tls_conn *next = tw->conn_free->next_free;
        free(tw->conn_free);
        tw->conn_free = next;
    }
    free(tw);
}

static struct rlb_tls_worker *tw_build(const struct rlb_config *cfg, struct rlb_config_mark *where, char *msg,
                                       size_t len)
{
    pthread_once(&ticket_once, draw_ticket_master);
    struct rlb_tls_worker *tw = calloc(1, sizeof(*tw));
    if (tw == NULL || (tw->servers = calloc(cfg->num_listeners + 1, sizeof(*tw->servers))) == NULL ||
        (tw->clients = calloc(cfg->num_pools + 1, sizeof(*tw->clients))) == NULL) {
        if (tw != NULL)
            tw_destroy(tw);
        snprintf(msg, len, "out of memory");
        *where = (struct rlb_config_mark){0};
        return NULL;
    }
    tw->num_servers = cfg->num_listeners;
    tw->num_clients = cfg->num_pools;
    for (uint32_t i = 0; i < cfg->num_listeners; i++)
        if (cfg->listeners[i].tls.enabled && server_init(&tw->servers[i], tw, &cfg->listeners[i].tls, where, msg, len) != 0)
            goto fail;
    for (uint32_t i = 0; i < cfg->num_pools; i++)
        if (cfg->pools[i].tls.enabled && client_init(&tw->clients[i], &cfg->pools[i], where, msg, len) != 0)
            goto fail;
    return tw;
fail:
    tw_destroy(tw);
    return NULL;
}

int rlb_tls_check(const struct rlb_config *cfg, struct rlb_config_mark *where, char *msg, size_t len)
{
    bool any = false;
    for (uint32_t i = 0; i < cfg->num_listeners; i++)
        any |= cfg->listeners[i].tls.enabled;
    for (uint32_t i = 0; i < cfg->num_pools; i++)
        any |= cfg->pools[i].tls.enabled;
    if (!any)
        return 0;
    struct rlb_tls_worker *tw = tw_build(cfg, where, msg, len);
    if (tw == NULL)
        return -1;
    tw_destroy(tw);
    return 0;
}

int rlb_tls_worker_init(struct rlb_worker *w, char *msg, size_t len)
{
    struct rlb_config_mark where;
    w->tls = tw_build(w->cfg, &where, msg, len);
    if (w->tls == NULL)
        return -1;
    w->tls->w = w;
    return 0;
}

void rlb_tls_worker_reload(struct rlb_worker *w, const struct rlb_config *cfg)
{
    struct rlb_config_mark where;
    char msg[400];
    struct rlb_tls_worker *next = tw_build(cfg, &where, msg, sizeof(msg));
    if (next == NULL) {
        rlb_log_error("worker %u: TLS reload failed, the running certificates stay: %s", w->id, msg);
        return;
    }
    struct rlb_tls_worker *old = w->tls;
    next->w = w;
    w->tls = next;
    if (old == NULL)
        return;
    /* The per-worker state that is not about certificates carries over. */
    next->ktls_retry_ms = old->ktls_retry_ms;
    next->ktls_refusal_logged = old->ktls_refusal_logged;
    if (old->live == 0)
        tw_destroy(old);
}

void rlb_tls_retire_check(struct rlb_worker *w, struct rlb_tls_worker *owner)
{
    if (owner != w->tls && owner->live == 0)
        tw_destroy(owner);
}

void rlb_tls_worker_destroy(struct rlb_worker *w)
{
    if (w->tls != NULL)
        tw_destroy(w->tls);
    w->tls = NULL;
}
