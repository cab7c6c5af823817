/* Private to the proxy state machine, split in three files: proxy.c (events,
 * closing, errors), proxy_request.c (client side: request heads and bodies),
 * proxy_response.c (upstream side: response heads and bodies, tunnels). */
#ifndef RINGLB_PROXY_INTERNAL_H
#define RINGLB_PROXY_INTERNAL_H

#include <ringlb/conn.h>
#include <ringlb/http1-t.h>
#include <ringlb/timer.h>
#include <ringlb/worker-t.h>

/* Backpressure: a connection stops receiving when this much of its input
 * waits to be relayed, and relaying stops while the other side's send queue
 * holds this much. Together they bound a connection's buffer use whatever
 * the speed difference between client and backend. */
#define INQ_HIGH (128u * 1024)
#define OUTQ_HIGH (256u * 1024)

static inline uint32_t slot(const struct rlb_worker *w, const struct rlb_conn *c)
{
    return rlb_conn_slot(w, c);
}

static inline void arm(struct rlb_worker *w, struct rlb_conn *c, uint32_t kind)
{
    rlb_timer_arm(&w->timers, w->conns, slot(w, c), kind);
}

enum { RLB_RELAY_CLIENT_GONE = -2, RLB_RELAY_BAD = -1, RLB_RELAY_MORE = 0, RLB_RELAY_DONE = 1 };

/* proxy.c: shared by both sides */
struct rlb_str rlb__proxy_via_line(const struct rlb_worker *w);
struct rlb_txn *rlb__proxy_txn_get(struct rlb_worker *w);
/* The A/B split's "Set-Cookie: ...\r\n" naming the variant, when this response must tell it; 0 bytes otherwise. */
size_t rlb__proxy_variant_cookie(const struct rlb_worker *w, const struct rlb_txn *t, char *out, size_t cap);
void rlb__proxy_txn_put(struct rlb_worker *w, struct rlb_conn *c);
void rlb__proxy_release_replay(struct rlb_worker *w, struct rlb_txn *t);
void rlb__proxy_unlink_pair(struct rlb_worker *w, struct rlb_conn *c);
void rlb__proxy_close_upstream(struct rlb_worker *w, struct rlb_conn *u, bool abort);
void rlb__proxy_close_client(struct rlb_worker *w, struct rlb_conn *c, bool abort);
void rlb__proxy_close_client_after_send(struct rlb_worker *w, struct rlb_conn *c);
void rlb__proxy_send_error(struct rlb_worker *w, struct rlb_conn *c, int status);
int rlb__proxy_parse_head(struct rlb_worker *w, struct rlb_conn *c, bool request, void *msg, int method);
void rlb__proxy_resume_recv(struct rlb_worker *w, struct rlb_conn *c);
/* Moves body bytes framed as <kind> (enum rlb_body_kind) from <from>'s input
 * into <q>, as they are or re-chunked, until the body ends, the input runs
 * out or <q> is full. Sets *progress when anything moved. Returns
 * RLB_RELAY_DONE (terminating chunk queued when re-chunking), RLB_RELAY_MORE,
 * or RLB_RELAY_BAD for broken chunked framing. The data also goes into the cache for a <store>
 * transaction (NULL for request bodies). */
int rlb__proxy_relay_body(struct rlb_worker *w, struct rlb_conn *from, struct rlb_outq *q, uint8_t kind, bool rechunk,
                          uint64_t *remaining, struct rlb_chunked_decoder *dec, bool *progress,
                          struct rlb_txn *store);

/* proxy_request.c: the client side */
void rlb__proxy_client_process(struct rlb_worker *w, struct rlb_conn *c);
struct rlb_conn *rlb__proxy_acquire_upstream(struct rlb_worker *w, struct rlb_conn *c, struct rlb_txn *t);
int rlb__proxy_emit_request(struct rlb_worker *w, struct rlb_conn *c, struct rlb_conn *u, int32_t bid,
                            const char *head, const struct rlb_http_request *req);
void rlb__proxy_start_upstream_io(struct rlb_worker *w, struct rlb_conn *u);
/* Sends the kept request head again: to the same backend on a fresh
 * connection, or <elsewhere> to the next backend the balancer offers. */
bool rlb__proxy_replay_request(struct rlb_worker *w, struct rlb_conn *c, struct rlb_conn *u, bool elsewhere);

/* Whether <t> may go to one more backend: tries left, then the retry budget
 * (asked last, so a request out of tries spends nothing). */
bool rlb__proxy_may_retry(struct rlb_worker *w, const struct rlb_txn *t);

/* proxy_response.c: the upstream side */
void rlb__proxy_upstream_process(struct rlb_worker *w, struct rlb_conn *u);
void rlb__proxy_upstream_failed(struct rlb_worker *w, struct rlb_conn *u, int status);
void rlb__proxy_response_done(struct rlb_worker *w, struct rlb_conn *c, struct rlb_conn *u);
void rlb__proxy_relay_tunnel(struct rlb_worker *w, struct rlb_conn *from);

/* proxy_cache.c: the response cache */
enum { RLB_CACHE_FORWARD = 0, RLB_CACHE_SERVED, RLB_CACHE_WAITING };
/* After routing: answers from the store, waits for a fetch of the same key, or lets the request go to the
 * origin (preparing a fetch that fills the store, validators, invalidation). Returns RLB_CACHE_FORWARD when
 * the request goes on upstream; otherwise the head was dealt with and the state tells what comes next. */
int rlb__proxy_cache_request(struct rlb_worker *w, struct rlb_conn *c, const struct rlb_http_request *req,
                             struct rlb_str host, struct rlb_str path);
/* A PURGE request, answered here; false when <req> is not one (or the cache is off). */
bool rlb__proxy_cache_purge(struct rlb_worker *w, struct rlb_conn *c, const struct rlb_http_request *req,
                            struct rlb_str host, struct rlb_str target);
/* Our validators for a revalidating fetch, as header lines; 0 bytes otherwise. */
size_t rlb__proxy_cache_validators(const struct rlb_txn *t, char *out, size_t cap);
/* The request fetches for the store: the client's own validators must not reach the origin. */
bool rlb__proxy_cache_fetching(const struct rlb_txn *t);
/* At a final response head: invalidation, a 304 refreshing a stored response, a stale stand-in for an
 * error, the decision to store. Returns -1 when the client was answered here (stop relaying), else the
 * length of the status lines written to <extra> for the forwarded response. */
int rlb__proxy_cache_response(struct rlb_worker *w, struct rlb_conn *c, struct rlb_conn *u,
                              const struct rlb_http_response *resp, char *extra, size_t cap);
/* Response body bytes also going into the store. */
void rlb__proxy_cache_body(struct rlb_worker *w, struct rlb_txn *t, const char *p, size_t len);
/* The response is complete: the stored copy becomes servable. */
void rlb__proxy_cache_complete(struct rlb_worker *w, struct rlb_txn *t);
/* Serves a stored response instead of the error the request is about to get (stale-if-error); false when
 * there is none it may serve. */
bool rlb__proxy_cache_stand_in(struct rlb_worker *w, struct rlb_conn *c);
void rlb__proxy_cache_wait_timeout(struct rlb_worker *w, struct rlb_conn *c);
/* The client socket of a hit whose body is being spliced is writable again. */
void rlb__proxy_cache_splice_ready(struct rlb_worker *w, struct rlb_conn *c);
void rlb__proxy_cache_txn_end(struct rlb_worker *w, struct rlb_txn *t);

/* proxy_splice.c: large response bodies by splice(2) */
bool rlb__proxy_splice_wanted(const struct rlb_worker *w, const struct rlb_txn *t, const struct rlb_conn *u);
/* The upstream receive is off, its buffered body relayed, the client's queue empty. */
bool rlb__proxy_splice_ready_to_start(const struct rlb_conn *u, const struct rlb_conn *c);
/* Moves what the sockets allow; RLB_RELAY_DONE, _MORE (a poll is posted),
 * _BAD (the backend failed) or _CLIENT_GONE. */
int rlb__proxy_splice_step(struct rlb_worker *w, struct rlb_conn *u, struct rlb_conn *c);
/* Gives the transaction's pipe back (kept when empty) or closes it. */
void rlb__proxy_splice_release(struct rlb_worker *w, struct rlb_txn *t);
/* A cache hit's body by reference: the queued head is written into a pipe, the entry's own pages are
 * vmspliced behind it, the pipe is spliced to the client. Starts with <e>, continues with NULL when the
 * socket is writable again. RLB_RELAY_DONE, _MORE (a poll is posted), _CLIENT_GONE, or _BAD when no pipe
 * could be had at the start (nothing was taken from the queue: send it the ordinary way). */
int rlb__proxy_splice_stored(struct rlb_worker *w, struct rlb_conn *c, struct rlb_cache_entry *e);
void rlb__proxy_splice_destroy(struct rlb_worker *w);

#endif
