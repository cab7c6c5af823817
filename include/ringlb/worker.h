/* One worker thread per core: its ring, its listeners, its connections. */
#ifndef RINGLB_WORKER_H
#define RINGLB_WORKER_H

#include <ringlb/worker-t.h>

/* Thread entry point. Reports start-up through <w->start_error> and the
 * barrier in <ready>, then runs until asked to stop and drained. */
void *rlb_worker_main(void *arg);

/* Asks the worker to stop gracefully (async-signal-safe apart from the atomic store). */
void rlb_worker_request_stop(struct rlb_worker *w);

/* Connection <c> could not get a buffer: it is resumed (rlb_proxy_input, or
 * rlb_tls_input for TLS) when buffers come back. */
void rlb_worker_starved(struct rlb_worker *w, struct rlb_conn *c);

/* Wakes the worker so that it looks at shared state (health) between loop turns. */
void rlb_worker_wake(struct rlb_worker *w);

#endif
