/* Base definitions every ringlb file starts with. */
#ifndef RINGLB_API_H
#define RINGLB_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define RLB_VERSION "0.1.0"

#define rlb_likely(x) __builtin_expect(!!(x), 1)
#define rlb_unlikely(x) __builtin_expect(!!(x), 0)

#define RLB_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define RLB_CACHELINE 64
#define RLB_ALIGNED __attribute__((aligned(RLB_CACHELINE)))
#define RLB_PRINTF(f, a) __attribute__((format(printf, f, a)))

#define rlb_container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* Invariant checks stay on in release builds: a broken invariant in a proxy
 * corrupts other people's traffic, which is worse than a crash. */
#define RLB_BUG_ON(cond)                                                                                               \
    do {                                                                                                               \
        if (rlb_unlikely(cond))                                                                                        \
            rlb_bug(__FILE__, __LINE__, #cond);                                                                        \
    } while (0)

_Noreturn void rlb_bug(const char *file, int line, const char *what);

/* A view of bytes owned by someone else: never NUL-terminated by contract. */
struct rlb_str {
    const char *ptr;
    size_t len;
};

#define RLB_STRLIT(s) ((struct rlb_str){(s), sizeof(s) - 1})

#endif
