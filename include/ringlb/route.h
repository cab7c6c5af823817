/* Listener -> virtual host -> path prefix -> route. */
#ifndef RINGLB_ROUTE_H
#define RINGLB_ROUTE_H

#include <ringlb/config-t.h>

/* Host comparison ignores case and a trailing ":port"; <path> is the
 * request target's path (query included, it does not matter for prefixes).
 * Returns NULL when no virtual host or no route matches (404). */
const struct rlb_route_cfg *rlb_route_find(const struct rlb_config *cfg, uint32_t listener, const char *host,
                                           size_t host_len, const char *path, size_t path_len);

/* Splits an absolute-form target "http://host[:port]/path" into host and
 * path; origin-form targets return the path unchanged and leave host alone. */
void rlb_route_split_target(const char *target, size_t len, struct rlb_str *host, struct rlb_str *path);

#endif
