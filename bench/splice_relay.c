/* bench_splice_relay: bench_relay (bench/relay.c) with the backend -> client direction moved by splice
 * (socket -> pipe -> socket) instead of recv into a user buffer + send. It answers one question: does splice make
 * large response bodies cheaper than the two copies on this kernel? (docs/profile.md, "Splice for large bodies".)
 *
 * Usage: bench_splice_relay --listen 127.0.0.1:PORT --backend 127.0.0.1:B1 [--backend 127.0.0.1:B2 ...]
 *                           [--mode uring|uring-poll|epoll|epoll-copy] [--pipe-size BYTES]
 *
 * Same shape as bench_relay: one thread, each accepted client gets its own backend connection (round-robin over
 * --backend). Client -> backend (the small request) is copied through one 64 KiB buffer: recv, send all of it, recv
 * again. Backend -> client goes through one pipe per pair (pipe2 O_NONBLOCK|O_CLOEXEC, F_SETPIPE_SZ --pipe-size,
 * default 1 MiB; the pipe is blocking in uring mode, see ensure_pipe): splice socket -> pipe, then splice pipe -> socket until the pipe is empty, then again. No
 * pipelining within a direction, so every byte costs exactly one splice in and one splice out. EOF or an error on
 * either side closes both. SIGINT/SIGTERM end the loop with exit status 0.
 *
 * Modes:
 *   uring       IORING_OP_SPLICE, SPLICE_F_MOVE, blocking semantics. io_uring always hands IORING_OP_SPLICE to an
 *               io-wq worker thread (REQ_F_FORCE_ASYNC), where it blocks until the socket has data or room.
 *   uring-poll  IORING_OP_POLL_ADD (IOSQE_IO_LINK | IOSQE_CQE_SKIP_SUCCESS) linked to an IORING_OP_SPLICE with
 *               SPLICE_F_MOVE | SPLICE_F_NONBLOCK, so the io-wq worker only runs once the data is there and never
 *               blocks. The pipe -> socket splice is tried directly and gets the poll link only after -EAGAIN.
 *   epoll       no io_uring: splice(2) and recv/send on non-blocking sockets from one edge-triggered epoll loop.
 *               This is "splice itself", without io_uring's offload.
 *   epoll-copy  the same epoll loop, but backend -> client is recv/send through a 64 KiB buffer like the other
 *               direction: the copy baseline for the epoll mode.
 * In the io_uring modes the io-wq workers are confined to the CPUs the process may run on
 * (IORING_REGISTER_IOWQ_AFF), so pinning the relay with taskset pins its workers too.
 *
 * The parts it shares with bench_relay (setup, slots, the io_uring loop and its copy direction) are in relay_common.h. */
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/epoll.h>

#define RELAY_NAME "bench_splice_relay"
#define RELAY_PAIR_EXTRA                                                                                               \
    int pipe[2];       /* [0] read end, [1] write end; kept for the slot's next tenants while empty */                 \
    uint32_t pipe_len; /* bytes spliced into the pipe and not yet out of it */
#define RELAY_EXTRA                                                                                                    \
    enum mode mode;                                                                                                    \
    int epoll_fd;                                                                                                      \
    uint32_t pipe_size;                                                                                                \
    uint64_t short_splices, splice_eagain, pipe_failed, close_on_error;                                                \
    uint64_t splices_in, splices_out, bytes_spliced;

enum mode { MODE_URING, MODE_URING_POLL, MODE_EPOLL, MODE_EPOLL_COPY };

#include "relay_common.h"

#define DEFAULT_PIPE_SIZE (1024 * 1024)

/* ---------------------------------------------------------------------------------------------------------------
 * Slots: bench_relay's, plus one pipe each */

/* The pair's pipe, created on first use and kept while it is empty. Returns -1 if it cannot be made. */
static int ensure_pipe(struct relay *r, struct pair *p)
{
    if (p->pipe[0] >= 0)
        return 0;
    /* Blocking pipe only in uring mode: splice(2) adds SPLICE_F_NONBLOCK for an O_NONBLOCK pipe, and the pipe ->
     * socket splice there is meant to block in its io-wq worker until the client socket has room. */
    int flags = r->mode == MODE_URING ? O_CLOEXEC : O_NONBLOCK | O_CLOEXEC;
    if (pipe2(p->pipe, flags) < 0) {
        p->pipe[0] = p->pipe[1] = -1;
        r->pipe_failed++;
        return -1;
    }
    /* Above /proc/sys/fs/pipe-max-size this fails for an unprivileged user; the default 64 KiB pipe then stays. */
    fcntl(p->pipe[1], F_SETPIPE_SZ, (int)r->pipe_size);
    return 0;
}

static bool pair_open(struct relay *r, struct pair *p)
{
    p->pipe_len = 0;
    if (!ensure_buf(&p->dir[0]) || (r->mode == MODE_EPOLL_COPY && !ensure_buf(&p->dir[1])))
        return false;
    return r->mode == MODE_EPOLL_COPY || ensure_pipe(r, p) == 0;
}

static void pair_release(struct relay *r, struct pair *p)
{
    /* A pipe with bytes left in it belongs to the old tenant's stream: throw it away rather than drain it. */
    if (p->pipe_len && p->pipe[0] >= 0) {
        close(p->pipe[0]);
        close(p->pipe[1]);
        p->pipe[0] = p->pipe[1] = -1;
    }
    p->pipe_len = 0;
}

/* ---------------------------------------------------------------------------------------------------------------
 * io_uring modes */

/* In uring-poll mode: a POLL_ADD that, once fd is ready, starts the SQE that follows it. */
static void submit_poll_link(struct relay *r, int fd, unsigned mask)
{
    struct io_uring_sqe *sqe = get_sqe(r);
    io_uring_prep_poll_add(sqe, fd, mask);
    io_uring_sqe_set_data64(sqe, pack(OP_POLL, 0, 0, 0));
    sqe->flags |= IOSQE_IO_LINK | IOSQE_CQE_SKIP_SUCCESS;
}

/* A splice for the pair in slot idx. In uring-poll mode it does not block, and it waits behind a poll for poll_mask
 * on poll_fd unless that is -1. */
static void submit_splice(struct relay *r, uint32_t idx, enum op op, int fd_in, int fd_out, uint32_t len, int poll_fd,
                          unsigned poll_mask)
{
    struct pair *p = &r->pairs[idx];
    unsigned flags = SPLICE_F_MOVE;
    if (r->mode == MODE_URING_POLL) {
        if (poll_fd >= 0)
            submit_poll_link(r, poll_fd, poll_mask);
        flags |= SPLICE_F_NONBLOCK;
    }
    struct io_uring_sqe *sqe = get_sqe(r);
    io_uring_prep_splice(sqe, fd_in, -1, fd_out, -1, len, flags);
    io_uring_sqe_set_data64(sqe, pack(op, 1, p->gen, idx));
    p->pending++;
}

static void submit_splice_in(struct relay *r, uint32_t idx)
{
    struct pair *p = &r->pairs[idx];
    submit_splice(r, idx, OP_SPLICE_IN, p->fd[1], p->pipe[1], r->pipe_size, p->fd[1], POLLIN);
    r->splices_in++;
}

/* The pipe -> socket splice is tried directly and gets the poll only after -EAGAIN. */
static void submit_splice_out(struct relay *r, uint32_t idx, bool after_eagain)
{
    struct pair *p = &r->pairs[idx];
    submit_splice(r, idx, OP_SPLICE_OUT, p->pipe[0], p->fd[0], p->pipe_len, after_eagain ? p->fd[0] : -1, POLLOUT);
    r->splices_out++;
}

static void handle_pair_cqe(struct relay *r, enum op op, uint32_t d, uint32_t idx, int res)
{
    struct pair *p = &r->pairs[idx];
    if (p->closing) {
        /* Keep counting what the pipe holds: a slot whose pipe is not empty must not pass it to the next tenant. */
        if (op == OP_SPLICE_IN && res > 0)
            p->pipe_len += (uint32_t)res;
        else if (op == OP_SPLICE_OUT && res > 0)
            p->pipe_len -= (uint32_t)res;
    } else if (res < 0 && res != -EAGAIN) {
        r->close_on_error++;
    }
    if (pair_cqe_closing(r, idx))
        return;
    switch (op) {
    case OP_CONNECT:
        if (connect_ok(r, idx, res)) {
            submit_recv(r, idx, 0);
            submit_splice_in(r, idx);
        }
        return;
    case OP_RECV:
    case OP_SEND:
        handle_copy_cqe(r, op, d, idx, res);
        return;
    case OP_SPLICE_IN:
        if (res == -EAGAIN) { /* uring-poll: readiness was spurious */
            r->splice_eagain++;
            submit_splice_in(r, idx);
            return;
        }
        if (res <= 0) {
            close_pair(r, idx);
            return;
        }
        p->pipe_len = (uint32_t)res;
        r->bytes_spliced += (uint64_t)res;
        submit_splice_out(r, idx, false);
        return;
    case OP_SPLICE_OUT:
        if (res == -EAGAIN) {
            r->splice_eagain++;
            submit_splice_out(r, idx, true);
            return;
        }
        if (res <= 0) {
            close_pair(r, idx);
            return;
        }
        p->pipe_len -= (uint32_t)res;
        if (p->pipe_len) {
            r->short_splices++;
            submit_splice_out(r, idx, false);
        } else {
            submit_splice_in(r, idx);
        }
        return;
    default:
        return;
    }
}

static int setup_uring(struct relay *r)
{
    if (setup_ring(r) < 0)
        return -1;
    /* io-wq workers do not inherit a sched_setaffinity() mask (only a cpuset's): confine them explicitly, or a
     * "pinned" relay would run its splices on the load generator's CPU. */
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
        int ret = io_uring_register_iowq_aff(&r->ring, sizeof(set), &set);
        if (ret < 0)
            fprintf(stderr, "bench_splice_relay: io_uring_register_iowq_aff: %s\n", strerror(-ret));
    }
    return 0;
}

static int run_uring(struct relay *r)
{
    if (run_uring_loop(r))
        return 1;
    io_uring_queue_exit(&r->ring);
    return 0;
}

/* ---------------------------------------------------------------------------------------------------------------
 * epoll modes: non-blocking sockets, edge-triggered, each event runs both directions of its pair until EAGAIN. */

#define EP_LISTEN UINT64_MAX
#define EP_SIGNAL (UINT64_MAX - 1)

static void epoll_close_pair(struct relay *r, uint32_t idx)
{
    struct pair *p = &r->pairs[idx];
    for (int i = 0; i < 2; i++) {
        if (p->fd[i] >= 0)
            close(p->fd[i]); /* also removes it from the epoll set */
        p->fd[i] = -1;
    }
    release_slot(r, idx);
}

/* A pump's read of n bytes: 1 when it got some, else what the pump returns: 0 on EAGAIN (wait for an event), -1 on
 * EOF (errno 0) or an error (close the pair). */
static int read_outcome(ssize_t n)
{
    if (n > 0)
        return 1;
    if (n == 0) {
        errno = 0; /* EOF, not an error */
        return -1;
    }
    return errno == EAGAIN ? 0 : -1;
}

/* Copies from fd `from` to fd `to` through dir until EAGAIN. 0: wait for an event, -1: close the pair. */
static int pump_copy(struct relay *r, int from, int to, struct direction *dir)
{
    for (;;) {
        if (dir->off < dir->len) {
            ssize_t n = send(to, dir->buf + dir->off, dir->len - dir->off, MSG_NOSIGNAL);
            if (n < 0)
                return errno == EAGAIN ? 0 : -1;
            if ((uint32_t)n < dir->len - dir->off)
                r->short_sends++;
            dir->off += (uint32_t)n;
            continue;
        }
        ssize_t n = recv(from, dir->buf, BUF_SIZE, 0);
        int ret = read_outcome(n);
        if (ret <= 0)
            return ret;
        dir->len = (uint32_t)n;
        dir->off = 0;
    }
}

static int pump_splice(struct relay *r, struct pair *p)
{
    for (;;) {
        if (p->pipe_len) {
            ssize_t n = splice(p->pipe[0], NULL, p->fd[0], NULL, p->pipe_len, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
            r->splices_out++;
            if (n < 0)
                return errno == EAGAIN ? 0 : -1;
            if ((uint32_t)n < p->pipe_len)
                r->short_splices++;
            p->pipe_len -= (uint32_t)n;
            continue;
        }
        ssize_t n = splice(p->fd[1], NULL, p->pipe[1], NULL, r->pipe_size, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        r->splices_in++;
        int ret = read_outcome(n);
        if (ret <= 0)
            return ret;
        p->pipe_len = (uint32_t)n;
        r->bytes_spliced += (uint64_t)n;
    }
}

static void epoll_pair_event(struct relay *r, uint32_t idx)
{
    struct pair *p = &r->pairs[idx];
    if (!p->in_use)
        return; /* closed earlier in this batch of events */
    errno = 0;
    int ret = pump_copy(r, p->fd[0], p->fd[1], &p->dir[0]);
    if (ret == 0)
        ret = r->mode == MODE_EPOLL ? pump_splice(r, p) : pump_copy(r, p->fd[1], p->fd[0], &p->dir[1]);
    if (ret < 0) {
        if (errno)
            r->close_on_error++;
        epoll_close_pair(r, idx);
    }
}

static void epoll_accept(struct relay *r)
{
    for (;;) {
        int cfd = accept4(r->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (cfd < 0)
            return; /* EAGAIN, or EMFILE and the like: the listener's edge comes back with the next client */
        int ret = take_pair(r, cfd, SOCK_NONBLOCK, epoll_close_pair);
        if (ret < 0)
            continue;
        uint32_t idx = (uint32_t)ret;
        struct pair *p = &r->pairs[idx];
        const struct sockaddr_in *sa = next_backend(r);
        if (connect(p->fd[1], (const struct sockaddr *)sa, sizeof(*sa)) < 0 && errno != EINPROGRESS) {
            r->connect_failed++;
            epoll_close_pair(r, idx);
            continue;
        }
        /* Both ends report both readiness kinds; a direction whose peer is not writable yet just gets EAGAIN. */
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.u64 = idx};
        if (epoll_ctl(r->epoll_fd, EPOLL_CTL_ADD, p->fd[0], &ev) < 0 ||
            epoll_ctl(r->epoll_fd, EPOLL_CTL_ADD, p->fd[1], &ev) < 0) {
            epoll_close_pair(r, idx);
            continue;
        }
    }
}

static int run_epoll(struct relay *r)
{
    r->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    if (r->epoll_fd < 0) {
        perror("bench_splice_relay: epoll_create1");
        return 1;
    }
    int fl = fcntl(r->listen_fd, F_GETFL);
    fcntl(r->listen_fd, F_SETFL, fl | O_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.u64 = EP_LISTEN};
    epoll_ctl(r->epoll_fd, EPOLL_CTL_ADD, r->listen_fd, &ev);
    ev = (struct epoll_event){.events = EPOLLIN, .data.u64 = EP_SIGNAL};
    epoll_ctl(r->epoll_fd, EPOLL_CTL_ADD, r->sig_fd, &ev);

    struct epoll_event events[256];
    while (!r->stop) {
        int n = epoll_wait(r->epoll_fd, events, 256, -1);
        if (n < 0 && errno != EINTR) {
            perror("bench_splice_relay: epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            uint64_t key = events[i].data.u64;
            if (key == EP_LISTEN)
                epoll_accept(r);
            else if (key == EP_SIGNAL)
                r->stop = true;
            else
                epoll_pair_event(r, (uint32_t)key);
        }
    }
    close(r->epoll_fd);
    return 0;
}

/* --------------------------------------------------------------------------------------------------------------- */

static int setup(struct relay *r, const char *listen_text)
{
    if (setup_common(r, listen_text) < 0)
        return -1;
    for (uint32_t i = 0; i < MAX_PAIRS; i++)
        r->pairs[i].pipe[0] = r->pairs[i].pipe[1] = -1;
    if (r->mode == MODE_URING || r->mode == MODE_URING_POLL)
        return setup_uring(r);
    return 0;
}

static void usage(void)
{
    fprintf(stderr, "usage: bench_splice_relay --listen IP:PORT --backend IP:PORT [--backend IP:PORT ...]\n"
                    "                          [--mode uring|uring-poll|epoll|epoll-copy] [--pipe-size BYTES]\n");
}

int main(int argc, char **argv)
{
    static struct relay relay;
    struct relay *r = &relay;
    const char *listen_text = NULL;
    const char *mode_text = "uring";
    r->pipe_size = DEFAULT_PIPE_SIZE;
    for (int i = 1; i < argc; i++) {
        int ret = parse_common_arg(r, argc, argv, &i, &listen_text);
        if (ret < 0)
            return 2;
        if (ret > 0)
            continue;
        if (!strcmp(argv[i], "--mode") && i + 1 < argc) {
            mode_text = argv[++i];
        } else if (!strcmp(argv[i], "--pipe-size") && i + 1 < argc) {
            char *end;
            unsigned long v = strtoul(argv[++i], &end, 10);
            if (*end || v < 4096 || v > (1u << 30)) {
                fprintf(stderr, "bench_splice_relay: bad --pipe-size %s\n", argv[i]);
                return 2;
            }
            r->pipe_size = (uint32_t)v;
        } else {
            usage();
            return 2;
        }
    }
    if (!strcmp(mode_text, "uring")) {
        r->mode = MODE_URING;
    } else if (!strcmp(mode_text, "uring-poll")) {
        r->mode = MODE_URING_POLL;
    } else if (!strcmp(mode_text, "epoll")) {
        r->mode = MODE_EPOLL;
    } else if (!strcmp(mode_text, "epoll-copy")) {
        r->mode = MODE_EPOLL_COPY;
    } else {
        usage();
        return 2;
    }
    if (!listen_text || r->num_backends == 0) {
        usage();
        return 2;
    }
    if (setup(r, listen_text) < 0)
        return 1;

    /* The size the kernel actually gave (F_GETPIPE_SZ rounds up to a power of two pages, or refused). */
    int actual = -1;
    if (r->mode != MODE_EPOLL_COPY && ensure_pipe(r, &r->pairs[0]) == 0)
        actual = fcntl(r->pairs[0].pipe[1], F_GETPIPE_SZ);
    if (actual > 0)
        r->pipe_size = (uint32_t)actual;
    printf("bench_splice_relay: listening on %s, mode %s, pipe size %d\n", listen_text, mode_text, actual);
    fflush(stdout);

    int status = r->mode == MODE_EPOLL || r->mode == MODE_EPOLL_COPY ? run_epoll(r) : run_uring(r);

    fprintf(stderr,
            "bench_splice_relay: stopping (rejected accepts %llu, failed connects %llu, failed pipes %llu, short sends "
            "%llu, splices in %llu, splices out %llu, short splices out %llu, splice EAGAIN %llu, bytes spliced %llu, "
            "closes on error %llu)\n",
            (unsigned long long)r->accept_rejected, (unsigned long long)r->connect_failed,
            (unsigned long long)r->pipe_failed, (unsigned long long)r->short_sends,
            (unsigned long long)r->splices_in, (unsigned long long)r->splices_out,
            (unsigned long long)r->short_splices, (unsigned long long)r->splice_eagain,
            (unsigned long long)r->bytes_spliced, (unsigned long long)r->close_on_error);
    for (uint32_t i = 0; i < MAX_PAIRS; i++)
        for (int j = 0; j < 2; j++)
            if (r->pairs[i].pipe[j] >= 0)
                close(r->pairs[i].pipe[j]);
    free_common(r);
    return status;
}
