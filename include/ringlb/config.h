/* Building, validating and freeing configuration snapshots. */
#ifndef RINGLB_CONFIG_H
#define RINGLB_CONFIG_H

#include <ringlb/config-t.h>

/* Loads and validates a YAML file. On failure returns NULL and writes
 * "FILE:LINE:COLUMN: what was wrong, what was expected" into <err>. */
struct rlb_config *rlb_config_load_file(const char *path, char *err, size_t errlen);

/* Same, from a string; <name> stands for the file name in messages. */
struct rlb_config *rlb_config_load_string(const char *name, const char *yaml, size_t len, char *err, size_t errlen);

/* Builds a snapshot from one-line flags: one listener, one pool, one catch-all route. */
struct rlb_config *rlb_config_from_oneline(const struct rlb_oneline_args *args, char *err, size_t errlen);

void rlb_config_free(struct rlb_config *cfg);

/* For builders (the YAML loader, the demo): a snapshot holding every default, named <source>, or NULL when out of
 * memory. The builder fills it, then calls rlb_config_finish, which checks what no single value can show
 * (unique names, references, ranges that depend on each other), resolves names into indices and sorts vhosts
 * and routes into match order. Returns 0, or -1 with the message in <err>; the caller still frees <cfg>. */
struct rlb_config *rlb_config_new(const char *source);
int rlb_config_finish(struct rlb_config *cfg, char *err, size_t errlen);

/* For builders: zeroed arrays of listeners, pools (with their defaults) and vhosts; backends (weight 1) of a pool.
 * Return 0, or -1 when out of memory (what was allocated stays for rlb_config_free). */
int rlb_config_alloc(struct rlb_config *cfg, uint32_t num_listeners, uint32_t num_pools, uint32_t num_vhosts);
int rlb_config_alloc_backends(struct rlb_pool_cfg *pool, uint32_t num_backends);

/* Parses "127.0.0.1:80", "[::1]:80", "*:80" (IPv4 any), "[::]:80", "localhost:80".
 * Returns 0 or -1. Never blocks on DNS: only numeric addresses and "localhost". */
int rlb_sockaddr_parse(const char *text, struct rlb_sockaddr *out);

/* Parses "250ms", "10s", "2m", "1h" or a bare number of milliseconds. Returns 0 or -1. */
int rlb_duration_parse_ms(const char *text, uint32_t *out_ms);

/* Parses "16384", "16k", "1m" (binary units). Returns 0 or -1. */
int rlb_size_parse(const char *text, uint64_t *out);

/* Turns the cache on with a budget of <size> bytes per worker and the defaults of every setting not yet set
 * (the same for a file's cache section and --cache). */
void rlb_cache_cfg_enable(struct rlb_cache_cfg *c, uint64_t size);

#endif
