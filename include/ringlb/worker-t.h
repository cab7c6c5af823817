/* Per-worker state: the connection slot table, transactions, upstream pools.
 * Everything here belongs to one thread; only <stop> is written by another. */
#ifndef RINGLB_WORKER_T_H
#define RINGLB_WORKER_T_H

#include <liburing.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>

#include <ringlb/buf-t.h>
#include <ringlb/cache-t.h>
#include <ringlb/cache_policy.h>
#include <ringlb/config-t.h>
#include <ringlb/http1-t.h>
#include <ringlb/lb-t.h>
#include <ringlb/ring.h>
#include <ringlb/timer-t.h>
#include <ringlb/tls-t.h>

enum rlb_conn_kind {
    RLB_CONN_FREE = 0,
    RLB_CONN_CLIENT,
    RLB_CONN_UPSTREAM,
};

enum rlb_client_state {
    RLB_CS_HEAD = 0,  /* reading a request head; idle keep-alive when nothing is buffered */
    RLB_CS_REQ_BODY,  /* relaying the request body upstream */
    RLB_CS_WAIT,      /* request relayed, the response is still on its way */
    RLB_CS_TUNNEL,    /* after 101 Switching Protocols: bytes both ways */
    RLB_CS_LINGER,    /* response sent, write side shut, discarding input until EOF */
    RLB_CS_CLOSING,
};

enum rlb_upstream_state {
    RLB_US_CONNECTING = 0,
    RLB_US_ACTIVE,    /* carrying one transaction */
    RLB_US_IDLE,      /* in its backend's idle pool */
    RLB_US_TUNNEL,
    RLB_US_CLOSING,
};

/* Connection flags */
#define RLB_CF_RECV_ARMED 0x0001     /* a multishot recv is posted */
#define RLB_CF_RECV_CANCELING 0x0002 /* its cancellation is on the way */
#define RLB_CF_SEND_INFLIGHT 0x0004
#define RLB_CF_CLOSE_AFTER_SEND 0x0008 /* close gracefully once the send queue drains */
#define RLB_CF_REUSED 0x0010         /* upstream: taken from the idle pool */
#define RLB_CF_EOF 0x0020            /* the peer finished sending */
#define RLB_CF_STARVED 0x0040        /* recv ended with ENOBUFS; re-armed when buffers return */
#define RLB_CF_ABORT 0x0080          /* closing without a graceful shutdown */
#define RLB_CF_SEND_ZC 0x0200         /* the send in flight is a send-zero-copy */
#define RLB_CF_INFLIGHT 0x0400        /* upstream: counted in its backend's in-flight requests */
#define RLB_CF_SPLICE 0x0800          /* upstream: the response body moves by splice(2); no recv posted */
#define RLB_CF_POLL_ARMED 0x1000      /* a poll for splice readiness is posted */
#define RLB_CF_CACHE_NOWAIT 0x2000    /* client: its wait for a cache fetch timed out; the request goes to the origin alone */
#define RLB_CF_CACHE_REVALIDATE 0x4000 /* a client of our own (no socket) revalidating a stale entry in the background */

enum rlb_resp_state {
    RLB_RS_HEAD = 0,
    RLB_RS_BODY,
    RLB_RS_DONE,
};

/* Transaction flags */
#define RLB_TF_CLIENT_CLOSE 0x0001   /* close the client connection after this response */
#define RLB_TF_REQ_DONE 0x0002       /* request fully handed to the upstream queue */
#define RLB_TF_RESP_STARTED 0x0004   /* response bytes were queued to the client: no more retries */
#define RLB_TF_UPGRADE 0x0008        /* the client asked to switch protocols */
#define RLB_TF_RECHUNK 0x0010        /* response body re-framed as chunked for the client */
#define RLB_TF_REPLAYABLE 0x0020     /* idempotent without body: may be sent again on a fresh connection */
#define RLB_TF_CLIENT_HTTP10 0x0040
#define RLB_TF_UPSTREAM_CLOSE 0x0080 /* the upstream connection cannot be reused */
#define RLB_TF_SET_VARIANT 0x0100    /* A/B split: tell the client its variant with a cookie */
#define RLB_TF_RECONNECTED 0x0200    /* resent once on a fresh connection after a pooled one was found closed */
#define RLB_TF_CLIENT_SAID_CLOSE 0x0400 /* the client itself ended the connection with this request */
#define RLB_TF_CACHE_BYPASS 0x0800   /* a cached route's request the cache cannot serve (method, Range, body) */

#define RLB_TXN_MAX_TRIES RLB_RETRY_MAX_TRIES

struct rlb_txn {
    const struct rlb_route_cfg *route;
    uint32_t pool;
    int32_t backend;
    uint16_t flags;
    uint8_t method;
    uint8_t tries;               /* entries of tried[], reset on moving to another tier */
    uint8_t attempts;            /* backends tried in all tiers: bounded by the route pool's retry.tries */
    uint32_t route_pool;         /* the pool the route (or split variant) names; <pool> may be a backup of it */
    int32_t tried[RLB_TXN_MAX_TRIES]; /* backends already tried by this request (in t->pool) */
    uint8_t connect_failures;
    uint8_t variant;             /* A/B split: index into route->splits */
    uint64_t hash;               /* hash pools: XXH3 of the request's key */

    uint8_t req_body;            /* enum rlb_body_kind */
    uint64_t req_remaining;
    struct rlb_chunked_decoder req_chunked;

    uint8_t resp_state;
    uint8_t resp_body;
    uint16_t status;
    uint64_t resp_remaining;
    struct rlb_chunked_decoder resp_chunked;

    /* Splicing the response body: upstream socket -> pipe -> client socket. */
    int pipe_r, pipe_w;          /* -1 when no pipe is held */
    uint32_t pipe_bytes;         /* in the pipe, not yet sent to the client */

    /* The request head kept for a replay on a fresh connection (reference held). */
    int32_t replay_bid;
    const char *replay_head;
    uint32_t replay_len;

    struct rlb_cache_txn *cache; /* the cache's part: a fetch to store, a wait, a stand-in; NULL otherwise */

    struct rlb_txn *next_free;
};

/* X-Cache labels */
enum rlb_cache_label {
    RLB_XCACHE_NONE = 0,
    RLB_XCACHE_HIT,
    RLB_XCACHE_MISS,
    RLB_XCACHE_STALE,
    RLB_XCACHE_REVALIDATED,
    RLB_XCACHE_BYPASS,
};

/* What the cache keeps about a request it did not answer at once. From a per-worker free list. */
struct rlb_cache_txn {
    struct rlb_cache_entry *fill;  /* the fetch this request makes for the cache (FILLING), or NULL */
    struct rlb_cache_entry *wait;  /* the fetch this request waits for, or NULL */
    struct rlb_cache_entry *stale; /* a stored response allowed to stand in for an error (referenced), or NULL */
    bool storing;                  /* the response body is being copied into <fill> */
    uint8_t label;                 /* enum rlb_cache_label of the forwarded response */
    struct rlb_cc req_cc;
    char *inval;                   /* unsafe method: the primary key to invalidate on success, and its host */
    uint32_t inval_len;
    uint32_t inval_host_len;
    int64_t request_time;
    struct rlb_cache_entry *splice_entry; /* a hit whose body is being spliced (referenced), or NULL */
    uint64_t splice_off;           /* body bytes of it already in the pipe */
    struct rlb_cache_txn *next_free;
};

struct rlb_conn {
    uint32_t gen;       /* bumped when the slot is freed: stale completions are recognised */
    uint8_t kind;       /* enum rlb_conn_kind */
    uint8_t state;      /* enum rlb_client_state or rlb_upstream_state */
    uint16_t flags;     /* RLB_CF_* */
    int fd;
    uint32_t peer;      /* paired connection slot, RLB_SLOT_NONE when alone */
    uint16_t ops;       /* operations posted and not yet finished */
    uint8_t listener;   /* client: which listener accepted it */
    uint8_t _pad;

    /* Received spans not consumed yet: a list of buffer ids (ring buffers,
     * or one linear buffer at the front holding a head that arrived in parts). */
    int32_t inq_head;
    int32_t inq_tail;
    uint32_t inq_bytes;
    uint32_t head_scanned; /* bytes of a pending head known to hold no terminator yet */
    uint8_t ip_len;
    char ip[47];        /* client: peer address as text, filled on the first request */

    struct rlb_outq *outq; /* owned; from the worker's pool while bytes wait */
    struct rlb_zc_hold *zc_holds; /* buffers of zero-copy sends awaiting their notification, oldest first */
    struct rlb_txn *txn;   /* client: the request being served */
    struct rlb_tls_conn *tls; /* NULL for plain TCP */

    struct rlb_timer_node timer;

    /* upstream only */
    uint16_t pool;
    uint16_t backend;
    uint32_t idle_prev;
    uint32_t idle_next;
};

struct rlb_backend_state {
    uint32_t idle_head; /* most recently used first: warm connections stay warm */
    uint32_t idle_count;
    /* What this worker alone has seen (passive checks). */
    uint64_t ejected_until_ms; /* not picked before this; 0: not ejected */
    uint32_t ejections;        /* in a row without a success since: the back-off exponent */
    uint32_t consecutive_5xx;
    uint64_t up_since_ms;      /* slow start: when it came back; 0: at full weight */
    bool down;                 /* the health checker's verdict, as last adopted */
    uint16_t large_bodies;     /* responses still to come in "large body" mode since one worth splicing */
};

struct rlb_pool_state {
    struct rlb_lb_state lb;
    struct rlb_backend_state *backends;
    bool usable;               /* some backend has weight now (else the next tier serves) */
    int64_t retry_tokens;      /* retry budget, in thousandths of a retry */
    uint64_t retry_refill_ms;  /* when the budget was last topped up by time */
};

/* Plain per-worker counters, only uint64_t fields: readers sum them word by word. */
struct rlb_worker_stats {
    uint64_t accepted;
    uint64_t accept_errors;
    uint64_t requests;
    uint64_t responses[6]; /* by class: [1]=1xx .. [5]=5xx, [0]=other */
    uint64_t parse_errors;
    uint64_t upstream_connects;
    uint64_t upstream_connect_failures;
    uint64_t upstream_reused;
    uint64_t upstream_retries;
    uint64_t ejections;     /* backends this worker stopped picking after a failure */
    uint64_t retries_denied; /* retries the budget refused */
    uint64_t failovers;     /* requests served by a backup pool */
    uint64_t enobufs;
    uint64_t zc_sends;      /* send-zero-copy operations */
    uint64_t splices;       /* response bodies moved by splice(2) */
    uint64_t shed;          /* slow clients closed to win buffers back */
    uint64_t timeouts;
    struct rlb_ring_counters ring;
    uint64_t bytes_copied;  /* user-space copies (heads spanning receives) */
    uint64_t tls_handshakes;        /* client handshakes completed */
    uint64_t tls_resumed;           /* of which resumed a session */
    uint64_t tls_handshake_failures;
    uint64_t ktls_tx;               /* connections whose sending the kernel took over */
    uint64_t ktls_rx;               /* ... and receiving */
    uint64_t ktls_fallbacks;        /* connections kept in userspace because the kernel refused */
    uint64_t cache_hits;            /* answered from the cache (fresh, or stale as the request allowed) */
    uint64_t cache_misses;          /* cacheable requests sent to the origin */
    uint64_t cache_stale;           /* stale responses served (stale-while-revalidate, stale-if-error, max-stale) */
    uint64_t cache_revalidated;     /* stored responses the origin confirmed with 304 */
    uint64_t cache_stored;          /* responses stored */
    uint64_t cache_collapsed;       /* requests that waited for another's fetch instead of making their own */
    uint64_t cache_background;      /* background revalidations (stale-while-revalidate) */
    uint64_t cache_bypass;          /* requests on cached routes the cache cannot serve */
    uint64_t cache_purged;          /* entries purged or invalidated */
    uint64_t cache_bytes;           /* memory in use now (a gauge) */
    uint64_t cache_objects;         /* stored responses now (a gauge) */
};

struct rlb_listener_sock {
    int fd;
    bool accepting;
    uint64_t resume_ms;  /* accept paused until then after running out of descriptors */
    uint64_t warned_ms;  /* last accept error logged: at most one a second */
};

/* Timer lists after the fixed kinds: one per pool (idle upstream connections), then one per listener (TLS
 * handshakes), each with its own duration. */
static inline uint32_t rlb_timer_handshake_list(const struct rlb_config *cfg, uint32_t listener)
{
    return RLB_TIMER_POOL_IDLE + cfg->num_pools + listener;
}

struct rlb_worker {
    uint32_t id;
    int cpu;                           /* -1: not pinned */
    pthread_t thread;
    const struct rlb_config *cfg;
    struct io_uring ring;
    bool ring_ready;
    unsigned ring_flags;               /* IORING_SETUP_* actually in use */
    struct rlb_bufs bufs;
    struct rlb_outq_pool outqs;
    int (*pipes)[2];                   /* empty pipes kept for splicing, [read, write] */
    uint32_t num_pipes;
    struct rlb_txn *txn_free;
    struct rlb_timers timers;
    struct rlb_tls_worker *tls;        /* TLS contexts; NULL without TLS listeners or pools */
    struct rlb_cache *cache;           /* NULL without a cache section */
    struct rlb_cache_purges *cache_purges; /* process-wide purge log; NULL: purges stay on this worker */
    struct rlb_cache_txn *cache_txn_free;
    const struct rlb_config *_Atomic tls_reload; /* new TLS material posted by the main thread (SIGHUP) */

    struct rlb_conn *conns;
    uint32_t num_conns;
    uint32_t free_head;                /* freed slots, linked through peer */
    uint32_t slot_hwm;                 /* slots at and above this were never used */
    uint32_t live_clients;
    uint32_t live_conns;

    struct rlb_listener_sock listeners[64];
    struct rlb_pool_state *pools;
    struct rlb_health_board *health;   /* process-wide, read-mostly; may be NULL (tests) */
    _Atomic uint64_t health_seen;      /* board generation this worker has adopted (read by the checker) */
    uint64_t lb_refresh_ms;            /* recompute effective weights then (ejection end, slow start); 0: none due */

    struct rlb_http_header *hdr_scratch; /* parse output, valid during one parse */
    uint32_t hdr_capacity;
    char via_line[96];                 /* "Via: 1.1 <name>\r\n" */
    uint32_t via_len;

    /* Connections whose recv ended for lack of buffers, re-armed when
     * buffers come back (slot, generation pairs). */
    uint64_t *starved;
    uint32_t num_starved;

    int wake_fd;                       /* eventfd the main thread writes to stop us */
    uint64_t wake_buf;
    atomic_bool stop;
    bool draining;
    uint64_t drain_deadline_ms;

    /* Set once during start-up, read by the main thread after a barrier. */
    int start_error;                   /* 0 or -errno */
    char start_msg[256];

    struct rlb_worker_stats stats;
} RLB_ALIGNED;

#endif
