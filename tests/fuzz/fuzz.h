/* Shared by the libFuzzer harnesses. */
#ifndef RINGLB_FUZZ_H
#define RINGLB_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A violated property must stop the fuzzer with the input that caused it. */
#define CHECK(c)                                                                                                       \
    do {                                                                                                               \
        if (!(c))                                                                                                      \
            __builtin_trap();                                                                                          \
    } while (0)

#endif
