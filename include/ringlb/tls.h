/* TLS with BoringSSL: contexts (certificates, SNI, ALPN, tickets, client
 * verification, upstream verification), the per-connection record layer
 * fed by the ring (tls_io.c) and the kernel offload (ktls.c). */
#ifndef RINGLB_TLS_H
#define RINGLB_TLS_H

#include <ringlb/tls-t.h>

#include <stddef.h>

struct rlb_config;
struct rlb_config_mark;
struct rlb_worker;
struct rlb_conn;

/* BoringSSL's version text. */
const char *rlb_tls_library(void);

/* Builds (and frees) every TLS context <cfg> asks for, so that a missing or
 * bad certificate, key, CA or cipher list stops the start. Returns 0, or -1
 * with the place in <where> and the message in <msg>. */
int rlb_tls_check(const struct rlb_config *cfg, struct rlb_config_mark *where, char *msg, size_t len);

/* The worker's own contexts for its listeners and pools (no context is
 * shared between workers). Returns 0, or -1 with a message. */
int rlb_tls_worker_init(struct rlb_worker *w, char *msg, size_t len);
void rlb_tls_worker_destroy(struct rlb_worker *w);
/* New contexts from <cfg> (same listeners and pools) for new connections;
 * connections open now keep the old ones, freed when the last one closes. */
void rlb_tls_worker_reload(struct rlb_worker *w, const struct rlb_config *cfg);

struct ssl_ctx_st;
struct rlb_pool_cfg;
struct rlb_backend_cfg;

/* A client context for <p>'s backends (verification, client certificate,
 * ALPN), for users outside a worker (the health checker); NULL with a message. */
struct ssl_ctx_st *rlb_tls_client_ctx_new(const struct rlb_pool_cfg *p, char *msg, size_t len);
/* Client mode, SNI and the name to verify for backend <be> of <p>. 0 or -1. */
int rlb_tls_client_setup(struct ssl_st *ssl, const struct rlb_pool_cfg *p, const struct rlb_backend_cfg *be);

/* --- connections (tls_io.c) --- */

/* Attaches server-side TLS to a client accepted on a TLS listener. 0 or -1. */
int rlb_tls_accept(struct rlb_worker *w, struct rlb_conn *c);
/* Attaches client-side TLS to a connected upstream of a TLS pool and sends the ClientHello. 0 or -1. */
int rlb_tls_connect(struct rlb_worker *w, struct rlb_conn *u);
/* Ciphertext arrived in buffer <bid> (its reference passes to the TLS layer). */
void rlb_tls_received(struct rlb_worker *w, struct rlb_conn *c, int32_t bid);
/* Decrypts what waits (after buffers came back), then lets the proxy go on. */
void rlb_tls_input(struct rlb_worker *w, struct rlb_conn *c);
/* rlb_conn_flush for a connection whose sending BoringSSL does: encrypts what is queued and sends it. */
void rlb_tls_flush(struct rlb_worker *w, struct rlb_conn *c);
/* A send of ciphertext completed with <res>. */
void rlb_tls_sent(struct rlb_worker *w, struct rlb_conn *c, int res);
/* The multishot receive ended without data (cancelled or failed). */
void rlb_tls_recv_stopped(struct rlb_worker *w, struct rlb_conn *c);
/* Sends close_notify once (BoringSSL's alert, or a kernel TLS alert record).
 * True when it is on its way and the caller waits for the send to complete. */
bool rlb_tls_close_notify(struct rlb_worker *w, struct rlb_conn *c);
/* The client went away (or timed out) during the handshake: counted as a
 * failed handshake unless it never sent a byte (a probe, not a client). */
void rlb_tls_abandoned(struct rlb_worker *w, struct rlb_conn *c);
void rlb_tls_free(struct rlb_worker *w, struct rlb_conn *c);

/* True when BoringSSL (not the kernel) produces what this connection sends. */
static inline bool rlb_tls_userspace_tx(const struct rlb_tls_conn *t)
{
    return t != NULL && !(t->ktls & RLB_KTLS_TX);
}
static inline bool rlb_tls_userspace_rx(const struct rlb_tls_conn *t)
{
    return t != NULL && !(t->ktls & RLB_KTLS_RX);
}

/* --- kernel offload (ktls.c) --- */

/* Installs the connection's record keys in the kernel: TX always, RX when
 * the received ciphertext ends on a record boundary. Returns the RLB_KTLS_*
 * bits installed (0: the kernel refused; the reason is logged once). */
unsigned rlb_ktls_install(struct rlb_worker *w, struct rlb_conn *c, bool rx);
/* Whether the kernel may take this connection at all (the ULP is there and
 * the cipher is one it knows); sets the ULP. False means: stay in userspace. */
bool rlb_ktls_begin(struct rlb_worker *w, struct rlb_conn *c);
/* A receive on a kTLS socket failed with EIO: a record that is not
 * application data waits. Reads it and acts (alert, KeyUpdate). */
void rlb_ktls_control_record(struct rlb_worker *w, struct rlb_conn *c);
/* Key-log callback: keeps the TLS 1.3 traffic secrets for rlb_ktls_install. */
void rlb_ktls_keylog(const struct ssl_st *ssl, const char *line);

#endif
