#include <ringlb/conn.h>
#include <ringlb/lb.h>
#include <ringlb/ring.h>
#include <ringlb/timer.h>
#include <ringlb/upstream.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int rlb_upstream_init(struct rlb_worker *w)
{
    const struct rlb_config *cfg = w->cfg;
    w->pools = calloc(cfg->num_pools, sizeof(*w->pools));
    if (!w->pools)
        return -ENOMEM;
    for (uint32_t p = 0; p < cfg->num_pools; p++) {
        struct rlb_pool_state *ps = &w->pools[p];
        int rc = rlb_lb_init(&ps->lb, &cfg->pools[p], NULL);
        if (rc < 0)
            return rc;
        ps->backends = calloc(cfg->pools[p].num_backends, sizeof(*ps->backends));
        if (!ps->backends)
            return -ENOMEM;
        for (uint32_t b = 0; b < cfg->pools[p].num_backends; b++)
            ps->backends[b].idle_head = RLB_SLOT_NONE;
    }
    return 0;
}

void rlb_upstream_destroy(struct rlb_worker *w)
{
    if (!w->pools)
        return;
    for (uint32_t p = 0; p < w->cfg->num_pools; p++) {
        rlb_lb_destroy(&w->pools[p].lb);
        free(w->pools[p].backends);
    }
    free(w->pools);
    w->pools = NULL;
}

static struct rlb_backend_state *backend_of(struct rlb_worker *w, const struct rlb_conn *u)
{
    return &w->pools[u->pool].backends[u->backend];
}

void rlb_upstream_unpark(struct rlb_worker *w, struct rlb_conn *u)
{
    struct rlb_backend_state *bs = backend_of(w, u);
    uint32_t s = rlb_conn_slot(w, u);
    if (u->idle_prev != RLB_SLOT_NONE)
        w->conns[u->idle_prev].idle_next = u->idle_next;
    else if (bs->idle_head == s)
        bs->idle_head = u->idle_next;
    else
        return; /* not parked */
    if (u->idle_next != RLB_SLOT_NONE)
        w->conns[u->idle_next].idle_prev = u->idle_prev;
    u->idle_prev = u->idle_next = RLB_SLOT_NONE;
    bs->idle_count--;
    rlb_timer_cancel(&w->timers, w->conns, s);
}

struct rlb_conn *rlb_upstream_take_idle(struct rlb_worker *w, uint32_t pool, uint32_t backend)
{
    struct rlb_backend_state *bs = &w->pools[pool].backends[backend];
    if (bs->idle_head == RLB_SLOT_NONE)
        return NULL;
    struct rlb_conn *u = &w->conns[bs->idle_head];
    rlb_upstream_unpark(w, u);
    u->state = RLB_US_ACTIVE;
    u->flags |= RLB_CF_REUSED;
    return u;
}

bool rlb_upstream_park(struct rlb_worker *w, struct rlb_conn *u)
{
    const struct rlb_pool_cfg *pc = &w->cfg->pools[u->pool];
    struct rlb_backend_state *bs = backend_of(w, u);
    if (w->draining || bs->idle_count >= pc->keepalive_max_idle || (u->flags & RLB_CF_EOF) || u->inq_bytes)
        return false;
    uint32_t s = rlb_conn_slot(w, u);
    u->state = RLB_US_IDLE;
    u->peer = RLB_SLOT_NONE;
    u->idle_prev = RLB_SLOT_NONE;
    u->idle_next = bs->idle_head;
    if (bs->idle_head != RLB_SLOT_NONE)
        w->conns[bs->idle_head].idle_prev = s;
    bs->idle_head = s;
    bs->idle_count++;
    rlb_timer_arm(&w->timers, w->conns, s, RLB_TIMER_POOL_IDLE + u->pool);
    /* The recv stays posted: it is how a backend closing an idle
     * connection is noticed before a request is sent on it. */
    rlb_conn_arm_recv(w, u);
    return true;
}

struct rlb_conn *rlb_upstream_connect(struct rlb_worker *w, uint32_t pool, uint32_t backend)
{
    const struct rlb_backend_cfg *be = &w->cfg->pools[pool].backends[backend];
    int fd = socket(be->addr.ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return NULL;
    struct rlb_conn *u = rlb_conn_alloc(w, RLB_CONN_UPSTREAM, fd);
    if (!u) {
        close(fd);
        errno = EMFILE;
        return NULL;
    }
    u->state = RLB_US_CONNECTING;
    u->pool = (uint16_t)pool;
    u->backend = (uint16_t)backend;
    rlb_conn_set_nodelay(u);
    struct io_uring_sqe *sqe = rlb_ring_sqe(&w->ring, &w->stats.ring);
    io_uring_prep_connect(sqe, fd, (const struct sockaddr *)&be->addr.ss, be->addr.len);
    io_uring_sqe_set_data64(sqe, rlb_ud(RLB_OP_CONNECT, rlb_conn_slot(w, u), u->gen));
    u->ops++;
    rlb_timer_arm(&w->timers, w->conns, rlb_conn_slot(w, u), RLB_TIMER_UPSTREAM_CONNECT);
    w->stats.upstream_connects++;
    return u;
}

void rlb_upstream_close_idle(struct rlb_worker *w)
{
    for (uint32_t p = 0; p < w->cfg->num_pools; p++)
        for (uint32_t b = 0; b < w->cfg->pools[p].num_backends; b++) {
            struct rlb_backend_state *bs = &w->pools[p].backends[b];
            while (bs->idle_head != RLB_SLOT_NONE) {
                struct rlb_conn *u = &w->conns[bs->idle_head];
                rlb_upstream_unpark(w, u);
                rlb_conn_close(w, u, false);
            }
        }
}
