/* Types of the per-worker response store. */
#ifndef RINGLB_CACHE_T_H
#define RINGLB_CACHE_T_H

#include <ringlb/api.h>
#include <ringlb/config-t.h>
#include <ringlb/http1-t.h>

#include <pthread.h>
#include <stdatomic.h>

#define RLB_CACHE_PAGE 4096u
#define RLB_CACHE_MAP_MIN (16u * 1024)

enum rlb_cache_entry_state {
    RLB_CE_FILLING = 1, /* a fetch is filling it: requests for its key wait for it, nobody is served from it */
    RLB_CE_READY,       /* complete, in the table and the LRU list */
    RLB_CE_DEAD,        /* out of the table (evicted, replaced, purged); freed when its last send completes */
};

/* One stored response (one variant of a key), or one fetch in progress. */
struct rlb_cache_entry {
    struct rlb_cache_entry *hnext;    /* bucket chain */
    struct rlb_cache_entry *lru_prev; /* READY: the LRU list, most recently used first; DEAD: the zombies */
    struct rlb_cache_entry *lru_next;
    uint64_t hash;                    /* of the primary key */
    uint32_t refs;                    /* the table's, sends in flight, a fetch revalidating it */
    int32_t handle;                   /* slot in the handle table while sends may refer to it; -1 none */
    uint8_t state;
    bool purged;                      /* FILLING: purged meanwhile, never published */
    uint16_t status;

    /* Identity: the primary key, then the values of the configured key headers. */
    char *ident;
    uint32_t key_len;
    uint32_t kh_len;

    /* The response, in one block (rebuilt when a 304 refreshes it). */
    char *meta;
    uint32_t meta_size;
    const char *head;        /* status line and stored fields with our Via; no framing, no Age, no final CRLF */
    uint32_t head_len;
    const char *head304;     /* status line and the fields a 304 carries (RFC 9110 15.4.5) */
    uint32_t head304_len;
    const char *vary;        /* the response's Vary names ("" without) */
    uint32_t vary_len;
    const char *vary_values; /* the storing request's values of those headers (rlb_cache_vary_values) */
    uint32_t vary_values_len;
    const char *etag;        /* NULL without */
    uint32_t etag_len;
    const char *last_modified_text; /* NULL without */
    uint32_t last_modified_len;
    int64_t last_modified;   /* -1 without */

    char *body;
    uint64_t body_len;
    uint64_t body_cap;
    bool body_mapped;        /* in pages of its own (RLB_CACHE_MAP_MIN and up), which hits may vmsplice */

    /* Freshness, in epoch seconds (RFC 9111 4.2). */
    int64_t response_time;
    int64_t initial_age;
    int64_t lifetime;
    int64_t swr;             /* stale-while-revalidate, -1 none */
    int64_t sie;             /* stale-if-error, -1 none */
    uint32_t resp_flags;     /* RLB_CC_* of the response (s-maxage folded in as proxy-revalidate) */

    uint64_t charge;         /* bytes accounted against the budget */

    /* While FILLING */
    struct rlb_cache_entry *stale; /* the entry this fetch revalidates (a reference held), or NULL */
    uint64_t *waiters;       /* clients waiting for this fetch: slot << 32 | generation */
    uint32_t num_waiters;
    uint32_t cap_waiters;
    char *req;               /* the request head, for Vary values and conditionals once the response comes */
    uint32_t req_len;
};

/* Purges cross cores through one process-wide log: the worker that took the PURGE appends, every worker
 * applies what it has not seen before its next lookup. Rare and never on a hit's path beyond one load. */
#define RLB_CACHE_PURGE_LOG 256
struct rlb_cache_purges {
    pthread_mutex_t lock;
    _Atomic uint64_t seq; /* entries appended so far */
    struct {
        char *pattern;    /* a primary key, or the start of one */
        uint32_t len;
        bool prefix;
    } log[RLB_CACHE_PURGE_LOG];
};

struct rlb_cache {
    const struct rlb_cache_cfg *cfg;
    struct rlb_cache_entry **buckets;
    uint32_t mask;
    uint32_t count;                 /* entries in the table, FILLING included */
    struct rlb_cache_entry lru;     /* sentinel of the READY list */
    struct rlb_cache_entry zombies; /* sentinel of the DEAD entries still referenced by sends (same links) */
    uint64_t used;                  /* bytes charged, DEAD entries still referenced included */
    uint64_t objects;               /* READY entries */

    /* Sends refer to entries by handle (a negative buffer id), so an entry evicted mid-send lives on. */
    struct rlb_cache_entry **handles;
    uint32_t num_handles;
    int32_t free_handle;            /* chained through the handles[] slots themselves */

    struct rlb_cache_purges *purges; /* NULL in tests without a process */
    uint64_t purge_seen;
    uint64_t *purged;               /* the worker's counter of entries purged through the log; may be NULL */

    /* Waiting clients woken by a fetch that ended; run by the worker loop, not inside the event that ended it. */
    uint64_t *wake;
    uint32_t num_wake;
    uint32_t cap_wake;

    struct rlb_http_header *hdr;    /* a second header array: the stored request is parsed while the response's is live */
    uint32_t hdr_cap;
};

#endif
