#include <ringlb/config.h>
#include <ringlb/health.h>
#include <ringlb/cache.h>
#include <ringlb/health_board.h>
#include <ringlb/log.h>
#include <ringlb/server.h>
#include <ringlb/worker.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* Start-up handshake: workers report readiness, the main thread says go
 * (or no) once all have, so a port already in use fails the whole start. */
static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    uint32_t ready;
    int decision; /* 0 pending, 1 go, -1 abort */
} startup = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};

void rlb_server_worker_ready(struct rlb_worker *w)
{
    (void)w;
    pthread_mutex_lock(&startup.lock);
    startup.ready++;
    pthread_cond_broadcast(&startup.cond);
    pthread_mutex_unlock(&startup.lock);
}

bool rlb_server_wait_go(void)
{
    pthread_mutex_lock(&startup.lock);
    while (startup.decision == 0)
        pthread_cond_wait(&startup.cond, &startup.lock);
    bool go = startup.decision > 0;
    pthread_mutex_unlock(&startup.lock);
    return go;
}

static void decide(int decision)
{
    pthread_mutex_lock(&startup.lock);
    startup.decision = decision;
    pthread_cond_broadcast(&startup.cond);
    pthread_mutex_unlock(&startup.lock);
}

static int affinity_cpus(int *cpus, uint32_t max)
{
    cpu_set_t set;
    uint32_t n = 0;
    if (sched_getaffinity(0, sizeof(set), &set) < 0)
        return 0;
    for (int i = 0; i < CPU_SETSIZE && n < max; i++)
        if (CPU_ISSET(i, &set))
            cpus[n++] = i;
    return (int)n;
}

/* Sums the workers' counters. Workers write theirs without atomics; a
 * relaxed 64-bit load never sees a torn value, and a snapshot that is a
 * few events stale across workers is fine for statistics. */
static void sum_stats(const struct rlb_worker *workers, uint32_t n, struct rlb_worker_stats *out)
{
    memset(out, 0, sizeof(*out));
    uint64_t *dst = (uint64_t *)out;
    for (uint32_t i = 0; i < n; i++) {
        const uint64_t *src = (const uint64_t *)&workers[i].stats;
        for (size_t k = 0; k < sizeof(*out) / sizeof(uint64_t); k++)
            dst[k] += __atomic_load_n(&src[k], __ATOMIC_RELAXED);
    }
}

static void log_stats(const struct rlb_worker *workers, uint32_t n, const char *when)
{
    struct rlb_worker_stats s;
    sum_stats(workers, n, &s);
    rlb_log_info("stats (%s): accepted=%llu accept_errors=%llu requests=%llu responses_1xx=%llu 2xx=%llu 3xx=%llu 4xx=%llu 5xx=%llu "
                 "parse_errors=%llu upstream_connects=%llu upstream_connect_failures=%llu upstream_reused=%llu "
                 "upstream_retries=%llu retries_denied=%llu ejections=%llu failovers=%llu timeouts=%llu enobufs=%llu zc_sends=%llu splices=%llu shed=%llu ring_enters=%llu ring_sqes=%llu bytes_copied=%llu "
                 "tls_handshakes=%llu tls_resumed=%llu tls_handshake_failures=%llu ktls_tx=%llu ktls_rx=%llu ktls_fallbacks=%llu "
                 "cache_hits=%llu cache_misses=%llu cache_stale=%llu cache_revalidated=%llu cache_stored=%llu "
                 "cache_collapsed=%llu cache_background=%llu cache_bypass=%llu cache_purged=%llu cache_bytes=%llu cache_objects=%llu",
                 when, (unsigned long long)s.accepted, (unsigned long long)s.accept_errors, (unsigned long long)s.requests,
                 (unsigned long long)s.responses[1], (unsigned long long)s.responses[2],
                 (unsigned long long)s.responses[3], (unsigned long long)s.responses[4],
                 (unsigned long long)s.responses[5], (unsigned long long)s.parse_errors,
                 (unsigned long long)s.upstream_connects, (unsigned long long)s.upstream_connect_failures,
                 (unsigned long long)s.upstream_reused, (unsigned long long)s.upstream_retries,
                 (unsigned long long)s.retries_denied, (unsigned long long)s.ejections, (unsigned long long)s.failovers,
                 (unsigned long long)s.timeouts, (unsigned long long)s.enobufs, (unsigned long long)s.zc_sends, (unsigned long long)s.splices,
                 (unsigned long long)s.shed, (unsigned long long)s.ring.enters, (unsigned long long)s.ring.sqes,
                 (unsigned long long)s.bytes_copied, (unsigned long long)s.tls_handshakes,
                 (unsigned long long)s.tls_resumed, (unsigned long long)s.tls_handshake_failures,
                 (unsigned long long)s.ktls_tx, (unsigned long long)s.ktls_rx, (unsigned long long)s.ktls_fallbacks,
                 (unsigned long long)s.cache_hits, (unsigned long long)s.cache_misses,
                 (unsigned long long)s.cache_stale, (unsigned long long)s.cache_revalidated,
                 (unsigned long long)s.cache_stored, (unsigned long long)s.cache_collapsed, (unsigned long long)s.cache_background,
                 (unsigned long long)s.cache_bypass, (unsigned long long)s.cache_purged,
                 (unsigned long long)s.cache_bytes, (unsigned long long)s.cache_objects);
}

static void on_health_change(void *arg, uint32_t pool, uint32_t backend, bool up, const char *why)
{
    (void)why; /* the checker logs the transition itself */
    rlb_health_board_set(arg, pool, backend, !up);
}

uint32_t rlb_server_worker_count(const struct rlb_config *cfg)
{
    if (cfg->workers)
        return cfg->workers;
    if (cfg->num_cpus)
        return cfg->num_cpus;
    int cpus[RLB_CONFIG_MAX_CPUS];
    int n = affinity_cpus(cpus, RLB_CONFIG_MAX_CPUS);
    return n > 0 ? (uint32_t)n : 1;
}

/* Only TLS material changes without a restart: the new snapshot must have the same listeners and pools. */
static const char *tls_reload_blocker(const struct rlb_config *old, const struct rlb_config *new)
{
    if (old->num_listeners != new->num_listeners || old->num_pools != new->num_pools)
        return "the number of listeners or pools changed";
    for (uint32_t i = 0; i < old->num_listeners; i++)
        if (old->listeners[i].tls.enabled != new->listeners[i].tls.enabled ||
            strcmp(old->listeners[i].addr.text, new->listeners[i].addr.text) != 0)
            return "a listener's address or its use of TLS changed";
    for (uint32_t i = 0; i < old->num_pools; i++)
        if (old->pools[i].tls.enabled != new->pools[i].tls.enabled ||
            old->pools[i].num_backends != new->pools[i].num_backends)
            return "a pool's backends or its use of TLS changed";
    return NULL;
}

/* SIGHUP: validate the file again (a bad one changes nothing), then hand the new TLS material to every worker.
 * Returns the snapshot to keep until exit (the workers' new contexts point into it), or NULL. */
static struct rlb_config *reload_tls(const struct rlb_config *running, rlb_reload_fn reload, struct rlb_worker *workers,
                                     uint32_t n)
{
    if (reload == NULL) {
        rlb_log_info("SIGHUP: nothing to reload in this mode");
        return NULL;
    }
    char err[RLB_CONFIG_ERR_MAX];
    struct rlb_config *next = reload(err, sizeof(err));
    if (next == NULL) {
        rlb_log_error("SIGHUP: reload refused, the running configuration stays: %s", err);
        return NULL;
    }
    const char *blocker = tls_reload_blocker(running, next);
    if (blocker != NULL) {
        rlb_log_error("SIGHUP: reload refused (%s; that needs a restart), the running configuration stays", blocker);
        rlb_config_free(next);
        return NULL;
    }
    for (uint32_t i = 0; i < n; i++) {
        atomic_store_explicit(&workers[i].tls_reload, next, memory_order_release);
        rlb_worker_wake(&workers[i]);
    }
    rlb_log_info("SIGHUP: TLS certificates, keys and settings reloaded from %s (connections keep theirs until they "
                 "close; other changes take effect at restart)",
                 next->source);
    return next;
}

int rlb_server_run(const struct rlb_config *cfg, void (*on_ready)(const struct rlb_config *cfg, uint32_t workers),
                   rlb_reload_fn reload)
{
    uint32_t n = rlb_server_worker_count(cfg);
    int mask_cpus[RLB_CONFIG_MAX_CPUS];
    int num_mask = cfg->workers || cfg->num_cpus ? 0 : affinity_cpus(mask_cpus, RLB_CONFIG_MAX_CPUS);

    /* Signals are taken by this thread alone, with sigwait: workers never
     * see them, so no system call of theirs is interrupted. */
    sigset_t sigs, old;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    sigaddset(&sigs, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &sigs, &old);
    signal(SIGPIPE, SIG_IGN);

    struct rlb_worker *workers = aligned_alloc(RLB_CACHELINE, sizeof(*workers) * n);
    struct rlb_health_board board;
    /* Purges reach every worker through one log (see cache.h). */
    struct rlb_cache_purges *purges = cfg->cache.enabled ? rlb_cache_purges_new() : NULL;
    if (!workers || (cfg->cache.enabled && !purges) || rlb_health_board_init(&board, cfg) != 0) {
        rlb_cache_purges_free(purges);
        rlb_log_error("out of memory");
        free(workers);
        return 1;
    }
    memset(workers, 0, sizeof(*workers) * n);
    rlb_health_board_attach(&board, workers, n);
    uint32_t started = 0;
    int status = 0;
    struct rlb_config **reloaded = NULL; /* freed after the workers stop */
    uint32_t num_reloaded = 0;
    struct rlb_health_checker *checker = NULL;
    for (uint32_t i = 0; i < n; i++) {
        struct rlb_worker *w = &workers[i];
        w->id = i;
        w->cfg = cfg;
        w->health = &board;
        w->cache_purges = purges;
        /* Explicit cpus pin as listed; "auto" pins worker i to the i-th CPU
         * it may run on, so each core has exactly one worker. */
        w->cpu = cfg->num_cpus ? cfg->cpus[i % cfg->num_cpus] : (num_mask ? mask_cpus[i % (uint32_t)num_mask] : -1);
        w->wake_fd = eventfd(0, EFD_CLOEXEC);
        if (w->wake_fd < 0 || pthread_create(&w->thread, NULL, rlb_worker_main, w) != 0) {
            rlb_log_error("starting worker %u: %s", i, strerror(errno));
            status = 1;
            break;
        }
        started++;
    }
    pthread_mutex_lock(&startup.lock);
    while (startup.ready < started)
        pthread_cond_wait(&startup.cond, &startup.lock);
    pthread_mutex_unlock(&startup.lock);
    for (uint32_t i = 0; i < started; i++)
        if (workers[i].start_error) {
            rlb_log_error("%s", workers[i].start_msg);
            status = 1;
        }
    decide(status == 0 ? 1 : -1);

    if (status == 0) {
        for (uint32_t i = 0; i < cfg->num_listeners; i++)
            rlb_log_info("listening on %s (%s)", cfg->listeners[i].addr.text, cfg->listeners[i].name);
        rlb_log_info("ready: %u worker%s, io_uring %s", n, n == 1 ? "" : "s",
                     (workers[0].ring_flags & IORING_SETUP_DEFER_TASKRUN) ? "single-issuer, defer-taskrun"
                                                                          : "coop-taskrun");
        checker = rlb_health_start(cfg, on_health_change, &board);
        if (!checker && errno)
            rlb_log_error("health checks not started: %s", strerror(errno));
        if (on_ready)
            on_ready(cfg, n);
        for (;;) {
            int sig = 0;
            if (sigwait(&sigs, &sig) != 0)
                continue;
            if (sig == SIGUSR1) {
                log_stats(workers, started, "SIGUSR1");
                continue;
            }
            if (sig == SIGHUP) {
                struct rlb_config *next = reload_tls(cfg, reload, workers, started);
                if (next != NULL) {
                    struct rlb_config **grown = realloc(reloaded, (num_reloaded + 1) * sizeof(*grown));
                    if (grown != NULL) {
                        reloaded = grown;
                        reloaded[num_reloaded++] = next;
                    } /* else: kept alive by leaking it, as workers may point into it */
                }
                continue;
            }
            rlb_log_info("%s: stopping, requests in flight get %u ms", sig == SIGTERM ? "SIGTERM" : "SIGINT",
                         cfg->timeouts.drain);
            break;
        }
        rlb_health_stop(checker);
        for (uint32_t i = 0; i < started; i++)
            rlb_worker_request_stop(&workers[i]);
    }
    for (uint32_t i = 0; i < started; i++)
        pthread_join(workers[i].thread, NULL);
    rlb_health_board_destroy(&board);
    rlb_cache_purges_free(purges);
    for (uint32_t i = 0; i < n; i++)
        if (workers[i].wake_fd > 0)
            close(workers[i].wake_fd);
    if (status == 0)
        log_stats(workers, started, "at exit");
    for (uint32_t i = 0; i < num_reloaded; i++)
        rlb_config_free(reloaded[i]);
    free(reloaded);
    free(workers);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return status;
}
