#!/usr/bin/env python3
"""A backend that never completes the TCP handshake: the connect timer gives up and the
request moves to the next backend; with no other backend the client gets 503."""

import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402


def blackhole():
    """A listening socket whose accept queue is full and never drained: further SYNs are
    dropped, so a connect to it hangs (on loopback, without leaving the machine)."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(0)
    fillers = []
    for _ in range(4):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(ls.getsockname())
        except BlockingIOError:
            pass
        fillers.append(s)
    time.sleep(0.2)
    return ls, fillers


class ConnectTimeoutTest(H.ProxyTestCase):
    def setUp(self):
        super().setUp()
        self.ls, self.fillers = blackhole()
        self.hole = "127.0.0.1:%d" % self.ls.getsockname()[1]

    def tearDown(self):
        super().tearDown()
        for s in self.fillers + [self.ls]:
            s.close()

    def config(self, port, backends):
        return {
            "workers": 1,
            "timeouts": {"upstream_connect": "300ms"},
            "listeners": [{"address": "127.0.0.1:%d" % port}],
            "pools": [{"name": "p", "backends": backends}],
            "vhosts": [{"hosts": ["*"], "routes": [{"path": "/", "pool": "p"}]}],
        }

    def test_hanging_connect_moves_to_next_backend(self):
        good = self.backend("fixed", name="backend-good")
        port = H.free_port()
        p = self.proxy(self.config(port, [self.hole, good.address]))
        for i in range(4):
            t0 = time.monotonic()
            r = H.get_once(port, "/t%d" % i, timeout=5)
            self.assertEqual((r.status, r.body), (200, b"backend-good"))
            self.assertLess(time.monotonic() - t0, 2.5)
        self.assertIn("timed out", p.log())

    def test_only_a_hanging_backend_gives_503(self):
        port = H.free_port()
        self.proxy(self.config(port, [self.hole]))
        t0 = time.monotonic()
        r = H.get_once(port, "/", timeout=5)
        self.assertEqual(r.status, 503)
        self.assertGreater(time.monotonic() - t0, 0.25)


if __name__ == "__main__":
    H.main()
