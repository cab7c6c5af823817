#include <ringlb/buf.h>
#include <ringlb/cache.h>
#include <ringlb/conn.h>
#include <ringlb/log.h>
#include <ringlb/proxy.h>
#include <ringlb/ring.h>
#include <ringlb/server.h>
#include <ringlb/timer.h>
#include <ringlb/tls.h>
#include <ringlb/upstream.h>
#include <ringlb/worker.h>

#include <errno.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define RING_ENTRIES 4096

static int open_listener(const struct rlb_listener_cfg *l, int *out)
{
    int fd = socket(l->addr.ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    /* One listening socket per worker on the same port: the kernel spreads
     * new connections across workers with no shared accept queue. */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
        goto fail;
    if (l->addr.ss.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    /* Accepted sockets inherit it: one system call per listener, not per connection. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    /* HTTP clients speak first: completing the accept only when the request
     * is there saves a wake-up and an empty receive per connection (about
     * 15% of the CPU of one-connection-per-request traffic, measured). A
     * client that connects and stays silent is still accepted after the
     * kernel's SYN-ACK retries, and then meets the header timeout. */
    if (l->defer_accept)
        setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)&l->addr.ss, l->addr.len) < 0)
        goto fail;
    if (listen(fd, (int)l->backlog) < 0)
        goto fail;
    *out = fd;
    return 0;
fail:;
    int err = -errno;
    close(fd);
    return err;
}

static void arm_accept(struct rlb_worker *w, uint32_t idx)
{
    struct rlb_listener_sock *ls = &w->listeners[idx];
    struct io_uring_sqe *sqe = rlb_ring_sqe(&w->ring, &w->stats.ring);
    io_uring_prep_multishot_accept(sqe, ls->fd, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, rlb_ud(RLB_OP_ACCEPT, idx, 0));
    ls->accepting = true;
}

static void arm_wake(struct rlb_worker *w)
{
    struct io_uring_sqe *sqe = rlb_ring_sqe(&w->ring, &w->stats.ring);
    io_uring_prep_read(sqe, w->wake_fd, &w->wake_buf, sizeof(w->wake_buf), 0);
    io_uring_sqe_set_data64(sqe, rlb_ud(RLB_OP_WAKE, 0, 0));
}

static int timers_from_config(struct rlb_worker *w)
{
    const struct rlb_timeouts_cfg *t = &w->cfg->timeouts;
    uint32_t n = rlb_timer_handshake_list(w->cfg, w->cfg->num_listeners);
    uint32_t *d = calloc(n, sizeof(*d));
    if (!d)
        return -ENOMEM;
    d[RLB_TIMER_CLIENT_HEADER] = t->client_header;
    d[RLB_TIMER_CLIENT_KEEPALIVE] = t->client_keepalive;
    d[RLB_TIMER_BODY_IDLE] = t->body_idle;
    d[RLB_TIMER_UPSTREAM_CONNECT] = t->upstream_connect;
    d[RLB_TIMER_UPSTREAM_RESPONSE] = t->upstream_response;
    d[RLB_TIMER_LINGER] = 2000;
    d[RLB_TIMER_CACHE_WAIT] = w->cfg->cache.lock_timeout_ms ? w->cfg->cache.lock_timeout_ms : 5000;
    for (uint32_t p = 0; p < w->cfg->num_pools; p++)
        d[RLB_TIMER_POOL_IDLE + p] = w->cfg->pools[p].keepalive_idle_timeout_ms;
    for (uint32_t l = 0; l < w->cfg->num_listeners; l++)
        d[rlb_timer_handshake_list(w->cfg, l)] = w->cfg->listeners[l].tls.handshake_timeout_ms;
    int rc = rlb_timers_init(&w->timers, d, n);
    free(d);
    return rc;
}

static bool tls_listeners(const struct rlb_config *cfg)
{
    for (uint32_t i = 0; i < cfg->num_listeners; i++)
        if (cfg->listeners[i].tls.enabled)
            return true;
    return false;
}

static int worker_setup(struct rlb_worker *w)
{
    const struct rlb_config *cfg = w->cfg;
    int rc;
    if (w->cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(w->cpu, &set);
        if (sched_setaffinity(0, sizeof(set), &set) < 0) {
            snprintf(w->start_msg, sizeof(w->start_msg), "worker %u: pinning to CPU %d: %s", w->id, w->cpu,
                     strerror(errno));
            return -errno;
        }
    }
    rc = rlb_ring_init(&w->ring, RING_ENTRIES, &w->ring_flags);
    if (rc < 0) {
        snprintf(w->start_msg, sizeof(w->start_msg), "worker %u: io_uring setup: %s", w->id, strerror(-rc));
        return rc;
    }
    w->ring_ready = true;
    const char *missing = NULL;
    rc = rlb_ring_probe(&w->ring, &missing);
    if (rc < 0) {
        snprintf(w->start_msg, sizeof(w->start_msg), "worker %u: kernel lacks io_uring %s", w->id, missing);
        return rc;
    }
    if (!(w->ring.features & IORING_FEAT_EXT_ARG)) {
        snprintf(w->start_msg, sizeof(w->start_msg), "worker %u: kernel lacks IORING_FEAT_EXT_ARG (5.11+)", w->id);
        return -ENOTSUP;
    }
    uint32_t largest = cfg->buffers.size > cfg->buffers.client_size ? cfg->buffers.size : cfg->buffers.client_size;
    struct rlb_bufs_spec spec = {
        .count = {[RLB_BUF_GROUP_CLIENT] = cfg->buffers.client_count, [RLB_BUF_GROUP_UPSTREAM] = cfg->buffers.count},
        .size = {[RLB_BUF_GROUP_CLIENT] = cfg->buffers.client_size, [RLB_BUF_GROUP_UPSTREAM] = cfg->buffers.size},
        /* Decrypted TLS input lives in linear buffers: room for every client to hold one. */
        .linear_cap = 256 + (tls_listeners(cfg) ? cfg->buffers.client_count : 0),
        /* a head of max_head_size plus the receive that completes it */
        .linear_size = cfg->limits.max_head_size + largest,
    };
    rc = rlb_bufs_init(&w->bufs, &w->ring, &spec);
    if (rc < 0) {
        snprintf(w->start_msg, sizeof(w->start_msg), "worker %u: provided buffer ring: %s", w->id, strerror(-rc));
        return rc;
    }
    rc = rlb_conns_init(w, cfg->max_connections);
    if (rc == 0)
        rc = rlb_upstream_init(w);
    if (rc == 0)
        rc = rlb_proxy_init(w);
    if (rc == 0 && cfg->cache.enabled) {
        /* aligned_alloc wants a multiple of the alignment. */
        w->cache = aligned_alloc(RLB_CACHELINE, (sizeof(*w->cache) + RLB_CACHELINE - 1) & ~(size_t)(RLB_CACHELINE - 1));
        if (!w->cache || rlb_cache_init(w->cache, &cfg->cache, cfg->limits.max_headers, w->cache_purges) != 0) {
            free(w->cache);
            w->cache = NULL;
            rc = -ENOMEM;
        } else {
            w->bufs.cache = w->cache;
            w->cache->purged = &w->stats.cache_purged;
        }
    }
    if (rc == 0 && rlb_tls_worker_init(w, w->start_msg, sizeof(w->start_msg)) != 0)
        return -EINVAL;
    /* Twice the slots: entries of connections gone since stay until the next pass. */
    if (rc == 0 && !(w->starved = calloc(2 * (size_t)w->num_conns, sizeof(*w->starved))))
        rc = -ENOMEM;
    if (rc < 0) {
        snprintf(w->start_msg, sizeof(w->start_msg), "worker %u: %s", w->id, strerror(-rc));
        return rc;
    }
    rc = timers_from_config(w);
    if (rc < 0) {
        snprintf(w->start_msg, sizeof(w->start_msg), "worker %u: %s", w->id, strerror(-rc));
        return rc;
    }
    for (uint32_t i = 0; i < cfg->num_listeners; i++) {
        rc = open_listener(&cfg->listeners[i], &w->listeners[i].fd);
        if (rc < 0) {
            snprintf(w->start_msg, sizeof(w->start_msg), "listener %s (%s): %s", cfg->listeners[i].name,
                     cfg->listeners[i].addr.text, strerror(-rc));
            w->listeners[i].fd = -1;
            return rc;
        }
    }
    return 0;
}

static void close_listeners(struct rlb_worker *w)
{
    for (uint32_t i = 0; i < w->cfg->num_listeners; i++) {
        if (w->listeners[i].fd >= 0) {
            /* Closing the socket ends its multishot accept too. */
            struct io_uring_sqe *sqe = rlb_ring_sqe(&w->ring, &w->stats.ring);
            io_uring_prep_cancel64(sqe, rlb_ud(RLB_OP_ACCEPT, i, 0), 0);
            io_uring_sqe_set_data64(sqe, rlb_ud(RLB_OP_CANCEL, 0, 0));
            close(w->listeners[i].fd);
            w->listeners[i].fd = -1;
        }
    }
}

static void begin_drain(struct rlb_worker *w)
{
    if (w->draining)
        return;
    w->draining = true;
    w->drain_deadline_ms = w->timers.now_ms + w->cfg->timeouts.drain;
    close_listeners(w);
    rlb_proxy_drain(w);
}

static void rearm_accept(struct rlb_worker *w, uint32_t idx)
{
    struct rlb_listener_sock *ls = &w->listeners[idx];
    if (!ls->accepting && !w->draining && ls->fd >= 0 && w->timers.now_ms >= ls->resume_ms)
        arm_accept(w, idx);
}

static void handle_accept(struct rlb_worker *w, struct io_uring_cqe *cqe)
{
    uint32_t idx = rlb_ud_index(cqe->user_data);
    if (!(cqe->flags & IORING_CQE_F_MORE))
        w->listeners[idx].accepting = false;
    if (cqe->res >= 0) {
        if (w->draining) {
            close(cqe->res);
        } else {
            struct rlb_conn *c = rlb_conn_alloc(w, RLB_CONN_CLIENT, cqe->res);
            if (!c) {
                close(cqe->res); /* slot table full: shed load rather than queue it */
            } else {
                w->stats.accepted++;
                c->listener = (uint8_t)idx;
                if (w->cfg->listeners[idx].tls.enabled && rlb_tls_accept(w, c) != 0) {
                    rlb_log_warn("TLS: no memory for a new connection");
                    rlb_conn_close(w, c, true);
                } else {
                    rlb_proxy_accepted(w, c);
                }
            }
        }
    } else if (cqe->res != -ECANCELED && cqe->res != -EBADF) {
        struct rlb_listener_sock *ls = &w->listeners[idx];
        w->stats.accept_errors++;
        if (w->timers.now_ms >= ls->warned_ms + 1000) {
            rlb_log_warn("accept on %s: %s", w->cfg->listeners[idx].addr.text, strerror(-cqe->res));
            ls->warned_ms = w->timers.now_ms;
        }
        /* Out of descriptors or memory: accepting again at once would fail
         * again at once and spin; pending clients wait in the backlog. */
        if (cqe->res == -EMFILE || cqe->res == -ENFILE || cqe->res == -ENOBUFS || cqe->res == -ENOMEM)
            ls->resume_ms = w->timers.now_ms + 100;
    }
    rearm_accept(w, idx);
}

static void rearm_paused_accepts(struct rlb_worker *w)
{
    for (uint32_t i = 0; i < w->cfg->num_listeners; i++)
        rearm_accept(w, i);
}

void rlb_worker_starved(struct rlb_worker *w, struct rlb_conn *c)
{
    if (c->flags & RLB_CF_STARVED)
        return;
    c->flags |= RLB_CF_STARVED;
    w->starved[w->num_starved++] = ((uint64_t)rlb_conn_slot(w, c) << 32) | c->gen;
}

/* When the client buffers are nearly gone and connections starve, the
 * first to go are clients still sending their head, oldest first: a partial
 * head pins a whole buffer, so a crowd of slow (or slowloris) clients could
 * otherwise hold every buffer until their header timeout. */
static void shed_slow_heads(struct rlb_worker *w)
{
    uint32_t want = w->bufs.groups[RLB_BUF_GROUP_CLIENT].count / 16;
    struct rlb_timer_list *l = &w->timers.lists[RLB_TIMER_CLIENT_HEADER];
    uint32_t budget = want;
    uint32_t s = l->head;
    while (rlb_buf_available(&w->bufs, RLB_BUF_GROUP_CLIENT) < want && s != RLB_SLOT_NONE && budget--) {
        struct rlb_conn *c = &w->conns[s];
        s = c->timer.next;
        if (c->inq_bytes) {
            w->stats.shed++;
            rlb_proxy_timeout(w, c, RLB_TIMER_CLIENT_HEADER);
            rlb_conn_try_free(w, c);
        }
    }
}

static void rearm_starved(struct rlb_worker *w)
{
    if (!w->num_starved)
        return;
    const struct rlb_buf_group *client = &w->bufs.groups[RLB_BUF_GROUP_CLIENT];
    if (rlb_buf_available(&w->bufs, RLB_BUF_GROUP_CLIENT) < client->count / 16)
        shed_slow_heads(w);
    /* Re-arm, oldest first, only as many starved connections as a group
     * has buffers back: re-arming them all at once would have most of them
     * fail with ENOBUFS again at once, a storm of useless operations. */
    int64_t budget[RLB_BUF_GROUPS];
    for (unsigned g = 0; g < RLB_BUF_GROUPS; g++)
        budget[g] = (int64_t)w->bufs.groups[g].in_ring - (int64_t)w->bufs.groups[g].count / 16;
    uint32_t n = w->num_starved, kept = 0;
    for (uint32_t i = 0; i < n; i++) {
        struct rlb_conn *c = &w->conns[w->starved[i] >> 32];
        if (c->gen != (uint32_t)w->starved[i] || !(c->flags & RLB_CF_STARVED))
            continue;
        int64_t *b = &budget[c->kind == RLB_CONN_CLIENT ? RLB_BUF_GROUP_CLIENT : RLB_BUF_GROUP_UPSTREAM];
        if (*b <= 0) {
            w->starved[kept++] = w->starved[i];
            continue;
        }
        (*b)--;
        c->flags &= (uint16_t)~RLB_CF_STARVED;
        if (c->tls)
            rlb_tls_input(w, c); /* decrypts what waited for a buffer, then as below */
        else
            rlb_proxy_input(w, c); /* re-arms the recv unless its input is still full */
    }
    /* Connections starved during this pass were appended after <kept>:
     * move them behind the ones still waiting from before. */
    uint32_t fresh = w->num_starved - n;
    memmove(w->starved + kept, w->starved + n, fresh * sizeof(*w->starved));
    w->num_starved = kept + fresh;
}

static void handle_recv(struct rlb_worker *w, struct rlb_conn *c, struct io_uring_cqe *cqe)
{
    bool more = cqe->flags & IORING_CQE_F_MORE;
    bool closing = rlb_conn_is_closing(c);
    if (!more) {
        c->flags &= (uint16_t)~(RLB_CF_RECV_ARMED | RLB_CF_RECV_CANCELING);
        c->ops--;
    }
    if (cqe->res > 0) {
        RLB_BUG_ON(!(cqe->flags & IORING_CQE_F_BUFFER));
        unsigned group = c->kind == RLB_CONN_CLIENT ? RLB_BUF_GROUP_CLIENT : RLB_BUF_GROUP_UPSTREAM;
        int32_t bid = rlb_buf_received(&w->bufs, group, cqe->flags >> IORING_CQE_BUFFER_SHIFT, (uint32_t)cqe->res);
        if (closing) {
            rlb_buf_unref(&w->bufs, bid);
        } else if (rlb_tls_userspace_rx(c->tls)) {
            rlb_tls_received(w, c, bid);
        } else {
            rlb_conn_inq_append(w, c, bid);
            rlb_proxy_input(w, c);
        }
    } else if (!closing) {
        if (cqe->res == -ENOBUFS) {
            w->stats.enobufs++;
            rlb_worker_starved(w, c);
        } else if (cqe->res == -ECANCELED) {
            /* Paused for backpressure: whoever drains the input re-arms it.
             * Paused to splice: the splice may start now. Paused for the
             * kernel to take over TLS: it may now. */
            if (c->flags & RLB_CF_SPLICE)
                rlb_proxy_input(w, c);
            else if (c->tls)
                rlb_tls_recv_stopped(w, c);
        } else if (cqe->res == -EIO && c->tls && (c->tls->ktls & RLB_KTLS_RX)) {
            rlb_ktls_control_record(w, c);
            if (!rlb_conn_is_closing(c))
                rlb_conn_arm_recv(w, c);
        } else {
            rlb_proxy_recv_end(w, c, cqe->res);
        }
    }
    rlb_conn_try_free(w, c);
}

/* Zero-copy sends: a hold with extra references on the send's buffers was
 * queued when it was posted (rlb_conn_flush), and two completions were
 * counted in ops: the result and the notification. The kernel usually posts
 * the result first but does not promise it, so either order is handled:
 * notifications release holds oldest first (one socket's notifications
 * follow its sends), and a result without IORING_CQE_F_MORE means no
 * notification will come, so it releases its own (the newest) hold. */
static void handle_send_notif(struct rlb_worker *w, struct rlb_conn *c)
{
    struct rlb_zc_hold *h = c->zc_holds;
    RLB_BUG_ON(!h);
    c->zc_holds = h->next;
    rlb_zc_hold_release(&w->outqs, h, &w->bufs);
    c->ops--;
    rlb_conn_try_free(w, c);
}

static void drop_newest_hold(struct rlb_worker *w, struct rlb_conn *c)
{
    struct rlb_zc_hold **pp = &c->zc_holds;
    RLB_BUG_ON(!*pp);
    while ((*pp)->next)
        pp = &(*pp)->next;
    rlb_zc_hold_release(&w->outqs, *pp, &w->bufs);
    *pp = NULL;
    c->ops--;
}

static void handle_send(struct rlb_worker *w, struct rlb_conn *c, struct io_uring_cqe *cqe)
{
    if (cqe->flags & IORING_CQE_F_NOTIF) {
        handle_send_notif(w, c);
        return;
    }
    c->ops--;
    if ((c->flags & RLB_CF_SEND_ZC) && !(cqe->flags & IORING_CQE_F_MORE))
        drop_newest_hold(w, c);
    c->flags &= (uint16_t)~(RLB_CF_SEND_INFLIGHT | RLB_CF_SEND_ZC);
    bool closing = rlb_conn_is_closing(c);
    if (!closing && rlb_tls_userspace_tx(c->tls))
        rlb_tls_sent(w, c, cqe->res);
    else if (!closing)
        rlb_proxy_sent(w, c, cqe->res);
    rlb_conn_try_free(w, c);
}

static void handle_connect(struct rlb_worker *w, struct rlb_conn *c, struct io_uring_cqe *cqe)
{
    c->ops--;
    if (c->state == RLB_US_CONNECTING) {
        rlb_timer_cancel(&w->timers, w->conns, rlb_conn_slot(w, c));
        rlb_proxy_connected(w, c, cqe->res);
    }
    rlb_conn_try_free(w, c);
}

static void handle_poll(struct rlb_worker *w, struct rlb_conn *c)
{
    c->ops--;
    c->flags &= (uint16_t)~RLB_CF_POLL_ARMED;
    if (!rlb_conn_is_closing(c))
        rlb_proxy_splice_ready(w, c);
    rlb_conn_try_free(w, c);
}

static void handle_cqe(struct rlb_worker *w, struct io_uring_cqe *cqe)
{
    uint64_t ud = cqe->user_data;
    enum rlb_op op = rlb_ud_op(ud);
    if (op == RLB_OP_ACCEPT) {
        handle_accept(w, cqe);
        return;
    }
    if (op == RLB_OP_WAKE) {
        if (atomic_load_explicit(&w->stop, memory_order_acquire))
            begin_drain(w);
        else
            arm_wake(w);
        return;
    }
    if (op == RLB_OP_CANCEL)
        return;
    struct rlb_conn *c = &w->conns[rlb_ud_index(ud)];
    if (c->gen != rlb_ud_gen(ud) || c->kind == RLB_CONN_FREE) {
        /* A completion for a slot already reused: only its buffer matters. */
        if ((op == RLB_OP_RECV || op == RLB_OP_RECV_UP) && cqe->res > 0 && (cqe->flags & IORING_CQE_F_BUFFER)) {
            unsigned group = op == RLB_OP_RECV ? RLB_BUF_GROUP_CLIENT : RLB_BUF_GROUP_UPSTREAM;
            rlb_buf_unref(&w->bufs, rlb_buf_received(&w->bufs, group, cqe->flags >> IORING_CQE_BUFFER_SHIFT, 0));
        }
        return;
    }
    switch (op) {
    case RLB_OP_RECV:
    case RLB_OP_RECV_UP:
        handle_recv(w, c, cqe);
        break;
    case RLB_OP_SEND:
        handle_send(w, c, cqe);
        break;
    case RLB_OP_CONNECT:
        handle_connect(w, c, cqe);
        break;
    case RLB_OP_POLL:
        handle_poll(w, c);
        break;
    default:
        break;
    }
}

static void expire_timers(struct rlb_worker *w)
{
    for (;;) {
        uint32_t list;
        uint32_t s = rlb_timer_pop_expired(&w->timers, w->conns, &list);
        if (s == RLB_SLOT_NONE)
            return;
        uint32_t handshake_lists = rlb_timer_handshake_list(w->cfg, 0);
        enum rlb_timer_kind kind = list >= handshake_lists      ? RLB_TIMER_TLS_HANDSHAKE
                                   : list >= RLB_TIMER_POOL_IDLE ? RLB_TIMER_POOL_IDLE
                                                                 : (enum rlb_timer_kind)list;
        rlb_proxy_timeout(w, &w->conns[s], kind);
        rlb_conn_try_free(w, &w->conns[s]);
    }
}

/* One turn of the loop: wait (at most <max_wait_ms> when >= 0), handle what
 * completed, run timers. Returns false when the worker should stop. */
static bool loop_turn(struct rlb_worker *w, int64_t max_wait_ms)
{
    {
        rlb_bufs_publish(&w->bufs);
        int64_t wait_ms = rlb_timer_next_ms(&w->timers, w->conns);
        if (max_wait_ms >= 0 && (wait_ms < 0 || wait_ms > max_wait_ms))
            wait_ms = max_wait_ms;
        for (uint32_t i = 0; i < w->cfg->num_listeners; i++) {
            const struct rlb_listener_sock *ls = &w->listeners[i];
            if (!ls->accepting && ls->fd >= 0 && !w->draining) {
                int64_t d = ls->resume_ms > w->timers.now_ms ? (int64_t)(ls->resume_ms - w->timers.now_ms) : 0;
                if (wait_ms < 0 || d < wait_ms)
                    wait_ms = d;
            }
        }
        if (w->lb_refresh_ms) {
            int64_t d = w->lb_refresh_ms > w->timers.now_ms ? (int64_t)(w->lb_refresh_ms - w->timers.now_ms) : 0;
            if (wait_ms < 0 || d < wait_ms)
                wait_ms = d;
        }
        if (w->draining) {
            int64_t left = (int64_t)w->drain_deadline_ms - (int64_t)w->timers.now_ms;
            if (left < 0)
                left = 0;
            if (wait_ms < 0 || left < wait_ms)
                wait_ms = left;
        }
        struct __kernel_timespec ts = {.tv_sec = wait_ms / 1000, .tv_nsec = (wait_ms % 1000) * 1000000};
        struct io_uring_cqe *cqe;
        w->stats.ring.enters++;
        int rc = io_uring_submit_and_wait_timeout(&w->ring, &cqe, 1, wait_ms >= 0 ? &ts : NULL, NULL);
        if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EBUSY) {
            rlb_log_error("worker %u: io_uring wait: %s", w->id, strerror(-rc));
            return false;
        }
        w->timers.now_ms = rlb_now_ms();
        unsigned head, n = 0;
        io_uring_for_each_cqe(&w->ring, head, cqe)
        {
            handle_cqe(w, cqe);
            n++;
        }
        io_uring_cq_advance(&w->ring, n);
        expire_timers(w);
        if (w->cache)
            rlb_proxy_cache_wake(w);
        rlb_upstream_adopt_health(w);
        const struct rlb_config *tls_next = atomic_exchange_explicit(&w->tls_reload, NULL, memory_order_acquire);
        if (tls_next != NULL)
            rlb_tls_worker_reload(w, tls_next);
        if (w->lb_refresh_ms && w->timers.now_ms >= w->lb_refresh_ms)
            rlb_upstream_refresh(w);
        /* Buffers given back during this turn count now: a starved
         * connection must not wait for an event that may never come. */
        rlb_bufs_publish(&w->bufs);
        rearm_starved(w);
        rearm_paused_accepts(w);
        if (w->draining) {
            if (w->live_clients == 0)
                return false;
            if (w->timers.now_ms >= w->drain_deadline_ms) {
                rlb_log_warn("worker %u: drain timeout, closing %u connections", w->id, w->live_clients);
                return false;
            }
        }
    }
    return true;
}

static void worker_teardown(struct rlb_worker *w);

static void run_loop(struct rlb_worker *w)
{
    for (uint32_t i = 0; i < w->cfg->num_listeners; i++)
        arm_accept(w, i);
    arm_wake(w);
    while (loop_turn(w, -1)) {
    }
}

int rlb_worker_start_inline(struct rlb_worker *w)
{
    for (uint32_t i = 0; i < RLB_ARRAY_SIZE(w->listeners); i++)
        w->listeners[i].fd = -1;
    w->wake_fd = -1;
    int rc = worker_setup(w);
    if (rc != 0)
        return rc;
    for (uint32_t i = 0; i < w->cfg->num_listeners; i++)
        arm_accept(w, i);
    return 0;
}

void rlb_worker_turn(struct rlb_worker *w, int wait_ms)
{
    loop_turn(w, wait_ms);
}

void rlb_worker_stop_inline(struct rlb_worker *w)
{
    worker_teardown(w);
}

static void worker_teardown(struct rlb_worker *w)
{
    if (w->conns) {
        rlb_proxy_abort_all(w);
        /* Let the ring finish what it holds before the buffers go. */
        if (w->ring_ready)
            for (int i = 0; i < 50 && w->live_conns; i++) {
                struct io_uring_cqe *cqe;
                struct __kernel_timespec ts = {.tv_sec = 0, .tv_nsec = 20000000};
                io_uring_submit_and_wait_timeout(&w->ring, &cqe, 1, &ts, NULL);
                unsigned head, n = 0;
                io_uring_for_each_cqe(&w->ring, head, cqe)
                {
                    handle_cqe(w, cqe);
                    n++;
                }
                io_uring_cq_advance(&w->ring, n);
            }
    }
    for (uint32_t i = 0; w->cfg && i < w->cfg->num_listeners; i++)
        if (w->listeners[i].fd >= 0)
            close(w->listeners[i].fd);
    rlb_proxy_destroy(w);
    rlb_upstream_destroy(w);
    if (w->cache) {
        rlb_cache_destroy(w->cache);
        free(w->cache);
        w->cache = NULL;
    }
    for (uint32_t i = 0; w->conns && i < w->slot_hwm; i++)
        rlb_tls_free(w, &w->conns[i]);
    rlb_tls_worker_destroy(w);
    rlb_conns_destroy(w);
    rlb_timers_destroy(&w->timers);
    free(w->starved);
    w->starved = NULL;
    rlb_bufs_destroy(&w->bufs, w->ring_ready ? &w->ring : NULL);
    struct rlb_outq *q;
    while ((q = w->outqs.free)) {
        w->outqs.free = q->next_free;
        free(q);
    }
    struct rlb_zc_hold *h;
    while ((h = w->outqs.free_holds)) {
        w->outqs.free_holds = h->next;
        free(h);
    }
    if (w->ring_ready)
        io_uring_queue_exit(&w->ring);
    w->ring_ready = false;
}

void *rlb_worker_main(void *arg)
{
    struct rlb_worker *w = arg;
    for (uint32_t i = 0; i < RLB_ARRAY_SIZE(w->listeners); i++)
        w->listeners[i].fd = -1;
    w->start_error = worker_setup(w);
    rlb_server_worker_ready(w);
    if (w->start_error == 0 && rlb_server_wait_go())
        run_loop(w);
    worker_teardown(w);
    return NULL;
}

void rlb_worker_wake(struct rlb_worker *w)
{
    uint64_t one = 1;
    ssize_t r = write(w->wake_fd, &one, sizeof(one));
    (void)r;
}

void rlb_worker_request_stop(struct rlb_worker *w)
{
    atomic_store_explicit(&w->stop, true, memory_order_release);
    rlb_worker_wake(w);
}
