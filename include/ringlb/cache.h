/* The per-worker response store: a hash table of entries (variants of a key are separate entries in one
 * chain), an LRU list under a memory budget, fetches in progress that concurrent requests wait for, handles
 * that let sends refer to stored bytes without copying them, and the process-wide purge log. No HTTP
 * semantics here beyond Vary matching: those are in cache_policy.h and the proxy. */
#ifndef RINGLB_CACHE_H
#define RINGLB_CACHE_H

#include <ringlb/cache-t.h>

struct rlb_bufs;

int rlb_cache_init(struct rlb_cache *c, const struct rlb_cache_cfg *cfg, uint32_t max_headers,
                   struct rlb_cache_purges *purges);
void rlb_cache_destroy(struct rlb_cache *c);

/* Buffer ids below -1 name cache entries (handles): rlb_buf_ref/unref forward them here. */
static inline int32_t rlb_cache_handle_id(int32_t handle)
{
    return -2 - handle;
}
void rlb_cache_ext_ref(struct rlb_cache *c, int32_t id);
void rlb_cache_ext_unref(struct rlb_cache *c, int32_t id);
/* An id with one reference, for a send queue piece of <e>'s bytes; -1 on memory exhaustion. */
int32_t rlb_cache_pin(struct rlb_cache *c, struct rlb_cache_entry *e);

uint64_t rlb_cache_hash(const char *ident, uint32_t len);

struct rlb_cache_found {
    struct rlb_cache_entry *ready;   /* the newest READY variant the request's headers select, or NULL */
    struct rlb_cache_entry *filling; /* a fetch in progress for the same key, or NULL */
};
/* Looks up a request's key (<ident>: primary key then key-header values). Applies pending purges first. */
void rlb_cache_lookup(struct rlb_cache *c, uint64_t hash, const char *ident, uint32_t key_len, uint32_t kh_len,
                      const struct rlb_http_header *h, uint32_t n, struct rlb_cache_found *out);

/* A FILLING entry in the table, with a copy of the request head; <stale> (may be NULL) is the entry it
 * revalidates (referenced until the fetch ends). NULL when memory is short. */
struct rlb_cache_entry *rlb_cache_fill_begin(struct rlb_cache *c, uint64_t hash, const char *ident, uint32_t key_len,
                                             uint32_t kh_len, const char *req, uint32_t req_len,
                                             struct rlb_cache_entry *stale);
/* Installs the response block of a FILLING entry (or of a READY one a 304 refreshed), charging it. */
bool rlb_cache_set_meta(struct rlb_cache *c, struct rlb_cache_entry *e, char *meta, uint32_t size);
/* Makes room for a body of <len> bytes (known length) up front. */
bool rlb_cache_reserve_body(struct rlb_cache *c, struct rlb_cache_entry *e, uint64_t len);
/* Appends body bytes; false when the object grows past max_object or the budget (then abandon it). */
bool rlb_cache_fill_append(struct rlb_cache *c, struct rlb_cache_entry *e, const char *p, size_t len);
/* The body is complete: the entry replaces the variants it matches and joins the LRU list. */
void rlb_cache_fill_finish(struct rlb_cache *c, struct rlb_cache_entry *e);
/* The fetch will not be stored: out of the table, waiters woken, freed. */
void rlb_cache_fill_abandon(struct rlb_cache *c, struct rlb_cache_entry *e);
/* Registers client <slot>/<gen> as waiting for <e>; false on memory exhaustion. */
bool rlb_cache_wait(struct rlb_cache *c, struct rlb_cache_entry *e, uint32_t slot, uint32_t gen);

void rlb_cache_touch(struct rlb_cache *c, struct rlb_cache_entry *e);
/* Takes a READY entry out of the table (replaced, invalidated); its memory goes with its last reference. */
void rlb_cache_remove(struct rlb_cache *c, struct rlb_cache_entry *e);
/* Every READY variant and fetch of primary key <key> (prefix: every key starting with it) leaves the table.
 * Returns how many entries went. */
uint32_t rlb_cache_invalidate(struct rlb_cache *c, const char *key, uint32_t len, bool prefix);

void rlb_cache_ref(struct rlb_cache_entry *e);
void rlb_cache_unref(struct rlb_cache *c, struct rlb_cache_entry *e);

/* Purge log, process-wide. */
struct rlb_cache_purges *rlb_cache_purges_new(void);
void rlb_cache_purges_free(struct rlb_cache_purges *p);
/* Appends a purge every worker applies before its next lookup; false on memory exhaustion. */
bool rlb_cache_purge_post(struct rlb_cache_purges *p, const char *pattern, uint32_t len, bool prefix);

#endif
