/* The per-request state machine: request head in, backend chosen, head
 * rewritten and relayed, bodies streamed both ways, response relayed,
 * keep-alive decided on both sides. Called by the worker loop on events. */
#ifndef RINGLB_PROXY_H
#define RINGLB_PROXY_H

#include <ringlb/worker-t.h>

int rlb_proxy_init(struct rlb_worker *w);
void rlb_proxy_destroy(struct rlb_worker *w);

void rlb_proxy_accepted(struct rlb_worker *w, struct rlb_conn *c);
/* New bytes are in c's input queue. */
void rlb_proxy_input(struct rlb_worker *w, struct rlb_conn *c);

/* A socket whose body bytes move by splice(2) became ready. */
void rlb_proxy_splice_ready(struct rlb_worker *w, struct rlb_conn *c);
/* c's multishot recv ended: <res> is 0 (EOF) or a negative errno. */
void rlb_proxy_recv_end(struct rlb_worker *w, struct rlb_conn *c, int res);
/* A send of c's finished with <res> (bytes or -errno). */
void rlb_proxy_sent(struct rlb_worker *w, struct rlb_conn *c, int res);
void rlb_proxy_connected(struct rlb_worker *w, struct rlb_conn *u, int res);
void rlb_proxy_timeout(struct rlb_worker *w, struct rlb_conn *c, enum rlb_timer_kind kind);

/* c's TLS handshake is done (and the kernel took the records, or not):
 * requests may flow. */
void rlb_proxy_tls_ready(struct rlb_worker *w, struct rlb_conn *c);
/* c's TLS failed (handshake, or a bad record later): it closes; an upstream's
 * request moves on as after a failed connect. */
void rlb_proxy_tls_failed(struct rlb_worker *w, struct rlb_conn *c);

/* Graceful stop: idle connections close now, busy ones after their response. */
void rlb_proxy_drain(struct rlb_worker *w);
/* Serves the clients whose wait for a cache fetch ended during this loop turn. */
void rlb_proxy_cache_wake(struct rlb_worker *w);
/* Drain deadline passed: everything closes now. */
void rlb_proxy_abort_all(struct rlb_worker *w);

#endif
