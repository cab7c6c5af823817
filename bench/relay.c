/* bench_relay: the physical floor of a proxy on this machine. A TCP relay on io_uring that knows nothing about HTTP:
 * whatever a proxy does on top of this (parse, rewrite, balance per request, reuse upstream connections) costs more.
 *
 * Usage: bench_relay --listen 127.0.0.1:PORT --backend 127.0.0.1:B1 [--backend 127.0.0.1:B2 ...]
 *
 * One thread, one ring. Each accepted client gets its own backend connection (round-robin over --backend), and
 * bytes are copied both ways through one 64 KiB buffer per direction: recv, send all of it, recv again. No
 * pipelining of recv and send within a direction, so every byte costs exactly one recv and one send. EOF or an
 * error on either side closes both. SIGINT/SIGTERM end the loop with exit status 0.
 *
 * What it shares with bench_splice_relay (setup, slots, the io_uring loop) is in relay_common.h. */
#define RELAY_NAME "bench_relay"
#define RELAY_PAIR_EXTRA
#define RELAY_EXTRA
#include "relay_common.h"

static bool pair_open(struct relay *r, struct pair *p)
{
    return ensure_buf(&p->dir[0]) && ensure_buf(&p->dir[1]);
}

static void pair_release(struct relay *r, struct pair *p)
{
}

static void handle_pair_cqe(struct relay *r, enum op op, uint32_t d, uint32_t idx, int res)
{
    if (pair_cqe_closing(r, idx))
        return;
    if (op != OP_CONNECT) {
        handle_copy_cqe(r, op, d, idx, res);
    } else if (connect_ok(r, idx, res)) {
        submit_recv(r, idx, 0);
        submit_recv(r, idx, 1);
    }
}

static void usage(void)
{
    fprintf(stderr, "usage: bench_relay --listen IP:PORT --backend IP:PORT [--backend IP:PORT ...]\n");
}

int main(int argc, char **argv)
{
    static struct relay relay;
    struct relay *r = &relay;
    const char *listen_text = NULL;
    for (int i = 1; i < argc; i++) {
        int ret = parse_common_arg(r, argc, argv, &i, &listen_text);
        if (ret < 0)
            return 2;
        if (ret == 0) {
            usage();
            return 2;
        }
    }
    if (!listen_text || r->num_backends == 0) {
        usage();
        return 2;
    }
    if (setup_common(r, listen_text) < 0 || setup_ring(r) < 0)
        return 1;

    printf("bench_relay: listening on %s\n", listen_text);
    fflush(stdout);
    if (run_uring_loop(r))
        return 1;

    fprintf(stderr, "bench_relay: stopping (rejected accepts %llu, failed connects %llu, short sends %llu)\n",
            (unsigned long long)r->accept_rejected, (unsigned long long)r->connect_failed,
            (unsigned long long)r->short_sends);
    /* Exiting tears down the ring, which cancels what is still in flight, and closes every socket. */
    io_uring_queue_exit(&r->ring);
    free_common(r);
    return 0;
}
