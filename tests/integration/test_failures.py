#!/usr/bin/env python3
"""Upstream failures and client timeouts."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402


class FailuresTest(H.ProxyTestCase):
    @classmethod
    def setup_class(cls):
        cls.closemid = cls.cbackend("close-mid", name="closemid")
        cls.reset = cls.cbackend("reset", name="reset")
        cls.good = cls.cbackend("fixed", name="backend-good")
        cls.slow = cls.cbackend("slow", name="slow", delay=3.0)
        cls.echo = cls.cbackend("echo", name="echo")
        cls.refuse1 = "127.0.0.1:%d" % H.free_port()
        cls.refuse2 = "127.0.0.1:%d" % H.free_port()
        cls.port = H.free_port()
        cfg = {
            "workers": 1,
            "timeouts": {"client_header": "1s", "client_keepalive": "1s",
                         "upstream_response": "1s", "upstream_connect": "1s"},
            "listeners": [{"name": "web", "address": "127.0.0.1:%d" % cls.port}],
            "pools": [
                {"name": "echo", "backends": [cls.echo.address]},
                {"name": "closemid", "backends": [cls.closemid.address]},
                {"name": "reset", "backends": [cls.reset.address]},
                {"name": "refuse", "backends": [cls.refuse1, cls.refuse2]},
                {"name": "mixed", "backends": [cls.refuse1, cls.good.address]},
                {"name": "slow", "backends": [cls.slow.address]},
            ],
            "vhosts": [{"hosts": ["*"], "routes": [
                {"path": "/", "pool": "echo"},
                {"path": "/closemid", "pool": "closemid"},
                {"path": "/reset", "pool": "reset"},
                {"path": "/refuse", "pool": "refuse"},
                {"path": "/mixed", "pool": "mixed"},
                {"path": "/slow", "pool": "slow"},
            ]}],
        }
        cls.p = cls.cproxy(cfg)

    def test_backend_closes_mid_body(self):
        """Head + 10 of 1000 bytes, then close: the client must see the truncation (the
        proxy closes the client connection before the full body). A 502 is accepted only
        if the proxy had not started the response yet."""
        with H.Client(self.port, timeout=5) as c:
            c.send(H.build_request("GET", "/closemid"))
            t0 = time.monotonic()
            try:
                r = c.read_response()
            except H.IncompleteResponse as e:
                self.assertEqual(e.response.status, 200)
                self.assertLess(len(e.response.body), 1000)
                self.assertLess(time.monotonic() - t0, 4)
                return
            except (H.PeerClosed, ConnectionResetError):
                self.fail("closed before any response head")
            except OSError as e:
                self.fail("proxy neither finished nor closed the truncated response: %r" % e)
            self.assertEqual(r.status, 502, "a truncated upstream body was delivered as complete: %r" % r)

    def test_backend_reset_before_head(self):
        r = H.get_once(self.port, "/reset")
        self.assertEqual(r.status, 502, "%r %r" % (r.raw_head, r.body[:200]))

    def test_all_backends_refusing(self):
        # Documented: "none left: 502/503". Either is accepted.
        r = H.get_once(self.port, "/refuse")
        self.assertIn(r.status, (502, 503), "%r %r" % (r.raw_head, r.body[:200]))

    def test_one_refusing_one_working(self):
        for i in range(10):
            with self.subTest(i=i):
                r = H.get_once(self.port, "/mixed/%d" % i)
                self.assertEqual(r.status, 200)
                self.assertEqual(r.body, b"backend-good")
        with H.Client(self.port) as c:
            for i in range(6):
                r = c.request("GET", "/mixed/ka%d" % i)
                self.assertEqual((r.status, r.body), (200, b"backend-good"))

    def test_upstream_response_timeout_504(self):
        t0 = time.monotonic()
        r = H.get_once(self.port, "/slow", timeout=6)
        dt = time.monotonic() - t0
        self.assertEqual(r.status, 504, "%r %r" % (r.raw_head, r.body[:200]))
        self.assertLess(dt, 2.9, "504 after %.2fs, timeout is 1s and the backend answers at 3s" % dt)
        self.assertGreater(dt, 0.8)

    def _closed_or_408(self, c, limit):
        t0 = time.monotonic()
        try:
            c.settimeout(limit)
            r = c.read_response()
            self.assertEqual(r.status, 408)
        except (H.PeerClosed, ConnectionResetError):
            pass
        except H.IncompleteResponse as e:
            self.fail("garbage response: %s" % e)
        except OSError:
            self.fail("connection neither answered 408 nor closed within %.1fs" % limit)
        return time.monotonic() - t0

    def test_client_header_timeout_half_head(self):
        with H.Client(self.port) as c:
            c.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
            dt = self._closed_or_408(c, 3.0)
            self.assertGreater(dt, 0.5)

    def test_client_header_timeout_trickle(self):
        """Slowloris: a byte every 200 ms keeps the connection busy but the whole head
        must arrive within client_header (1 s)."""
        head = b"GET /trickle HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200
        with H.Client(self.port) as c:
            t0 = time.monotonic()
            closed = False
            for i in range(len(head)):
                if time.monotonic() - t0 > 3.0:
                    break
                try:
                    c.send(head[i:i + 1])
                except OSError:
                    closed = True
                    break
                time.sleep(0.2)
                if c.peer_closed(0.001) or c.r.buf:
                    closed = True
                    break
            if not closed:
                self.fail("trickling client still connected after %.1fs" % (time.monotonic() - t0))
            if c.r.buf:
                self.assertTrue(bytes(c.r.buf).startswith(b"HTTP/1.1 408"), bytes(c.r.buf[:100]))
            self.assertLess(time.monotonic() - t0, 3.2)
        self.assertFalse(any(r["target"] == "/trickle" for r in self.echo.requests))

    def test_idle_keepalive_closed(self):
        with H.Client(self.port) as c:
            r = c.request("GET", "/idle")
            self.assertEqual(r.status, 200)
            t0 = time.monotonic()
            self.assertTrue(c.peer_closed(3.5), "idle keep-alive connection not closed")
            dt = time.monotonic() - t0
            self.assertGreater(dt, 0.5)
            if c.r.buf:  # RFC 9110 allows a 408 on an idle connection, nothing else
                self.assertTrue(bytes(c.r.buf).startswith(b"HTTP/1.1 408"), bytes(c.r.buf[:100]))


if __name__ == "__main__":
    H.main()
