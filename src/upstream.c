#include <ringlb/conn.h>
#include <ringlb/health_board.h>
#include <ringlb/log.h>
#include <ringlb/lb.h>
#include <ringlb/ring.h>
#include <ringlb/timer.h>
#include <ringlb/upstream.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int64_t budget_cap(const struct rlb_pool_cfg *pc)
{
    return 1000 * (int64_t)(pc->retry.budget_min > 10 ? pc->retry.budget_min : 10);
}

int rlb_upstream_init(struct rlb_worker *w)
{
    const struct rlb_config *cfg = w->cfg;
    w->pools = calloc(cfg->num_pools, sizeof(*w->pools));
    if (!w->pools)
        return -ENOMEM;
    uint64_t gen = w->health ? atomic_load_explicit(&w->health->generation, memory_order_acquire) : 0;
    for (uint32_t p = 0; p < cfg->num_pools; p++) {
        struct rlb_pool_state *ps = &w->pools[p];
        const struct rlb_maglev *table =
            w->health ? atomic_load_explicit(&w->health->tables[p], memory_order_acquire) : NULL;
        int rc = rlb_lb_init(&ps->lb, &cfg->pools[p], table);
        if (rc < 0)
            return rc;
        ps->backends = calloc(cfg->pools[p].num_backends, sizeof(*ps->backends));
        if (!ps->backends)
            return -ENOMEM;
        for (uint32_t b = 0; b < cfg->pools[p].num_backends; b++)
            ps->backends[b].idle_head = RLB_SLOT_NONE;
        ps->retry_tokens = budget_cap(&cfg->pools[p]);
        ps->retry_refill_ms = w->timers.now_ms;
    }
    atomic_store_explicit(&w->health_seen, gen, memory_order_release);
    rlb_upstream_refresh(w);
    return 0;
}

/* ---------------------------------------------------------------------------------------------------------------
 * Availability: what the balancer may pick, from the checker's verdicts, this
 * worker's own ejections, slow start and zones.
 */

static void close_idle_of(struct rlb_worker *w, struct rlb_backend_state *bs)
{
    while (bs->idle_head != RLB_SLOT_NONE) {
        struct rlb_conn *u = &w->conns[bs->idle_head];
        rlb_upstream_unpark(w, u);
        rlb_conn_close(w, u, false);
    }
}

static void soonest(uint64_t *next, uint64_t t)
{
    if (*next == 0 || t < *next)
        *next = t;
}

/* Effective weights of one pool; <ignore> relaxes the rules when nothing
 * would be left (1: ignore this worker's ejections, 2: ignore health too). */
static bool weigh_pool(struct rlb_worker *w, uint32_t p, int ignore, uint64_t *next)
{
    const struct rlb_pool_cfg *pc = &w->cfg->pools[p];
    struct rlb_pool_state *ps = &w->pools[p];
    uint64_t now = w->timers.now_ms;
    bool local_alive = false, any = false;
    for (uint32_t b = 0; b < pc->num_backends; b++) {
        struct rlb_backend_state *bs = &ps->backends[b];
        bool ejected = bs->ejected_until_ms > now;
        bool eligible = (ignore >= 2 || !bs->down) && (ignore >= 1 || !ejected);
        /* In hundredths, so that a ramp is smooth even for weight 1. */
        uint32_t weight = pc->backends[b].weight * 100;
        if (eligible && pc->slow_start_ms && bs->up_since_ms) {
            uint64_t elapsed = now - bs->up_since_ms;
            if (elapsed < pc->slow_start_ms) {
                /* From 10% to full, so a cold backend is warmed, not idle. */
                uint64_t pct = 10 + 90 * elapsed / pc->slow_start_ms;
                weight = (uint32_t)((uint64_t)weight * pct / 100);
                if (weight == 0)
                    weight = 1;
                uint64_t step = pc->slow_start_ms / 20 > 50 ? pc->slow_start_ms / 20 : 50;
                soonest(next, now + step);
            } else {
                bs->up_since_ms = 0;
            }
        }
        ps->lb.be[b].weight = eligible ? weight : 0;
        any |= eligible;
        if (eligible && pc->local_zone && pc->backends[b].zone && strcmp(pc->backends[b].zone, pc->local_zone) == 0)
            local_alive = true;
    }
    /* Prefer the local zone while it has anyone healthy; spill over only by health. */
    if (local_alive)
        for (uint32_t b = 0; b < pc->num_backends; b++)
            if (!pc->backends[b].zone || strcmp(pc->backends[b].zone, pc->local_zone) != 0)
                ps->lb.be[b].weight = 0;
    return any;
}

void rlb_upstream_refresh(struct rlb_worker *w)
{
    const struct rlb_config *cfg = w->cfg;
    uint64_t now = w->timers.now_ms, next = 0;
    for (uint32_t p = 0; p < cfg->num_pools; p++) {
        struct rlb_pool_state *ps = &w->pools[p];
        for (uint32_t b = 0; b < cfg->pools[p].num_backends; b++) {
            struct rlb_backend_state *bs = &ps->backends[b];
            bool down = w->health && rlb_health_board_down(w->health, p, b);
            if (down && !bs->down)
                close_idle_of(w, bs);
            if (!down && bs->down)
                bs->up_since_ms = now;
            bs->down = down;
            if (bs->ejected_until_ms > now) {
                soonest(&next, bs->ejected_until_ms);
            } else if (bs->ejected_until_ms) {
                bs->ejected_until_ms = 0; /* tried again, ramped in like a revived one */
                bs->up_since_ms = now;
            }
        }
        ps->usable = weigh_pool(w, p, 0, &next);
    }
    /* A pool with nobody left and no backup tier able to serve does not
     * answer 503 while its backends may still be reachable: this worker's
     * ejections are ignored first, then the checker's verdicts (panic). */
    for (uint32_t p = 0; p < cfg->num_pools; p++) {
        if (w->pools[p].usable)
            continue;
        bool backup = false;
        for (uint32_t i = 0; i < cfg->pools[p].num_backups; i++)
            backup |= w->pools[cfg->pools[p].backups[i]].usable;
        if (!backup && !weigh_pool(w, p, 1, &next))
            weigh_pool(w, p, 2, &next);
    }
    for (uint32_t p = 0; p < cfg->num_pools; p++)
        rlb_lb_update(&w->pools[p].lb);
    w->lb_refresh_ms = next;
}

void rlb_upstream_adopt_health(struct rlb_worker *w)
{
    if (!w->health)
        return;
    uint64_t gen = atomic_load_explicit(&w->health->generation, memory_order_acquire);
    if (gen == atomic_load_explicit(&w->health_seen, memory_order_relaxed))
        return;
    for (uint32_t p = 0; p < w->cfg->num_pools; p++) {
        const struct rlb_maglev *t = atomic_load_explicit(&w->health->tables[p], memory_order_acquire);
        if (t)
            w->pools[p].lb.table = t;
    }
    rlb_upstream_refresh(w);
    /* From here on no pointer to an older table is held. */
    atomic_store_explicit(&w->health_seen, gen, memory_order_release);
}

void rlb_upstream_report(struct rlb_worker *w, uint32_t pool, uint32_t backend, enum rlb_upstream_outcome outcome)
{
    const struct rlb_pool_cfg *pc = &w->cfg->pools[pool];
    struct rlb_backend_state *bs = &w->pools[pool].backends[backend];
    if (outcome == RLB_UPSTREAM_OK) {
        bs->consecutive_5xx = 0;
        bs->ejections = 0;
        return;
    }
    if (outcome == RLB_UPSTREAM_5XX) {
        if (!pc->passive.consecutive_5xx || ++bs->consecutive_5xx < pc->passive.consecutive_5xx)
            return;
        bs->consecutive_5xx = 0;
    }
    if (bs->ejected_until_ms > w->timers.now_ms)
        return; /* requests already on their way when it was ejected */
    uint32_t shift = bs->ejections < 16 ? bs->ejections : 16;
    uint64_t ms = (uint64_t)pc->passive.eject_ms << shift;
    if (ms > pc->passive.eject_max_ms)
        ms = pc->passive.eject_max_ms;
    bs->ejections++;
    bs->ejected_until_ms = w->timers.now_ms + ms;
    w->stats.ejections++;
    rlb_log_warn("worker %u: backend %s of pool %s ejected for %llu ms (%s)", w->id, pc->backends[backend].addr.text,
                 pc->name, (unsigned long long)ms,
                 outcome == RLB_UPSTREAM_5XX ? "consecutive 5xx" : "connect failure, reset or timeout");
    close_idle_of(w, bs);
    rlb_upstream_refresh(w);
}

void rlb_upstream_busy(struct rlb_worker *w, struct rlb_conn *u)
{
    if (u->flags & RLB_CF_INFLIGHT)
        return;
    u->flags |= RLB_CF_INFLIGHT;
    w->pools[u->pool].lb.be[u->backend].inflight++;
}

void rlb_upstream_done(struct rlb_worker *w, struct rlb_conn *u)
{
    if (!(u->flags & RLB_CF_INFLIGHT))
        return;
    u->flags &= (uint16_t)~RLB_CF_INFLIGHT;
    w->pools[u->pool].lb.be[u->backend].inflight--;
}

void rlb_upstream_count_request(struct rlb_worker *w, uint32_t pool)
{
    struct rlb_pool_state *ps = &w->pools[pool];
    const struct rlb_pool_cfg *pc = &w->cfg->pools[pool];
    int64_t cap = budget_cap(pc);
    ps->retry_tokens += 10 * (int64_t)pc->retry.budget_percent;
    if (ps->retry_tokens > cap)
        ps->retry_tokens = cap;
}

bool rlb_upstream_retry_allowed(struct rlb_worker *w, uint32_t pool)
{
    struct rlb_pool_state *ps = &w->pools[pool];
    const struct rlb_pool_cfg *pc = &w->cfg->pools[pool];
    uint64_t now = w->timers.now_ms;
    if (now > ps->retry_refill_ms) {
        ps->retry_tokens += (int64_t)pc->retry.budget_min * (int64_t)(now - ps->retry_refill_ms);
        ps->retry_refill_ms = now;
        if (ps->retry_tokens > budget_cap(pc))
            ps->retry_tokens = budget_cap(pc);
    }
    if (ps->retry_tokens < 1000) {
        w->stats.retries_denied++;
        return false;
    }
    ps->retry_tokens -= 1000;
    return true;
}

uint32_t rlb_upstream_tier(const struct rlb_worker *w, uint32_t pool, uint32_t after)
{
    const struct rlb_pool_cfg *pc = &w->cfg->pools[pool];
    bool passed = after == UINT32_MAX;
    if (passed && w->pools[pool].usable)
        return pool;
    if (after == pool)
        passed = true;
    for (uint32_t i = 0; i < pc->num_backups; i++) {
        uint32_t b = pc->backups[i];
        if (passed && w->pools[b].usable)
            return b;
        if (b == after)
            passed = true;
    }
    return UINT32_MAX;
}

void rlb_upstream_destroy(struct rlb_worker *w)
{
    if (!w->pools)
        return;
    for (uint32_t p = 0; p < w->cfg->num_pools; p++) {
        /* Every connection is closed by now: a count left over would mean
         * least_conn and p2c had been steering by a wrong picture. */
        for (uint32_t b = 0; w->pools[p].lb.be && b < w->pools[p].lb.num_backends; b++)
            RLB_BUG_ON(w->pools[p].lb.be[b].inflight != 0);
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
        for (uint32_t b = 0; b < w->cfg->pools[p].num_backends; b++)
            close_idle_of(w, &w->pools[p].backends[b]);
}
