/* Per-connection TLS state: the record layer runs in BoringSSL until (and
 * unless) the kernel takes it over. */
#ifndef RINGLB_TLS_T_H
#define RINGLB_TLS_T_H

#include <stdbool.h>
#include <stdint.h>

struct ssl_st;

enum rlb_tls_phase {
    RLB_TLS_HANDSHAKE = 0,
    RLB_TLS_KTLS_PREP, /* handshake done; waiting for the last userspace send and the receive to stop */
    RLB_TLS_DATA,
    RLB_TLS_FAILED,    /* the handshake failed: the alert goes out, then the connection closes */
};

#define RLB_KTLS_TX 0x1 /* the kernel encrypts what ringlb sends */
#define RLB_KTLS_RX 0x2 /* the kernel decrypts what ringlb receives */

struct rlb_tls_conn {
    struct ssl_st *ssl;
    struct rlb_worker *w;  /* for the BIO callbacks */
    struct rlb_tls_worker *owner; /* the contexts this connection was made with (a reload may replace them) */
    uint32_t slot;
    /* Ciphertext received and not yet read by BoringSSL (buffer ids chained through segs). */
    int32_t cin_head, cin_tail;
    uint32_t cin_bytes;
    /* Ciphertext to send: out[out_sent, out_len); fixed capacity, so bytes
     * appended while a send is in flight never move. */
    char *out;
    uint32_t out_len, out_sent;
    uint8_t phase;         /* enum rlb_tls_phase */
    uint8_t ktls;          /* RLB_KTLS_* */
    uint8_t listener;
    bool saw_bytes;        /* the peer sent something: an end now is a failed handshake, not a probe */
    bool ktls_wanted;      /* the listener asks for kernel TLS */
    bool notify_sent;      /* our close_notify went out */
    /* Where the ciphertext BoringSSL consumed stands against record boundaries:
     * the kernel can take over receiving only at a boundary. */
    uint8_t rec_hdr_have;
    uint8_t rec_hdr[5];
    uint32_t rec_left;
    /* TLS 1.3 application traffic secrets, from the key log, until kTLS takes them. */
    uint8_t secret_len;
    uint8_t client_secret[48];
    uint8_t server_secret[48];
    struct rlb_tls_conn *next_free;
};

#endif
