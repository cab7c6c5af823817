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

/* Recomputes what every balancer may pick: the checker's verdicts, this
 * worker's ejections, slow start, zones, and panic when nothing is left.
 * Sets w->lb_refresh_ms to when it must run again (0: not by time). */
void rlb_upstream_refresh(struct rlb_worker *w);

/* Takes the health board's newer generation, if any, between loop turns. */
void rlb_upstream_adopt_health(struct rlb_worker *w);

enum rlb_upstream_outcome {
    RLB_UPSTREAM_OK,     /* a response below 500 */
    RLB_UPSTREAM_5XX,    /* a 5xx response: counts toward outlier ejection */
    RLB_UPSTREAM_FAILED, /* connect failure, reset or timeout: ejects at once */
};

/* Passive health: what one request saw of <backend>. */
void rlb_upstream_report(struct rlb_worker *w, uint32_t pool, uint32_t backend, enum rlb_upstream_outcome outcome);

/* In-flight accounting for least-connections and p2c: an upstream
 * connection counts while it carries a request. Both are idempotent. */
void rlb_upstream_busy(struct rlb_worker *w, struct rlb_conn *u);
void rlb_upstream_done(struct rlb_worker *w, struct rlb_conn *u);

/* Retry budget: every request adds budget_percent, time adds budget_min a
 * second; a retry spends one. False (and counted) when spent. */
void rlb_upstream_count_request(struct rlb_worker *w, uint32_t pool);
bool rlb_upstream_retry_allowed(struct rlb_worker *w, uint32_t pool);

/* Failover tiers: the first of <pool> and its backups (in order) that has a
 * pickable backend, looking only past <after> (UINT32_MAX: from the top).
 * UINT32_MAX when none. */
uint32_t rlb_upstream_tier(const struct rlb_worker *w, uint32_t pool, uint32_t after);

#endif
