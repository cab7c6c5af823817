/* Backends as seen by one worker: balancer state, idle keep-alive pools,
 * new connections. */
#ifndef RINGLB_UPSTREAM_H
#define RINGLB_UPSTREAM_H

#include <ringlb/worker-t.h>

int rlb_upstream_init(struct rlb_worker *w);
void rlb_upstream_destroy(struct rlb_worker *w);

/* The most recently idled connection to <backend>, or NULL. */
struct rlb_conn *rlb_upstream_take_idle(struct rlb_worker *w, uint32_t pool, uint32_t backend);

/* Parks an upstream connection in its backend's idle pool. Returns false
 * when the pool is full or disabled (the caller closes it). */
bool rlb_upstream_park(struct rlb_worker *w, struct rlb_conn *u);

/* Takes an idle connection out of its pool (it is closing). */
void rlb_upstream_unpark(struct rlb_worker *w, struct rlb_conn *u);

/* Starts a non-blocking connect to <backend>; NULL with errno set on failure. */
struct rlb_conn *rlb_upstream_connect(struct rlb_worker *w, uint32_t pool, uint32_t backend);

/* Closes every idle pooled connection (draining). */
void rlb_upstream_close_idle(struct rlb_worker *w);

#endif
