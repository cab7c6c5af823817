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

/* For harnesses (fuzzers) that drive a worker from their own thread: set up
 * (listeners bound, accepts posted), one loop turn waiting at most
 * <wait_ms>, and teardown. The caller sets <w->cfg> and <w->cpu> (-1: no
 * pinning; 0 would pin the calling thread to CPU 0); no health board. */
int rlb_worker_start_inline(struct rlb_worker *w);
void rlb_worker_turn(struct rlb_worker *w, int wait_ms);
void rlb_worker_stop_inline(struct rlb_worker *w);

/* Wakes the worker so that it looks at shared state (health) between loop turns. */
void rlb_worker_wake(struct rlb_worker *w);

#endif
