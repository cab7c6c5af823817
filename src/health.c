#include <ringlb/health.h>
#include <ringlb/log.h>
#include <ringlb/timer.h>
#include <ringlb/tls.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* "HTTP/1.x NNN": all we need to judge a response. */
#define RLB_HC_STATUS_LINE 12

enum rlb_hc_state { RLB_HC_IDLE, RLB_HC_CONNECTING, RLB_HC_HANDSHAKE, RLB_HC_SENDING, RLB_HC_READING };

/* A pool's check with every default applied, so probes never test for zero. */
struct rlb_hc_settings {
    uint32_t interval_ms, timeout_ms, rise, fall;
    uint16_t status_min, status_max;
};

/* One per backend, allocated at start and reused by every probe of it. */
struct rlb_hc_probe {
    uint32_t pool, backend;
    const struct rlb_hc_settings *set;
    const struct rlb_sockaddr *addr;
    char *req;
    size_t req_len, sent;
    int fd;
    SSL *ssl;             /* TLS pools: the probe speaks TLS over <fd> */
    bool want_write;      /* TLS: what BoringSSL waits for */
    enum rlb_hc_state state;
    uint64_t next_ms;     /* IDLE: when the next probe starts */
    uint64_t deadline_ms; /* otherwise: when this one times out */
    bool down;
    uint32_t streak;      /* results in a row that disagree with <down> */
    size_t got;
    char resp[RLB_HC_STATUS_LINE];
};

struct rlb_health_checker {
    const struct rlb_config *cfg;
    rlb_health_change_fn fn;
    void *arg;
    pthread_t thread;
    int stop_fd;
    struct rlb_hc_settings *sets; /* one per pool */
    SSL_CTX **tls;                /* one per pool; NULL for plain pools */
    struct rlb_hc_probe *probes;
    uint32_t num_probes;
    struct pollfd *pfds;          /* pfds[0] is stop_fd; pfds[i] belongs to probes[pfd_probe[i]] */
    uint32_t *pfd_probe;
    char why[96];                 /* scratch for reasons; only the checker thread writes it */
};

static void rlb_hc_settings_init(struct rlb_hc_settings *s, const struct rlb_health_check_cfg *c)
{
    s->interval_ms = c->interval_ms ? c->interval_ms : 2000;
    s->timeout_ms = c->timeout_ms ? c->timeout_ms : 1000;
    s->rise = c->rise ? c->rise : 2;
    s->fall = c->fall ? c->fall : 3;
    s->status_min = c->status_min ? c->status_min : 200;
    s->status_max = c->status_max ? c->status_max : 399;
}

static void rlb_hc_report(struct rlb_health_checker *hc, struct rlb_hc_probe *p, const char *why)
{
    const char *name = hc->cfg->pools[p->pool].name;
    if (p->down)
        rlb_log_warn("health: pool %s backend %s is DOWN (%s)", name ? name : "-", p->addr->text, why);
    else
        rlb_log_info("health: pool %s backend %s is UP (%s)", name ? name : "-", p->addr->text, why);
    hc->fn(hc->arg, p->pool, p->backend, !p->down, why);
}

/* Ends the probe in flight and applies rise/fall: a single result that
 * disagrees with the current state only counts towards a transition. */
static void rlb_hc_finish(struct rlb_health_checker *hc, struct rlb_hc_probe *p, bool ok, const char *why)
{
    SSL_free(p->ssl);
    p->ssl = NULL;
    if (p->fd >= 0)
        close(p->fd);
    p->fd = -1;
    p->state = RLB_HC_IDLE;
    if (ok != p->down) {
        p->streak = 0;
        return;
    }
    if (++p->streak < (ok ? p->set->rise : p->set->fall))
        return;
    p->streak = 0;
    p->down = !ok;
    rlb_hc_report(hc, p, why);
}

static void rlb_hc_fail_errno(struct rlb_health_checker *hc, struct rlb_hc_probe *p, int err)
{
    const char *why = err == ECONNREFUSED ? "connection refused" : strerror_r(err, hc->why, sizeof(hc->why));
    rlb_hc_finish(hc, p, false, why);
}

static void rlb_hc_begin(struct rlb_health_checker *hc, struct rlb_hc_probe *p, uint64_t now)
{
    /* Fixed cadence from the start of each probe; a probe slower than the
     * interval is simply followed by the next one at once. */
    p->next_ms = now + p->set->interval_ms;
    p->deadline_ms = now + p->set->timeout_ms;
    p->sent = p->got = 0;
    p->fd = socket(p->addr->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (p->fd < 0) {
        rlb_hc_fail_errno(hc, p, errno);
        return;
    }
    SSL_CTX *tls = hc->tls[p->pool];
    if (tls != NULL) {
        const struct rlb_pool_cfg *pool = &hc->cfg->pools[p->pool];
        p->ssl = SSL_new(tls);
        if (p->ssl == NULL || !SSL_set_fd(p->ssl, p->fd) ||
            rlb_tls_client_setup(p->ssl, pool, &pool->backends[p->backend]) != 0) {
            ERR_clear_error();
            rlb_hc_finish(hc, p, false, "out of memory");
            return;
        }
        p->want_write = true;
    }
    if (connect(p->fd, (const struct sockaddr *)&p->addr->ss, p->addr->len) == 0)
        p->state = p->ssl ? RLB_HC_HANDSHAKE : RLB_HC_SENDING;
    else if (errno == EINPROGRESS)
        p->state = RLB_HC_CONNECTING;
    else
        rlb_hc_fail_errno(hc, p, errno);
}

static void rlb_hc_judge(struct rlb_health_checker *hc, struct rlb_hc_probe *p)
{
    const char *r = p->resp;
    if (memcmp(r, "HTTP/1.", 7) != 0 || r[7] < '0' || r[7] > '9' || r[8] != ' ' || r[9] < '1' || r[9] > '9' ||
        r[10] < '0' || r[10] > '9' || r[11] < '0' || r[11] > '9') {
        rlb_hc_finish(hc, p, false, "bad response");
        return;
    }
    unsigned status = (unsigned)(r[9] - '0') * 100 + (unsigned)(r[10] - '0') * 10 + (unsigned)(r[11] - '0');
    snprintf(hc->why, sizeof(hc->why), "status %u", status);
    rlb_hc_finish(hc, p, status >= p->set->status_min && status <= p->set->status_max, hc->why);
}

/* A TLS call that did not complete: waiting is fine, anything else ends the probe. */
static bool rlb_hc_tls_wait(struct rlb_health_checker *hc, struct rlb_hc_probe *p, int r, const char *what)
{
    int e = SSL_get_error(p->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        p->want_write = e == SSL_ERROR_WANT_WRITE;
        return true;
    }
    uint32_t code = ERR_get_error();
    char reason[80] = "connection closed";
    if (code != 0)
        ERR_error_string_n(code, reason, sizeof(reason));
    ERR_clear_error();
    snprintf(hc->why, sizeof(hc->why), "%s: %s", what, reason);
    rlb_hc_finish(hc, p, false, hc->why);
    return false;
}

static void rlb_hc_tls_io(struct rlb_health_checker *hc, struct rlb_hc_probe *p)
{
    if (p->state == RLB_HC_HANDSHAKE) {
        int r = SSL_do_handshake(p->ssl);
        if (r != 1) {
            rlb_hc_tls_wait(hc, p, r, "TLS handshake");
            return;
        }
        p->state = RLB_HC_SENDING;
    }
    if (p->state == RLB_HC_SENDING) {
        int r = SSL_write(p->ssl, p->req + p->sent, (int)(p->req_len - p->sent));
        if (r <= 0) {
            rlb_hc_tls_wait(hc, p, r, "TLS");
            return;
        }
        p->sent += (size_t)r;
        if (p->sent < p->req_len)
            return;
        p->state = RLB_HC_READING;
        p->want_write = false;
    }
    while (p->got < sizeof(p->resp)) {
        int r = SSL_read(p->ssl, p->resp + p->got, (int)(sizeof(p->resp) - p->got));
        if (r <= 0) {
            if (SSL_get_error(p->ssl, r) == SSL_ERROR_ZERO_RETURN) {
                rlb_hc_finish(hc, p, false, "bad response");
                return;
            }
            rlb_hc_tls_wait(hc, p, r, "TLS");
            return;
        }
        p->got += (size_t)r;
        if (memcmp(p->resp, "HTTP/1.", p->got < 7 ? p->got : 7) != 0) {
            rlb_hc_finish(hc, p, false, "bad response");
            return;
        }
    }
    rlb_hc_judge(hc, p);
}

static void rlb_hc_io(struct rlb_health_checker *hc, struct rlb_hc_probe *p)
{
    if (p->state == RLB_HC_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err) {
            rlb_hc_fail_errno(hc, p, err);
            return;
        }
        p->state = p->ssl ? RLB_HC_HANDSHAKE : RLB_HC_SENDING;
    }
    if (p->ssl) {
        rlb_hc_tls_io(hc, p);
        return;
    }
    if (p->state == RLB_HC_SENDING) {
        ssize_t n = send(p->fd, p->req + p->sent, p->req_len - p->sent, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno != EAGAIN && errno != EINTR)
                rlb_hc_fail_errno(hc, p, errno);
            return;
        }
        p->sent += (size_t)n;
        if (p->sent == p->req_len)
            p->state = RLB_HC_READING;
        return;
    }
    /* Only the status line is read; closing with the rest unread resets the
     * connection, which spares the checker a TIME_WAIT per probe. */
    ssize_t n = recv(p->fd, p->resp + p->got, sizeof(p->resp) - p->got, 0);
    if (n < 0) {
        if (errno != EAGAIN && errno != EINTR)
            rlb_hc_fail_errno(hc, p, errno);
        return;
    }
    if (n == 0) {
        rlb_hc_finish(hc, p, false, "bad response");
        return;
    }
    p->got += (size_t)n;
    if (memcmp(p->resp, "HTTP/1.", p->got < 7 ? p->got : 7) != 0)
        rlb_hc_finish(hc, p, false, "bad response");
    else if (p->got == sizeof(p->resp))
        rlb_hc_judge(hc, p);
}

static void *rlb_hc_main(void *arg)
{
    struct rlb_health_checker *hc = arg;
    for (;;) {
        uint64_t now = rlb_now_ms();
        int64_t wait = -1;
        nfds_t nfds = 1;
        for (uint32_t i = 0; i < hc->num_probes; i++) {
            struct rlb_hc_probe *p = &hc->probes[i];
            if (p->state != RLB_HC_IDLE && now >= p->deadline_ms)
                rlb_hc_finish(hc, p, false, "timeout");
            if (p->state == RLB_HC_IDLE && now >= p->next_ms)
                rlb_hc_begin(hc, p, now);
            uint64_t until = p->state == RLB_HC_IDLE ? p->next_ms : p->deadline_ms;
            if (wait < 0 || (int64_t)(until - now) < wait)
                wait = (int64_t)(until - now);
            if (p->state == RLB_HC_IDLE)
                continue;
            bool out = p->ssl && p->state != RLB_HC_CONNECTING ? p->want_write : p->state != RLB_HC_READING;
            hc->pfds[nfds] = (struct pollfd){.fd = p->fd, .events = out ? POLLOUT : POLLIN};
            hc->pfd_probe[nfds++] = i;
        }
        int n = poll(hc->pfds, nfds, wait > INT_MAX ? INT_MAX : (int)wait);
        if (n < 0 && errno != EINTR) {
            rlb_log_warn("health: poll: %s; checks stopped", strerror_r(errno, hc->why, sizeof(hc->why)));
            return NULL;
        }
        if (n > 0 && hc->pfds[0].revents)
            return NULL;
        for (nfds_t k = 1; n > 0 && k < nfds; k++)
            if (hc->pfds[k].revents)
                rlb_hc_io(hc, &hc->probes[hc->pfd_probe[k]]);
    }
}

static void rlb_hc_free(struct rlb_health_checker *hc)
{
    for (uint32_t i = 0; hc->probes && i < hc->num_probes; i++) {
        SSL_free(hc->probes[i].ssl);
        if (hc->probes[i].fd >= 0)
            close(hc->probes[i].fd);
        free(hc->probes[i].req);
    }
    for (uint32_t i = 0; hc->tls && i < hc->cfg->num_pools; i++)
        SSL_CTX_free(hc->tls[i]);
    free(hc->tls);
    if (hc->stop_fd >= 0)
        close(hc->stop_fd);
    free(hc->probes);
    free(hc->sets);
    free(hc->pfds);
    free(hc->pfd_probe);
    free(hc);
}

static int rlb_hc_init_probes(struct rlb_health_checker *hc)
{
    const struct rlb_config *cfg = hc->cfg;
    uint64_t now = rlb_now_ms();
    uint32_t k = 0;
    for (uint32_t pi = 0; pi < cfg->num_pools; pi++) {
        const struct rlb_pool_cfg *pool = &cfg->pools[pi];
        if (!pool->check.enabled)
            continue;
        struct rlb_hc_settings *set = &hc->sets[pi];
        rlb_hc_settings_init(set, &pool->check);
        for (uint32_t bi = 0; bi < pool->num_backends; bi++) {
            struct rlb_hc_probe *p = &hc->probes[k++];
            p->pool = pi;
            p->backend = bi;
            p->set = set;
            p->addr = &pool->backends[bi].addr;
            /* Spread over one interval so a large pool is not probed in bursts. */
            p->next_ms = now + (uint64_t)set->interval_ms * bi / pool->num_backends;
            int len = asprintf(&p->req,
                               "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: ringlb-health-check\r\n"
                               "Connection: close\r\n\r\n",
                               pool->check.method ? pool->check.method : "GET",
                               pool->check.path ? pool->check.path : "/",
                               pool->check.host ? pool->check.host : p->addr->text);
            if (len < 0) {
                p->req = NULL;
                return -1;
            }
            p->req_len = (size_t)len;
        }
    }
    return 0;
}

struct rlb_health_checker *rlb_health_start(const struct rlb_config *cfg, rlb_health_change_fn fn, void *arg)
{
    uint32_t num = 0;
    for (uint32_t i = 0; i < cfg->num_pools; i++)
        if (cfg->pools[i].check.enabled)
            num += cfg->pools[i].num_backends;
    if (num == 0) {
        errno = 0;
        return NULL;
    }
    struct rlb_health_checker *hc = calloc(1, sizeof(*hc));
    if (!hc)
        return NULL;
    *hc = (struct rlb_health_checker){.cfg = cfg, .fn = fn, .arg = arg, .num_probes = num, .stop_fd = -1};
    hc->sets = calloc(cfg->num_pools, sizeof(*hc->sets));
    hc->tls = calloc(cfg->num_pools, sizeof(*hc->tls));
    hc->probes = calloc(num, sizeof(*hc->probes));
    hc->pfds = calloc(num + 1, sizeof(*hc->pfds));
    hc->pfd_probe = calloc(num + 1, sizeof(*hc->pfd_probe));
    int err = ENOMEM;
    if (!hc->sets || !hc->tls || !hc->probes || !hc->pfds || !hc->pfd_probe)
        goto fail;
    for (uint32_t i = 0; i < cfg->num_pools; i++) {
        if (!cfg->pools[i].check.enabled || !cfg->pools[i].tls.enabled)
            continue;
        char msg[256];
        if ((hc->tls[i] = rlb_tls_client_ctx_new(&cfg->pools[i], msg, sizeof(msg))) == NULL) {
            rlb_log_error("health: pool %s: %s", cfg->pools[i].name, msg);
            goto fail;
        }
    }
    for (uint32_t i = 0; i < num; i++)
        hc->probes[i].fd = -1;
    if (rlb_hc_init_probes(hc) < 0)
        goto fail;
    hc->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (hc->stop_fd < 0) {
        err = errno;
        goto fail;
    }
    hc->pfds[0] = (struct pollfd){.fd = hc->stop_fd, .events = POLLIN};

    /* The checker takes no process signal: whoever handles them stays in charge. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    err = pthread_create(&hc->thread, NULL, rlb_hc_main, hc);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err)
        goto fail;
    return hc;

fail:
    rlb_hc_free(hc);
    errno = err;
    return NULL;
}

void rlb_health_stop(struct rlb_health_checker *hc)
{
    if (!hc)
        return;
    uint64_t one = 1;
    ssize_t w = write(hc->stop_fd, &one, sizeof(one));
    (void)w;
    pthread_join(hc->thread, NULL);
    rlb_hc_free(hc);
}
