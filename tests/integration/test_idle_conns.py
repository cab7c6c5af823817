#!/usr/bin/env python3
"""Memory per idle client connection: 10,000 connected-but-silent clients on one worker
must cost less than 4 KiB of ringlb RSS each."""

import os
import resource
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402

N = 10000
WANT_NOFILE = 30000
LIMIT_BYTES = 4096


def raise_nofile():
    """Raises RLIMIT_NOFILE to 30000. If the hard limit cannot be raised (no
    CAP_SYS_RESOURCE), falls back to the hard limit when it still leaves room for
    N connections. Returns the new limit or None."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (WANT_NOFILE, max(hard, WANT_NOFILE)))
        return WANT_NOFILE
    except (ValueError, OSError):
        pass
    if hard == resource.RLIM_INFINITY or hard >= N + 1000:
        lim = WANT_NOFILE if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (lim, hard))
            print("note: RLIMIT_NOFILE hard limit is %s, cannot raise to %d; using %d" % (hard, WANT_NOFILE, lim))
            return lim
        except (ValueError, OSError):
            return None
    return None


NOFILE = raise_nofile()


class IdleConnTest(H.ProxyTestCase):
    def test_idle_connection_memory(self):
        if NOFILE is None:
            self.skipTest("cannot raise RLIMIT_NOFILE to hold %d connections" % N)
        if H.ASAN:
            self.skipTest("ringlb is built with AddressSanitizer: RSS per connection is meaningless")
        b = self.backend("echo")
        port = H.free_port()
        cfg = H.basic_config(port, [b], workers=1, max_connections=20000,
                             timeouts={"client_header": "60s", "client_keepalive": "60s"})
        cfg["listeners"][0]["backlog"] = 4096
        p = self.proxy(cfg, nofile=NOFILE)
        # warm up: one full request so lazily allocated state is in the baseline
        for i in range(3):
            self.assertEqual(H.get_once(port, "/warm%d" % i).status, 200)
        time.sleep(0.3)
        base_rss = p.rss_kib()
        base_fds = p.fd_count()
        socks = []
        t0 = time.monotonic()
        try:
            for i in range(N):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.settimeout(5)
                s.connect(("127.0.0.1", port))
                socks.append(s)
                if i % 1000 == 999 and time.monotonic() - t0 > 40:
                    self.fail("opening connections too slow (%d in %.1fs)" % (i + 1, time.monotonic() - t0))
            # wait until ringlb has accepted them all: its fd count grows by N, or (with
            # io_uring direct descriptors) the accept queue is empty with N established
            deadline = time.monotonic() + 20
            accepted = 0
            while time.monotonic() < deadline:
                if p.fd_count() - base_fds >= N:
                    accepted = p.fd_count() - base_fds
                    break
                queued, est = H.tcp_port_stats(port)
                if queued == 0 and est >= N:
                    accepted = est
                    break
                accepted = max(p.fd_count() - base_fds, est - queued)
                time.sleep(0.2)
            time.sleep(0.5)
            rss = p.rss_kib()
            self.assertGreaterEqual(accepted, N, "ringlb accepted only %d of %d connections" % (accepted, N))
            # they are still open (not closed by some timeout)
            dead = 0
            for s in socks[:: max(1, N // 100)]:
                s.setblocking(False)
                try:
                    if s.recv(1) == b"":
                        dead += 1
                except BlockingIOError:
                    pass
                except OSError:
                    dead += 1
            self.assertEqual(dead, 0, "idle connections were closed by the proxy")
            per_conn = (rss - base_rss) * 1024 / N
            print("idle_conn_rss_bytes_per_conn=%d" % int(per_conn), flush=True)
            H.log("rss base %d KiB, with %d idle conns %d KiB; accepted %d (fds %d -> %d, tcp %r)"
                  % (base_rss, N, rss, accepted, base_fds, p.fd_count(), H.tcp_port_stats(port)))
            self.assertLess(per_conn, LIMIT_BYTES)
            # the proxy still serves while holding them
            self.assertEqual(H.get_once(port, "/still").status, 200)
        finally:
            for s in socks:
                try:
                    s.close()
                except OSError:
                    pass


if __name__ == "__main__":
    if NOFILE is None:
        print("SKIP: cannot raise RLIMIT_NOFILE to %d (hard limit %s)" % (
            WANT_NOFILE, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        sys.exit(77)
    H.main()
