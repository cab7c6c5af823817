/* relay_common.h: what bench_relay (relay.c) and bench_splice_relay (splice_relay.c) share. Argument parsing for
 * --listen/--backend, the listener, signalfd and fd-limit setup, the ring, the slot table of client/backend pairs
 * with its io_uring bookkeeping (user_data packing, accept, connect, shutdown-then-close) and the io_uring event loop.
 *
 * Included by exactly one .c file per program, which first defines
 *   RELAY_NAME          the program name that prefixes every message ("bench_relay")
 *   RELAY_PAIR_EXTRA    its own members of struct pair (may be empty)
 *   RELAY_EXTRA         its own members of struct relay (may be empty)
 * and then defines the functions declared under "Provided by the including file" below. */
#ifndef RELAY_COMMON_H
#define RELAY_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#if !defined(RELAY_NAME) || !defined(RELAY_PAIR_EXTRA) || !defined(RELAY_EXTRA)
#error "define RELAY_NAME, RELAY_PAIR_EXTRA and RELAY_EXTRA before including relay_common.h"
#endif

#define MAX_BACKENDS 16
#define MAX_PAIRS 8192
#define BUF_SIZE (64 * 1024)
#define RING_ENTRIES 4096

/* The splice ops are only used by bench_splice_relay. */
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

/* dir 0 copies client -> backend, dir 1 backend -> client (bench_splice_relay copies it only in epoll-copy mode). */
struct direction {
    char *buf; /* owned by the pair, allocated on first use and kept for the slot's next tenants */
    uint32_t len;
    uint32_t off;
};

struct pair {
    int fd[2]; /* [0] client, [1] backend */
    RELAY_PAIR_EXTRA
    uint32_t pending; /* SQEs submitted for this pair whose CQE has not arrived yet */
    uint16_t gen;
    bool in_use;
    bool closing;
    struct direction dir[2];
    uint32_t next_free;
};

struct relay {
    struct io_uring ring;
    int listen_fd;
    int sig_fd;
    struct signalfd_siginfo siginfo;
    struct sockaddr_in backends[MAX_BACKENDS];
    uint32_t num_backends;
    uint32_t next_backend;
    struct pair *pairs;
    uint32_t free_head; /* MAX_PAIRS: none free */
    bool stop;
    /* Abnormal events, counted rather than logged: logging would distort the very thing being measured. */
    uint64_t accept_rejected, connect_failed, short_sends;
    RELAY_EXTRA
};

/* ---------------------------------------------------------------------------------------------------------------
 * Provided by the including file */

/* Readies a slot just taken for a new tenant (its buffers, a pipe...). false: the slot cannot be used. */
static bool pair_open(struct relay *r, struct pair *p);
/* Called as a slot goes back to the free list, its sockets closed. */
static void pair_release(struct relay *r, struct pair *p);
/* A CQE of the pair in slot idx (op neither ACCEPT, SIGNAL, CLOSE nor POLL); d is the direction it was packed with. */
static void handle_pair_cqe(struct relay *r, enum op op, uint32_t d, uint32_t idx, int res);

/* ---------------------------------------------------------------------------------------------------------------
 * Setup */

static inline int parse_addr(const char *text, struct sockaddr_in *sa)
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

/* Takes argv[*i] if it is --listen ADDR or --backend ADDR, advancing *i past the value. 1: taken, 0: not one of
 * these (or no value follows), -1: a bad --backend, reported (exit with status 2). */
static inline int parse_common_arg(struct relay *r, int argc, char **argv, int *i, const char **listen_text)
{
    if (!strcmp(argv[*i], "--listen") && *i + 1 < argc) {
        *listen_text = argv[++*i];
        return 1;
    }
    if (!strcmp(argv[*i], "--backend") && *i + 1 < argc) {
        if (r->num_backends == MAX_BACKENDS || parse_addr(argv[*i + 1], &r->backends[r->num_backends]) < 0) {
            fprintf(stderr, RELAY_NAME ": bad or too many --backend %s\n", argv[*i + 1]);
            return -1;
        }
        r->num_backends++;
        ++*i;
        return 1;
    }
    return 0;
}

/* The listener, the signalfd for SIGINT/SIGTERM, the fd limit and the slot table. */
static inline int setup_common(struct relay *r, const char *listen_text)
{
    struct sockaddr_in sa;
    if (parse_addr(listen_text, &sa) < 0) {
        fprintf(stderr, RELAY_NAME ": bad --listen address %s\n", listen_text);
        return -1;
    }
    int one = 1;
    r->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (r->listen_fd < 0 || setsockopt(r->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(r->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(r->listen_fd, 4096) < 0) {
        fprintf(stderr, RELAY_NAME ": listen on %s: %s\n", listen_text, strerror(errno));
        return -1;
    }

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    r->sig_fd = signalfd(-1, &mask, SFD_CLOEXEC);
    if (r->sig_fd < 0) {
        perror(RELAY_NAME ": signalfd");
        return -1;
    }

    /* Two fds per pair (four with a splice pipe) plus slack: the default soft limit of 1024 would cap a
     * 1000-connection run. */
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
        r->pairs[i].next_free = i + 1;
    }
    r->free_head = 0;
    return 0;
}

/* SINGLE_ISSUER + DEFER_TASKRUN: completions are processed only when this thread enters the kernel to wait, instead
 * of interrupting it with task work. That is what a one-thread-per-ring proxy would use on 6.1+. */
static inline int setup_ring(struct relay *r)
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
        fprintf(stderr, RELAY_NAME ": io_uring_queue_init: %s\n", strerror(-ret));
        return -1;
    }
    return 0;
}

/* Closes every socket, frees the buffers, the slot table, the listener and the signalfd. */
static inline void free_common(struct relay *r)
{
    for (uint32_t i = 0; i < MAX_PAIRS; i++) {
        for (int j = 0; j < 2; j++)
            if (r->pairs[i].fd[j] >= 0)
                close(r->pairs[i].fd[j]);
        free(r->pairs[i].dir[0].buf);
        free(r->pairs[i].dir[1].buf);
    }
    free(r->pairs);
    close(r->listen_fd);
    close(r->sig_fd);
}

/* ---------------------------------------------------------------------------------------------------------------
 * Slots */

/* The direction's buffer, allocated on the slot's first use of it. false: out of memory. */
static inline bool ensure_buf(struct direction *dir)
{
    return dir->buf || (dir->buf = malloc(BUF_SIZE));
}

static inline const struct sockaddr_in *next_backend(struct relay *r)
{
    return &r->backends[r->next_backend++ % r->num_backends];
}

/* Takes a free slot for client fd cfd, with a fresh backend socket, and readies it with pair_open(). Returns the slot
 * index, or -1: no slot or socket (cfd closed), or pair_open() failed (the slot handed to close_slot). */
static inline int take_pair(struct relay *r, int cfd, int backend_flags, void (*close_slot)(struct relay *, uint32_t))
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
    p->in_use = true;
    p->closing = false;
    for (int d = 0; d < 2; d++)
        p->dir[d].len = p->dir[d].off = 0;
    if (!pair_open(r, p)) {
        close_slot(r, idx);
        return -1;
    }
    return (int)idx;
}

/* Puts slot idx, its sockets already closed, back on the free list. */
static inline void release_slot(struct relay *r, uint32_t idx)
{
    struct pair *p = &r->pairs[idx];
    pair_release(r, p);
    p->in_use = false;
    p->gen++;
    p->next_free = r->free_head;
    r->free_head = idx;
}

/* ---------------------------------------------------------------------------------------------------------------
 * io_uring */

/* op in bits 56..63, direction in bit 48, slot generation in 32..47, slot index in 0..31. The generation catches a
 * CQE for a slot that was freed and reused, which would be a bug in the pending-count bookkeeping. */
static inline uint64_t pack(enum op op, uint32_t dir, uint16_t gen, uint32_t idx)
{
    return (uint64_t)op << 56 | (uint64_t)dir << 48 | (uint64_t)gen << 32 | idx;
}

static inline struct io_uring_sqe *get_sqe(struct relay *r)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
    while (!sqe) {
        /* SQ full: flush it. CQ overflow is not a risk, the kernel has IORING_FEAT_NODROP. */
        io_uring_submit(&r->ring);
        sqe = io_uring_get_sqe(&r->ring);
    }
    return sqe;
}

static inline void arm_accept(struct relay *r)
{
    struct io_uring_sqe *sqe = get_sqe(r);
    io_uring_prep_multishot_accept(sqe, r->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, pack(OP_ACCEPT, 0, 0, 0));
}

static inline void arm_signal(struct relay *r)
{
    struct io_uring_sqe *sqe = get_sqe(r);
    io_uring_prep_read(sqe, r->sig_fd, &r->siginfo, sizeof(r->siginfo), 0);
    io_uring_sqe_set_data64(sqe, pack(OP_SIGNAL, 0, 0, 0));
}

static inline void submit_recv(struct relay *r, uint32_t idx, uint32_t d)
{
    struct pair *p = &r->pairs[idx];
    struct io_uring_sqe *sqe = get_sqe(r);
    io_uring_prep_recv(sqe, p->fd[d], p->dir[d].buf, BUF_SIZE, 0);
    io_uring_sqe_set_data64(sqe, pack(OP_RECV, d, p->gen, idx));
    p->pending++;
}

static inline void submit_send(struct relay *r, uint32_t idx, uint32_t d)
{
    struct pair *p = &r->pairs[idx];
    struct direction *dir = &p->dir[d];
    struct io_uring_sqe *sqe = get_sqe(r);
    /* MSG_NOSIGNAL: a peer that already closed must give EPIPE, not kill the relay with SIGPIPE. */
    io_uring_prep_send(sqe, p->fd[!d], dir->buf + dir->off, dir->len - dir->off, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, pack(OP_SEND, d, p->gen, idx));
    p->pending++;
}

static inline void free_pair(struct relay *r, uint32_t idx)
{
    struct pair *p = &r->pairs[idx];
    for (int i = 0; i < 2; i++) {
        if (p->fd[i] < 0)
            continue;
        /* Nothing is in flight on the fd any more, so the close cannot race an op; its CQE carries no slot. */
        struct io_uring_sqe *sqe = get_sqe(r);
        io_uring_prep_close(sqe, p->fd[i]);
        io_uring_sqe_set_data64(sqe, pack(OP_CLOSE, 0, 0, 0));
        p->fd[i] = -1;
    }
    release_slot(r, idx);
}

/* Closing an fd does not cancel a recv the ring holds on it (the request keeps its own file reference), so the
 * sockets are shut down first: pending recvs then complete with 0 and sends with an error, and the slot is freed
 * once the last of them is in. */
static inline void close_pair(struct relay *r, uint32_t idx)
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

static inline void handle_accept(struct relay *r, struct io_uring_cqe *cqe)
{
    if (!(cqe->flags & IORING_CQE_F_MORE) && !r->stop)
        arm_accept(r);
    if (cqe->res < 0)
        return; /* EMFILE, ECONNABORTED...: the multishot was re-armed above if it ended */
    int ret = take_pair(r, cqe->res, 0, close_pair);
    if (ret < 0)
        return;
    uint32_t idx = (uint32_t)ret;
    struct pair *p = &r->pairs[idx];
    const struct sockaddr_in *sa = next_backend(r);
    struct io_uring_sqe *sqe = get_sqe(r);
    io_uring_prep_connect(sqe, p->fd[1], (const struct sockaddr *)sa, sizeof(*sa));
    io_uring_sqe_set_data64(sqe, pack(OP_CONNECT, 0, p->gen, idx));
    p->pending++;
}

/* Counts a CQE of the pair in slot idx in. true: the pair is closing and the CQE needs nothing more (the slot is
 * freed with the last one). */
static inline bool pair_cqe_closing(struct relay *r, uint32_t idx)
{
    struct pair *p = &r->pairs[idx];
    p->pending--;
    if (!p->closing)
        return false;
    if (p->pending == 0)
        free_pair(r, idx);
    return true;
}

/* The CQE of the backend connect. false: it failed and the pair is closing. */
static inline bool connect_ok(struct relay *r, uint32_t idx, int res)
{
    if (res >= 0)
        return true;
    r->connect_failed++;
    close_pair(r, idx);
    return false;
}

/* The CQE of a recv or send of copy direction d: recv into the buffer, send all of it, recv again. */
static inline void handle_copy_cqe(struct relay *r, enum op op, uint32_t d, uint32_t idx, int res)
{
    struct pair *p = &r->pairs[idx];
    if (res <= 0) {
        close_pair(r, idx);
        return;
    }
    if (op == OP_RECV) {
        p->dir[d].len = (uint32_t)res;
        p->dir[d].off = 0;
        submit_send(r, idx, d);
        return;
    }
    p->dir[d].off += (uint32_t)res;
    if (p->dir[d].off < p->dir[d].len) {
        r->short_sends++;
        submit_send(r, idx, d);
    } else {
        submit_recv(r, idx, d);
    }
}

/* Arms accept and the signal read, then handles CQEs until SIGINT/SIGTERM. 0 once stopped, 1 on a ring error. The
 * ring is left for the caller to tear down. */
static inline int run_uring_loop(struct relay *r)
{
    arm_accept(r);
    arm_signal(r);
    while (!r->stop) {
        int ret = io_uring_submit_and_wait(&r->ring, 1);
        if (ret < 0 && ret != -EINTR) {
            fprintf(stderr, RELAY_NAME ": io_uring_submit_and_wait: %s\n", strerror(-ret));
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
                /* A failed linked poll needs nothing: the op behind it completes with -ECANCELED. */
                if (idx >= MAX_PAIRS || !r->pairs[idx].in_use || r->pairs[idx].gen != (uint16_t)(ud >> 32)) {
                    fprintf(stderr, RELAY_NAME ": stale completion op %d slot %u\n", (int)op, idx);
                    abort();
                }
                handle_pair_cqe(r, op, (uint32_t)(ud >> 48) & 1, idx, cqe->res);
            }
        }
        io_uring_cq_advance(&r->ring, seen);
    }
    return 0;
}

#endif
