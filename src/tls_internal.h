/* What tls.c, tls_io.c and ktls.c share: the worker's contexts. */
#ifndef RINGLB_TLS_INTERNAL_H
#define RINGLB_TLS_INTERNAL_H

#include <ringlb/config-t.h>
#include <ringlb/tls.h>

#include <openssl/ssl.h>

/* Ciphertext buffers: room for 64 KiB of plaintext in records, plus a handshake flight. */
#define RLB_TLS_OUT_SIZE (80u << 10)
#define RLB_TLS_PLAIN_PER_FLUSH (64u << 10)
#define RLB_TLS_RECORD_OVERHEAD 64u /* header, explicit nonce, tag, content type: generous */

struct rlb_tls_name {
    char *name;       /* lower case; for a wildcard, the part after "*." */
    bool wildcard;
    uint32_t ctx;
};

/* One TLS listener of one worker: a context per certificate, the first the default. */
struct rlb_tls_server {
    SSL_CTX **ctx;
    uint32_t num_ctx;
    struct rlb_tls_name *names;
    uint32_t num_names;
    const struct rlb_tls_listener_cfg *cfg;
    uint8_t *alpn_wire;  /* the configured protocols, length-prefixed */
    size_t alpn_len;
    struct rlb_tls_worker *tw;
};

/* One TLS pool of one worker. */
struct rlb_tls_client {
    SSL_CTX *ctx;
    const struct rlb_pool_cfg *cfg;
    SSL_SESSION **sessions; /* per backend: the last session, offered again */
};

struct rlb_tls_ticket_key {
    uint64_t epoch;
    bool valid;
    uint8_t aes[32];
    uint8_t hmac[32];
    uint8_t tag[8];
};

struct rlb_tls_worker {
    struct rlb_worker *w;  /* NULL while only checking a configuration */
    struct rlb_tls_server *servers; /* per listener; ctx NULL for plain ones */
    uint32_t num_servers;
    struct rlb_tls_client *clients; /* per pool; ctx NULL for plain ones */
    uint32_t num_clients;
    struct rlb_tls_ticket_key keys[2];
    void *out_free;        /* free ciphertext buffers, linked through their first bytes */
    struct rlb_tls_conn *conn_free;
    uint64_t ktls_retry_ms; /* the kernel refused the ULP: do not ask again before this */
    bool ktls_refusal_logged;
    uint64_t failure_logged_ms;
    uint32_t live;         /* connections made with these contexts */
    char staging[16384];   /* small pieces gathered into one record */
};

/* HKDF-Expand-Label (RFC 8446 7.1) with an empty context. */
bool rlb__ktls_expand_label(const EVP_MD *md, const uint8_t *secret, size_t secret_len, const char *label, uint8_t *out,
                            size_t out_len);

/* close_notify on a socket whose sending the kernel does; false if it could not go (the FIN follows anyway). */
bool rlb_ktls_send_close_notify(struct rlb_conn *c);

/* Frees <owner> once it is no longer the worker's current set and no connection uses it. */
void rlb_tls_retire_check(struct rlb_worker *w, struct rlb_tls_worker *owner);

/* Fills <msg> with BoringSSL's oldest queued error (and clears the queue). */
void rlb__tls_error(char *msg, size_t len, const char *what);

#endif
