/* The main thread: starts one worker per core, waits for signals, stops
 * the workers gracefully. */
#ifndef RINGLB_SERVER_H
#define RINGLB_SERVER_H

#include <ringlb/config-t.h>

struct rlb_worker;

/* Reads the configuration again for SIGHUP: a new snapshot, or NULL with
 * the reason (FILE:LINE:COLUMN: ...) in <err>. */
typedef struct rlb_config *(*rlb_reload_fn)(char *err, size_t errlen);

/* Runs <cfg> until SIGTERM/SIGINT and the drain that follows.
 * <on_ready> (may be NULL) runs once every worker listens. <reload> (may be
 * NULL) is called on SIGHUP: TLS certificates, keys and settings of the new
 * snapshot replace the running ones without dropping a connection.
 * Returns the process exit status. */
int rlb_server_run(const struct rlb_config *cfg, void (*on_ready)(const struct rlb_config *cfg, uint32_t workers),
                   rlb_reload_fn reload);

/* Worker side of the start-up barrier. */
void rlb_server_worker_ready(struct rlb_worker *w);
/* Blocks until the main thread decides; false: start-up failed, exit. */
bool rlb_server_wait_go(void);

/* Number of workers <cfg> asks for (resolving "auto" against the affinity mask). */
uint32_t rlb_server_worker_count(const struct rlb_config *cfg);

#endif
