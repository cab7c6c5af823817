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
 * (IORING_REGISTER_IOWQ_AFF), so pinning the relay with taskset pins its workers too. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_BACKENDS 16
#define MAX_PAIRS 8192
#define BUF_SIZE (64 * 1024)
#define RING_ENTRIES 4096
#define DEFAULT_PIPE_SIZE (1024 * 1024)

enum mode { MODE_URING, MODE_URING_POLL, MODE_EPOLL, MODE_EPOLL_COPY };

enum op {
    OP_ACCEPT = 1,
    OP_SIGNAL,
    OP_CONNECT,
    OP_RECV,
    OP_SEND,
    OP_SPLICE_IN,  /* backend socket -> pipe */
    OP_SPLICE_OUT, /* pipe -> client socket */
    OP_POLL,       /* only posts a CQE when it fails (IOSQE_CQE_SKIP_SUCCESS); not counted in pending */
    OP_SHUTDOWN,
    OP_CLOSE,
};

/* dir 0 copies client -> backend; dir 1 (backend -> client) only uses the buffer in epoll-copy mode. */
struct direction {
    char *buf; /* owned by the pair, allocated on first use and kept for the slot's next tenants */
    uint32_t len;
    uint32_t off;
};

struct pair {
    int fd[2];   /* [0] client, [1] backend */
    int pipe[2]; /* [0] read end, [1] write end; kept for the slot's next tenants while empty */
    uint32_t pipe_len; /* bytes spliced into the pipe and not yet out of it */
    uint32_t pending;  /* SQEs submitted for this pair whose CQE has not arrived yet */
    uint16_t gen;
    bool in_use;
    bool closing;
    struct direction dir[2];
    uint32_t next_free;
};

struct relay {
    enum mode mode;
    struct io_uring ring;
    int epoll_fd;
    int listen_fd;
    int sig_fd;
    uint32_t pipe_size;
    struct signalfd_siginfo siginfo;
    struct sockaddr_in backends[MAX_BACKENDS];
    uint32_t num_backends;
    uint32_t next_backend;
    struct pair *pairs;
    uint32_t free_head; /* MAX_PAIRS: none free */
    bool stop;
    /* Abnormal events, counted rather than logged: logging would distort the very thing being measured. */
    uint64_t accept_rejected, connect_failed, short_sends, short_splices, splice_eagain, pipe_failed, close_on_error;
    uint64_t splices_in, splices_out, bytes_spliced;
};

/* ---------------------------------------------------------------------------------------------------------------
 * Shared setup */

static int parse_addr(const char *text, struct sockaddr_in *sa)
{
    char host[64];
    const char *colon = strrchr(text, ':');
    if (!colon || (size_t)(colon - text) >= sizeof(host))
        return -1;
    memcpy(host, text, (size_t)(colon - text));
    host[colon - text] = '\0';
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port <= 0 || port > 65535)
        return -1;
    memset(sa, 0, sizeof(*sa));
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    return inet_pton(AF_INET, host, &sa->sin_addr) == 1 ? 0 : -1;
}

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

static void drop_pipe(struct pair *p)
{
    /* A pipe with bytes left in it belongs to the old tenant's stream: throw it away rather than drain it. */
    if (p->pipe_len && p->pipe[0] >= 0) {
        close(p->pipe[0]);
        close(p->pipe[1]);
        p->pipe[0] = p->pipe[1] = -1;
    }
    p->pipe_len = 0;
}

/* Takes a free slot for client fd cfd, with a fresh backend socket. Returns the slot index or -1 (cfd closed). */
static int take_pair(struct relay *r, int cfd, int backend_flags)
{
    if (r->free_head == MAX_PAIRS) {
        r->accept_rejected++;
        close(cfd);
        return -1;
    }
    int bfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | backend_flags, 0);
    if (bfd < 0) {
        r->accept_rejected++;
        close(cfd);
        return -1;
    }
    /* Without TCP_NODELAY a response split over two sends could sit behind Nagle until the peer's delayed ACK. */
    int one = 1;
    setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(bfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

    uint32_t idx = r->free_head;
    struct pair *p = &r->pairs[idx];
    r->free_head = p->next_free;
    p->fd[0] = cfd;
    p->fd[1] = bfd;
    p->pending = 0;
    p->pipe_len = 0;
    p->in_use = true;
    p->closing = false;
    for (int d = 0; d < 2; d++) {
        p->dir[d].len = p->dir[d].off = 0;
        bool need = d == 0 || r->mode == MODE_EPOLL_COPY;
        if (need && !p->dir[d].buf && !(p->dir[d].buf = malloc(BUF_SIZE)))
            return -(int)idx - 2;
    }
    if (r->mode != MODE_EPOLL_COPY && ensure_pipe(r, p) < 0)
        return -(int)idx - 2;
    return (int)idx;
}

static void release_slot(struct relay *r, uint32_t idx)
{
    struct pair *p = &r->pairs[idx];
    drop_pipe(p);
    p->in_use = false;
    p->gen++;
    p->next_free = r->free_head;
    r->free_head = idx;
}

/* ---------------------------------------------------------------------------------------------------------------
 * io_uring modes */

/* op in bits 56..63, direction in bit 48, slot generation in 32..47, slot index in 0..31. The generation catches a
 * CQE for a slot that was freed and reused, which would be a bug in the pending-count bookkeeping. */
static uint64_t pack(enum op op, uint32_t dir, uint16_t gen, uint32_t idx)
{
    return (uint64_t)op << 56 | (uint64_t)dir << 48 | (uint64_t)gen << 32 | idx;
}

static struct io_uring_sqe *get_sqe(struct relay *r)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
    while (!sqe) {
        io_uring_submit(&r->ring);
        sqe = io_uring_get_sqe(&r->ring);
    }
    return sqe;
}

static void arm_accept(struct relay *r)
{
    struct io_uring_sqe *sqe = get_sqe(r);
    io_uring_prep_multishot_accept(sqe, r->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, pack(OP_ACCEPT, 0, 0, 0));
}

static void arm_signal(struct relay *r)
{
    struct io_uring_sqe *sqe = get_sqe(r);
    io_uring_prep_read(sqe, r->sig_fd, &r->siginfo, sizeof(r->siginfo), 0);
    io_uring_sqe_set_data64(sqe, pack(OP_SIGNAL, 0, 0, 0));
}

static void submit_recv(struct relay *r, uint32_t idx)
{
    struct pair *p = &r->pairs[idx];
    struct io_uring_sqe *sqe = get_sqe(r);
    io_uring_prep_recv(sqe, p->fd[0], p->dir[0].buf, BUF_SIZE, 0);
    io_uring_sqe_set_data64(sqe, pack(OP_RECV, 0, p->gen, idx));
    p->pending++;
}

static void submit_send(struct relay *r, uint32_t idx)
{
    struct pair *p = &r->pairs[idx];
    struct direction *dir = &p->dir[0];
    struct io_uring_sqe *sqe = get_sqe(r);
    io_uring_prep_send(sqe, p->fd[1], dir->buf + dir->off, dir->len - dir->off, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, pack(OP_SEND, 0, p->gen, idx));
    p->pending++;
}

/* In uring-poll mode: a POLL_ADD that, once fd is ready, starts the SQE that follows it. */
static void submit_poll_link(struct relay *r, int fd, unsigned mask)
{
    struct io_uring_sqe *sqe = get_sqe(r);
    io_uring_prep_poll_add(sqe, fd, mask);
    io_uring_sqe_set_data64(sqe, pack(OP_POLL, 0, 0, 0));
    sqe->flags |= IOSQE_IO_LINK | IOSQE_CQE_SKIP_SUCCESS;
}

static void submit_splice_in(struct relay *r, uint32_t idx)
{
    struct pair *p = &r->pairs[idx];
    unsigned flags = SPLICE_F_MOVE;
    if (r->mode == MODE_URING_POLL) {
        submit_poll_link(r, p->fd[1], POLLIN);
        flags |= SPLICE_F_NONBLOCK;
    }
    struct io_uring_sqe *sqe = get_sqe(r);
    io_uring_prep_splice(sqe, p->fd[1], -1, p->pipe[1], -1, r->pipe_size, flags);
    io_uring_sqe_set_data64(sqe, pack(OP_SPLICE_IN, 1, p->gen, idx));
    p->pending++;
    r->splices_in++;
}

static void submit_splice_out(struct relay *r, uint32_t idx, bool after_eagain)
{
    struct pair *p = &r->pairs[idx];
    unsigned flags = SPLICE_F_MOVE;
    if (r->mode == MODE_URING_POLL) {
        if (after_eagain)
            submit_poll_link(r, p->fd[0], POLLOUT);
        flags |= SPLICE_F_NONBLOCK;
    }
    struct io_uring_sqe *sqe = get_sqe(r);
    io_uring_prep_splice(sqe, p->pipe[0], -1, p->fd[0], -1, p->pipe_len, flags);
    io_uring_sqe_set_data64(sqe, pack(OP_SPLICE_OUT, 1, p->gen, idx));
    p->pending++;
    r->splices_out++;
}

static void free_pair(struct relay *r, uint32_t idx)
{
    struct pair *p = &r->pairs[idx];
    for (int i = 0; i < 2; i++) {
        if (p->fd[i] < 0)
            continue;
        struct io_uring_sqe *sqe = get_sqe(r);
        io_uring_prep_close(sqe, p->fd[i]);
        io_uring_sqe_set_data64(sqe, pack(OP_CLOSE, 0, 0, 0));
        p->fd[i] = -1;
    }
    release_slot(r, idx);
}

/* As in bench_relay: shut the sockets down so that what is in flight on them completes, free once all is in. */
static void close_pair(struct relay *r, uint32_t idx)
{
    struct pair *p = &r->pairs[idx];
    if (p->closing)
        return;
    p->closing = true;
    for (int i = 0; i < 2; i++) {
        if (p->fd[i] < 0)
            continue;
        struct io_uring_sqe *sqe = get_sqe(r);
        io_uring_prep_shutdown(sqe, p->fd[i], SHUT_RDWR);
        io_uring_sqe_set_data64(sqe, pack(OP_SHUTDOWN, 0, p->gen, idx));
        p->pending++;
    }
    if (p->pending == 0)
        free_pair(r, idx);
}

static void handle_accept(struct relay *r, struct io_uring_cqe *cqe)
{
    if (!(cqe->flags & IORING_CQE_F_MORE) && !r->stop)
        arm_accept(r);
    if (cqe->res < 0)
        return;
    int ret = take_pair(r, cqe->res, 0);
    if (ret == -1)
        return;
    if (ret < -1) {
        close_pair(r, (uint32_t)(-ret - 2));
        return;
    }
    uint32_t idx = (uint32_t)ret;
    struct pair *p = &r->pairs[idx];
    const struct sockaddr_in *sa = &r->backends[r->next_backend++ % r->num_backends];
    struct io_uring_sqe *sqe = get_sqe(r);
    io_uring_prep_connect(sqe, p->fd[1], (const struct sockaddr *)sa, sizeof(*sa));
    io_uring_sqe_set_data64(sqe, pack(OP_CONNECT, 0, p->gen, idx));
    p->pending++;
}

static void handle_pair_cqe(struct relay *r, enum op op, uint32_t idx, int res)
{
    struct pair *p = &r->pairs[idx];
    p->pending--;
    if (res < 0 && res != -EAGAIN && !p->closing)
        r->close_on_error++;
    if (p->closing) {
        /* Keep counting what the pipe holds: a slot whose pipe is not empty must not pass it to the next tenant. */
        if (op == OP_SPLICE_IN && res > 0)
            p->pipe_len += (uint32_t)res;
        else if (op == OP_SPLICE_OUT && res > 0)
            p->pipe_len -= (uint32_t)res;
        if (p->pending == 0)
            free_pair(r, idx);
        return;
    }
    switch (op) {
    case OP_CONNECT:
        if (res < 0) {
            r->connect_failed++;
            close_pair(r, idx);
            return;
        }
        submit_recv(r, idx);
        submit_splice_in(r, idx);
        return;
    case OP_RECV:
        if (res <= 0) {
            close_pair(r, idx);
            return;
        }
        p->dir[0].len = (uint32_t)res;
        p->dir[0].off = 0;
        submit_send(r, idx);
        return;
    case OP_SEND:
        if (res <= 0) {
            close_pair(r, idx);
            return;
        }
        p->dir[0].off += (uint32_t)res;
        if (p->dir[0].off < p->dir[0].len) {
            r->short_sends++;
            submit_send(r, idx);
        } else {
            submit_recv(r, idx);
        }
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
    struct io_uring_params params = {0};
    params.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
    params.flags |= IORING_SETUP_CQSIZE;
    params.cq_entries = RING_ENTRIES * 4;
    int ret = io_uring_queue_init_params(RING_ENTRIES, &r->ring, &params);
    if (ret < 0) {
        params.flags = IORING_SETUP_CQSIZE;
        ret = io_uring_queue_init_params(RING_ENTRIES, &r->ring, &params);
    }
    if (ret < 0) {
        fprintf(stderr, "bench_splice_relay: io_uring_queue_init: %s\n", strerror(-ret));
        return -1;
    }
    /* io-wq workers do not inherit a sched_setaffinity() mask (only a cpuset's): confine them explicitly, or a
     * "pinned" relay would run its splices on the load generator's CPU. */
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
        ret = io_uring_register_iowq_aff(&r->ring, sizeof(set), &set);
        if (ret < 0)
            fprintf(stderr, "bench_splice_relay: io_uring_register_iowq_aff: %s\n", strerror(-ret));
    }
    return 0;
}

static int run_uring(struct relay *r)
{
    arm_accept(r);
    arm_signal(r);
    while (!r->stop) {
        int ret = io_uring_submit_and_wait(&r->ring, 1);
        if (ret < 0 && ret != -EINTR) {
            fprintf(stderr, "bench_splice_relay: io_uring_submit_and_wait: %s\n", strerror(-ret));
            return 1;
        }
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&r->ring, head, cqe) {
            uint64_t ud = cqe->user_data;
            enum op op = (enum op)(ud >> 56);
            uint32_t idx = (uint32_t)ud;
            seen++;
            if (op == OP_ACCEPT) {
                handle_accept(r, cqe);
            } else if (op == OP_SIGNAL) {
                r->stop = true;
            } else if (op != OP_CLOSE && op != OP_POLL) {
                /* A failed linked poll needs nothing: the splice behind it completes with -ECANCELED. */
                if (idx >= MAX_PAIRS || !r->pairs[idx].in_use || r->pairs[idx].gen != (uint16_t)(ud >> 32)) {
                    fprintf(stderr, "bench_splice_relay: stale completion op %d slot %u\n", (int)op, idx);
                    abort();
                }
                handle_pair_cqe(r, op, idx, cqe->res);
            }
        }
        io_uring_cq_advance(&r->ring, seen);
    }
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
        if (n == 0) {
            errno = 0; /* EOF, not an error */
            return -1;
        }
        if (n < 0)
            return errno == EAGAIN ? 0 : -1;
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
        if (n == 0) {
            errno = 0; /* EOF, not an error */
            return -1;
        }
        if (n < 0)
            return errno == EAGAIN ? 0 : -1;
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
        int ret = take_pair(r, cfd, SOCK_NONBLOCK);
        if (ret == -1)
            continue;
        if (ret < -1) {
            epoll_close_pair(r, (uint32_t)(-ret - 2));
            continue;
        }
        uint32_t idx = (uint32_t)ret;
        struct pair *p = &r->pairs[idx];
        const struct sockaddr_in *sa = &r->backends[r->next_backend++ % r->num_backends];
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
    struct sockaddr_in sa;
    if (parse_addr(listen_text, &sa) < 0) {
        fprintf(stderr, "bench_splice_relay: bad --listen address %s\n", listen_text);
        return -1;
    }
    int one = 1;
    r->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (r->listen_fd < 0 || setsockopt(r->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(r->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(r->listen_fd, 4096) < 0) {
        fprintf(stderr, "bench_splice_relay: listen on %s: %s\n", listen_text, strerror(errno));
        return -1;
    }

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    r->sig_fd = signalfd(-1, &mask, SFD_CLOEXEC);
    if (r->sig_fd < 0) {
        perror("bench_splice_relay: signalfd");
        return -1;
    }

    /* Four fds per pair (two sockets, two pipe ends) plus slack. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    r->pairs = calloc(MAX_PAIRS, sizeof(*r->pairs));
    if (!r->pairs)
        return -1;
    for (uint32_t i = 0; i < MAX_PAIRS; i++) {
        r->pairs[i].fd[0] = r->pairs[i].fd[1] = -1;
        r->pairs[i].pipe[0] = r->pairs[i].pipe[1] = -1;
        r->pairs[i].next_free = i + 1;
    }
    r->free_head = 0;

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
        if (!strcmp(argv[i], "--listen") && i + 1 < argc) {
            listen_text = argv[++i];
        } else if (!strcmp(argv[i], "--backend") && i + 1 < argc) {
            if (r->num_backends == MAX_BACKENDS || parse_addr(argv[i + 1], &r->backends[r->num_backends]) < 0) {
                fprintf(stderr, "bench_splice_relay: bad or too many --backend %s\n", argv[i + 1]);
                return 2;
            }
            r->num_backends++;
            i++;
        } else if (!strcmp(argv[i], "--mode") && i + 1 < argc) {
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
    for (uint32_t i = 0; i < MAX_PAIRS; i++) {
        struct pair *p = &r->pairs[i];
        for (int j = 0; j < 2; j++) {
            if (p->fd[j] >= 0)
                close(p->fd[j]);
            if (p->pipe[j] >= 0)
                close(p->pipe[j]);
        }
        free(p->dir[0].buf);
        free(p->dir[1].buf);
    }
    free(r->pairs);
    close(r->listen_fd);
    close(r->sig_fd);
    return status;
}
