#include <ringlb/buf.h>
#include <ringlb/cache.h>
#include <ringlb/log.h>

#include <errno.h>
#include <liburing.h>
#include <string.h>
#include <sys/mman.h>

static int group_init(struct rlb_buf_group *g, struct io_uring *ring, unsigned gid, uint32_t count, uint32_t size,
                      uint32_t base)
{
    g->count = count;
    g->size = size;
    g->base = base;
    g->mask = (uint32_t)io_uring_buf_ring_mask(count);
    /* Buffers are mapped, not malloc'ed: untouched pages cost no RSS, so a
     * generous ring only costs memory under load. */
    g->mem = mmap(NULL, (size_t)count * size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (g->mem == MAP_FAILED) {
        g->mem = NULL;
        return -errno;
    }
    /* liburing 2.3 has no io_uring_setup_buf_ring: map the ring ourselves. */
    g->ring_bytes = (size_t)count * sizeof(struct io_uring_buf);
    g->ring = mmap(NULL, g->ring_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (g->ring == MAP_FAILED) {
        g->ring = NULL;
        return -errno;
    }
    io_uring_buf_ring_init(g->ring);
    if (ring) {
        struct io_uring_buf_reg reg = {
            .ring_addr = (uint64_t)(uintptr_t)g->ring,
            .ring_entries = count,
            .bgid = (uint16_t)gid,
        };
        int rc = io_uring_register_buf_ring(ring, &reg, 0);
        if (rc < 0)
            return rc;
    }
    for (uint32_t i = 0; i < count; i++)
        io_uring_buf_ring_add(g->ring, g->mem + (size_t)i * size, size, (unsigned short)i, g->mask, (int)i);
    io_uring_buf_ring_advance(g->ring, (int)count);
    g->in_ring = count;
    return 0;
}

int rlb_bufs_init(struct rlb_bufs *b, struct io_uring *ring, const struct rlb_bufs_spec *spec)
{
    memset(b, 0, sizeof(*b));
    b->linear_cap = spec->linear_cap;
    b->linear_size = spec->linear_size;
    b->linear_free = RLB_BUF_NONE;
    uint32_t base = 0;
    for (unsigned g = 0; g < RLB_BUF_GROUPS; g++) {
        int rc = group_init(&b->groups[g], ring, g, spec->count[g], spec->size[g], base);
        if (rc < 0)
            return rc;
        base += spec->count[g];
    }
    b->ring_ids = base;
    uint32_t ids = base + b->linear_cap;
    b->refs = calloc(ids, sizeof(*b->refs));
    b->segs = calloc(ids, sizeof(*b->segs));
    b->linear = calloc(b->linear_cap ? b->linear_cap : 1, sizeof(*b->linear));
    b->linear_next_free = calloc(b->linear_cap ? b->linear_cap : 1, sizeof(*b->linear_next_free));
    if (!b->refs || !b->segs || !b->linear || !b->linear_next_free)
        return -ENOMEM;
    return 0;
}

void rlb_bufs_destroy(struct rlb_bufs *b, struct io_uring *ring)
{
    for (unsigned i = 0; i < RLB_BUF_GROUPS; i++) {
        struct rlb_buf_group *g = &b->groups[i];
        if (ring && g->ring)
            io_uring_unregister_buf_ring(ring, (int)i);
        if (g->ring)
            munmap(g->ring, g->ring_bytes);
        if (g->mem)
            munmap(g->mem, (size_t)g->count * g->size);
    }
    for (uint32_t i = 0; b->linear && i < b->linear_cap; i++)
        free(b->linear[i]);
    free(b->linear);
    free(b->linear_next_free);
    free(b->refs);
    free(b->segs);
    memset(b, 0, sizeof(*b));
}

void rlb_buf_unref(struct rlb_bufs *b, int32_t id)
{
    if (id < RLB_BUF_NONE) {
        rlb_cache_ext_unref(b->cache, id);
        return;
    }
    RLB_BUG_ON(b->refs[id] == 0);
    if (--b->refs[id] != 0)
        return;
    if (rlb_buf_is_ring(b, id)) {
        struct rlb_buf_group *g = rlb_buf_group_of(b, id);
        uint32_t local = (uint32_t)id - g->base;
        io_uring_buf_ring_add(g->ring, g->mem + (size_t)local * g->size, g->size, (unsigned short)local, g->mask,
                              (int)g->pending_adds);
        g->pending_adds++;
    } else {
        uint32_t li = (uint32_t)id - b->ring_ids;
        b->linear_next_free[li] = b->linear_free;
        b->linear_free = (int32_t)li;
    }
}

void rlb_bufs_publish(struct rlb_bufs *b)
{
    for (unsigned i = 0; i < RLB_BUF_GROUPS; i++) {
        struct rlb_buf_group *g = &b->groups[i];
        if (g->pending_adds) {
            io_uring_buf_ring_advance(g->ring, (int)g->pending_adds);
            g->in_ring += g->pending_adds;
            g->pending_adds = 0;
        }
    }
}

int32_t rlb_linear_alloc(struct rlb_bufs *b)
{
    int32_t li = b->linear_free;
    if (li != RLB_BUF_NONE) {
        b->linear_free = b->linear_next_free[li];
    } else {
        /* Grow lazily up to the cap: most workers never need a linear buffer. */
        uint32_t i;
        for (i = 0; i < b->linear_cap && b->linear[i]; i++)
            ;
        if (i == b->linear_cap)
            return RLB_BUF_NONE;
        b->linear[i] = malloc(b->linear_size);
        if (!b->linear[i])
            return RLB_BUF_NONE;
        li = (int32_t)i;
    }
    int32_t id = (int32_t)(b->ring_ids + li);
    b->refs[id] = 1;
    b->segs[id].off = 0;
    b->segs[id].len = 0;
    b->segs[id].next = RLB_BUF_NONE;
    return id;
}

struct rlb_outq *rlb_outq_get(struct rlb_outq_pool *pool)
{
    struct rlb_outq *q = pool->free;
    if (q) {
        pool->free = q->next_free;
    } else {
        q = malloc(sizeof(*q));
        if (!q)
            return NULL;
        pool->allocated++;
    }
    q->head = q->tail = q->inflight = 0;
    q->arena_used = 0;
    q->queued_bytes = 0;
    q->next_free = NULL;
    return q;
}

void rlb_outq_put(struct rlb_outq_pool *pool, struct rlb_outq *q)
{
    q->next_free = pool->free;
    pool->free = q;
}

/* Pieces already sent leave a gap at the front; close it only between sends
 * because the kernel may still read iov[] of the send in flight. */
static void compact(struct rlb_outq *q)
{
    if (q->inflight || q->head == 0)
        return;
    uint16_t n = (uint16_t)(q->tail - q->head);
    memmove(q->iov, q->iov + q->head, n * sizeof(q->iov[0]));
    memmove(q->bid, q->bid + q->head, n * sizeof(q->bid[0]));
    q->head = 0;
    q->tail = n;
    if (n == 0)
        q->arena_used = 0;
}

static void push(struct rlb_outq *q, int32_t id, const char *ptr, size_t len)
{
    if (q->tail == RLB_OUTQ_PIECES)
        compact(q);
    RLB_BUG_ON(q->tail >= RLB_OUTQ_PIECES);
    q->iov[q->tail].iov_base = (void *)ptr;
    q->iov[q->tail].iov_len = len;
    q->bid[q->tail] = id;
    q->tail++;
    q->queued_bytes += len;
}

void rlb_outq_push_buf(struct rlb_outq *q, struct rlb_bufs *b, int32_t id, const char *ptr, size_t len)
{
    if (len == 0)
        return;
    rlb_buf_ref(b, id);
    push(q, id, ptr, len);
}

void rlb_outq_push_static(struct rlb_outq *q, const char *ptr, size_t len)
{
    if (len)
        push(q, RLB_BUF_NONE, ptr, len);
}

char *rlb_outq_reserve(struct rlb_outq *q, size_t len)
{
    RLB_BUG_ON(q->arena_used + len > RLB_OUTQ_ARENA);
    return q->arena + q->arena_used;
}

void rlb_outq_commit(struct rlb_outq *q, size_t len)
{
    char *p = q->arena + q->arena_used;
    q->arena_used += (uint32_t)len;
    if (len)
        push(q, RLB_BUF_NONE, p, len);
}

void rlb_outq_push_copy(struct rlb_outq *q, const char *ptr, size_t len)
{
    char *dst = rlb_outq_reserve(q, len);
    memcpy(dst, ptr, len);
    rlb_outq_commit(q, len);
}

uint32_t rlb_outq_prepare_send(struct rlb_outq *q, uint32_t max_pieces)
{
    RLB_BUG_ON(q->inflight);
    compact(q);
    uint32_t n = (uint32_t)(q->tail - q->head);
    if (n > max_pieces)
        n = max_pieces;
    memset(&q->msg, 0, sizeof(q->msg));
    q->msg.msg_iov = q->iov + q->head;
    q->msg.msg_iovlen = n;
    q->inflight = (uint16_t)n;
    return n;
}

void rlb_outq_sent(struct rlb_outq *q, struct rlb_bufs *b, size_t sent)
{
    uint16_t end = (uint16_t)(q->head + q->inflight);
    q->queued_bytes -= sent;
    while (q->head < end && sent >= q->iov[q->head].iov_len) {
        sent -= q->iov[q->head].iov_len;
        if (q->bid[q->head] != RLB_BUF_NONE)
            rlb_buf_unref(b, q->bid[q->head]);
        q->head++;
    }
    if (sent) {
        RLB_BUG_ON(q->head >= end);
        q->iov[q->head].iov_base = (char *)q->iov[q->head].iov_base + sent;
        q->iov[q->head].iov_len -= sent;
    }
    q->inflight = 0;
    if (q->head == q->tail) {
        q->head = q->tail = 0;
        q->arena_used = 0;
    }
}

void rlb_outq_discard(struct rlb_outq *q, struct rlb_bufs *b)
{
    for (uint16_t i = q->head; i < q->tail; i++)
        if (q->bid[i] != RLB_BUF_NONE)
            rlb_buf_unref(b, q->bid[i]);
    q->head = q->tail = q->inflight = 0;
    q->arena_used = 0;
    q->queued_bytes = 0;
}

struct rlb_zc_hold *rlb_zc_hold_inflight(struct rlb_outq_pool *pool, const struct rlb_outq *q, struct rlb_bufs *b)
{
    struct rlb_zc_hold *h = pool->free_holds;
    if (h)
        pool->free_holds = h->next;
    else if (!(h = malloc(sizeof(*h))))
        return NULL;
    h->n = 0;
    h->next = NULL;
    for (uint16_t i = q->head; i < q->head + q->inflight; i++)
        if (q->bid[i] != RLB_BUF_NONE) {
            rlb_buf_ref(b, q->bid[i]);
            h->bid[h->n++] = q->bid[i];
        }
    return h;
}

void rlb_zc_hold_release(struct rlb_outq_pool *pool, struct rlb_zc_hold *h, struct rlb_bufs *b)
{
    for (uint16_t i = 0; i < h->n; i++)
        rlb_buf_unref(b, h->bid[i]);
    h->next = pool->free_holds;
    pool->free_holds = h;
}
