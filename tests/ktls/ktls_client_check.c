/* ktls_client_check: does this kernel do kTLS, independently of ringlb?
 *
 *   ktls_client_check [--ulp-only]
 *
 * 1. Attaches the "tls" ULP to a connected loopback TCP socket and prints
 *    "ULP-OK" or "ULP-FAIL errno=<n> (<name>: <text>)". ENOENT means the tls module is not
 *    loaded (and could not be loaded on demand).
 * 2. Unless --ulp-only: for TLS 1.2 and 1.3 with AES-128-GCM, AES-256-GCM and
 *    ChaCha20-Poly1305, sets TLS_TX on one end and TLS_RX on the other with the same made-up
 *    key, pushes 200 KiB through and compares: "KTLS-CRYPTO <version> <cipher> OK|FAIL <why>".
 *    This exercises the crypto modules (gcm, ctr, ghash, chacha20poly1305, ...) that the kernel
 *    loads for the record layer, so a missing one shows up here rather than as a puzzling
 *    ringlb fallback.
 *
 * Exit: 0 everything worked, 1 the ULP was refused, 2 a cipher failed.
 * The harness runs it before ringlb so that a VM problem is told apart from a ringlb problem.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/tls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef SOL_TLS
#define SOL_TLS 282
#endif

/* A connected pair of loopback TCP sockets. */
static int tcp_pair(int fds[2]) {
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof a) < 0 || listen(ls, 1) < 0 ||
        getsockname(ls, (struct sockaddr *)&a, &al) < 0)
        return -1;
    fds[0] = socket(AF_INET, SOCK_STREAM, 0);
    if (fds[0] < 0 || connect(fds[0], (struct sockaddr *)&a, sizeof a) < 0)
        return -1;
    fds[1] = accept(ls, NULL, NULL);
    close(ls);
    return fds[1] < 0 ? -1 : 0;
}

static const char *errname(int e) {
    switch (e) {
    case ENOENT: return "ENOENT";
    case ENOPROTOOPT: return "ENOPROTOOPT";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    case EEXIST: return "EEXIST";
    case EINVAL: return "EINVAL";
    case ENOTCONN: return "ENOTCONN";
    case EBUSY: return "EBUSY";
    case ENOMEM: return "ENOMEM";
    default: return "E?";
    }
}

union crypto_info {
    struct tls_crypto_info base;
    struct tls12_crypto_info_aes_gcm_128 aes128;
    struct tls12_crypto_info_aes_gcm_256 aes256;
    struct tls12_crypto_info_chacha20_poly1305 chacha;
};

static socklen_t make_info(union crypto_info *ci, unsigned short version, unsigned short cipher) {
    memset(ci, 0, sizeof *ci);
    ci->base.version = version;
    ci->base.cipher_type = cipher;
    /* Arbitrary but distinct bytes: both ends get the same, which is all that matters here. */
    switch (cipher) {
    case TLS_CIPHER_AES_GCM_128:
        for (size_t i = 0; i < sizeof ci->aes128.key; i++) ci->aes128.key[i] = (unsigned char)(i * 7 + 1);
        memcpy(ci->aes128.iv, "ivivivi1", 8);
        memcpy(ci->aes128.salt, "salt", 4);
        return sizeof ci->aes128;
    case TLS_CIPHER_AES_GCM_256:
        for (size_t i = 0; i < sizeof ci->aes256.key; i++) ci->aes256.key[i] = (unsigned char)(i * 5 + 3);
        memcpy(ci->aes256.iv, "ivivivi2", 8);
        memcpy(ci->aes256.salt, "SALT", 4);
        return sizeof ci->aes256;
    default:
        for (size_t i = 0; i < sizeof ci->chacha.key; i++) ci->chacha.key[i] = (unsigned char)(i * 3 + 9);
        memcpy(ci->chacha.iv, "ivivivivivi3", 12);
        return sizeof ci->chacha;
    }
}

/* Returns NULL on success, else a short reason (errno text is printed by the caller). */
static const char *roundtrip(unsigned short version, unsigned short cipher, int *err) {
    int fds[2];
    *err = 0;
    if (tcp_pair(fds) < 0) {
        *err = errno;
        return "loopback pair";
    }
    const char *why = NULL;
    union crypto_info ci;
    socklen_t len = make_info(&ci, version, cipher);
    if (setsockopt(fds[0], SOL_TCP, TCP_ULP, "tls", 4) < 0 || setsockopt(fds[1], SOL_TCP, TCP_ULP, "tls", 4) < 0) {
        why = "TCP_ULP";
    } else if (setsockopt(fds[0], SOL_TLS, TLS_TX, &ci, len) < 0) {
        why = "TLS_TX";
    } else if (setsockopt(fds[1], SOL_TLS, TLS_RX, &ci, len) < 0) {
        why = "TLS_RX";
    }
    if (why) {
        *err = errno;
        goto out;
    }
    /* Larger than one record (16 KiB) so that record splitting and sequence numbers are used,
     * smaller than the loopback socket buffers so one thread can write it all then read it. */
    enum { N = 200 * 1024 };
    static unsigned char out[N], in[N];
    for (size_t i = 0; i < N; i++) out[i] = (unsigned char)(i * 131 + (i >> 8));
    for (size_t off = 0; off < N;) {
        ssize_t w = send(fds[0], out + off, N - off, 0);
        if (w <= 0) {
            *err = errno;
            why = "send";
            goto out;
        }
        off += (size_t)w;
    }
    for (size_t off = 0; off < N;) {
        ssize_t r = recv(fds[1], in + off, N - off, 0);
        if (r <= 0) {
            *err = r < 0 ? errno : 0;
            why = r < 0 ? "recv" : "recv: EOF";
            goto out;
        }
        off += (size_t)r;
    }
    if (memcmp(in, out, N) != 0)
        why = "bytes differ";
out:
    close(fds[0]);
    close(fds[1]);
    return why;
}

int main(int argc, char **argv) {
    int ulp_only = argc > 1 && strcmp(argv[1], "--ulp-only") == 0;
    int fds[2];
    if (tcp_pair(fds) < 0) {
        printf("ULP-FAIL errno=%d (%s: loopback pair: %s)\n", errno, errname(errno), strerror(errno));
        return 1;
    }
    if (setsockopt(fds[0], SOL_TCP, TCP_ULP, "tls", 4) < 0) {
        int e = errno;
        printf("ULP-FAIL errno=%d (%s: %s)\n", e, errname(e), strerror(e));
        return 1;
    }
    printf("ULP-OK\n");
    close(fds[0]);
    close(fds[1]);
    if (ulp_only)
        return 0;

    static const struct { unsigned short v; const char *name; } versions[] = {
        {TLS_1_2_VERSION, "tls1.2"}, {TLS_1_3_VERSION, "tls1.3"}};
    static const struct { unsigned short c; const char *name; } ciphers[] = {
        {TLS_CIPHER_AES_GCM_128, "aes-128-gcm"},
        {TLS_CIPHER_AES_GCM_256, "aes-256-gcm"},
        {TLS_CIPHER_CHACHA20_POLY1305, "chacha20-poly1305"}};
    int rc = 0;
    for (size_t v = 0; v < 2; v++)
        for (size_t c = 0; c < 3; c++) {
            int e;
            const char *why = roundtrip(versions[v].v, ciphers[c].c, &e);
            if (!why) {
                printf("KTLS-CRYPTO %s %s OK\n", versions[v].name, ciphers[c].name);
            } else {
                printf("KTLS-CRYPTO %s %s FAIL %s: errno=%d (%s: %s)\n", versions[v].name, ciphers[c].name,
                       why, e, errname(e), e ? strerror(e) : "-");
                rc = 2;
            }
        }
    return rc;
}
