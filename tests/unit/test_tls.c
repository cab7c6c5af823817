/* TLS contexts without sockets: handshakes between a BoringSSL client and the
 * contexts ringlb builds, over an in-memory BIO pair (SNI choice, ALPN,
 * ticket resumption across workers, protocol limits), the TLS 1.3 key
 * expansion kTLS uses (RFC 8448 vectors), and configuration errors. */
#include <criterion/criterion.h>

#include <ringlb/config.h>
#include <ringlb/worker-t.h>

#include "../../src/tls_internal.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/x509.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char dir[64];
static char err[RLB_CONFIG_ERR_MAX];

/* Certificates made with the openssl command (tests/setup.sh installs it). */
static void make_cert(const char *name, const char *alg, const char *subject, const char *san)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "openssl req -x509 -newkey %s -nodes -keyout %s/%s.key -out %s/%s.pem -days 30 -subj /CN=%s "
             "-addext subjectAltName=%s >/dev/null 2>&1",
             alg, dir, name, dir, name, subject, san);
    cr_assert_eq(system(cmd), 0, "openssl failed: %s", cmd);
}

static void setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/ringlb-tls-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    make_cert("shop", "ec -pkeyopt ec_paramgen_curve:P-256", "shop.test", "DNS:shop.test,DNS:*.shop.test");
    make_cert("other", "rsa:2048", "other.test", "DNS:other.test");
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(tls, .init = setup, .fini = teardown);

static struct rlb_config *load(const char *extra_tls)
{
    char yaml[2048];
    snprintf(yaml, sizeof(yaml),
             "listeners:\n"
             "  - address: 127.0.0.1:8443\n"
             "    tls:\n"
             "      certificates:\n"
             "        - {cert: %s/other.pem, key: %s/other.key, names: [other.test]}\n"
             "        - {cert: %s/shop.pem, key: %s/shop.key}\n"
             "%s"
             "pools:\n  - name: shop\n    backends: [127.0.0.1:9001]\n"
             "vhosts:\n  - hosts: [\"*\"]\n    routes: [{path: /, pool: shop}]\n",
             dir, dir, dir, dir, extra_tls);
    err[0] = '\0';
    return rlb_config_load_string("t.yaml", yaml, strlen(yaml), err, sizeof(err));
}

/* A worker's TLS contexts, built as a worker builds them. */
static struct rlb_worker *worker(const struct rlb_config *cfg)
{
    struct rlb_worker *w = calloc(1, sizeof(*w));
    w->cfg = cfg;
    char msg[256];
    cr_assert_eq(rlb_tls_worker_init(w, msg, sizeof(msg)), 0, "%s", msg);
    return w;
}

static void drop_worker(struct rlb_worker *w)
{
    rlb_tls_worker_destroy(w);
    free(w);
}

static SSL_SESSION *captured;

static int keep_session(SSL *ssl, SSL_SESSION *s)
{
    (void)ssl;
    SSL_SESSION_free(captured);
    captured = s;
    return 1;
}

struct client_opts {
    const char *sni;
    const uint8_t *alpn; /* wire format */
    size_t alpn_len;
    uint16_t version;    /* 0: any */
    SSL_SESSION *session;
};

struct result {
    bool ok;
    bool resumed;
    char subject[128];
    char alpn[32];
    uint16_t version;
};

/* One handshake between a client and worker <w>'s listener 0, then one byte each way (so a TLS 1.3 ticket
 * arrives). */
static struct result handshake(struct rlb_worker *w, const struct client_opts *o)
{
    struct result r = {0};
    SSL_CTX *cctx = SSL_CTX_new(TLS_method());
    SSL_CTX_set_session_cache_mode(cctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
    SSL_CTX_sess_set_new_cb(cctx, keep_session);
    if (o->version) {
        SSL_CTX_set_min_proto_version(cctx, o->version);
        SSL_CTX_set_max_proto_version(cctx, o->version);
    }
    SSL *client = SSL_new(cctx);
    SSL *server = SSL_new(w->tls->servers[0].ctx[0]);
    BIO *cb, *sb;
    cr_assert(BIO_new_bio_pair(&cb, 0, &sb, 0));
    SSL_set_bio(client, cb, cb);
    SSL_set_bio(server, sb, sb);
    SSL_set_connect_state(client);
    SSL_set_accept_state(server);
    if (o->sni)
        SSL_set_tlsext_host_name(client, o->sni);
    if (o->alpn)
        SSL_set_alpn_protos(client, o->alpn, o->alpn_len);
    if (o->session)
        SSL_set_session(client, o->session);
    int c = 0, s = 0;
    for (int i = 0; i < 20 && (c != 1 || s != 1); i++) {
        if (c != 1)
            c = SSL_do_handshake(client);
        if (s != 1)
            s = SSL_do_handshake(server);
        if ((c != 1 && SSL_get_error(client, c) == SSL_ERROR_SSL) ||
            (s != 1 && SSL_get_error(server, s) == SSL_ERROR_SSL))
            break;
    }
    r.ok = c == 1 && s == 1;
    if (r.ok) {
        char byte = 'x';
        cr_assert_eq(SSL_write(server, &byte, 1), 1);
        cr_assert_eq(SSL_read(client, &byte, 1), 1);
        r.resumed = SSL_session_reused(client);
        r.version = SSL_version(client);
        X509 *peer = SSL_get_peer_certificate(client);
        X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, r.subject, sizeof(r.subject));
        X509_free(peer);
        const uint8_t *a;
        unsigned alen;
        SSL_get0_alpn_selected(client, &a, &alen);
        snprintf(r.alpn, sizeof(r.alpn), "%.*s", (int)alen, (const char *)a);
    }
    ERR_clear_error();
    SSL_free(client);
    SSL_free(server);
    SSL_CTX_free(cctx);
    return r;
}

Test(tls, sni_picks_exact_then_wildcard_then_default)
{
    struct rlb_config *cfg = load("");
    cr_assert_not_null(cfg, "%s", err);
    struct rlb_worker *w = worker(cfg);
    struct {
        const char *sni, *subject;
    } cases[] = {
        {"shop.test", "shop.test"},   {"a.shop.test", "shop.test"}, {"A.Shop.Test", "shop.test"},
        {"other.test", "other.test"}, {"b.a.shop.test", "other.test"}, {"unknown.test", "other.test"},
        {NULL, "other.test"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct result r = handshake(w, &(struct client_opts){.sni = cases[i].sni});
        cr_assert(r.ok, "handshake with SNI %s failed", cases[i].sni);
        cr_assert_str_eq(r.subject, cases[i].subject, "SNI %s", cases[i].sni ? cases[i].sni : "(none)");
    }
    drop_worker(w);
    rlb_config_free(cfg);
}

Test(tls, alpn_selects_http11_and_refuses_no_overlap)
{
    struct rlb_config *cfg = load("");
    cr_assert_not_null(cfg, "%s", err);
    struct rlb_worker *w = worker(cfg);
    static const uint8_t both[] = "\x02h2\x08http/1.1";
    static const uint8_t h2[] = "\x02h2";
    struct result r = handshake(w, &(struct client_opts){.alpn = both, .alpn_len = sizeof(both) - 1});
    cr_assert(r.ok);
    cr_assert_str_eq(r.alpn, "http/1.1");
    r = handshake(w, &(struct client_opts){.alpn = h2, .alpn_len = sizeof(h2) - 1});
    cr_assert(!r.ok, "a client offering only h2 must get no_application_protocol");
    r = handshake(w, &(struct client_opts){0});
    cr_assert(r.ok, "no ALPN at all is fine");
    drop_worker(w);
    rlb_config_free(cfg);
}

/* Two workers derive the same ticket keys on their own: a ticket from one resumes on the other. */
static void resume_across_workers(uint16_t version)
{
    struct rlb_config *cfg = load("");
    cr_assert_not_null(cfg, "%s", err);
    struct rlb_worker *a = worker(cfg), *b = worker(cfg);
    captured = NULL;
    struct result r = handshake(a, &(struct client_opts){.version = version, .sni = "shop.test"});
    cr_assert(r.ok);
    cr_assert(!r.resumed);
    cr_assert_eq(r.version, version);
    cr_assert_not_null(captured, "no session ticket arrived");
    SSL_SESSION *s = captured;
    captured = NULL;
    r = handshake(b, &(struct client_opts){.version = version, .sni = "shop.test", .session = s});
    cr_assert(r.ok);
    cr_assert(r.resumed, "the ticket of worker a did not resume on worker b");
    SSL_SESSION_free(s);
    SSL_SESSION_free(captured);
    captured = NULL;
    drop_worker(a);
    drop_worker(b);
    rlb_config_free(cfg);
}

Test(tls, ticket_resumes_on_another_worker_tls13)
{
    resume_across_workers(TLS1_3_VERSION);
}

Test(tls, ticket_resumes_on_another_worker_tls12)
{
    resume_across_workers(TLS1_2_VERSION);
}

Test(tls, tickets_off_means_no_resumption)
{
    struct rlb_config *cfg = load("      tickets: false\n");
    cr_assert_not_null(cfg, "%s", err);
    struct rlb_worker *w = worker(cfg);
    captured = NULL;
    struct result r = handshake(w, &(struct client_opts){.version = TLS1_2_VERSION});
    cr_assert(r.ok);
    if (captured != NULL) {
        SSL_SESSION *s = captured;
        captured = NULL;
        r = handshake(w, &(struct client_opts){.version = TLS1_2_VERSION, .session = s});
        cr_assert(!r.resumed);
        SSL_SESSION_free(s);
    }
    SSL_SESSION_free(captured);
    captured = NULL;
    drop_worker(w);
    rlb_config_free(cfg);
}

Test(tls, protocols_limit_versions)
{
    struct rlb_config *cfg = load("      protocols: [tls1.3]\n");
    cr_assert_not_null(cfg, "%s", err);
    struct rlb_worker *w = worker(cfg);
    cr_assert(!handshake(w, &(struct client_opts){.version = TLS1_2_VERSION}).ok);
    cr_assert(handshake(w, &(struct client_opts){.version = TLS1_3_VERSION}).ok);
    cr_assert(!handshake(w, &(struct client_opts){.version = TLS1_1_VERSION}).ok, "TLS 1.1 must never pass");
    drop_worker(w);
    rlb_config_free(cfg);
}

static void expect_load_error(const char *extra, const char *where, const char *phrase)
{
    struct rlb_config *cfg = load(extra);
    cr_assert_null(cfg, "expected an error with \"%s\"", phrase);
    cr_assert(strstr(err, where) != NULL, "expected position \"%s\" in \"%s\"", where, err);
    cr_assert(strstr(err, phrase) != NULL, "expected \"%s\" in \"%s\"", phrase, err);
}

Test(tls, config_errors_name_their_place)
{
    expect_load_error("      ciphers: NOT-A-CIPHER\n", "t.yaml:7:16:", "bad cipher list");
    expect_load_error("      protocols: [tls1.1]\n", "t.yaml:7:19:", "expected tls1.2 or tls1.3");
    expect_load_error("      verify_client: required\n", "t.yaml:4:7:", "needs client_ca");
    expect_load_error("      bogus: 1\n", "t.yaml:7:7:", "unknown key \"bogus\"");
    expect_load_error("      client_ca: /nonexistent/ca.pem\n", "t.yaml:7:18:", "cannot load client CA");

    char yaml[1024];
    snprintf(yaml, sizeof(yaml),
             "listeners:\n  - address: 127.0.0.1:8443\n    tls:\n      certificates:\n"
             "        - cert: %s/missing.pem\n          key: %s/shop.key\n"
             "pools:\n  - name: shop\n    backends: [127.0.0.1:9001]\n"
             "vhosts:\n  - hosts: [\"*\"]\n    routes: [{path: /, pool: shop}]\n",
             dir, dir);
    cr_assert_null(rlb_config_load_string("t.yaml", yaml, strlen(yaml), err, sizeof(err)));
    cr_assert(strncmp(err, "t.yaml:5:17: cannot load certificate", 36) == 0, "got \"%s\"", err);

    /* A key that belongs to another certificate. */
    snprintf(yaml, sizeof(yaml),
             "listeners:\n  - address: 127.0.0.1:8443\n    tls:\n      certificates:\n"
             "        - cert: %s/shop.pem\n          key: %s/other.key\n"
             "pools:\n  - name: shop\n    backends: [127.0.0.1:9001]\n"
             "vhosts:\n  - hosts: [\"*\"]\n    routes: [{path: /, pool: shop}]\n",
             dir, dir);
    cr_assert_null(rlb_config_load_string("t.yaml", yaml, strlen(yaml), err, sizeof(err)));
    cr_assert(strncmp(err, "t.yaml:6:16: cannot use key", 27) == 0, "got \"%s\"", err);
}

Test(tls, relative_paths_follow_the_config_file)
{
    char path[128], yaml[512];
    snprintf(path, sizeof(path), "%s/ringlb.yaml", dir);
    snprintf(yaml, sizeof(yaml),
             "listeners:\n  - address: 127.0.0.1:8443\n    tls:\n      certificates: [{cert: shop.pem, key: shop.key}]\n"
             "pools:\n  - name: shop\n    backends: [127.0.0.1:9001]\n"
             "vhosts:\n  - hosts: [\"*\"]\n    routes: [{path: /, pool: shop}]\n");
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(yaml, f);
    fclose(f);
    struct rlb_config *cfg = rlb_config_load_file(path, err, sizeof(err));
    cr_assert_not_null(cfg, "%s", err);
    char want[128];
    snprintf(want, sizeof(want), "%s/shop.pem", dir);
    cr_assert_str_eq(cfg->listeners[0].tls.certs[0].cert, want);
    cr_assert_eq(cfg->listeners[0].tls.num_alpn, 1);
    cr_assert_str_eq(cfg->listeners[0].tls.alpn[0], "http/1.1");
    cr_assert(cfg->listeners[0].tls.ktls);
    rlb_config_free(cfg);
}

/* RFC 8448 section 3 (simple 1-RTT handshake): the server's handshake traffic secret and the key and IV it
 * expands into. kTLS gets TLS 1.3 keys from exactly this expansion. */
Test(tls, hkdf_expand_label_matches_rfc8448)
{
    static const uint8_t secret[32] = {0xb6, 0x7b, 0x7d, 0x69, 0x0c, 0xc1, 0x6c, 0x4e, 0x75, 0xe5, 0x42,
                                       0x13, 0xcb, 0x2d, 0x37, 0xb4, 0xe9, 0xc9, 0x12, 0xbc, 0xde, 0xd9,
                                       0x10, 0x5d, 0x42, 0xbe, 0xfd, 0x59, 0xd3, 0x91, 0xad, 0x38};
    static const uint8_t key[16] = {0x3f, 0xce, 0x51, 0x60, 0x09, 0xc2, 0x17, 0x27,
                                    0xd0, 0xf2, 0xe4, 0xe8, 0x6e, 0xe4, 0x03, 0xbc};
    static const uint8_t iv[12] = {0x5d, 0x31, 0x3e, 0xb2, 0x67, 0x12, 0x76, 0xee, 0x13, 0x00, 0x0b, 0x30};
    uint8_t out[16];
    cr_assert(rlb__ktls_expand_label(EVP_sha256(), secret, sizeof(secret), "key", out, 16));
    cr_assert_arr_eq(out, key, 16);
    cr_assert(rlb__ktls_expand_label(EVP_sha256(), secret, sizeof(secret), "iv", out, 12));
    cr_assert_arr_eq(out, iv, 12);
}
