/* The read-mostly board through which backend health crosses cores: the
 * health checker thread writes one state byte per backend and, for hash
 * pools, publishes a Maglev table rebuilt without the backends that are down;
 * workers read both between loop turns when the generation moves, never
 * taking a lock. A table replaced is freed once every worker has adopted a
 * later generation. */
#ifndef RINGLB_HEALTH_BOARD_H
#define RINGLB_HEALTH_BOARD_H

#include <ringlb/config-t.h>
#include <ringlb/maglev.h>
#include <stdatomic.h>

struct rlb_worker;

struct rlb_retired_table {
    struct rlb_maglev *table;
    uint64_t generation; /* readers that adopted this generation no longer use <table> */
    struct rlb_retired_table *next;
};

struct rlb_health_board {
    const struct rlb_config *cfg;
    uint32_t *pool_base;          /* index of each pool's first backend in <down> */
    _Atomic uint8_t *down;        /* 1: the checker says the backend is down */
    _Atomic(struct rlb_maglev *) *tables; /* per pool: the current table of a hash pool, else NULL */
    _Atomic uint64_t generation;  /* bumped after every change, release */

    /* Checker side only. */
    struct rlb_worker *workers;
    uint32_t num_workers;
    struct rlb_retired_table *retired;
};

/* Builds the initial tables (every backend up) on the calling thread. */
int rlb_health_board_init(struct rlb_health_board *hb, const struct rlb_config *cfg);
/* Workers to wake on a change and to wait for before freeing old tables. */
void rlb_health_board_attach(struct rlb_health_board *hb, struct rlb_worker *workers, uint32_t n);
/* The checker's verdict on one backend. Checker thread only. */
void rlb_health_board_set(struct rlb_health_board *hb, uint32_t pool, uint32_t backend, bool down);
/* After the workers have stopped. */
void rlb_health_board_destroy(struct rlb_health_board *hb);

static inline bool rlb_health_board_down(const struct rlb_health_board *hb, uint32_t pool, uint32_t backend)
{
    return atomic_load_explicit(&hb->down[hb->pool_base[pool] + backend], memory_order_relaxed) != 0;
}

#endif
