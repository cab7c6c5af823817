/* echo_backend: the HTTP/1.1 origin behind ringlb in the kTLS VM test.
 *
 *   echo_backend PORT DIR
 *
 * Listens on 127.0.0.1:PORT. One forked child per connection, keep-alive by default
 * (HTTP/1.1 rules), bodies framed by Content-Length (chunked request bodies are decoded too,
 * in case the proxy re-frames one).
 *
 *   GET /file/<name>  the bytes of DIR/<name> with a Content-Length (404 if absent)
 *   POST /echo        200 whose body is exactly the request body
 *   GET /             200 "ok\n"
 *
 * It is deliberately dumb and strict: the point of the test is that whatever goes through ringlb
 * (plain, userspace TLS or kTLS) comes back byte-identical, so the backend must never be the
 * reason a comparison fails. It is C rather than Python because the VM has no Python.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define HEAD_MAX 16384
#define BODY_MAX (256L * 1024 * 1024)

static const char *g_dir;

/* Bytes received but not yet consumed: the head parser may read past the head into the body
 * (or into the next pipelined request), so everything reads through this buffer. */
struct conn {
    int fd;
    char buf[65536];
    size_t off, len;
};

static int write_all(int fd, const void *p, size_t n) {
    const char *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

static int fill(struct conn *c) {
    if (c->off > 0 && c->off == c->len)
        c->off = c->len = 0;
    if (c->len == sizeof c->buf) {
        memmove(c->buf, c->buf + c->off, c->len - c->off);
        c->len -= c->off;
        c->off = 0;
        if (c->len == sizeof c->buf)
            return -1;
    }
    for (;;) {
        ssize_t r = read(c->fd, c->buf + c->len, sizeof c->buf - c->len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        c->len += (size_t)r;
        return 0;
    }
}

static int read_exact(struct conn *c, char *dst, size_t n) {
    while (n > 0) {
        if (c->off == c->len && fill(c) < 0)
            return -1;
        size_t k = c->len - c->off < n ? c->len - c->off : n;
        memcpy(dst, c->buf + c->off, k);
        c->off += k;
        dst += k;
        n -= k;
    }
    return 0;
}

/* One CRLF-terminated line (without the CRLF) into out; used for chunk sizes and trailers. */
static int read_line(struct conn *c, char *out, size_t cap) {
    size_t n = 0;
    for (;;) {
        if (c->off == c->len && fill(c) < 0)
            return -1;
        char ch = c->buf[c->off++];
        if (ch == '\n') {
            if (n > 0 && out[n - 1] == '\r')
                n--;
            out[n] = 0;
            return 0;
        }
        if (n + 1 >= cap)
            return -1;
        out[n++] = ch;
    }
}

static int send_simple(int fd, int status, const char *reason, const char *body, int keep) {
    char h[512];
    int n = snprintf(h, sizeof h,
                     "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n%s\r\n%s",
                     status, reason, strlen(body), keep ? "" : "Connection: close\r\n", body);
    return write_all(fd, h, (size_t)n);
}

/* Case-insensitive search for a header's value inside the head; copies it into out. */
static int header(const char *head, const char *name, char *out, size_t cap) {
    size_t nl = strlen(name);
    for (const char *p = strstr(head, "\r\n"); p && p[2]; p = strstr(p + 2, "\r\n")) {
        const char *line = p + 2;
        if (strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            const char *e = strstr(v, "\r\n");
            size_t len = e ? (size_t)(e - v) : strlen(v);
            while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t'))
                len--;
            if (len >= cap)
                len = cap - 1;
            memcpy(out, v, len);
            out[len] = 0;
            return 1;
        }
    }
    return 0;
}

static int has_token(const char *value, const char *token) {
    size_t tl = strlen(token);
    for (const char *p = value; *p;) {
        while (*p == ' ' || *p == ',')
            p++;
        if (strncasecmp(p, token, tl) == 0 && (p[tl] == 0 || p[tl] == ',' || p[tl] == ' '))
            return 1;
        while (*p && *p != ',')
            p++;
    }
    return 0;
}

/* Reads a request body framed by Content-Length or chunked into a malloc'd buffer. */
static char *read_body(struct conn *c, const char *head, size_t *out_len, int *bad) {
    char v[128];
    *bad = 0;
    *out_len = 0;
    if (header(head, "Transfer-Encoding", v, sizeof v) && has_token(v, "chunked")) {
        size_t cap = 65536, len = 0;
        char *b = malloc(cap);
        char line[256];
        for (;;) {
            if (!b || read_line(c, line, sizeof line) < 0)
                goto fail;
            char *end;
            unsigned long n = strtoul(line, &end, 16);
            if (end == line || len + n > (size_t)BODY_MAX)
                goto fail;
            if (n == 0)
                break;
            if (len + n > cap) {
                while (len + n > cap)
                    cap *= 2;
                char *nb = realloc(b, cap);
                if (!nb)
                    goto fail;
                b = nb;
            }
            if (read_exact(c, b + len, n) < 0 || read_line(c, line, sizeof line) < 0 || line[0])
                goto fail;
            len += n;
        }
        do { /* trailers up to the empty line */
            if (read_line(c, line, sizeof line) < 0)
                goto fail;
        } while (line[0]);
        *out_len = len;
        return b;
    fail:
        free(b);
        *bad = 1;
        return NULL;
    }
    if (!header(head, "Content-Length", v, sizeof v))
        return NULL;
    char *end;
    long long n = strtoll(v, &end, 10);
    if (end == v || *end || n < 0 || n > BODY_MAX) {
        *bad = 1;
        return NULL;
    }
    char *b = malloc(n ? (size_t)n : 1);
    if (!b || read_exact(c, b, (size_t)n) < 0) {
        free(b);
        *bad = 1;
        return NULL;
    }
    *out_len = (size_t)n;
    return b;
}

static int serve_file(int fd, const char *name, int keep) {
    /* Only plain names inside DIR: the test never needs more, and it keeps the VM's / safe. */
    if (!*name || strchr(name, '/') || strcmp(name, "..") == 0 || strcmp(name, ".") == 0)
        return send_simple(fd, 400, "Bad Request", "bad name\n", keep);
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    int f = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (f < 0 || fstat(f, &st) < 0 || !S_ISREG(st.st_mode)) {
        if (f >= 0)
            close(f);
        return send_simple(fd, 404, "Not Found", "no such file\n", keep);
    }
    char h[256];
    int n = snprintf(h, sizeof h,
                     "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                     "Content-Length: %lld\r\n%s\r\n",
                     (long long)st.st_size, keep ? "" : "Connection: close\r\n");
    int rc = write_all(fd, h, (size_t)n);
    off_t off = 0;
    while (rc == 0 && off < st.st_size) {
        ssize_t s = sendfile(fd, f, &off, (size_t)(st.st_size - off));
        if (s < 0 && errno == EINTR)
            continue;
        if (s <= 0)
            rc = -1;
    }
    close(f);
    return rc;
}

static void serve(int fd) {
    static struct conn c;
    c.fd = fd;
    c.off = c.len = 0;
    for (;;) {
        /* The head: everything up to the first empty line. */
        char head[HEAD_MAX + 1];
        size_t hl = 0;
        for (;;) {
            if (c.off == c.len && fill(&c) < 0)
                return;
            head[hl++] = c.buf[c.off++];
            if (hl >= 4 && memcmp(head + hl - 4, "\r\n\r\n", 4) == 0)
                break;
            if (hl == HEAD_MAX) {
                send_simple(fd, 431, "Request Header Fields Too Large", "head too large\n", 0);
                return;
            }
        }
        head[hl] = 0;

        char method[16], target[2048], version[16];
        if (sscanf(head, "%15s %2047s %15s", method, target, version) != 3) {
            send_simple(fd, 400, "Bad Request", "bad request line\n", 0);
            return;
        }
        char v[256];
        int keep = strcmp(version, "HTTP/1.1") == 0;
        if (header(head, "Connection", v, sizeof v)) {
            if (has_token(v, "close"))
                keep = 0;
            else if (has_token(v, "keep-alive"))
                keep = 1;
        }
        /* curl waits up to a second for this before sending a large POST body; answering it
         * keeps the test fast whether or not the proxy answers it itself. */
        if (header(head, "Expect", v, sizeof v) && strcasecmp(v, "100-continue") == 0 && c.off == c.len)
            if (write_all(fd, "HTTP/1.1 100 Continue\r\n\r\n", 25) < 0)
                return;

        int bad;
        size_t blen;
        char *body = read_body(&c, head, &blen, &bad);
        if (bad) {
            send_simple(fd, 400, "Bad Request", "bad body\n", 0);
            return;
        }

        int rc;
        if (strcmp(method, "POST") == 0 && strcmp(target, "/echo") == 0) {
            char h[256];
            int n = snprintf(h, sizeof h,
                             "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                             "Content-Length: %zu\r\n%s\r\n",
                             blen, keep ? "" : "Connection: close\r\n");
            rc = write_all(fd, h, (size_t)n);
            if (rc == 0 && blen)
                rc = write_all(fd, body, blen);
        } else if ((strcmp(method, "GET") == 0) && strncmp(target, "/file/", 6) == 0) {
            rc = serve_file(fd, target + 6, keep);
        } else if (strcmp(method, "GET") == 0 && strcmp(target, "/") == 0) {
            rc = send_simple(fd, 200, "OK", "ok\n", keep);
        } else {
            rc = send_simple(fd, 404, "Not Found", "not found\n", keep);
        }
        free(body);
        if (rc < 0 || !keep)
            return;
    }
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s PORT DIR\n", argv[0]);
        return 2;
    }
    g_dir = argv[2];
    signal(SIGPIPE, SIG_IGN);
    signal(SIGCHLD, SIG_IGN); /* children are reaped by the kernel */

    int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[1]))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof a) < 0 || listen(ls, 128) < 0) {
        perror("echo_backend: listen");
        return 1;
    }
    fprintf(stderr, "echo_backend: listening on 127.0.0.1:%s, files from %s\n", argv[1], g_dir);
    for (;;) {
        int fd = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            perror("echo_backend: accept");
            return 1;
        }
        pid_t pid = fork();
        if (pid == 0) {
            close(ls);
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            serve(fd);
            _exit(0);
        }
        close(fd);
    }
}
