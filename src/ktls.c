/* Kernel TLS: after BoringSSL's handshake, the record keys and sequence
 * numbers go to the kernel (TCP_ULP "tls", TLS_TX, TLS_RX), and from then on
 * the socket carries plaintext for ringlb, so splice and plain sends work as
 * for HTTP. TLS 1.2 keys come from the key block; TLS 1.3 keys are expanded
 * (HKDF-Expand-Label) from the traffic secrets BoringSSL's key log gives,
 * since its C API has no getter for them. Where the kernel refuses (no tls
 * module, as on many hosts), the connection stays in userspace and the
 * refusal is counted. */
#include "tls_internal.h"

#include <ringlb/conn.h>
#include <ringlb/log.h>
#include <ringlb/proxy.h>
#include <ringlb/worker-t.h>

#include <openssl/hkdf.h>

#include <errno.h>
#include <linux/tls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#ifndef SOL_TLS
#define SOL_TLS 282
#endif
#ifndef TCP_ULP
#define TCP_ULP 31
#endif

/* After a refusal of the ULP itself the kernel is asked again only this much later: each ask may make it run
 * modprobe, far too slow to repeat per connection. */
#define ULP_RETRY_MS 60000

struct ktls_cipher {
    uint16_t suite;      /* IANA id */
    uint16_t type;       /* TLS_CIPHER_* */
    uint8_t key_len;
    uint8_t salt_len;    /* fixed part of the nonce that is not sent (GCM) */
    uint8_t iv_len;      /* the kernel's iv field */
    const EVP_MD *(*md)(void);
};

static const struct ktls_cipher ciphers[] = {
    {0xC02B, TLS_CIPHER_AES_GCM_128, 16, 4, 8, EVP_sha256},       /* ECDHE-ECDSA-AES128-GCM-SHA256 */
    {0xC02F, TLS_CIPHER_AES_GCM_128, 16, 4, 8, EVP_sha256},       /* ECDHE-RSA-AES128-GCM-SHA256 */
    {0xC02C, TLS_CIPHER_AES_GCM_256, 32, 4, 8, EVP_sha384},       /* ECDHE-ECDSA-AES256-GCM-SHA384 */
    {0xC030, TLS_CIPHER_AES_GCM_256, 32, 4, 8, EVP_sha384},       /* ECDHE-RSA-AES256-GCM-SHA384 */
    {0xCCA9, TLS_CIPHER_CHACHA20_POLY1305, 32, 0, 12, EVP_sha256}, /* ECDHE-ECDSA-CHACHA20-POLY1305 */
    {0xCCA8, TLS_CIPHER_CHACHA20_POLY1305, 32, 0, 12, EVP_sha256}, /* ECDHE-RSA-CHACHA20-POLY1305 */
    {0x1301, TLS_CIPHER_AES_GCM_128, 16, 4, 8, EVP_sha256},       /* TLS_AES_128_GCM_SHA256 */
    {0x1302, TLS_CIPHER_AES_GCM_256, 32, 4, 8, EVP_sha384},       /* TLS_AES_256_GCM_SHA384 */
    {0x1303, TLS_CIPHER_CHACHA20_POLY1305, 32, 0, 12, EVP_sha256}, /* TLS_CHACHA20_POLY1305_SHA256 */
};

static const struct ktls_cipher *cipher_of(const SSL *ssl)
{
    const SSL_CIPHER *c = SSL_get_current_cipher(ssl);
    if (c == NULL)
        return NULL;
    uint16_t id = SSL_CIPHER_get_protocol_id(c);
    for (size_t i = 0; i < sizeof(ciphers) / sizeof(ciphers[0]); i++)
        if (ciphers[i].suite == id)
            return &ciphers[i];
    return NULL;
}

static void note_refusal(struct rlb_worker *w, const char *what, int err)
{
    struct rlb_tls_worker *tw = w->tls;
    w->stats.ktls_fallbacks++;
    if (!tw->ktls_refusal_logged) {
        tw->ktls_refusal_logged = true;
        rlb_log_info("worker %u: kTLS %s: %s; connections stay on userspace TLS (counted as ktls_fallbacks)", w->id,
                     what, strerror(err));
    }
}

bool rlb_ktls_begin(struct rlb_worker *w, struct rlb_conn *c)
{
    struct rlb_tls_worker *tw = w->tls;
    if (w->timers.now_ms < tw->ktls_retry_ms) {
        w->stats.ktls_fallbacks++;
        return false;
    }
    if (cipher_of(c->tls->ssl) == NULL) {
        note_refusal(w, "does not support the negotiated cipher", EOPNOTSUPP);
        return false;
    }
    if (SSL_version(c->tls->ssl) == TLS1_3_VERSION && c->tls->secret_len == 0) {
        note_refusal(w, "got no TLS 1.3 traffic secrets", ENOKEY);
        return false;
    }
    if (setsockopt(c->fd, IPPROTO_TCP, TCP_ULP, "tls", sizeof("tls")) != 0) {
        int err = errno;
        tw->ktls_retry_ms = w->timers.now_ms + ULP_RETRY_MS;
        note_refusal(w, "is not available (TCP_ULP \"tls\")", err);
        return false;
    }
    return true;
}

/* HKDF-Expand-Label (RFC 8446 7.1) with an empty context. */
bool rlb__ktls_expand_label(const EVP_MD *md, const uint8_t *secret, size_t secret_len, const char *label, uint8_t *out,
                         size_t out_len)
{
    uint8_t info[2 + 1 + 6 + 16 + 1];
    size_t label_len = strlen(label);
    size_t n = 0;
    info[n++] = (uint8_t)(out_len >> 8);
    info[n++] = (uint8_t)out_len;
    info[n++] = (uint8_t)(6 + label_len);
    memcpy(info + n, "tls13 ", 6);
    n += 6;
    memcpy(info + n, label, label_len);
    n += label_len;
    info[n++] = 0;
    return HKDF_expand(out, out_len, md, secret, secret_len, info, n) == 1;
}

union crypto_info {
    struct tls_crypto_info info;
    struct tls12_crypto_info_aes_gcm_128 gcm128;
    struct tls12_crypto_info_aes_gcm_256 gcm256;
    struct tls12_crypto_info_chacha20_poly1305 chacha;
};

/* Fills the kernel's structure for one direction from a key, the full
 * 12-byte (1.3, ChaCha20) or 4-byte (1.2 GCM) IV and the sequence number. */
static socklen_t fill_info(union crypto_info *ci, const struct ktls_cipher *k, uint16_t version, const uint8_t *key,
                           const uint8_t *iv, size_t iv_total, uint64_t seq)
{
    uint8_t rec_seq[8], explicit_iv[8];
    for (int i = 0; i < 8; i++)
        rec_seq[i] = (uint8_t)(seq >> (56 - 8 * i));
    memset(ci, 0, sizeof(*ci));
    ci->info.version = version;
    ci->info.cipher_type = k->type;
    if (k->type == TLS_CIPHER_CHACHA20_POLY1305) {
        memcpy(ci->chacha.key, key, 32);
        memcpy(ci->chacha.iv, iv, 12);
        memcpy(ci->chacha.rec_seq, rec_seq, 8);
        return sizeof(ci->chacha);
    }
    /* GCM: the salt is the IV's first 4 bytes. In TLS 1.3 the other 8 are XORed with the sequence number by the
     * kernel itself; in TLS 1.2 they are the explicit nonce sent in each record, for which the sequence number
     * is a unique choice, as BoringSSL makes it. */
    if (iv_total == 12)
        memcpy(explicit_iv, iv + 4, 8);
    else
        memcpy(explicit_iv, rec_seq, 8);
    if (k->type == TLS_CIPHER_AES_GCM_128) {
        memcpy(ci->gcm128.key, key, 16);
        memcpy(ci->gcm128.salt, iv, 4);
        memcpy(ci->gcm128.iv, explicit_iv, 8);
        memcpy(ci->gcm128.rec_seq, rec_seq, 8);
        return sizeof(ci->gcm128);
    }
    memcpy(ci->gcm256.key, key, 32);
    memcpy(ci->gcm256.salt, iv, 4);
    memcpy(ci->gcm256.iv, explicit_iv, 8);
    memcpy(ci->gcm256.rec_seq, rec_seq, 8);
    return sizeof(ci->gcm256);
}

/* The keys of both directions, from the server's point of view: [0] what it
 * sends (server_write), [1] what it receives (client_write). */
struct direction_keys {
    uint8_t key[2][32];
    uint8_t iv[2][12];
    size_t iv_len;
};

static bool derive_keys(struct rlb_tls_conn *t, const struct ktls_cipher *k, struct direction_keys *d)
{
    SSL *ssl = t->ssl;
    if (SSL_version(ssl) == TLS1_3_VERSION) {
        const EVP_MD *md = k->md();
        size_t hash_len = EVP_MD_size(md);
        if (t->secret_len != hash_len)
            return false;
        d->iv_len = 12;
        return rlb__ktls_expand_label(md, t->server_secret, hash_len, "key", d->key[0], k->key_len) &&
               rlb__ktls_expand_label(md, t->server_secret, hash_len, "iv", d->iv[0], 12) &&
               rlb__ktls_expand_label(md, t->client_secret, hash_len, "key", d->key[1], k->key_len) &&
               rlb__ktls_expand_label(md, t->client_secret, hash_len, "iv", d->iv[1], 12);
    }
    /* TLS 1.2 key block (RFC 5246 6.3): client MAC, server MAC (none for AEAD), client key, server key,
     * client IV, server IV. */
    uint8_t block[2 * 32 + 2 * 12];
    size_t len = SSL_get_key_block_len(ssl);
    if (len > sizeof(block) || len < 2u * k->key_len || (len - 2u * k->key_len) % 2 != 0)
        return false;
    d->iv_len = (len - 2u * k->key_len) / 2;
    if ((d->iv_len != 4 && d->iv_len != 12) || !SSL_generate_key_block(ssl, block, len))
        return false;
    memcpy(d->key[1], block, k->key_len);
    memcpy(d->key[0], block + k->key_len, k->key_len);
    memcpy(d->iv[1], block + 2 * k->key_len, d->iv_len);
    memcpy(d->iv[0], block + 2 * k->key_len + d->iv_len, d->iv_len);
    OPENSSL_cleanse(block, sizeof(block));
    return true;
}

unsigned rlb_ktls_install(struct rlb_worker *w, struct rlb_conn *c, bool rx)
{
    struct rlb_tls_conn *t = c->tls;
    const struct ktls_cipher *k = cipher_of(t->ssl);
    struct direction_keys d;
    if (k == NULL || !derive_keys(t, k, &d)) {
        note_refusal(w, "key export", EINVAL);
        return 0;
    }
    uint16_t version = SSL_version(t->ssl) == TLS1_3_VERSION ? TLS_1_3_VERSION : TLS_1_2_VERSION;
    union crypto_info ci;
    unsigned got = 0;
    socklen_t len = fill_info(&ci, k, version, d.key[0], d.iv[0], d.iv_len, SSL_get_write_sequence(t->ssl));
    if (setsockopt(c->fd, SOL_TLS, TLS_TX, &ci, len) != 0) {
        note_refusal(w, "refused the send keys (TLS_TX)", errno);
        goto out;
    }
    got |= RLB_KTLS_TX;
    w->stats.ktls_tx++;
    if (rx) {
        len = fill_info(&ci, k, version, d.key[1], d.iv[1], d.iv_len, SSL_get_read_sequence(t->ssl));
        if (setsockopt(c->fd, SOL_TLS, TLS_RX, &ci, len) == 0) {
            got |= RLB_KTLS_RX;
            w->stats.ktls_rx++;
        } else {
            rlb_log_debug("kTLS receive keys refused (%s): receiving stays in userspace", strerror(errno));
        }
    }
out:
    OPENSSL_cleanse(&d, sizeof(d));
    OPENSSL_cleanse(&ci, sizeof(ci));
    return got;
}

static int hex_value(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

void rlb_ktls_keylog(const SSL *ssl, const char *line)
{
    struct rlb_tls_conn *t = SSL_get_app_data(ssl);
    uint8_t *dst;
    if (t == NULL)
        return;
    if (strncmp(line, "CLIENT_TRAFFIC_SECRET_0 ", 24) == 0)
        dst = t->client_secret;
    else if (strncmp(line, "SERVER_TRAFFIC_SECRET_0 ", 24) == 0)
        dst = t->server_secret;
    else
        return;
    const char *hex = strchr(line + 24, ' '); /* after the client random */
    if (hex == NULL)
        return;
    hex++;
    size_t n = 0;
    while (n < 48 && hex_value(hex[2 * n]) >= 0 && hex_value(hex[2 * n + 1]) >= 0) {
        dst[n] = (uint8_t)(hex_value(hex[2 * n]) << 4 | hex_value(hex[2 * n + 1]));
        n++;
    }
    t->secret_len = (uint8_t)n;
}

bool rlb_ktls_send_close_notify(struct rlb_conn *c)
{
    /* One alert record, through the kernel's record layer: only the record type differs from data. */
    uint8_t alert[2] = {1, 0}; /* warning, close_notify */
    char control[CMSG_SPACE(sizeof(uint8_t))] = {0};
    struct iovec iov = {alert, sizeof(alert)};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof(control)};
    struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = SOL_TLS;
    cm->cmsg_type = TLS_SET_RECORD_TYPE;
    cm->cmsg_len = CMSG_LEN(sizeof(uint8_t));
    *CMSG_DATA(cm) = 21; /* alert */
    return sendmsg(c->fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL) == (ssize_t)sizeof(alert);
}

/* A record that is not application data arrived on a socket whose receiving the kernel does. */
void rlb_ktls_control_record(struct rlb_worker *w, struct rlb_conn *c)
{
    uint8_t data[512];
    char control[CMSG_SPACE(sizeof(uint8_t))];
    struct iovec iov = {data, sizeof(data)};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof(control)};
    ssize_t n = recvmsg(c->fd, &msg, MSG_DONTWAIT);
    if (n < 0) {
        if (errno == EAGAIN)
            return;
        rlb_proxy_recv_end(w, c, -errno);
        return;
    }
    uint8_t type = 23;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm != NULL; cm = CMSG_NXTHDR(&msg, cm))
        if (cm->cmsg_level == SOL_TLS && cm->cmsg_type == TLS_GET_RECORD_TYPE)
            type = *CMSG_DATA(cm);
    if (type == 21 && n >= 2 && data[1] == 0) {
        /* close_notify: the peer's end of stream. */
        rlb_proxy_recv_end(w, c, 0);
        return;
    }
    /* A fatal alert, or a handshake message: in TLS 1.3 a KeyUpdate, which would need new keys in the kernel
     * (Linux 6.14+ only) and an answer through BoringSSL, whose record state the kernel now holds. Ending the
     * connection is the clean choice: the client reconnects, and clients send KeyUpdate rarely (after gigabytes). */
    rlb_log_debug("kTLS: record type %u (%zd bytes) on a kernel-TLS connection: closing it", type, n);
    rlb_proxy_recv_end(w, c, type == 21 ? -ECONNRESET : -EPROTO);
}
