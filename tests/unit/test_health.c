#include <criterion/criterion.h>
#include <dirent.h>
#include <ringlb/config.h>
#include <ringlb/health.h>
#include <ringlb/log.h>
#include <ringlb/timer.h>

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

/* A backend stand-in whose behaviour the test switches while the checker runs. */
enum mode { MODE_OK, MODE_503, MODE_SILENT };

struct server {
    int listen_fd, stop_fd;
    uint16_t port;
    pthread_t thread;
    _Atomic int mode;
    _Atomic int served_ok, served_503, accepted;
    int silent[64]; /* connections held open, never answered */
    int num_silent;
    pthread_mutex_t mu;
    char last_req[512];
};

static void serve_one(struct server *s, int fd)
{
    int mode = atomic_load(&s->mode);
    if (mode == MODE_SILENT && s->num_silent < (int)RLB_ARRAY_SIZE(s->silent)) {
        s->silent[s->num_silent++] = fd;
        return;
    }
    char req[512];
    size_t got = 0;
    struct timeval tv = {.tv_usec = 500 * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    while (got < sizeof(req) - 1) {
        ssize_t n = recv(fd, req + got, sizeof(req) - 1 - got, 0);
        if (n <= 0)
            break;
        got += (size_t)n;
        req[got] = '\0';
        if (strstr(req, "\r\n\r\n"))
            break;
    }
    req[got] = '\0';
    pthread_mutex_lock(&s->mu);
    memcpy(s->last_req, req, got + 1);
    pthread_mutex_unlock(&s->mu);
    /* Counted before answering, so a callback that follows the answer sees it. */
    const char *resp;
    if (mode == MODE_503) {
        atomic_fetch_add(&s->served_503, 1);
        resp = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    } else {
        atomic_fetch_add(&s->served_ok, 1);
        resp = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    }
    ssize_t w = send(fd, resp, strlen(resp), MSG_NOSIGNAL);
    (void)w;
    close(fd);
}

static void *server_main(void *arg)
{
    struct server *s = arg;
    for (;;) {
        struct pollfd pfd[2] = {{.fd = s->listen_fd, .events = POLLIN}, {.fd = s->stop_fd, .events = POLLIN}};
        if (poll(pfd, 2, -1) < 0 && errno != EINTR)
            return NULL;
        if (pfd[1].revents)
            return NULL;
        if (pfd[0].revents) {
            int fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC);
            if (fd >= 0) {
                atomic_fetch_add(&s->accepted, 1);
                serve_one(s, fd);
            }
        }
    }
}

static int listen_any(uint16_t *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert(fd >= 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sin);
    cr_assert_eq(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    *port = ntohs(sin.sin_port);
    return fd;
}

static void server_start(struct server *s, enum mode mode)
{
    memset(s, 0, sizeof(*s));
    pthread_mutex_init(&s->mu, NULL);
    atomic_store(&s->mode, mode);
    s->listen_fd = listen_any(&s->port);
    cr_assert_eq(listen(s->listen_fd, 64), 0);
    s->stop_fd = eventfd(0, EFD_CLOEXEC);
    cr_assert(s->stop_fd >= 0);
    cr_assert_eq(pthread_create(&s->thread, NULL, server_main, s), 0);
}

static void server_stop(struct server *s)
{
    uint64_t one = 1;
    cr_assert_eq(write(s->stop_fd, &one, sizeof(one)), (ssize_t)sizeof(one));
    pthread_join(s->thread, NULL);
    for (int i = 0; i < s->num_silent; i++)
        close(s->silent[i]);
    close(s->listen_fd);
    close(s->stop_fd);
    pthread_mutex_destroy(&s->mu);
}

/* A port nothing listens on: bound once to pick it, then released. */
static uint16_t closed_port(void)
{
    uint16_t port;
    close(listen_any(&port));
    return port;
}

/* What the checker reported, with the server's counters when it did. */
struct event {
    uint32_t pool, backend;
    bool up;
    char why[64];
    uint64_t ms;
    int served_ok, served_503, accepted;
};

struct recorder {
    pthread_mutex_t mu;
    struct server *servers[4]; /* by backend index; NULL for the closed port */
    struct event ev[32];
    int n;
};

static struct recorder rec = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void on_change(void *arg, uint32_t pool, uint32_t backend, bool up, const char *why)
{
    struct recorder *r = arg;
    pthread_mutex_lock(&r->mu);
    if (r->n < (int)RLB_ARRAY_SIZE(r->ev)) {
        struct event *e = &r->ev[r->n++];
        *e = (struct event){.pool = pool, .backend = backend, .up = up, .ms = rlb_now_ms()};
        snprintf(e->why, sizeof(e->why), "%s", why);
        struct server *s = backend < RLB_ARRAY_SIZE(r->servers) ? r->servers[backend] : NULL;
        if (s) {
            e->served_ok = atomic_load(&s->served_ok);
            e->served_503 = atomic_load(&s->served_503);
            e->accepted = atomic_load(&s->accepted);
        }
    }
    pthread_mutex_unlock(&r->mu);
}

static int events(void)
{
    pthread_mutex_lock(&rec.mu);
    int n = rec.n;
    pthread_mutex_unlock(&rec.mu);
    return n;
}

/* Bounded, so a checker that never reports fails the test instead of hanging it. */
static bool wait_events(int n, uint32_t max_ms)
{
    uint64_t end = rlb_now_ms() + max_ms;
    while (events() < n && rlb_now_ms() < end)
        usleep(2000);
    return events() >= n;
}

static bool wait_atomic(_Atomic int *v, int n, uint32_t max_ms)
{
    uint64_t end = rlb_now_ms() + max_ms;
    while (atomic_load(v) < n && rlb_now_ms() < end)
        usleep(2000);
    return atomic_load(v) >= n;
}

static int open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    cr_assert_not_null(d);
    int n = 0;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

static void init_pool(struct rlb_pool_cfg *pool, struct rlb_backend_cfg *be, const uint16_t *ports, uint32_t n)
{
    memset(pool, 0, sizeof(*pool));
    memset(be, 0, n * sizeof(*be));
    for (uint32_t i = 0; i < n; i++) {
        char text[32];
        snprintf(text, sizeof(text), "127.0.0.1:%u", ports[i]);
        cr_assert_eq(rlb_sockaddr_parse(text, &be[i].addr), 0);
        be[i].weight = 1;
    }
    pool->name = "api";
    pool->backends = be;
    pool->num_backends = n;
    pool->check = (struct rlb_health_check_cfg){
        .enabled = true, .path = "/healthz", .interval_ms = 50, .timeout_ms = 100, .rise = 2, .fall = 2};
}

static void quiet(void)
{
    rlb_log_level = RLB_LOG_ERROR;
}

TestSuite(health, .init = quiet, .timeout = 10);

Test(health, start_returns_null_without_checks)
{
    struct rlb_backend_cfg be[1];
    struct rlb_pool_cfg pool;
    init_pool(&pool, be, (uint16_t[]){closed_port()}, 1);
    pool.check.enabled = false;
    struct rlb_config cfg = {.pools = &pool, .num_pools = 1};
    errno = EINVAL;
    cr_expect_null(rlb_health_start(&cfg, on_change, &rec));
    cr_expect_eq(errno, 0);

    struct rlb_config empty = {0};
    errno = EINVAL;
    cr_expect_null(rlb_health_start(&empty, on_change, &rec));
    cr_expect_eq(errno, 0);
}

Test(health, healthy_backend_reports_nothing)
{
    struct server ok;
    server_start(&ok, MODE_OK);
    rec.servers[0] = &ok;
    struct rlb_backend_cfg be[1];
    struct rlb_pool_cfg pool;
    init_pool(&pool, be, (uint16_t[]){ok.port}, 1);
    struct rlb_config cfg = {.pools = &pool, .num_pools = 1};

    struct rlb_health_checker *hc = rlb_health_start(&cfg, on_change, &rec);
    cr_assert_not_null(hc);
    cr_expect(wait_atomic(&ok.served_ok, 5, 3000), "only %d probes", atomic_load(&ok.served_ok));
    rlb_health_stop(hc);
    cr_expect_eq(events(), 0, "a healthy backend changed state: %s", rec.ev[0].why);

    char want[128];
    snprintf(want, sizeof(want),
             "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nUser-Agent: ringlb-health-check\r\n"
             "Connection: close\r\n\r\n",
             ok.port);
    cr_expect_str_eq(ok.last_req, want);
    server_stop(&ok);
}

Test(health, defaults_apply_to_zero_values)
{
    struct server ok;
    server_start(&ok, MODE_OK);
    struct rlb_backend_cfg be[1];
    struct rlb_pool_cfg pool;
    init_pool(&pool, be, (uint16_t[]){ok.port}, 1);
    pool.check = (struct rlb_health_check_cfg){.enabled = true};
    struct rlb_config cfg = {.pools = &pool, .num_pools = 1};

    /* The first backend of a pool is probed at once, whatever the interval. */
    struct rlb_health_checker *hc = rlb_health_start(&cfg, on_change, &rec);
    cr_assert_not_null(hc);
    cr_expect(wait_atomic(&ok.served_ok, 1, 3000));
    rlb_health_stop(hc);
    cr_expect(strncmp(ok.last_req, "GET / HTTP/1.1\r\n", 16) == 0, "got %s", ok.last_req);
    cr_expect_eq(events(), 0);
    server_stop(&ok);
}

Test(health, status_503_goes_down_after_fall_then_up_after_rise)
{
    struct server ok, bad;
    server_start(&ok, MODE_OK);
    server_start(&bad, MODE_503);
    rec.servers[0] = &ok;
    rec.servers[1] = &bad;
    struct rlb_backend_cfg be[2];
    struct rlb_pool_cfg pool;
    init_pool(&pool, be, (uint16_t[]){ok.port, bad.port}, 2);
    pool.check.method = "HEAD";
    pool.check.host = "svc.internal";
    pool.check.fall = 3;
    struct rlb_config cfg = {.pools = &pool, .num_pools = 1};

    struct rlb_health_checker *hc = rlb_health_start(&cfg, on_change, &rec);
    cr_assert_not_null(hc);
    cr_assert(wait_events(1, 3000), "no DOWN reported");
    cr_expect_eq(rec.ev[0].backend, 1);
    cr_expect_not(rec.ev[0].up);
    cr_expect_str_eq(rec.ev[0].why, "status 503");
    /* Probes of one backend never overlap, so exactly <fall> answers preceded it. */
    cr_expect_eq(rec.ev[0].served_503, 3);

    atomic_store(&bad.mode, MODE_OK);
    cr_assert(wait_events(2, 3000), "no UP reported");
    cr_expect_eq(rec.ev[1].backend, 1);
    cr_expect(rec.ev[1].up);
    cr_expect_str_eq(rec.ev[1].why, "status 200");
    cr_expect_eq(rec.ev[1].served_ok, 2);

    /* A few more rounds: no repeated reports, and the healthy one stays quiet. */
    int seen = atomic_load(&bad.served_ok);
    cr_expect(wait_atomic(&bad.served_ok, seen + 3, 3000));
    rlb_health_stop(hc);
    cr_expect_eq(events(), 2);
    cr_expect(strncmp(bad.last_req, "HEAD /healthz HTTP/1.1\r\nHost: svc.internal\r\n", 44) == 0, "got %s",
              bad.last_req);
    server_stop(&ok);
    server_stop(&bad);
}

Test(health, silent_backend_times_out)
{
    struct server silent;
    server_start(&silent, MODE_SILENT);
    rec.servers[0] = &silent;
    struct rlb_backend_cfg be[1];
    struct rlb_pool_cfg pool;
    init_pool(&pool, be, (uint16_t[]){silent.port}, 1);
    struct rlb_config cfg = {.pools = &pool, .num_pools = 1};

    uint64_t t0 = rlb_now_ms();
    struct rlb_health_checker *hc = rlb_health_start(&cfg, on_change, &rec);
    cr_assert_not_null(hc);
    cr_assert(wait_events(1, 3000), "no DOWN reported");
    rlb_health_stop(hc);
    cr_expect_not(rec.ev[0].up);
    cr_expect_str_eq(rec.ev[0].why, "timeout");
    cr_expect_eq(rec.ev[0].accepted, 2);
    /* Two probes of 100 ms each, back to back at best. */
    cr_expect_geq(rec.ev[0].ms - t0, 190, "down after %llu ms", (unsigned long long)(rec.ev[0].ms - t0));
    server_stop(&silent);
}

Test(health, closed_port_is_refused)
{
    struct rlb_backend_cfg be[1];
    struct rlb_pool_cfg pool;
    init_pool(&pool, be, (uint16_t[]){closed_port()}, 1);
    struct rlb_config cfg = {.pools = &pool, .num_pools = 1};

    struct rlb_health_checker *hc = rlb_health_start(&cfg, on_change, &rec);
    cr_assert_not_null(hc);
    cr_assert(wait_events(1, 3000), "no DOWN reported");
    rlb_health_stop(hc);
    cr_expect_eq(events(), 1);
    cr_expect_not(rec.ev[0].up);
    cr_expect_str_eq(rec.ev[0].why, "connection refused");
}

Test(health, stop_is_prompt_with_probes_in_flight)
{
    int fds = open_fds();
    struct server silent;
    server_start(&silent, MODE_SILENT);
    struct rlb_backend_cfg be[1];
    struct rlb_pool_cfg pool;
    init_pool(&pool, be, (uint16_t[]){silent.port}, 1);
    pool.check.interval_ms = 10000;
    pool.check.timeout_ms = 10000;
    struct rlb_config cfg = {.pools = &pool, .num_pools = 1};

    struct rlb_health_checker *hc = rlb_health_start(&cfg, on_change, &rec);
    cr_assert_not_null(hc);
    cr_assert(wait_atomic(&silent.accepted, 1, 3000), "no probe arrived");
    uint64_t t0 = rlb_now_ms();
    rlb_health_stop(hc);
    uint64_t took = rlb_now_ms() - t0;
    cr_expect_lt(took, 500, "stop took %llu ms", (unsigned long long)took);
    cr_expect_eq(events(), 0);
    server_stop(&silent);
    cr_expect_eq(open_fds(), fds, "the checker left descriptors open");
}
