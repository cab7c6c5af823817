#!/usr/bin/env python3
"""Client keep-alive, upstream pooling, pipelining, Connection: close both sides,
transparent retry of GET on a pooled connection the backend closed."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402


class KeepAliveTest(H.ProxyTestCase):
    def start(self, **backend_kw):
        b = self.backend("echo", **backend_kw)
        port = H.free_port()
        self.proxy(H.basic_config(port, [b], workers=1))
        return b, port

    def test_sequential_on_one_connection_and_pooling(self):
        b, port = self.start()
        with H.Client(port) as c:
            for i in range(20):
                r = c.request("GET", "/seq%d" % i)
                self.assertEqual(r.status, 200)
                self.assertEqual(r.json()["target"], "/seq%d" % i)
        self.assertEqual(len(b.requests), 20)
        self.assertLess(b.conn_count, 20, "no upstream connection reuse")
        self.assertLessEqual(b.conn_count, 2)

    def test_pooling_across_client_connections(self):
        b, port = self.start()
        for i in range(10):
            self.assertEqual(H.get_once(port, "/n%d" % i).status, 200)
        self.assertEqual(len(b.requests), 10)
        self.assertLess(b.conn_count, 10, "no upstream connection reuse across client connections")

    def test_pipelining(self):
        b, port = self.start()
        with H.Client(port) as c:
            c.send(b"".join(H.build_request("GET", "/pipe%d" % i) for i in range(10)))
            for i in range(10):
                r = c.read_response()
                self.assertEqual(r.status, 200)
                self.assertEqual(r.json()["target"], "/pipe%d" % i)
            # still usable afterwards
            self.assertEqual(c.request("GET", "/after").json()["target"], "/after")

    def test_pipelining_with_bodies(self):
        b, port = self.start()
        with H.Client(port) as c:
            data = b"".join(H.build_request("POST", "/pb%d" % i, body=b"x" * (i * 100)) for i in range(10))
            c.send(data)
            for i in range(10):
                j = c.read_response().json()
                self.assertEqual((j["target"], j["body_len"]), ("/pb%d" % i, i * 100))

    def test_requests_split_byte_by_byte(self):
        b, port = self.start()
        data = b"".join(H.build_request("POST", "/split%d" % i, body=b"abc" * i) for i in range(3))
        with H.Client(port) as c:
            for i in range(len(data)):
                c.send(data[i:i + 1])
                if i % 8 == 0:
                    time.sleep(0.001)
            for i in range(3):
                j = c.read_response().json()
                self.assertEqual((j["target"], j["body_len"]), ("/split%d" % i, 3 * i))

    def test_concurrent_clients(self):
        b = self.backend("echo")
        port = H.free_port()
        self.proxy(H.basic_config(port, [b], workers=2))
        errors = []

        def worker(n):
            try:
                with H.Client(port, timeout=10) as c:
                    for i in range(20):
                        r = c.request("GET", "/c%d/%d" % (n, i))
                        if r.status != 200 or r.json()["target"] != "/c%d/%d" % (n, i):
                            errors.append((n, i, r.status, r.body[:100]))
            except Exception as e:  # noqa: BLE001
                errors.append((n, repr(e)))

        threads = [H.threading.Thread(target=worker, args=(n,), daemon=True) for n in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        self.assertEqual(errors, [])
        self.assertEqual(len(b.completed()), 800)

    def test_client_connection_close(self):
        b, port = self.start()
        with H.Client(port) as c:
            r = c.request("GET", "/bye", headers=[("Connection", "close")])
            self.assertEqual(r.status, 200)
            self.assertTrue(c.peer_closed(3), "proxy kept the connection after Connection: close")

    def test_pipelined_requests_after_close_not_served(self):
        b, port = self.start()
        with H.Client(port) as c:
            c.send(H.build_request("GET", "/pc0") +
                   H.build_request("GET", "/pc1", headers=[("Connection", "close")]) +
                   H.build_request("GET", "/pc2"))
            self.assertEqual(c.read_response().json()["target"], "/pc0")
            self.assertEqual(c.read_response().json()["target"], "/pc1")
            self.assertTrue(c.peer_closed(3), "connection not closed after Connection: close")
            self.assertEqual(bytes(c.r.buf), b"", "a request after Connection: close was answered")
        time.sleep(0.1)
        self.assertEqual([r["target"] for r in b.requests], ["/pc0", "/pc1"])

    def test_backend_connection_close(self):
        b, port = self.start(close_after=True)
        with H.Client(port) as c:
            for i in range(5):
                r = c.request("GET", "/bc%d" % i)
                self.assertEqual(r.status, 200)
                self.assertEqual(r.json()["target"], "/bc%d" % i)
                self.assertNotIn("close", [t.strip().lower() for t in ",".join(r.headers_all("connection")).split(",")],
                                 "backend's Connection: close leaked to the client")
            self.assertFalse(c.peer_closed(0.3), "client connection closed after upstream close")
        self.assertEqual(b.conn_count, 5, "upstream connection marked close was reused")
        time.sleep(0.6)
        self.assertEqual(b.errors, [], "upstream connection marked close was reused")

    def test_retry_on_pooled_connection_closed_by_backend(self):
        b, port = self.start(silent_close=True)
        with H.Client(port) as c:
            for i in range(10):
                r = c.request("GET", "/retry%d" % i)
                self.assertEqual(r.status, 200, "request %d: %r %r" % (i, r, r.body[:200]))
                self.assertEqual(r.json()["target"], "/retry%d" % i)
                time.sleep(0.1)
        self.assertEqual(len(b.completed()), 10)


    def pool_config(self, port, backend, **keepalive):
        return {
            "workers": 1,
            "listeners": [{"address": "127.0.0.1:%d" % port}],
            "pools": [{"name": "p", "keepalive": keepalive, "backends": [backend.address]}],
            "vhosts": [{"hosts": ["*"], "routes": [{"path": "/", "pool": "p"}]}],
        }

    def wait_established(self, port, want, timeout=3.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if H.tcp_port_stats(port)[1] == want:
                return True
            time.sleep(0.02)
        return H.tcp_port_stats(port)[1] == want

    def test_pool_keeps_at_most_max_idle(self):
        b = self.backend("echo", delay=0.3)
        port = H.free_port()
        self.proxy(self.pool_config(port, b, max_idle=1, idle_timeout="30s"))
        clients = [H.Client(port) for _ in range(3)]
        try:
            for i, c in enumerate(clients):
                c.send(H.build_request("GET", "/par%d" % i))
            for c in clients:
                self.assertEqual(c.read_response().status, 200)
        finally:
            for c in clients:
                c.close()
        self.assertEqual(b.conn_count, 3, "three requests at once need three upstream connections")
        self.assertTrue(self.wait_established(b.port, 1),
                        "max_idle 1: one idle upstream connection kept, %d open" % H.tcp_port_stats(b.port)[1])
        self.assertEqual(H.get_once(port, "/again").status, 200)
        self.assertEqual(b.conn_count, 3, "the kept connection is reused")

    def test_pool_idle_timeout_closes_upstream(self):
        b = self.backend("echo")
        port = H.free_port()
        self.proxy(self.pool_config(port, b, max_idle=8, idle_timeout="300ms"))
        self.assertEqual(H.get_once(port, "/one").status, 200)
        self.assertTrue(self.wait_established(b.port, 1, timeout=0.2), "kept idle after the response")
        self.assertTrue(self.wait_established(b.port, 0, timeout=3.0), "closed after idle_timeout")
        self.assertEqual(H.get_once(port, "/two").status, 200)
        self.assertEqual(b.conn_count, 2)

    def test_pool_disabled_with_max_idle_zero(self):
        b = self.backend("echo")
        port = H.free_port()
        self.proxy(self.pool_config(port, b, max_idle=0))
        with H.Client(port) as c:
            for i in range(3):
                r = c.request("GET", "/z%d" % i)
                self.assertEqual(r.status, 200)
                self.assertIn("close", [v.lower() for n, v in r.json()["headers"] if n.lower() == "connection"])
        self.assertEqual(b.conn_count, 3)


if __name__ == "__main__":
    H.main()
