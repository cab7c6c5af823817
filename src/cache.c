/* The per-worker response store; see cache.h. */
#include <ringlb/cache.h>
#include <ringlb/cache_policy.h>

#include <stdlib.h>
#include <sys/mman.h>
#include <string.h>
#include <xxhash.h>

#define INITIAL_BUCKETS 1024

int rlb_cache_init(struct rlb_cache *c, const struct rlb_cache_cfg *cfg, uint32_t max_headers,
                   struct rlb_cache_purges *purges)
{
    memset(c, 0, sizeof(*c));
    c->cfg = cfg;
    c->mask = INITIAL_BUCKETS - 1;
    c->buckets = calloc(INITIAL_BUCKETS, sizeof(*c->buckets));
    c->hdr_cap = max_headers;
    c->hdr = calloc(max_headers, sizeof(*c->hdr));
    c->cap_wake = 64;
    c->wake = malloc(c->cap_wake * sizeof(*c->wake));
    c->lru.lru_next = c->lru.lru_prev = &c->lru;
    c->zombies.lru_next = c->zombies.lru_prev = &c->zombies;
    c->free_handle = -1;
    c->purges = purges;
    if (purges)
        c->purge_seen = atomic_load_explicit(&purges->seq, memory_order_acquire);
    if (!c->buckets || !c->hdr || !c->wake) {
        rlb_cache_destroy(c);
        return -1;
    }
    return 0;
}

static uint64_t page_round(uint64_t n)
{
    return (n + RLB_CACHE_PAGE - 1) & ~(uint64_t)(RLB_CACHE_PAGE - 1);
}

static void body_free(struct rlb_cache_entry *e)
{
    if (e->body_mapped)
        munmap(e->body, e->body_cap);
    else
        free(e->body);
}

static void entry_free(struct rlb_cache *c, struct rlb_cache_entry *e)
{
    if (e->lru_next) { /* a zombie */
        e->lru_prev->lru_next = e->lru_next;
        e->lru_next->lru_prev = e->lru_prev;
    }
    c->used -= e->charge;
    if (e->handle >= 0) {
        c->handles[e->handle] = (struct rlb_cache_entry *)(intptr_t)c->free_handle;
        c->free_handle = e->handle;
    }
    free(e->ident);
    free(e->meta);
    body_free(e);
    free(e->waiters);
    free(e->req);
    free(e);
}

void rlb_cache_destroy(struct rlb_cache *c)
{
    /* Everything goes, referenced or not: the connections whose sends referred to entries are gone. */
    for (uint32_t b = 0; c->buckets && b <= c->mask; b++) {
        struct rlb_cache_entry *e = c->buckets[b];
        while (e) {
            struct rlb_cache_entry *next = e->hnext;
            e->lru_next = NULL;
            entry_free(c, e);
            e = next;
        }
    }
    while (c->zombies.lru_next && c->zombies.lru_next != &c->zombies)
        entry_free(c, c->zombies.lru_next);
    free(c->buckets);
    free(c->handles);
    free(c->wake);
    free(c->hdr);
    memset(c, 0, sizeof(*c));
}

uint64_t rlb_cache_hash(const char *ident, uint32_t len)
{
    return XXH3_64bits(ident, len);
}

void rlb_cache_ref(struct rlb_cache_entry *e)
{
    e->refs++;
}

void rlb_cache_unref(struct rlb_cache *c, struct rlb_cache_entry *e)
{
    if (--e->refs == 0)
        entry_free(c, e);
}

static void lru_unlink(struct rlb_cache_entry *e)
{
    e->lru_prev->lru_next = e->lru_next;
    e->lru_next->lru_prev = e->lru_prev;
    e->lru_next = e->lru_prev = NULL;
}

static void lru_push(struct rlb_cache *c, struct rlb_cache_entry *e)
{
    e->lru_next = c->lru.lru_next;
    e->lru_prev = &c->lru;
    c->lru.lru_next->lru_prev = e;
    c->lru.lru_next = e;
}

void rlb_cache_touch(struct rlb_cache *c, struct rlb_cache_entry *e)
{
    if (c->lru.lru_next == e)
        return;
    lru_unlink(e);
    lru_push(c, e);
}

static void table_unlink(struct rlb_cache *c, struct rlb_cache_entry *e)
{
    struct rlb_cache_entry **pp = &c->buckets[e->hash & c->mask];
    while (*pp && *pp != e)
        pp = &(*pp)->hnext;
    if (*pp) {
        *pp = e->hnext;
        c->count--;
    }
    e->hnext = NULL;
}

static void table_insert(struct rlb_cache *c, struct rlb_cache_entry *e)
{
    if (c->count >= c->mask + 1) {
        /* Grow at load factor 1; a failed allocation just leaves chains longer. */
        uint32_t n = (c->mask + 1) * 2;
        struct rlb_cache_entry **nb = calloc(n, sizeof(*nb));
        if (nb) {
            /* Appended at the tails: each chain keeps its newest-first order, which lookups rely on. */
            struct rlb_cache_entry ***tails = malloc(n * sizeof(*tails));
            if (!tails) {
                free(nb);
                nb = NULL;
            }
            for (uint32_t b = 0; nb && b < n; b++)
                tails[b] = &nb[b];
            for (uint32_t b = 0; nb && b <= c->mask; b++) {
                struct rlb_cache_entry *x = c->buckets[b];
                while (x) {
                    struct rlb_cache_entry *next = x->hnext;
                    uint32_t nbk = (uint32_t)(x->hash & (n - 1));
                    x->hnext = NULL;
                    *tails[nbk] = x;
                    tails[nbk] = &x->hnext;
                    x = next;
                }
            }
            free(tails);
            free(c->buckets);
            c->buckets = nb;
            c->mask = n - 1;
        }
    }
    struct rlb_cache_entry **b = &c->buckets[e->hash & c->mask];
    e->hnext = *b;
    *b = e;
    c->count++;
}

static void wake_waiters(struct rlb_cache *c, struct rlb_cache_entry *e)
{
    if (e->num_waiters == 0)
        return;
    if (c->num_wake + e->num_waiters > c->cap_wake) {
        uint32_t cap = c->cap_wake ? c->cap_wake : 64;
        while (cap < c->num_wake + e->num_waiters)
            cap *= 2;
        uint64_t *nw = realloc(c->wake, cap * sizeof(*nw));
        if (!nw)
            return; /* they time out instead */
        c->wake = nw;
        c->cap_wake = cap;
    }
    memcpy(c->wake + c->num_wake, e->waiters, e->num_waiters * sizeof(*e->waiters));
    c->num_wake += e->num_waiters;
    e->num_waiters = 0;
}

/* Out of the table: dead, freed now or, while sends still refer to it, with the last of them. */
static void bury(struct rlb_cache *c, struct rlb_cache_entry *e)
{
    e->state = RLB_CE_DEAD;
    e->lru_next = c->zombies.lru_next;
    e->lru_prev = &c->zombies;
    c->zombies.lru_next->lru_prev = e;
    c->zombies.lru_next = e;
    rlb_cache_unref(c, e); /* the table's */
}

void rlb_cache_remove(struct rlb_cache *c, struct rlb_cache_entry *e)
{
    if (e->state == RLB_CE_DEAD)
        return;
    table_unlink(c, e);
    if (e->state == RLB_CE_READY) {
        lru_unlink(e);
        c->objects--;
    }
    bury(c, e);
}

/* Evicts from the cold end until <need> more bytes fit. Entries being sent stay alive (and charged)
 * until their sends complete, so the loop may empty the list and still fail. */
static bool make_room(struct rlb_cache *c, uint64_t need)
{
    while (c->used + need > c->cfg->size) {
        struct rlb_cache_entry *victim = c->lru.lru_prev;
        if (victim == &c->lru)
            return false;
        rlb_cache_remove(c, victim);
    }
    return true;
}

static void apply_purges(struct rlb_cache *c)
{
    struct rlb_cache_purges *p = c->purges;
    uint64_t seq = atomic_load_explicit(&p->seq, memory_order_acquire);
    if (seq == c->purge_seen)
        return;
    pthread_mutex_lock(&p->lock);
    seq = atomic_load_explicit(&p->seq, memory_order_relaxed);
    if (seq - c->purge_seen > RLB_CACHE_PURGE_LOG) {
        /* Too far behind to know what went: everything goes. */
        rlb_cache_invalidate(c, "", 0, true);
    } else {
        for (uint64_t s = c->purge_seen; s < seq; s++) {
            const __typeof__(p->log[0]) *l = &p->log[s % RLB_CACHE_PURGE_LOG];
            uint32_t n = rlb_cache_invalidate(c, l->pattern, l->len, l->prefix);
            if (c->purged)
                *c->purged += n;
        }
    }
    pthread_mutex_unlock(&p->lock);
    c->purge_seen = seq;
}

void rlb_cache_lookup(struct rlb_cache *c, uint64_t hash, const char *ident, uint32_t key_len, uint32_t kh_len,
                      const struct rlb_http_header *h, uint32_t n, struct rlb_cache_found *out)
{
    if (c->purges)
        apply_purges(c);
    out->ready = out->filling = NULL;
    uint32_t len = key_len + kh_len;
    char values[2048];
    for (struct rlb_cache_entry *e = c->buckets[hash & c->mask]; e; e = e->hnext) {
        if (e->hash != hash || e->key_len != key_len || e->kh_len != kh_len || memcmp(e->ident, ident, len) != 0)
            continue;
        if (e->state == RLB_CE_FILLING) {
            if (!e->purged)
                out->filling = e;
            continue;
        }
        if (e->vary_len) {
            int vl = rlb_cache_vary_values(values, sizeof(values), (struct rlb_str){e->vary, e->vary_len}, h, n);
            if (vl < 0 || (uint32_t)vl != e->vary_values_len || memcmp(values, e->vary_values, (size_t)vl) != 0)
                continue;
        }
        /* Newest first (RFC 9111 4.1): the chain is in insertion order, newest at the front. */
        if (!out->ready)
            out->ready = e;
    }
}

struct rlb_cache_entry *rlb_cache_fill_begin(struct rlb_cache *c, uint64_t hash, const char *ident, uint32_t key_len,
                                             uint32_t kh_len, const char *req, uint32_t req_len,
                                             struct rlb_cache_entry *stale)
{
    uint64_t charge = sizeof(struct rlb_cache_entry) + key_len + kh_len + req_len;
    if (!make_room(c, charge))
        return NULL;
    struct rlb_cache_entry *e = calloc(1, sizeof(*e));
    if (!e)
        return NULL;
    e->ident = malloc(key_len + kh_len + 1);
    e->req = malloc(req_len);
    if (!e->ident || !e->req) {
        free(e->ident);
        free(e->req);
        free(e);
        return NULL;
    }
    memcpy(e->ident, ident, key_len + kh_len);
    memcpy(e->req, req, req_len);
    e->key_len = key_len;
    e->kh_len = kh_len;
    e->req_len = req_len;
    e->hash = hash;
    e->handle = -1;
    e->last_modified = -1;
    e->swr = e->sie = -1;
    e->state = RLB_CE_FILLING;
    e->refs = 1; /* the table's */
    e->charge = charge;
    c->used += charge;
    if (stale) {
        e->stale = stale;
        stale->refs++;
    }
    table_insert(c, e);
    return e;
}

bool rlb_cache_set_meta(struct rlb_cache *c, struct rlb_cache_entry *e, char *meta, uint32_t size)
{
    /* The old block stays until the new one fits: on failure the entry must still point at valid bytes. */
    uint32_t old = e->meta_size;
    if (e->state == RLB_CE_READY)
        lru_unlink(e); /* not its own victim */
    bool ok = size <= old || make_room(c, size - old);
    if (e->state == RLB_CE_READY)
        lru_push(c, e);
    if (!ok) {
        free(meta);
        return false;
    }
    free(e->meta);
    e->meta = meta;
    e->meta_size = size;
    e->charge += (uint64_t)size - old;
    c->used += (uint64_t)size - old;
    return true;
}

/* Bodies of RLB_CACHE_MAP_MIN and more live in pages of their own: a hit can hand those pages to the kernel
 * by reference (vmsplice), and when the entry goes, unmapping them leaves any page still queued on a socket
 * to the kernel alone; no later allocation of ours can write into it. */
static bool grow_body(struct rlb_cache *c, struct rlb_cache_entry *e, uint64_t cap)
{
    if (cap > c->cfg->max_object)
        return false;
    bool map = cap >= RLB_CACHE_MAP_MIN;
    uint64_t real = map ? page_round(cap) : cap;
    if (!make_room(c, real - e->body_cap))
        return false;
    char *nb;
    if (!map) {
        nb = realloc(e->body, cap ? cap : 1);
        if (!nb)
            return false;
    } else if (e->body_mapped) {
        nb = mremap(e->body, e->body_cap, real, MREMAP_MAYMOVE);
        if (nb == MAP_FAILED)
            return false;
    } else {
        nb = mmap(NULL, real, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (nb == MAP_FAILED)
            return false;
        if (e->body_len)
            memcpy(nb, e->body, e->body_len);
        free(e->body);
        e->body_mapped = true;
    }
    e->body = nb;
    c->used += real - e->body_cap;
    e->charge += real - e->body_cap;
    e->body_cap = real;
    return true;
}

bool rlb_cache_reserve_body(struct rlb_cache *c, struct rlb_cache_entry *e, uint64_t len)
{
    return len <= e->body_cap || grow_body(c, e, len);
}

bool rlb_cache_fill_append(struct rlb_cache *c, struct rlb_cache_entry *e, const char *p, size_t len)
{
    if (e->purged || e->body_len + len > c->cfg->max_object)
        return false;
    if (e->body_len + len > e->body_cap) {
        uint64_t cap = e->body_cap ? e->body_cap * 2 : 4096;
        while (cap < e->body_len + len)
            cap *= 2;
        if (cap > c->cfg->max_object)
            cap = c->cfg->max_object;
        if (e->body_len + len > cap || !grow_body(c, e, cap))
            return false;
    }
    memcpy(e->body + e->body_len, p, len);
    e->body_len += len;
    return true;
}

static void end_fetch(struct rlb_cache *c, struct rlb_cache_entry *e)
{
    wake_waiters(c, e);
    free(e->waiters);
    e->waiters = NULL;
    e->cap_waiters = 0;
    c->used -= e->req_len;
    e->charge -= e->req_len;
    free(e->req);
    e->req = NULL;
    e->req_len = 0;
    if (e->stale) {
        rlb_cache_unref(c, e->stale);
        e->stale = NULL;
    }
}

void rlb_cache_fill_finish(struct rlb_cache *c, struct rlb_cache_entry *e)
{
    if (e->purged) {
        rlb_cache_fill_abandon(c, e);
        return;
    }
    end_fetch(c, e);
    /* Chunked bodies grew by doubling: give the slack back. */
    uint64_t want = e->body_mapped ? page_round(e->body_len ? e->body_len : 1) : e->body_len;
    if (e->body_cap > want) {
        char *nb = e->body_mapped ? mremap(e->body, e->body_cap, want, 0) : realloc(e->body, want ? want : 1);
        if (nb && nb != MAP_FAILED) {
            e->body = nb;
            c->used -= e->body_cap - want;
            e->charge -= e->body_cap - want;
            e->body_cap = want;
        }
    }
    /* The variants this response replaces: same key, same selecting header values (RFC 9111 4.1). */
    for (struct rlb_cache_entry *x = c->buckets[e->hash & c->mask], *next; x; x = next) {
        next = x->hnext;
        if (x == e || x->state != RLB_CE_READY || x->key_len != e->key_len || x->kh_len != e->kh_len ||
            memcmp(x->ident, e->ident, e->key_len + e->kh_len) != 0)
            continue;
        if (x->vary_len == e->vary_len && memcmp(x->vary, e->vary, e->vary_len) == 0 &&
            x->vary_values_len == e->vary_values_len && memcmp(x->vary_values, e->vary_values, e->vary_values_len) == 0)
            rlb_cache_remove(c, x);
    }
    e->state = RLB_CE_READY;
    lru_push(c, e);
    c->objects++;
}

void rlb_cache_fill_abandon(struct rlb_cache *c, struct rlb_cache_entry *e)
{
    if (e->state == RLB_CE_DEAD)
        return;
    end_fetch(c, e);
    table_unlink(c, e);
    bury(c, e);
}

bool rlb_cache_wait(struct rlb_cache *c, struct rlb_cache_entry *e, uint32_t slot, uint32_t gen)
{
    (void)c;
    if (e->num_waiters == e->cap_waiters) {
        uint32_t cap = e->cap_waiters ? e->cap_waiters * 2 : 8;
        uint64_t *nw = realloc(e->waiters, cap * sizeof(*nw));
        if (!nw)
            return false;
        e->waiters = nw;
        e->cap_waiters = cap;
    }
    e->waiters[e->num_waiters++] = (uint64_t)slot << 32 | gen;
    return true;
}

uint32_t rlb_cache_invalidate(struct rlb_cache *c, const char *key, uint32_t len, bool prefix)
{
    uint32_t n = 0;
    if (!prefix) {
        uint64_t hash = rlb_cache_hash(key, len);
        for (struct rlb_cache_entry *e = c->buckets[hash & c->mask], *next; e; e = next) {
            next = e->hnext;
            if (e->hash != hash || e->key_len != len || memcmp(e->ident, key, len) != 0)
                continue;
            n++;
            if (e->state == RLB_CE_FILLING)
                e->purged = true; /* what it fetches may predate the purge */
            else
                rlb_cache_remove(c, e);
        }
        return n;
    }
    for (uint32_t b = 0; b <= c->mask; b++) {
        for (struct rlb_cache_entry *e = c->buckets[b], *next; e; e = next) {
            next = e->hnext;
            if (e->key_len < len || memcmp(e->ident, key, len) != 0)
                continue;
            n++;
            if (e->state == RLB_CE_FILLING)
                e->purged = true;
            else
                rlb_cache_remove(c, e);
        }
    }
    return n;
}

int32_t rlb_cache_pin(struct rlb_cache *c, struct rlb_cache_entry *e)
{
    if (e->handle < 0) {
        if (c->free_handle >= 0) {
            e->handle = c->free_handle;
            c->free_handle = (int32_t)(intptr_t)c->handles[e->handle];
        } else {
            if ((c->num_handles & (c->num_handles - 1)) == 0) {
                uint32_t cap = c->num_handles ? c->num_handles * 2 : 64;
                struct rlb_cache_entry **nh = realloc(c->handles, cap * sizeof(*nh));
                if (!nh)
                    return -1;
                c->handles = nh;
            }
            e->handle = (int32_t)c->num_handles++;
        }
        c->handles[e->handle] = e;
    }
    e->refs++;
    return rlb_cache_handle_id(e->handle);
}

void rlb_cache_ext_ref(struct rlb_cache *c, int32_t id)
{
    c->handles[-2 - id]->refs++;
}

void rlb_cache_ext_unref(struct rlb_cache *c, int32_t id)
{
    rlb_cache_unref(c, c->handles[-2 - id]);
}

struct rlb_cache_purges *rlb_cache_purges_new(void)
{
    struct rlb_cache_purges *p = calloc(1, sizeof(*p));
    if (p)
        pthread_mutex_init(&p->lock, NULL);
    return p;
}

void rlb_cache_purges_free(struct rlb_cache_purges *p)
{
    if (!p)
        return;
    for (uint32_t i = 0; i < RLB_CACHE_PURGE_LOG; i++)
        free(p->log[i].pattern);
    pthread_mutex_destroy(&p->lock);
    free(p);
}

bool rlb_cache_purge_post(struct rlb_cache_purges *p, const char *pattern, uint32_t len, bool prefix)
{
    char *copy = malloc(len + 1);
    if (!copy)
        return false;
    memcpy(copy, pattern, len);
    pthread_mutex_lock(&p->lock);
    uint64_t seq = atomic_load_explicit(&p->seq, memory_order_relaxed);
    __typeof__(p->log[0]) *l = &p->log[seq % RLB_CACHE_PURGE_LOG];
    free(l->pattern);
    l->pattern = copy;
    l->len = len;
    l->prefix = prefix;
    atomic_store_explicit(&p->seq, seq + 1, memory_order_release);
    pthread_mutex_unlock(&p->lock);
    return true;
}
