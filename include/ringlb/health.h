/* Active health checks: one thread per process (not one per worker) probes
 * every backend of every pool whose config enables a check, with plain HTTP
 * requests over non-blocking sockets multiplexed with poll(2). It tells its
 * owner only about transitions; publishing them to workers is the owner's job. */
#ifndef RINGLB_HEALTH_H
#define RINGLB_HEALTH_H

#include <ringlb/config-t.h>

struct rlb_health_checker;

/* Called on the checker thread when a backend changes state (after rise
 * successes or fall failures in a row). <why> is a short reason for the log:
 * "status 503", "timeout", "connection refused", "status 200". */
typedef void (*rlb_health_change_fn)(void *arg, uint32_t pool, uint32_t backend, bool up, const char *why);

/* Starts the checker thread for <cfg> (which must outlive it). Every backend
 * starts up; a pool without `health_check` is never probed. Returns NULL
 * when no pool has a check (nothing to do) or, with errno set, on failure. */
struct rlb_health_checker *rlb_health_start(const struct rlb_config *cfg, rlb_health_change_fn fn, void *arg);

/* Stops and joins the thread; probes in flight are abandoned. */
void rlb_health_stop(struct rlb_health_checker *hc);

#endif
