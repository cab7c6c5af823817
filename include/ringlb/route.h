/* Listener -> virtual host -> path prefix -> route. */
#ifndef RINGLB_ROUTE_H
#define RINGLB_ROUTE_H

#include <ringlb/config-t.h>
#include <ringlb/http1-t.h>

/* Host comparison ignores case and a trailing ":port"; <path> is the
 * request target's path (query included, it does not matter for prefixes).
 * Returns NULL when no virtual host or no route matches (404). */
const struct rlb_route_cfg *rlb_route_find(const struct rlb_config *cfg, uint32_t listener, const char *host,
                                           size_t host_len, const char *path, size_t path_len);

/* Splits an absolute-form target "http://host[:port]/path" into host and
 * path; origin-form targets return the path unchanged and leave host alone. */
void rlb_route_split_target(const char *target, size_t len, struct rlb_str *host, struct rlb_str *path);

/* A/B split: the variant named by the cookie value <v> (a variant's pool
 * name), or -1 when it names none (no cookie, or the config changed). */
int rlb_split_from_cookie(const struct rlb_config *cfg, const struct rlb_route_cfg *r, const char *v, size_t len);

/* A/B split for a client without a valid cookie: variant by weight, from a
 * uniformly random 64-bit <r>. */
uint32_t rlb_split_choose(const struct rlb_route_cfg *r, uint64_t random);

/* Value of cookie <name> among the request's Cookie fields, or false. */
bool rlb_cookie_find(const struct rlb_http_header *headers, uint32_t n, const char *name, size_t name_len,
                     struct rlb_str *value);

#endif
