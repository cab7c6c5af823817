#include <ringlb/ring.h>

#include <errno.h>
#include <string.h>

int rlb_ring_init(struct io_uring *ring, unsigned entries, unsigned *flags_used)
{
    /* DEFER_TASKRUN runs completion work only when this thread waits, so
     * completions come in batches and no IPI interrupts the loop; it needs
     * SINGLE_ISSUER, which is true by design (one ring per worker thread). */
    static const unsigned attempts[] = {
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN,
        IORING_SETUP_COOP_TASKRUN,
        0,
    };
    int rc = -EINVAL;
    for (size_t i = 0; i < RLB_ARRAY_SIZE(attempts); i++) {
        struct io_uring_params p;
        memset(&p, 0, sizeof(p));
        /* A CQ larger than the SQ: multishot operations post many CQEs per SQE,
         * and overflowing the CQ is slow even though nothing is lost. */
        p.flags = attempts[i] | IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP;
        p.cq_entries = entries * 4;
        rc = io_uring_queue_init_params(entries, ring, &p);
        if (rc == 0) {
            *flags_used = attempts[i];
            /* A registered ring fd spares every io_uring_enter the file
             * table lookup; kernels without it (< 5.18) just go without. */
            io_uring_register_ring_fd(ring);
            return 0;
        }
        if (rc != -EINVAL)
            break;
    }
    return rc;
}

int rlb_ring_probe(struct io_uring *ring, const char **missing)
{
    static const struct {
        int op;
        const char *name;
    } needed[] = {
        {IORING_OP_ACCEPT, "accept"},   {IORING_OP_RECV, "recv"},           {IORING_OP_SENDMSG, "sendmsg"},
        {IORING_OP_CONNECT, "connect"}, {IORING_OP_ASYNC_CANCEL, "cancel"}, {IORING_OP_READ, "read"},
    };
    struct io_uring_probe *probe = io_uring_get_probe_ring(ring);
    if (!probe) {
        *missing = "probe";
        return -ENOTSUP;
    }
    int rc = 0;
    for (size_t i = 0; i < RLB_ARRAY_SIZE(needed); i++)
        if (!io_uring_opcode_supported(probe, needed[i].op)) {
            *missing = needed[i].name;
            rc = -ENOTSUP;
            break;
        }
    io_uring_free_probe(probe);
    return rc;
}

struct io_uring_sqe *rlb_ring_sqe(struct io_uring *ring, struct rlb_ring_counters *counters)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    while (!sqe) {
        io_uring_submit(ring);
        counters->enters++;
        sqe = io_uring_get_sqe(ring);
    }
    counters->sqes++;
    return sqe;
}
