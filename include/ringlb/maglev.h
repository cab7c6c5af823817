/* Maglev consistent hashing (Eisenbud et al., NSDI 2016): a lookup table of
 * prime size where each backend owns entries in proportion to its weight,
 * filled from per-backend permutations derived from the backend's address
 * with XXH3, so the same backends always give the same table (on any worker,
 * after any restart) and removing one moves little besides its own keys. */
#ifndef RINGLB_MAGLEV_H
#define RINGLB_MAGLEV_H

#include <ringlb/api.h>
#include <ringlb/config-t.h>

#define RLB_MAGLEV_DEFAULT_SIZE 65537u
#define RLB_MAGLEV_NONE 0xffffu /* entry of an empty table (no backend present) */

struct rlb_maglev {
    uint32_t size;     /* prime */
    uint16_t *entry;   /* size entries: backend index into the pool */
};

/* Builds <m> for <n> backends; weights[i] == 0 leaves backend i out (down).
 * Backend identity for the permutation is its address text, not its index.
 * Returns 0, -EINVAL (size not prime, or n > 65535), or -ENOMEM. */
int rlb_maglev_build(struct rlb_maglev *m, uint32_t size, const struct rlb_backend_cfg *backends,
                     const uint32_t *weights, uint32_t n);
void rlb_maglev_free(struct rlb_maglev *m);

/* True when <n> is prime (config validation of table sizes). */
bool rlb_maglev_is_prime(uint32_t n);

static inline uint32_t rlb_maglev_lookup(const struct rlb_maglev *m, uint64_t hash)
{
    return m->entry[hash % m->size];
}

#endif
