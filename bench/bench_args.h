/* Command line shared by the micro-benchmarks: [--iterations N]. */
#ifndef RINGLB_BENCH_ARGS_H
#define RINGLB_BENCH_ARGS_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Returns 0, or 2 (the exit status) after printing why. */
static inline int bench_parse_iterations(const char *prog, int argc, char **argv, uint64_t *iterations)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--iterations") && i + 1 < argc) {
            char *end;
            errno = 0;
            *iterations = strtoull(argv[++i], &end, 10);
            if (errno || *end || *iterations == 0) {
                fprintf(stderr, "%s: bad --iterations %s\n", prog, argv[i]);
                return 2;
            }
        } else {
            fprintf(stderr, "usage: %s [--iterations N]\n", prog);
            return 2;
        }
    }
    return 0;
}

#endif
