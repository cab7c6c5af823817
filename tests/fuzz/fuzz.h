/* Shared by the libFuzzer harnesses. */
#ifndef RINGLB_FUZZ_H
#define RINGLB_FUZZ_H

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A violated property must stop the fuzzer with the input that caused it. */
#define CHECK(c)                                                                                                       \
    do {                                                                                                               \
        if (!(c))                                                                                                      \
            __builtin_trap();                                                                                          \
    } while (0)

/* A TCP connection to <to> from a loopback source address rotating through 127.<net>.x.y (4000 of
 * them): harnesses that open tens of thousands of connections a minute never run out of ephemeral
 * ports nor meet an old connection's TIME_WAIT, whatever net.ipv4.tcp_tw_reuse says. Returns the
 * descriptor (TCP_NODELAY set), or -1 with errno when no address is left or connecting failed. */
static inline int fuzz_loopback_connect(const struct sockaddr_in *to, uint8_t net)
{
    static unsigned next;
    for (int attempt = 0; attempt < 32; attempt++) {
        unsigned n = next++ % 4000;
        struct sockaddr_in src = {.sin_family = AF_INET,
                                  .sin_addr.s_addr = htonl(0x7f000000u | (uint32_t)net << 16 | (n / 250) << 8 |
                                                           (1 + n % 250))};
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return -1;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one)); /* the port comes with connect */
        /* Loopback: the kernel completes the connection from the listener's backlog, without the worker. */
        if (bind(fd, (const struct sockaddr *)&src, sizeof(src)) == 0 &&
            connect(fd, (const struct sockaddr *)to, sizeof(*to)) == 0)
            return fd;
        int err = errno;
        close(fd);
        if (err != EADDRNOTAVAIL && err != EADDRINUSE) {
            errno = err;
            return -1;
        }
    }
    errno = EADDRNOTAVAIL;
    return -1;
}

/* Closes *<fd> (if open), with a reset instead of a FIN when <reset>, and marks it closed. */
static inline void fuzz_close(int *fd, bool reset)
{
    if (*fd < 0)
        return;
    if (reset) {
        struct linger lg = {1, 0};
        setsockopt(*fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    close(*fd);
    *fd = -1;
}

#endif
