/* Maglev table construction (Eisenbud et al., NSDI 2016, section 3.4).
 *
 * Every present backend walks its own permutation of the table, offset + j * skip (mod M), taking the first entry
 * still free each time it is its turn. M is prime and skip in [1, M-1], so every permutation visits every entry
 * and a backend never runs out of candidates before the table is full.
 *
 * Weights decide whose turn it is. The paper leaves weighting open; here the turns follow stride scheduling: the
 * next claimant is the backend whose next claim has the earliest virtual time (count + 1) / weight, ties to the
 * lower index. Three reasons for this rule rather than a per-round quota against the filled count:
 *  - equal weights give turns in index order, round after round, which is the paper's algorithm exactly;
 *  - a backend's virtual times depend on its own weight only, so removing a backend deletes its turns from the
 *    order and leaves the relative order of everyone else's unchanged: its entries are taken by the others as in
 *    unweighted Maglev, and the rest of the table moves only where the permutations collide, not because the
 *    quotas shifted (the test prints the measured extra disruption);
 *  - the claim counts are exact: after the table is full each backend holds its weight share of M to within one
 *    entry, whatever the mix of weights.
 * The earliest virtual time is kept in a binary heap, for one period of the turns only (see fill()). The build is
 * then dominated by the permutation walks near the end, about M ln M steps in all, as in the paper. */
#include <ringlb/api.h>
#include <ringlb/maglev.h>

#include <errno.h>
#include <string.h>
#include <xxhash.h>

/* Two independent hashes of the address text; any fixed pair will do, but changing them moves every key. */
#define OFFSET_SEED 0x6d61676c65762d6full /* "maglev-o" */
#define SKIP_SEED 0x6d61676c65762d73ull   /* "maglev-s" */

struct walker {
    uint32_t pos;    /* next candidate entry of this backend's permutation */
    uint32_t skip;
    uint32_t count;  /* turns taken so far */
    uint32_t weight;
    uint16_t index;  /* backend index in the pool, the value stored in the table */
};

bool rlb_maglev_is_prime(uint32_t n)
{
    if (n < 2)
        return false;
    if (n % 2 == 0)
        return n == 2;
    for (uint64_t d = 3; d * d <= n; d += 2)
        if (n % d == 0)
            return false;
    return true;
}

/* True when <a> is due before <b>: (count_a + 1) / weight_a < (count_b + 1) / weight_b, cross-multiplied.
 * count + 1 <= M < 2^32 and weight < 2^32, so the products fit in 64 bits. */
static bool due_before(const struct walker *a, const struct walker *b)
{
    uint64_t ta = ((uint64_t)a->count + 1) * b->weight;
    uint64_t tb = ((uint64_t)b->count + 1) * a->weight;
    return ta < tb || (ta == tb && a->index < b->index);
}

static void sift_down(uint32_t *heap, uint32_t n, const struct walker *w, uint32_t at)
{
    uint32_t item = heap[at];
    for (;;) {
        uint32_t child = 2 * at + 1;
        if (child >= n)
            break;
        if (child + 1 < n && due_before(&w[heap[child + 1]], &w[heap[child]]))
            child++;
        if (!due_before(&w[heap[child]], &w[item]))
            break;
        heap[at] = heap[child];
        at = child;
    }
    heap[at] = item;
}

static uint64_t gcd(uint64_t a, uint64_t b)
{
    while (b) {
        uint64_t r = a % b;
        a = b;
        b = r;
    }
    return a;
}

/* Fills <entry> from the <present> backends that have weight. */
static int fill(uint16_t *entry, uint32_t size, const struct rlb_backend_cfg *backends, const uint32_t *weights,
                uint32_t n, uint32_t present)
{
    /* The turns repeat: over each unit of virtual time backend i claims exactly weight_i / g times (g the gcd of
     * the weights), in the same order, ties included. So one period of sum(weight_i / g) turns is computed with
     * the heap, then replayed; equal weights make it N turns, and the heap no longer costs per entry. */
    uint64_t g = 0, total = 0;
    for (uint32_t i = 0; i < n; i++)
        g = gcd(g, weights[i]);
    for (uint32_t i = 0; i < n; i++)
        total += weights[i] / g;
    uint32_t period = total < size ? (uint32_t)total : size;

    struct walker *w = malloc(present * sizeof(*w));
    uint32_t *heap = malloc(present * sizeof(*heap));
    uint16_t *turn = malloc((size_t)period * sizeof(*turn)); /* walker indexes: present <= 65535 */
    if (!w || !heap || !turn) {
        free(w);
        free(heap);
        free(turn);
        return -ENOMEM;
    }
    uint32_t k = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (weights[i] == 0)
            continue;
        const char *text = backends[i].addr.text;
        size_t len = strnlen(text, sizeof(backends[i].addr.text));
        /* size == 2 leaves M - 1 == 1: skip 1, still a permutation. */
        w[k] = (struct walker){
            .pos = (uint32_t)(XXH3_64bits_withSeed(text, len, OFFSET_SEED) % size),
            .skip = (uint32_t)(XXH3_64bits_withSeed(text, len, SKIP_SEED) % (size - 1) + 1),
            .weight = weights[i],
            .index = (uint16_t)i,
        };
        heap[k] = k;
        k++;
    }
    for (uint32_t at = present / 2; at-- > 0;)
        sift_down(heap, present, w, at);
    for (uint32_t t = 0; t < period; t++) {
        turn[t] = (uint16_t)heap[0];
        w[heap[0]].count++;
        sift_down(heap, present, w, 0);
    }

    for (uint32_t filled = 0, t = 0; filled < size; filled++) {
        struct walker *b = &w[turn[t]];
        t = t + 1 < period ? t + 1 : 0;
        /* pos + skip could pass 2^32 for a huge table: step without forming the sum. */
        uint32_t pos = b->pos, back = size - b->skip;
        /* Terminates: the table is not full and the permutation covers all of it. */
        while (entry[pos] != RLB_MAGLEV_NONE)
            pos = pos < back ? pos + b->skip : pos - back;
        entry[pos] = b->index;
        b->pos = pos < back ? pos + b->skip : pos - back;
    }
    free(w);
    free(heap);
    free(turn);
    return 0;
}

int rlb_maglev_build(struct rlb_maglev *m, uint32_t size, const struct rlb_backend_cfg *backends,
                     const uint32_t *weights, uint32_t n)
{
    m->size = 0;
    m->entry = NULL;
    /* Index 65535 would read as RLB_MAGLEV_NONE. */
    if (!rlb_maglev_is_prime(size) || n > 65535)
        return -EINVAL;

    uint16_t *entry = malloc((size_t)size * sizeof(*entry));
    if (!entry)
        return -ENOMEM;
    memset(entry, 0xff, (size_t)size * sizeof(*entry)); /* every entry RLB_MAGLEV_NONE: free */

    uint32_t present = 0;
    for (uint32_t i = 0; i < n; i++)
        present += weights[i] > 0;
    if (present > 0) {
        int ret = fill(entry, size, backends, weights, n, present);
        if (ret < 0) {
            free(entry);
            return ret;
        }
    }
    m->size = size;
    m->entry = entry;
    return 0;
}

void rlb_maglev_free(struct rlb_maglev *m)
{
    free(m->entry);
    m->entry = NULL;
    m->size = 0;
}
