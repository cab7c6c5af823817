/* libFuzzer harness for the TLS feeding path: a real worker, driven inline in
 * this thread, terminates TLS on a loopback listener; each input is what one
 * client sends, written over a real TCP connection in up to four pieces (so
 * that records and handshake messages are cut across receives), followed by
 * the end of the client's stream. Whatever the bytes, the server must close
 * the connection and free its slot (live_conns back to 0: nothing leaks), and
 * ASan/UBSan must stay quiet about the BIO, the record tracking and the
 * handshake driving in src/tls_io.c, src/tls.c and what they call.
 *
 * BoringSSL itself is the system library, not instrumented: coverage feedback
 * comes from ringlb's code only. Since a fuzzed first flight can never finish
 * a handshake, some inputs have the harness complete a real one first (with
 * its own BoringSSL client) so that the data phase is reached too: records
 * decrypted into the input queue, the HTTP request behind them, the response
 * encrypted back, close_notify, KeyUpdate, resumption, garbage after keys.
 *
 * Input layout: a control byte, [a handshake byte], split bytes, the payload.
 * Control byte:
 *   bits 0-1  number of pieces - 1 (1..4); each piece but the last takes one
 *             split byte: its length in units
 *   bits 2-3  the unit: 1, 4, 16 or 64 bytes
 *   bit 4     end with a reset (close with SO_LINGER 0) instead of a FIN
 *   bit 5     before ending, let the server answer and read what it sent
 *   bit 6     complete a real handshake first; the handshake byte follows
 * Handshake byte:
 *   bit 0     TLS 1.2 (else 1.3)
 *   bit 1     the payload goes raw on the wire after the handshake (else
 *             encrypted: one SSL_write per piece)
 *   bit 2     send close_notify before the end
 *   bit 3     resume the session kept from an earlier input, if any
 *   bit 4     TLS 1.3: a KeyUpdate asking for the server's before the payload
 *   bit 5     offer ALPN http/1.1
 * An empty input is a client that connects and leaves at once. */
#include <ringlb/config.h>
#include <ringlb/log.h>
#include <ringlb/worker.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);

/* TEST FIXTURE ONLY: a throwaway self-signed ECDSA P-256 key and certificate
 * (CN fuzz.ringlb.test, made once with
 *   openssl ecparam -name prime256v1 -genkey -noout -out key.pem
 *   openssl req -new -x509 -key key.pem -out cert.pem -days 36500
 *     -subj /CN=fuzz.ringlb.test -addext subjectAltName=DNS:fuzz.ringlb.test,DNS:localhost
 * ). It protects nothing and is not used anywhere but this harness. */
static const char fixture_key[] = "-----BEGIN EC PRIVATE KEY-----\n"
                                  "MHcCAQEEIAWyf4f08s6kauz0IZbQSVr4C7bdO6J2tWykNY2Xj3XKoAoGCCqGSM49\n"
                                  "AwEHoUQDQgAE5RV/abRkSMP8DyqQvvxAm8xAlHlklf0qo7SVUBgXseV6E1cIHlrm\n"
                                  "qQ8R9GK0BuLL1NaTISMEDHWTsgyE1tDaew==\n"
                                  "-----END EC PRIVATE KEY-----\n";

static const char fixture_cert[] = "-----BEGIN CERTIFICATE-----\n"
                                   "MIIBtDCCAVugAwIBAgIUZ6pW3gInoW7tSLAOo5KOM6KWzB4wCgYIKoZIzj0EAwIw\n"
                                   "GzEZMBcGA1UEAwwQZnV6ei5yaW5nbGIudGVzdDAgFw0yNjEyMDYwNDM0MzRaGA8y\n"
                                   "MTI2MTExMjA0MzQzNFowGzEZMBcGA1UEAwwQZnV6ei5yaW5nbGIudGVzdDBZMBMG\n"
                                   "ByqGSM49AgEGCCqGSM49AwEHA0IABOUVf2m0ZEjD/A8qkL78QJvMQJR5ZJX9KqO0\n"
                                   "lVAYF7HlehNXCB5a5qkPEfRitAbiy9TWkyEjBAx1k7IMhNbQ2nujezB5MB0GA1Ud\n"
                                   "DgQWBBQ6gYrj/arPG+jESk8Ex4XhilekfTAfBgNVHSMEGDAWgBQ6gYrj/arPG+jE\n"
                                   "Sk8Ex4XhilekfTAPBgNVHRMBAf8EBTADAQH/MCYGA1UdEQQfMB2CEGZ1enoucmlu\n"
                                   "Z2xiLnRlc3SCCWxvY2FsaG9zdDAKBggqhkjOPQQDAgNHADBEAiBCVHAt9sXaJCm7\n"
                                   "lD9T6yeonYU5HsGUub+aRNtKGRVHYAIgTh5eXaic+GGibEZM6h3jh3FupcOGqSBZ\n"
                                   "sgmxSyQby2k=\n"
                                   "-----END CERTIFICATE-----\n";

/* Every bounded wait below ends in __builtin_trap: past these limits the
 * worker has lost the connection. The handshake timeout (200 ms) closes any
 * connection the input left waiting, so a second and a half is generous
 * even on a loaded machine under ASan. */
#define HANDSHAKE_TIMEOUT "200ms"
#define CLOSE_DEADLINE_MS 1500
#define FREE_DEADLINE_MS 3000

static struct rlb_worker *worker;
static struct rlb_config *config;
static struct sockaddr_in listen_addr;
static char tmpdir[64];
static bool verbose; /* FUZZ_TLS_VERBOSE=1: one line per input (what came back, the worker's TLS counters) */
static size_t answer_bytes;
static uint8_t answer_first;
static SSL_CTX *client_ctx;
static SSL_SESSION *saved_session[2]; /* [0] TLS 1.3, [1] TLS 1.2 */
static char cert_path[128], key_path[128];

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void remove_fixture(void);

static void die(const char *what)
{
    fprintf(stderr, "fuzz_tls: %s\n", what);
    remove_fixture();
    exit(1);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (f == NULL || fputs(text, f) < 0 || fclose(f) != 0)
        die("cannot write the fixture certificate");
}

static void remove_fixture(void)
{
    unlink(cert_path);
    unlink(key_path);
    rmdir(tmpdir);
}

/* A loopback port nobody listens on now: bound, read back and, unless the
 * caller keeps the socket (<keep>), released. The listener takes a released
 * port a moment later (a race another process could win, in which case
 * starting the worker fails and another port is tried). */
static unsigned free_port(int *keep)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 || getsockname(fd, (struct sockaddr *)&a, &len) != 0)
        die("cannot find a free loopback port");
    if (keep != NULL)
        *keep = fd;
    else
        close(fd);
    return ntohs(a.sin_port);
}

static struct rlb_config *make_config(unsigned port, unsigned backend_port)
{
    /* Small pools and tables: each worker allocates its buffers up front. */
    static char yaml[4096];
    int n = snprintf(yaml, sizeof(yaml),
                     "workers: 1\n"
                     "max_connections: 16\n"
                     "limits:\n"
                     "  max_header_size: 16k\n"
                     "buffers:\n"
                     "  count: 64\n"
                     "  size: 16k\n"
                     "  client_count: 64\n"
                     "  client_size: 16k\n"
                     "listeners:\n"
                     "  - name: tls\n"
                     "    address: 127.0.0.1:%u\n"
                     "    defer_accept: false\n"
                     "    tls:\n"
                     "      certificates:\n"
                     "        - cert: %s\n"
                     "          key: %s\n"
                     "      handshake_timeout: " HANDSHAKE_TIMEOUT "\n"
                     "      ktls: false\n"
                     "pools:\n"
                     "  - name: app\n"
                     "    backends:\n"
                     "      - 127.0.0.1:%u\n"
                     "vhosts:\n"
                     "  - hosts: [\"*\"]\n"
                     "    routes:\n"
                     "      - path: /\n"
                     "        pool: app\n",
                     port, cert_path, key_path, backend_port);
    if (n <= 0 || (size_t)n >= sizeof(yaml))
        die("configuration too long");
    char err[RLB_CONFIG_ERR_MAX];
    struct rlb_config *cfg = rlb_config_load_string("<fuzz_tls>", yaml, (size_t)n, err, sizeof(err));
    if (cfg == NULL) {
        fprintf(stderr, "fuzz_tls: configuration refused: %s\n", err);
        remove_fixture();
        exit(1);
    }
    return cfg;
}

/* Keeps each new session for a later input to resume: the TLS 1.2 one at the
 * end of the handshake, TLS 1.3 ones when their tickets arrive. */
static int keep_session(SSL *ssl, SSL_SESSION *s)
{
    (void)ssl;
    if (!SSL_SESSION_is_resumable(s))
        return 0;
    int i = SSL_SESSION_get_protocol_version(s) == TLS1_2_VERSION;
    SSL_SESSION_free(saved_session[i]);
    saved_session[i] = s;
    return 1; /* the reference is ours */
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    rlb_log_level = RLB_LOG_ERROR;
    verbose = getenv("FUZZ_TLS_VERBOSE") != NULL;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/ringlb-fuzz-tls-XXXXXX");
    if (mkdtemp(tmpdir) == NULL)
        die("mkdtemp failed");
    snprintf(cert_path, sizeof(cert_path), "%s/cert.pem", tmpdir);
    snprintf(key_path, sizeof(key_path), "%s/key.pem", tmpdir);
    write_file(cert_path, fixture_cert);
    write_file(key_path, fixture_key);

    /* The backend: a port bound (without SO_REUSEADDR, so that nobody else
     * can take it) and never listening, for the process's lifetime. Requests
     * that make it through TLS get a refused connect, hence a quick 502. */
    static int backend_fd = -1;
    unsigned backend_port = free_port(&backend_fd);
    for (int attempt = 0;; attempt++) {
        unsigned port = free_port(NULL);
        config = make_config(port, backend_port);
        worker = aligned_alloc(64, sizeof(*worker));
        if (worker == NULL)
            die("out of memory");
        memset(worker, 0, sizeof(*worker));
        worker->cfg = config;
        worker->cpu = -1; /* 0 would pin the fuzzer to CPU 0 */
        int rc = rlb_worker_start_inline(worker);
        if (rc == 0) {
            listen_addr = (struct sockaddr_in){.sin_family = AF_INET,
                                               .sin_port = htons((uint16_t)port),
                                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
            break;
        }
        fprintf(stderr, "fuzz_tls: starting the worker: %s (%s)\n", worker->start_msg, strerror(-rc));
        rlb_worker_stop_inline(worker);
        free(worker);
        rlb_config_free(config);
        if (rc != -EADDRINUSE || attempt >= 10) {
            remove_fixture();
            exit(1);
        }
    }
    /* Read by now (the contexts hold the certificate and key): nothing is left behind, even after a crash. */
    remove_fixture();
    client_ctx = SSL_CTX_new(TLS_method());
    if (client_ctx == NULL || !SSL_CTX_set_min_proto_version(client_ctx, TLS1_2_VERSION))
        die("cannot make the client context");
    SSL_CTX_set_verify(client_ctx, SSL_VERIFY_NONE, NULL); /* the fixture certificate is self-signed */
    SSL_CTX_set_session_cache_mode(client_ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
    SSL_CTX_sess_set_new_cb(client_ctx, keep_session);
    /* Processes the accepts' submission so that the first input finds them posted. */
    rlb_worker_turn(worker, 0);
    return 0;
}

static void note_answer(const char *p, size_t n)
{
    if (answer_bytes == 0 && n)
        answer_first = (uint8_t)p[0];
    answer_bytes += n;
}

/* Reads and drops what the server sent (through <ssl> once a handshake is
 * done, so that tickets and KeyUpdates are taken in). Returns 1 once the
 * server's side is closed (end of stream, reset, close_notify, a fatal TLS
 * error), 0 otherwise. */
static int drain(int fd, SSL *ssl)
{
    static char sink[65536];
    for (;;) {
        if (ssl != NULL) {
            int r = SSL_read(ssl, sink, sizeof(sink));
            if (r > 0) {
                note_answer(sink, (size_t)r);
                continue;
            }
            int e = SSL_get_error(ssl, r);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                return 0;
            ERR_clear_error();
            if (e == SSL_ERROR_SYSCALL && r < 0 && errno == EINTR)
                continue;
            /* Closed, or garbage the client cannot read: read the rest raw. */
            return drain(fd, NULL);
        }
        ssize_t r = recv(fd, sink, sizeof(sink), MSG_DONTWAIT);
        if (r > 0) {
            note_answer(sink, (size_t)r);
            continue;
        }
        if (r == 0)
            return 1;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        return 1; /* ECONNRESET, EPIPE: closed too */
    }
}

/* Writes all of <p>, turning the worker while the socket is full. Returns -1
 * when the server has closed (a reset is a fine answer to garbage). */
static int send_all(int fd, const uint8_t *p, size_t n)
{
    uint64_t deadline = now_ms() + CLOSE_DEADLINE_MS;
    while (n) {
        ssize_t r = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (r > 0) {
            p += r;
            n -= (size_t)r;
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (now_ms() > deadline)
                return -1; /* the server stopped reading: it is closing or waiting for its timeout */
            drain(fd, NULL);
            rlb_worker_turn(worker, 1);
            continue;
        }
        return -1;
    }
    return 0;
}

/* The same through the client's TLS connection: one SSL_write, so one record
 * for up to 16 KiB (none for <n> 0: that only flushes a queued KeyUpdate).
 * Returns -1 when the server has closed. */
static int ssl_send_all(SSL *ssl, const uint8_t *p, size_t n)
{
    uint64_t deadline = now_ms() + CLOSE_DEADLINE_MS;
    for (;;) {
        int r = SSL_write(ssl, p, (int)n);
        if (r > 0 || (n == 0 && r == 0))
            return 0;
        int e = SSL_get_error(ssl, r);
        ERR_clear_error();
        if ((e != SSL_ERROR_WANT_WRITE && e != SSL_ERROR_WANT_READ) || now_ms() > deadline)
            return -1;
        rlb_worker_turn(worker, 1);
    }
}

/* A full handshake (or a resumption) with the worker, both sides in this
 * thread. Nothing fuzzed is involved yet, so failing is a bug, unless the
 * machine stalled us past the server's handshake timeout (then NULL). */
static SSL *client_handshake(int fd, uint8_t opt)
{
    uint64_t timeouts = worker->stats.timeouts;
    SSL *ssl = SSL_new(client_ctx);
    CHECK(ssl != NULL);
    uint16_t version = (opt & 1) ? TLS1_2_VERSION : TLS1_3_VERSION;
    SSL_set_min_proto_version(ssl, version);
    SSL_set_max_proto_version(ssl, version);
    SSL_set_tlsext_host_name(ssl, "fuzz.ringlb.test");
    if (opt & 0x20) {
        static const uint8_t alpn[] = "\x08http/1.1";
        SSL_set_alpn_protos(ssl, alpn, sizeof(alpn) - 1);
    }
    SSL_SESSION *saved = saved_session[opt & 1];
    if ((opt & 8) && saved != NULL)
        SSL_set_session(ssl, saved);
    SSL_set_fd(ssl, fd);
    SSL_set_connect_state(ssl);
    uint64_t deadline = now_ms() + CLOSE_DEADLINE_MS;
    for (;;) {
        int r = SSL_do_handshake(ssl);
        if (r == 1)
            break;
        int e = SSL_get_error(ssl, r);
        if ((e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) || now_ms() > deadline) {
            if (worker->stats.timeouts != timeouts) {
                SSL_free(ssl);
                ERR_clear_error();
                return NULL;
            }
            char msg[160];
            ERR_error_string_n(ERR_get_error(), msg, sizeof(msg));
            fprintf(stderr, "fuzz_tls: the harness's own handshake failed (%d): %s\n", e, msg);
            __builtin_trap();
        }
        rlb_worker_turn(worker, 1);
    }
    return ssl;
}

/* Connects a client to the listener. Whoever closes first leaves a TIME_WAIT
 * behind (the client does whenever the server answers its FIN with its own),
 * tens of thousands a minute at full speed: the clients' source addresses
 * rotate through 4000 loopback addresses (127.1.0.1 up), so that ephemeral
 * ports never run out and a new connection never meets an old one's
 * TIME_WAIT, whatever net.ipv4.tcp_tw_reuse says. */
static int client_connect(void)
{
    int fd = fuzz_loopback_connect(&listen_addr, 1);
    if (fd < 0) {
        perror("fuzz_tls: connect");
        __builtin_trap();
    }
    return fd;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct rlb_worker *w = worker;
    CHECK(w->live_conns == 0);
    answer_bytes = 0;
    answer_first = 0;

    size_t pos = 0;
    uint8_t ctl = pos < size ? data[pos++] : 0;
    bool reset = ctl & 0x10;
    bool read_answer = ctl & 0x20;
    bool handshake = ctl & 0x40;
    uint8_t opt = handshake && pos < size ? data[pos++] : 0;
    size_t pieces = 1u + (ctl & 3u);
    size_t unit = (size_t)1 << (2 * ((ctl >> 2) & 3u));
    const uint8_t *splits = data + pos;
    size_t nsplits = pieces - 1 < size - pos ? pieces - 1 : size - pos;
    pos += nsplits;
    const uint8_t *payload = data + pos;
    size_t len = size - pos;

    int fd = client_connect();
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    rlb_worker_turn(w, 0); /* the accept, and the receive posted for the new connection */

    SSL *ssl = NULL;   /* the client's TLS connection, in handshake mode */
    SSL *rd = NULL;    /* what answers are read through: NULL once raw bytes went out */
    bool closed = false;
    if (handshake) {
        ssl = client_handshake(fd, opt);
        rd = ssl;
        closed = ssl == NULL || drain(fd, rd); /* TLS 1.3 tickets */
        if ((opt & 0x10) && !(opt & 1) && !closed) { /* TLS 1.3 only */
            SSL_key_update(ssl, SSL_KEY_UPDATE_REQUESTED);
            closed = ssl_send_all(ssl, (const uint8_t *)"", 0) != 0; /* flushes it */
        }
        if (ssl != NULL && (opt & 2))
            rd = NULL; /* raw bytes follow: the client's record layer no longer matches */
    }

    size_t off = 0;
    for (size_t i = 0; i < pieces && !closed; i++) {
        size_t n = len - off;
        if (i < nsplits) {
            size_t want = splits[i] * unit;
            if (want < n)
                n = want;
        }
        bool encrypt = ssl != NULL && !(opt & 2);
        if (n && (encrypt ? ssl_send_all(ssl, payload + off, n) : send_all(fd, payload + off, n)) != 0)
            closed = true;
        off += n;
        /* Two turns: the receive completes in the first when the bytes are
         * already there; what the server answers goes out in the second. */
        rlb_worker_turn(w, 0);
        rlb_worker_turn(w, 0);
        if (drain(fd, rd))
            closed = true;
    }

    if (read_answer && !closed) {
        /* Let the server send what it has to say (a handshake flight, an
         * alert, an HTTP response) before the client leaves. */
        for (int i = 0; i < 4 && !closed; i++) {
            rlb_worker_turn(w, 1);
            closed = drain(fd, rd);
        }
    }
    if (ssl != NULL && (opt & 4) && !closed && rd != NULL) {
        SSL_shutdown(ssl); /* close_notify */
        ERR_clear_error();
    }

    if (!reset) {
        shutdown(fd, SHUT_WR);
        uint64_t deadline = now_ms() + CLOSE_DEADLINE_MS;
        while (!closed) {
            rlb_worker_turn(w, 5);
            closed = drain(fd, rd);
            if (!closed && now_ms() > deadline) {
                fprintf(stderr, "fuzz_tls: the server kept the connection open %d ms after the client's FIN\n",
                        CLOSE_DEADLINE_MS);
                __builtin_trap();
            }
        }
    }
    /* With bit 4 the close is a reset; otherwise both FINs have passed and it
     * changes nothing. */
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    SSL_free(ssl);
    ERR_clear_error();
    close(fd);

    /* The "no leak" invariant: every slot comes back. */
    uint64_t deadline = now_ms() + FREE_DEADLINE_MS;
    rlb_worker_turn(w, 0);
    while (w->live_conns != 0) {
        if (now_ms() > deadline) {
            fprintf(stderr, "fuzz_tls: %u connection(s) still live %d ms after the client left\n", w->live_conns,
                    FREE_DEADLINE_MS);
            __builtin_trap();
        }
        rlb_worker_turn(w, 5);
    }
    if (verbose) {
        const char *mode = !handshake ? "first flight" : (opt & 2) ? "raw after handshake" : "encrypted";
        fprintf(stderr,
                "fuzz_tls: %s%s, %zu bytes in %zu piece(s)%s: %zu bytes back (first 0x%02x); "
                "handshakes %lu (resumed %lu), failures %lu, requests %lu\n",
                handshake ? ((opt & 1) ? "TLS 1.2 " : "TLS 1.3 ") : "", mode, len, pieces, reset ? ", reset" : "",
                answer_bytes, answer_first, (unsigned long)w->stats.tls_handshakes,
                (unsigned long)w->stats.tls_resumed, (unsigned long)w->stats.tls_handshake_failures,
                (unsigned long)w->stats.requests);
    }
    return 0;
}
