#!/usr/bin/env python3
"""Buffer pressure: more half-sent request heads than the worker has receive buffers.
A partial head pins a buffer; when the ring runs dry ringlb must shed the oldest of those
clients (408) instead of starving everyone until the header timeout."""

import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402


class BufferPressureTest(H.ProxyTestCase):
    def test_partial_heads_cannot_starve_the_worker(self):
        b = self.backend("echo")
        port = H.free_port()
        cfg = H.basic_config(port, [b], workers=1)
        cfg["buffers"] = {"client_count": 64, "client_size": "4k"}
        cfg["timeouts"] = {"client_header": "30s"}
        self.proxy(cfg)
        hogs = []
        try:
            for i in range(150):
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                s.sendall(b"GET /slow%d HTTP/1.1\r\nHost: x\r\nX-A: " % i)
                hogs.append(s)
                time.sleep(0.002)
            time.sleep(0.3)
            t0 = time.monotonic()
            r = H.get_once(port, "/fresh", timeout=10)
            took = time.monotonic() - t0
            self.assertEqual(r.status, 200)
            self.assertLess(took, 5.0, "a fresh request waited %.1fs behind buffer-hogging clients" % took)
            # The oldest hogs were told why.
            hogs[0].settimeout(5)
            self.assertIn(b"408", hogs[0].recv(4096))
        finally:
            for s in hogs:
                s.close()


if __name__ == "__main__":
    H.main()
