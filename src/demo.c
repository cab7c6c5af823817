#include <ringlb/demo.h>
#include <ringlb/http1.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define DEMO_MAX_CONNS 256
#define DEMO_BUF 16384

struct demo_conn {
    int fd;
    int backend;
    size_t len;
    char buf[DEMO_BUF];
};

static int listeners[2] = {-1, -1};
static struct demo_conn *conns[DEMO_MAX_CONNS];
static unsigned long served[2];

static int listen_loopback(uint16_t *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 128) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

/* Answers every complete request in the buffer; returns false to close. */
static bool serve(struct demo_conn *c)
{
    static const struct rlb_http_limits limits = {8192, DEMO_BUF, 64};
    struct rlb_http_header hdrs[64];
    for (;;) {
        struct rlb_http_request req = {.headers = hdrs, .max_headers_capacity = 64};
        int rc = rlb_http1_parse_request(c->buf, c->len, &limits, &req);
        if (rc == RLB_HTTP_INCOMPLETE)
            return c->len < sizeof(c->buf);
        if (rc < 0)
            return false;
        size_t total = (size_t)rc + (req.body == RLB_BODY_LENGTH ? req.content_length : 0);
        if (req.body == RLB_BODY_CHUNKED || total > sizeof(c->buf))
            return false; /* a demo needs no uploads */
        if (c->len < total)
            return true;
        unsigned long n = ++served[c->backend];
        char body[512];
        int blen = snprintf(body, sizeof(body),
                            "Hello from demo-backend-%d (request #%lu to this backend, %.*s %.*s)\n",
                            c->backend + 1, n, (int)req.method.len, req.method.ptr,
                            (int)(req.target.len > 200 ? 200 : req.target.len), req.target.ptr);
        bool close_after = (req.flags & RLB_MSG_CONN_CLOSE) || req.minor_version == 0;
        /* What a shop's assets say, so that --demo --cache shows hits. */
        bool asset = req.target.len >= 8 && memcmp(req.target.ptr, "/static/", 8) == 0;
        char out[1024];
        int olen = snprintf(out, sizeof(out),
                            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                            "Server: demo-backend-%d\r\nX-Backend: demo-backend-%d\r\n%s%s\r\n%s",
                            blen, c->backend + 1, c->backend + 1, close_after ? "Connection: close\r\n" : "",
                            asset ? "Cache-Control: public, max-age=60\r\n" : "",
                            req.method_id == RLB_METHOD_HEAD ? "" : body);
        if (send(c->fd, out, (size_t)olen, MSG_NOSIGNAL) != olen || close_after)
            return false;
        memmove(c->buf, c->buf + total, c->len - total);
        c->len -= total;
    }
}

static void *demo_thread(void *arg)
{
    (void)arg;
    struct pollfd pfds[2 + DEMO_MAX_CONNS];
    for (;;) {
        int n = 0;
        for (int i = 0; i < 2; i++)
            pfds[n++] = (struct pollfd){.fd = listeners[i], .events = POLLIN};
        for (int i = 0; i < DEMO_MAX_CONNS; i++)
            pfds[n++] = (struct pollfd){.fd = conns[i] ? conns[i]->fd : -1, .events = POLLIN};
        if (poll(pfds, (nfds_t)n, -1) < 0)
            continue;
        for (int i = 0; i < 2; i++) {
            if (!(pfds[i].revents & POLLIN))
                continue;
            int fd = accept4(listeners[i], NULL, NULL, SOCK_CLOEXEC);
            if (fd < 0)
                continue;
            int slot = 0;
            while (slot < DEMO_MAX_CONNS && conns[slot])
                slot++;
            struct demo_conn *c = slot < DEMO_MAX_CONNS ? calloc(1, sizeof(*c)) : NULL;
            if (!c) {
                close(fd);
                continue;
            }
            c->fd = fd;
            c->backend = i;
            conns[slot] = c;
        }
        for (int i = 0; i < DEMO_MAX_CONNS; i++) {
            struct demo_conn *c = conns[i];
            if (!c || !(pfds[2 + i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            ssize_t r = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, 0);
            if (r > 0)
                c->len += (size_t)r;
            if (r <= 0 || !serve(c)) {
                close(c->fd);
                free(c);
                conns[i] = NULL;
            }
        }
    }
    return NULL;
}

int rlb_demo_start_backends(char addrs[2][32])
{
    for (int i = 0; i < 2; i++) {
        uint16_t port = 0;
        int fd = listen_loopback(&port);
        if (fd < 0)
            return fd;
        listeners[i] = fd;
        snprintf(addrs[i], 32, "127.0.0.1:%u", port);
    }
    pthread_t t;
    if (pthread_create(&t, NULL, demo_thread, NULL) != 0)
        return -EAGAIN;
    pthread_detach(t);
    return 0;
}
