/* The configuration snapshot: built once (file, one-line flags or the demo),
 * validated, then immutable and shared read-only by every worker. */
#ifndef RINGLB_CONFIG_T_H
#define RINGLB_CONFIG_T_H

#include <ringlb/api.h>
#include <ringlb/http1-t.h>
#include <netinet/in.h>
#include <sys/socket.h>

#define RLB_CONFIG_MAX_CPUS 1024
#define RLB_CONFIG_ERR_MAX 512
#define RLB_RETRY_MAX_TRIES 8 /* backends one request may try */

enum rlb_balance {
    RLB_BALANCE_WRR = 0,   /* smooth weighted round-robin */
    RLB_BALANCE_LEASTCONN, /* weighted least requests in flight on this worker, ties round-robin */
    RLB_BALANCE_P2C,       /* power of two random choices, least in flight */
    RLB_BALANCE_HASH,      /* Maglev consistent hashing on a key */
};

enum rlb_server_header_mode {
    RLB_SERVER_PASS = 0, /* forward the backend's Server header */
    RLB_SERVER_HIDE,     /* drop it */
    RLB_SERVER_REPLACE,  /* drop it and send server_value instead */
};

/* Where a value was written in the configuration file, 1-based; line 0 when it did not come from a file
 * (defaults, one-line mode). Kept in the snapshot so that checks run after parsing can still point at
 * the offending text. */
struct rlb_config_mark {
    uint32_t line;
    uint32_t column;
};

enum rlb_hash_key {
    RLB_HASH_KEY_CLIENT_IP = 0,
    RLB_HASH_KEY_HEADER, /* value of the header named hash.name */
    RLB_HASH_KEY_COOKIE, /* value of the cookie named hash.name */
    RLB_HASH_KEY_URI,    /* the request target as sent */
};

struct rlb_hash_cfg {
    enum rlb_hash_key key;
    char *name;               /* header or cookie name */
    uint32_t table_size;      /* prime, > 100 x backends; default 65537 */
    uint32_t bounded_load;    /* percent of the average load a backend may carry (e.g. 125); 0: unbounded */
    struct rlb_config_mark mark;
};

/* Active HTTP health check of every backend of a pool, run by one thread per process. */
struct rlb_health_check_cfg {
    bool enabled;
    char *method;             /* default "GET" */
    char *path;               /* default "/" */
    char *host;               /* Host header; default the backend address */
    uint16_t status_min, status_max; /* healthy statuses; default 200..399 */
    uint32_t interval_ms;     /* default 2000 */
    uint32_t timeout_ms;      /* default 1000 */
    uint32_t rise, fall;      /* consecutive results to change state; default 2 and 3 */
    struct rlb_config_mark mark;
};

struct rlb_sockaddr {
    struct sockaddr_storage ss;
    socklen_t len;
    char text[64]; /* "127.0.0.1:9001" or "[::1]:9001", for logs */
};

struct rlb_backend_cfg {
    struct rlb_sockaddr addr;
    uint32_t weight; /* 1..1000, default 1 */
    char *zone;      /* NULL: no zone */
    char *host_name; /* the host as written when it is a name (default TLS SNI); NULL for an address */
    struct rlb_config_mark mark, weight_mark;
};

struct rlb_pool_cfg {
    char *name;
    enum rlb_balance balance;
    struct rlb_backend_cfg *backends;
    uint32_t num_backends;
    uint32_t keepalive_max_idle;      /* idle upstream connections kept per backend per worker; 0 disables reuse */
    uint32_t keepalive_idle_timeout_ms;
    struct rlb_hash_cfg hash;         /* RLB_BALANCE_HASH only */
    struct rlb_health_check_cfg check;
    struct {                          /* what one worker does on its own when a backend fails it */
        uint32_t eject_ms;            /* first ejection; doubles on each repeat; default 1000 */
        uint32_t eject_max_ms;        /* default 30000 */
        uint32_t consecutive_5xx;     /* outlier detection: eject after this many 5xx in a row; 0 off; default 0 */
    } passive;
    uint32_t slow_start_ms;           /* a backend back up ramps from 10% to full weight over this; 0 off */
    struct {
        uint32_t tries;               /* attempts per request, the first included; default 3 */
        uint32_t budget_percent;      /* retries may add at most this share of requests; default 20 */
        uint32_t budget_min;          /* retries per second allowed whatever the share; default 10 */
        bool on_5xx;                  /* retry idempotent requests answered 502/503/504; default true */
    } retry;
    uint32_t *backups;                /* pool indexes, highest priority first */
    uint32_t num_backups;
    char **backup_names;              /* as written; validation resolves them into <backups> */
    struct rlb_config_mark *backup_marks;
    char *local_zone;                 /* prefer backends in this zone while any is healthy; NULL: none */
    struct {                          /* TLS to the backends */
        bool enabled;
        bool verify;                  /* chain and name; default true */
        char *ca;                     /* NULL: the system's bundle */
        char *sni;                    /* NULL: the backend's host name, none for an address */
        char *name;                   /* name the certificate must carry; NULL: the SNI name, else the address */
        char *cert, *key;             /* client certificate; NULL: none */
        struct rlb_config_mark mark, ca_mark, cert_mark, key_mark;
    } tls;
    struct rlb_config_mark mark, name_mark, balance_mark;
};

/* A/B split: the route's traffic divided between pools by weight, each
 * client kept on its variant by a cookie ringlb sets. */
struct rlb_split_cfg {
    uint32_t pool;
    uint32_t weight; /* relative, e.g. 95 and 5 */
    char *pool_name; /* as written */
    struct rlb_config_mark mark;
};

struct rlb_route_cfg {
    char *path_prefix;   /* "/" matches everything */
    uint32_t path_prefix_len;
    uint32_t pool;       /* index into config->pools */
    char *set_host;      /* Host sent upstream; NULL keeps the client's */
    enum rlb_server_header_mode server_mode;
    char *server_value;  /* for RLB_SERVER_REPLACE */
    bool hide_powered_by;
    char *pool_name;     /* as written; validation resolves it into <pool> (NULL: <pool> is already set) */
    struct rlb_split_cfg *splits; /* when set, replaces <pool> */
    uint32_t num_splits;
    char *split_cookie;  /* cookie naming the variant; default "rlb_variant" */
    bool cache_off;      /* "cache: false": this route never uses the cache */
    struct rlb_config_mark mark, path_mark, pool_mark, set_host_mark, server_mark, server_value_mark;
};

struct rlb_vhost_cfg {
    char **hosts;        /* lower case: "shop.example.com", "*.example.com", or "*" (any) */
    uint32_t num_hosts;
    uint64_t listener_mask; /* bit i set: attached to listeners[i] (all when unspecified) */
    struct rlb_route_cfg *routes; /* sorted longest prefix first */
    uint32_t num_routes;
    struct rlb_config_mark *host_marks;  /* parallel to hosts; may be NULL */
    char **listener_names;               /* as written; validation turns them into listener_mask */
    struct rlb_config_mark *listener_marks; /* parallel to listener_names; may be NULL */
    uint32_t num_listener_names;
    struct rlb_config_mark mark;
};

/* One certificate of a TLS listener (paths resolved against the configuration file's directory). */
struct rlb_tls_cert_cfg {
    char *cert;                /* PEM: the leaf, then its intermediates */
    char *key;                 /* PEM private key */
    char *ocsp;                /* DER OCSP response to staple; NULL: none */
    char **names;              /* SNI names ("*.example.com" allowed); none: the certificate's own DNS names */
    uint32_t num_names;
    struct rlb_config_mark mark, cert_mark, key_mark, ocsp_mark;
};

enum rlb_tls_verify { RLB_TLS_VERIFY_OFF = 0, RLB_TLS_VERIFY_OPTIONAL, RLB_TLS_VERIFY_REQUIRED };

#define RLB_TLS_PROTO_12 0x1
#define RLB_TLS_PROTO_13 0x2

struct rlb_tls_listener_cfg {
    bool enabled;
    struct rlb_tls_cert_cfg *certs; /* the first is the default */
    uint32_t num_certs;
    uint8_t protocols;         /* RLB_TLS_PROTO_* bits; default both */
    char *ciphers;             /* TLS 1.2 suites, BoringSSL syntax; NULL: ECDHE + AEAD only */
    char **alpn;               /* default {"http/1.1"} */
    uint32_t num_alpn;
    bool tickets;              /* default true */
    uint32_t ticket_rotation_ms; /* default 1 h */
    char *client_ca;           /* NULL: clients are not asked for a certificate */
    uint8_t verify_client;     /* enum rlb_tls_verify; default required when client_ca is set */
    bool verify_client_set;
    bool ktls;                 /* default true */
    uint32_t handshake_timeout_ms; /* default 10 s */
    struct rlb_config_mark mark, ciphers_mark, client_ca_mark, alpn_mark;
};

struct rlb_listener_cfg {
    char *name;
    struct rlb_sockaddr addr;
    uint32_t backlog; /* default 4096 */
    bool defer_accept; /* accept only once the client has sent something (TCP_DEFER_ACCEPT); default true */
    uint16_t redirect_https; /* non-zero: answer every request with 308 to https on this port */
    struct rlb_tls_listener_cfg tls;
    struct rlb_config_mark mark, name_mark;
};

struct rlb_timeouts_cfg {     /* all in milliseconds */
    uint32_t client_header;    /* whole request head must arrive within this; default 10000 */
    uint32_t client_keepalive; /* idle keep-alive client connection; default 60000 */
    uint32_t upstream_connect; /* default 3000 */
    uint32_t upstream_response;/* request sent -> response head; default 60000 */
    uint32_t body_idle;        /* no body progress in either direction; default 60000 */
    uint32_t drain;            /* graceful stop: requests in flight get this long; default 10000 */
};

struct rlb_buffers_cfg {
    uint32_t count; /* upstream-side provided buffers per worker, power of two; default 1024 */
    uint32_t size;  /* bytes per upstream-side buffer, power of two, 4096..65536; default 32768 */
    uint32_t client_count; /* client-side provided buffers per worker; default 1024 */
    uint32_t client_size;  /* bytes per client-side buffer; default 16384 */
    uint32_t zerocopy_min; /* sends of at least this many bytes use send-zero-copy; 0 (default): never */
    uint32_t splice_min;   /* response bodies with at least this much left move by splice(2); 0: never; default 128 KiB */
};

/* The per-worker response cache (RFC 9111). */
struct rlb_cache_cfg {
    bool enabled;
    uint64_t size;             /* memory budget per worker, bytes */
    uint64_t max_object;       /* largest body stored; default 8 MiB (capped at size / 4) */
    bool heuristic;            /* heuristic freshness for responses without an explicit one; default false */
    uint32_t heuristic_percent; /* of the time since Last-Modified; default 10 */
    uint32_t heuristic_max_s;  /* default 86400 */
    bool key_host;             /* the Host is part of the key; default true */
    uint8_t key_query;         /* enum rlb_cache_query; default full */
    char **key_headers;        /* request headers added to the key */
    uint32_t num_key_headers;
    char *key_headers_joined;  /* "a, b": the form the Vary matcher takes */
    bool status_header;        /* X-Cache and Cache-Status on responses; default true */
    uint32_t lock_timeout_ms;  /* how long a request waits for a fetch of the same key in flight; default 5000 */
    bool store_set_cookie;     /* responses with Set-Cookie are stored (and served with it); default false */
    uint32_t splice_min;       /* hits with a body this large go by vmsplice + splice, not copied; default 16k; 0: never */
    bool splice_min_set;
    char *purge_token;         /* PURGE requests with "X-Purge-Token: <this>" from loopback; NULL: PURGE disabled */
    struct rlb_config_mark mark;
};

struct rlb_config {
    char *source;              /* file name, "<command line>" or "<demo>" */
    uint32_t workers;          /* resolved count; 0 means auto (one per CPU in the affinity mask) */
    int32_t *cpus;             /* worker i is pinned to cpus[i % num_cpus]; NULL: no pinning */
    uint32_t num_cpus;
    struct rlb_http_limits limits; /* defaults 8192 / 65536 / 100 */
    struct rlb_timeouts_cfg timeouts;
    struct rlb_buffers_cfg buffers;
    uint32_t max_connections;  /* per worker, client + upstream slots; default 16384 */
    char *via_name;            /* pseudonym in Via; default "ringlb" */
    struct rlb_listener_cfg *listeners;
    uint32_t num_listeners;    /* 1..64 */
    struct rlb_pool_cfg *pools;
    uint32_t num_pools;
    struct rlb_cache_cfg cache;
    struct rlb_vhost_cfg *vhosts; /* exact hosts first, then wildcards, then "*" */
    uint32_t num_vhosts;
    struct {                   /* where top-level values were written, for messages */
        struct rlb_config_mark workers, via, max_connections, max_request_line, max_header_size, max_headers,
            buffers_count, buffers_size, buffers_client_count, buffers_client_size, listeners, pools, vhosts;
    } marks;
};

/* One-line mode (ringlb --listen A --backend B ...). */
struct rlb_oneline_args {
    const char *listen;
    const char **backends; /* "host:port" or "host:port@weight" */
    uint32_t num_backends;
    uint32_t workers;      /* 0: auto */
    const char *balance;   /* "rr", "leastconn", "p2c", "hash[:KEY]"; NULL: rr */
    const char *tls_cert;  /* with tls_key: the listener terminates TLS */
    const char *tls_key;
    int ktls;              /* -1: default (on), 0 off, 1 on */
    const char *cache;     /* "--cache SIZE": the cache with its defaults; NULL: none */
};

#endif
