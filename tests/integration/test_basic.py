#!/usr/bin/env python3
"""Basic proxying: forwarding headers, hop-by-hop removal, routing, WRR, route options,
IPv6, HEAD, HTTP/1.0."""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402


class ForwardingTest(H.ProxyTestCase):
    @classmethod
    def setup_class(cls):
        cls.echo = cls.cbackend("echo", name="echo")
        cls.chunky = cls.cbackend("chunked", name="chunky", chunks=4, chunk_size=300, chunk_delay=0.0)
        cls.port = H.free_port()
        cfg = H.basic_config(cls.port, [cls.echo])
        cfg["pools"].append({"name": "ch", "backends": [cls.chunky.address]})
        cfg["vhosts"][0]["routes"].append({"path": "/chunked", "pool": "ch"})
        cls.p = cls.cproxy(cfg)

    def seen(self, resp):
        self.assertEqual(resp.status, 200, resp.body[:300])
        return resp.json()

    def test_get_with_curl(self):
        r = H.curl(["-i", "http://127.0.0.1:%d/hello/world?q=1" % self.port])
        self.assertEqual(r.returncode, 0, r.stderr)
        head, _, body = r.stdout.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200"), head[:100])
        j = H.json.loads(body)
        self.assertEqual(j["method"], "GET")
        self.assertEqual(j["target"], "/hello/world?q=1")
        self.assertEqual(j["version"], "HTTP/1.1")
        self.assertEqual(H.hget(j["headers"], "host"), "127.0.0.1:%d" % self.port)

    def test_client_silent_after_connect_is_still_served(self):
        """Listeners defer the accept until the client speaks (TCP_DEFER_ACCEPT): a client
        that connects and only sends its request later must still be answered."""
        with H.Client(self.port, timeout=10) as c:
            H.time.sleep(1.5)
            r = c.request("GET", "/late")
            self.assertEqual(r.status, 200)
            self.assertEqual(r.json()["target"], "/late")

    def test_get_raw_socket(self):
        r = H.get_once(self.port, "/raw", host="example.org", headers=[("X-Custom", "value 1")])
        j = self.seen(r)
        self.assertEqual(j["request_line"], "GET /raw HTTP/1.1")
        self.assertEqual(H.hget(j["headers"], "host"), "example.org")
        self.assertEqual(H.hall(j["headers"], "x-custom"), ["value 1"])
        self.assertEqual(r.header("server"), "test-backend/1.0")

    def test_forwarding_headers(self):
        r = H.get_once(self.port, "/fwd", headers=[("X-Forwarded-For", "1.2.3.4")])
        j = self.seen(r)
        hs = j["headers"]
        self.assertEqual(H.hall(hs, "x-forwarded-for"), ["1.2.3.4, 127.0.0.1"])
        self.assertEqual(H.hall(hs, "x-real-ip"), ["127.0.0.1"])
        self.assertEqual(H.hall(hs, "x-forwarded-proto"), ["http"])
        via = ", ".join(H.hall(hs, "via"))
        self.assertIn("1.1 ringlb", via)

    def test_client_supplied_real_ip_and_proto_replaced(self):
        j = self.seen(H.get_once(self.port, "/spoof", headers=[("X-Real-IP", "6.6.6.6"),
                                                              ("X-Forwarded-Proto", "https")]))
        self.assertEqual(H.hall(j["headers"], "x-real-ip"), ["127.0.0.1"])
        self.assertEqual(H.hall(j["headers"], "x-forwarded-proto"), ["http"])

    def test_forwarded_for_created(self):
        j = self.seen(H.get_once(self.port, "/fwd2"))
        self.assertEqual(H.hall(j["headers"], "x-forwarded-for"), ["127.0.0.1"])

    def test_response_via(self):
        r = H.get_once(self.port, "/via")
        self.assertEqual(r.status, 200)
        self.assertIn("1.1 ringlb", ", ".join(r.headers_all("via")))

    def _assert_no_hop(self, hs, client_tokens):
        for name in ("keep-alive", "te", "trailer", "proxy-connection", "upgrade", "x-secret"):
            self.assertEqual(H.hall(hs, name), [], "hop-by-hop %s forwarded: %r" % (name, hs))
        for tok in H.conn_tokens(hs):
            self.assertIn(tok, ("keep-alive", "close"),
                          "client's Connection tokens forwarded: %r" % H.hall(hs, "connection"))
        for tok in client_tokens:
            if tok not in ("keep-alive", "close"):
                self.assertNotIn(tok, H.conn_tokens(hs))

    def test_hop_by_hop_dropped(self):
        hdrs = [("Connection", "keep-alive, X-Other"), ("Keep-Alive", "timeout=5"), ("TE", "trailers"),
                ("Trailer", "X-Foo"), ("Proxy-Connection", "keep-alive"), ("Upgrade", "h2c"),
                ("X-Other", "dropme"), ("X-Kept", "yes")]
        with H.Client(self.port) as c:
            r = c.request("GET", "/hop", headers=hdrs)
            j = self.seen(r)
            hs = j["headers"]
            self._assert_no_hop(hs, ["x-other"])
            self.assertEqual(H.hall(hs, "x-other"), [])
            self.assertEqual(H.hall(hs, "x-kept"), ["yes"])
            # no upgrade happened: the connection still serves HTTP
            r2 = c.request("GET", "/after")
            self.assertEqual(self.seen(r2)["target"], "/after")

    def test_connection_named_header_dropped(self):
        with H.Client(self.port) as c:
            r = c.request("GET", "/secret", headers=[("Connection", "close, X-Secret"), ("X-Secret", "s3cr3t")])
            j = self.seen(r)
            self.assertEqual(H.hall(j["headers"], "x-secret"), [])
            self._assert_no_hop(j["headers"], ["x-secret"])
            self.assertTrue(c.peer_closed(3), "proxy did not close after Connection: close")

    def test_head(self):
        with H.Client(self.port) as c:
            r = c.request("HEAD", "/head")
            self.assertEqual(r.status, 200)
            self.assertEqual(r.body, b"")
            self.assertIsNotNone(r.header("content-length"))
            self.assertGreater(int(r.header("content-length")), 0)
            # a following request on the same connection must parse cleanly (no stray body)
            r2 = c.request("GET", "/after-head")
            self.assertEqual(self.seen(r2)["target"], "/after-head")
            self.assertEqual(r2.header("content-length"), str(len(r2.body)))

    def test_head_chunked_upstream(self):
        with H.Client(self.port) as c:
            r = c.request("HEAD", "/chunked")
            self.assertEqual(r.status, 200)
            self.assertEqual(r.body, b"")
            r2 = c.request("GET", "/after-head-chunked")
            self.assertEqual(self.seen(r2)["target"], "/after-head-chunked")

    def test_http10_close(self):
        with H.Client(self.port) as c:
            c.send(b"GET /ten HTTP/1.0\r\nHost: test\r\n\r\n")
            r = c.read_response()
            self.assertIn(r.version, ("HTTP/1.0", "HTTP/1.1"))
            j = self.seen(r)
            self.assertEqual(j["target"], "/ten")
            self.assertNotIn("chunked", (r.header("transfer-encoding") or "").lower())
            self.assertTrue(c.peer_closed(3), "HTTP/1.0 connection without keep-alive not closed")

    def test_http10_chunked_upstream_not_chunked_to_client(self):
        with H.Client(self.port) as c:
            c.send(b"GET /chunked HTTP/1.0\r\nHost: test\r\n\r\n")
            r = c.read_response()
            self.assertEqual(r.status, 200)
            self.assertIsNone(r.header("transfer-encoding"), "chunked sent to an HTTP/1.0 client")
            self.assertEqual(r.body, b"".join(H.chunk_payload(i, 300) for i in range(4)))
            self.assertTrue(c.peer_closed(3))

    def test_http10_keepalive(self):
        with H.Client(self.port) as c:
            for i in range(2):
                c.send(b"GET /ka%d HTTP/1.0\r\nHost: test\r\nConnection: keep-alive\r\n\r\n" % i)
                r = c.read_response()
                self.assertEqual(self.seen(r)["target"], "/ka%d" % i)
                self.assertIn("keep-alive", [t.strip().lower() for t in ",".join(r.headers_all("connection")).split(",")],
                              "HTTP/1.0 keep-alive response lacks Connection: keep-alive")


class RoutingTest(H.ProxyTestCase):
    @classmethod
    def setup_class(cls):
        names = ["A", "B", "C", "D", "E", "F"]
        cls.b = {n: cls.cbackend("fixed", name="backend-" + n) for n in names}
        cls.port = H.free_port()
        cfg = {
            "workers": 1,
            "listeners": [{"name": "web", "address": "127.0.0.1:%d" % cls.port}],
            "pools": [{"name": "p" + n, "backends": [cls.b[n].address]} for n in names],
            "vhosts": [
                {"hosts": ["shop.example.com"], "routes": [
                    {"path": "/", "pool": "pA"},
                    {"path": "/api", "pool": "pB"},
                    {"path": "/api/v2", "pool": "pC"},
                ]},
                {"hosts": ["*.example.com"], "routes": [{"path": "/", "pool": "pD"}]},
                {"hosts": ["only-api.test"], "routes": [{"path": "/api", "pool": "pF"}]},
                {"hosts": ["*"], "routes": [{"path": "/", "pool": "pE"}]},
            ],
        }
        cls.p = cls.cproxy(cfg)

    def route(self, host, path):
        r = H.get_once(self.port, path, host=host)
        return r.status, r.body

    def test_exact_and_prefixes(self):
        cases = [
            ("shop.example.com", "/", b"backend-A"),
            ("shop.example.com", "/index.html", b"backend-A"),
            ("shop.example.com", "/api", b"backend-B"),
            ("shop.example.com", "/api/users", b"backend-B"),
            ("shop.example.com", "/api/v2", b"backend-C"),
            ("shop.example.com", "/api/v2/items?x=1", b"backend-C"),
            ("SHOP.Example.COM:8080", "/api/v2/x", b"backend-C"),
        ]
        for host, path, want in cases:
            with self.subTest(host=host, path=path):
                self.assertEqual(self.route(host, path), (200, want))

    def test_wildcard(self):
        for host in ("a.example.com", "a.b.example.com", "WWW.EXAMPLE.COM"):
            with self.subTest(host=host):
                self.assertEqual(self.route(host, "/x"), (200, b"backend-D"))

    def test_catch_all(self):
        for host in ("example.com", "other.org", "127.0.0.1"):
            with self.subTest(host=host):
                self.assertEqual(self.route(host, "/x"), (200, b"backend-E"))

    def test_no_route_in_vhost_404(self):
        before = self.b["F"].conn_count
        st, _ = self.route("only-api.test", "/other")
        self.assertEqual(st, 404)
        self.assertEqual(self.route("only-api.test", "/api/x"), (200, b"backend-F"))
        self.assertEqual(self.b["F"].conn_count, before + 1)


class NoCatchAllTest(H.ProxyTestCase):
    def test_unknown_host_404(self):
        b = self.backend("fixed", name="backend-A")
        port = H.free_port()
        cfg = H.basic_config(port, [b])
        cfg["vhosts"][0]["hosts"] = ["known.test"]
        self.proxy(cfg)
        self.assertEqual(H.get_once(port, "/", host="known.test").status, 200)
        r = H.get_once(port, "/", host="unknown.test")
        self.assertEqual(r.status, 404)
        self.assertEqual(b.conn_count, 1)
        self.assertEqual(len(b.requests), 1)


class WeightedRoundRobinTest(H.ProxyTestCase):
    def test_5_1_1(self):
        bs = [self.backend("fixed", name="backend-" + n) for n in "ABC"]
        port = H.free_port()
        self.proxy(H.basic_config(port, [(bs[0].address, 5), (bs[1].address, 1), (bs[2].address, 1)], workers=1))
        counts = {}
        with H.Client(port) as c:
            for i in range(70):
                r = c.request("GET", "/wrr%d" % i)
                self.assertEqual(r.status, 200)
                counts[r.body] = counts.get(r.body, 0) + 1
        self.assertEqual(counts, {b"backend-A": 50, b"backend-B": 10, b"backend-C": 10})
        self.assertEqual([len(b.requests) for b in bs], [50, 10, 10])


class RouteOptionsTest(H.ProxyTestCase):
    @classmethod
    def setup_class(cls):
        cls.echo = cls.cbackend("echo", name="echo")
        cls.port = H.free_port()
        routes = [
            {"path": "/", "pool": "p"},
            {"path": "/hide", "pool": "p", "server_header": "hide"},
            {"path": "/replace", "pool": "p", "server_header": "replace", "server_value": "ringlb-test"},
            {"path": "/nopb", "pool": "p", "hide_powered_by": True},
            {"path": "/sethost", "pool": "p", "set_host": "shop.internal"},
        ]
        cfg = H.basic_config(cls.port, [cls.echo])
        cfg["vhosts"][0]["routes"] = routes
        cls.p = cls.cproxy(cfg)

    def test_pass_default(self):
        r = H.get_once(self.port, "/pass")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.headers_all("server"), ["test-backend/1.0"])
        self.assertEqual(r.headers_all("x-powered-by"), ["PHP/8"])

    def test_server_hide(self):
        r = H.get_once(self.port, "/hide")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.headers_all("server"), [])
        self.assertEqual(r.headers_all("x-powered-by"), ["PHP/8"])

    def test_server_replace(self):
        r = H.get_once(self.port, "/replace")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.headers_all("server"), ["ringlb-test"])

    def test_hide_powered_by(self):
        r = H.get_once(self.port, "/nopb")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.headers_all("x-powered-by"), [])
        self.assertEqual(r.headers_all("server"), ["test-backend/1.0"])

    def test_set_host(self):
        r = H.get_once(self.port, "/sethost", host="client.example")
        self.assertEqual(r.status, 200)
        self.assertEqual(H.hall(r.json()["headers"], "host"), ["shop.internal"])


@unittest.skipUnless(H.ipv6_available(), "no IPv6 loopback")
class IPv6Test(H.ProxyTestCase):
    def test_ipv6_listener(self):
        b = self.backend("echo")
        port = H.free_port("::1")
        self.proxy(H.basic_config(port, [b], listen_host="::1"))
        r = H.get_once(port, "/v6", host="[::1]:%d" % port, addr="::1")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()["target"], "/v6")
        c = H.curl(["-g", "http://[::1]:%d/v6curl" % port])
        self.assertEqual(c.returncode, 0, c.stderr)
        self.assertEqual(H.json.loads(c.stdout)["target"], "/v6curl")


if __name__ == "__main__":
    H.main()
