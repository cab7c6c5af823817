#!/usr/bin/env python3
"""The HTTP response cache (docs/cache.md, RFC 9111 as a shared cache, RFC 5861, RFC 9211).

Every test talks to ringlb over 127.0.0.1 with harness.Client and to a scripted origin
(Origin below: raw sockets, one thread per connection) that records every request it
receives (method, target, headers, body) and answers with what the test scripted for the
path: status, exact header lines (Cache-Control, ETag, Last-Modified, Vary, Set-Cookie,
Expires, Date, Age...), a Content-Length or chunked body, a delay. The assertions are on
what the origin saw (how many requests per path, which validators) and on the bytes the
client got (bodies carry the origin's per-path request number, so a body served from the
cache is told apart from a refetched one), not only on status codes or X-Cache.

Timing: lifetimes of 1 s are used only where a test needs an entry to go stale; those
entries are primed together in ExpiryTest.setup_class and the class waits once (2.2 s). A
hit right after a 1 s lifetime is only asserted after aligning to the start of a wall-clock
second (ages are whole seconds from a coarse clock).

Behaviours the spec leaves open, as asserted here:
- stale-while-revalidate: the stale answer must come at once with the stored body; whether
  a background revalidation follows is not required, but if the origin sees one, the next
  request must be served the refreshed entry, and there is at most one such fetch.
- The Cache-Status of a fetch that is later abandoned (chunked body past max_object) may
  still say "stored"; only the next request (a MISS reaching the origin) is asserted.
"""

import email.utils
import hashlib
import os
import re
import socket
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402
from harness import stats  # noqa: E402

SANITIZED = H.ASAN or os.environ.get("RINGLB_SANITIZED") == "1"
TOKEN = "purge-token-0123456789abcdef"
KIB = 1024


def http_date(t=None):
    return email.utils.formatdate(time.time() if t is None else t, usegmt=True)


def align_second(max_frac=0.35):
    """Sleeps until shortly after a wall-clock second starts if too late in the current one,
    so that what follows within ~0.6 s sees one value of time(2)."""
    f = time.time() % 1.0
    if f > max_frac:
        time.sleep(1.0 - f + 0.05)


# --------------------------------------------------------------------------------------
# A scripted origin

class Reply:
    """One scripted response. headers: [(name, value)] sent as is, in order. A Date line is
    added first unless date=False or the headers have one. Content-Length is added (or
    Transfer-Encoding: chunked with chunked=True) unless the status has no body."""

    def __init__(self, status=200, headers=(), body=b"", chunked=False, delay=0.0, date=True,
                 reason=None, chunk_size=4096):
        self.status = status
        self.headers = list(headers)
        self.body = body.encode() if isinstance(body, str) else body
        self.chunked, self.delay, self.date = chunked, delay, date
        self.reason = reason or {200: "OK", 203: "Non-Authoritative Information", 204: "No Content",
                                 206: "Partial Content", 301: "Moved Permanently", 302: "Found",
                                 303: "See Other", 304: "Not Modified", 404: "Not Found",
                                 500: "Internal Server Error", 502: "Bad Gateway",
                                 503: "Service Unavailable"}.get(status, "Whatever")
        self.chunk_size = chunk_size


class Req:
    def __init__(self, method, target, headers, body, n, conn):
        self.method, self.target, self.headers, self.body = method, target, headers, body
        self.path = target.split("?", 1)[0]
        self.n = n            # 1-based number of this request among those for self.path
        self.conn = conn
        self.t = time.monotonic()

    def h(self, name):
        return H.hget(self.headers, name)

    def __repr__(self):
        return "<%s %s n=%d>" % (self.method, self.target, self.n)


class Origin(H.TestServer):
    """Raw-socket HTTP/1.1 origin on 127.0.0.1. set(path, handler): handler is a Reply or a
    callable(Req) -> Reply, chosen by the path of the target (query stripped); unknown paths
    get a 404 with no-store. Every request is recorded in .requests."""

    conn_timeout = 30

    def __init__(self):
        self.handlers = {}
        self.requests = []
        self.per_path = {}
        self._listen()

    def set(self, path, handler):
        with self.lock:
            self.handlers[path] = handler

    def reqs(self, path, method=None):
        with self.lock:
            return [r for r in self.requests if r.path == path and (method is None or r.method == method)]

    def count(self, path, method=None):
        return len(self.reqs(path, method))

    def methods(self):
        with self.lock:
            return [r.method for r in self.requests]

    def _serve(self, c, cid):
        r = H._Reader(c)
        while self._running:
            try:
                head = r.read_until(b"\r\n\r\n", 1 << 20)
            except H.PeerClosed:
                return
            start, headers, _ = H.parse_head(head)
            method, target, version = start.split(" ", 2)
            body = b""
            te = (H.hget(headers, "transfer-encoding") or "").lower()
            cl = H.hget(headers, "content-length")
            if te == "chunked":
                out = bytearray()
                while True:
                    size = int(r.read_until(b"\r\n", 4096)[:-2].split(b";")[0], 16)
                    if size == 0:
                        while r.read_until(b"\r\n", 65536) != b"\r\n":
                            pass
                        break
                    out += r.read_exact(size)
                    r.read_exact(2)
                body = bytes(out)
            elif cl:
                body = r.read_exact(int(cl))
            path = target.split("?", 1)[0]
            with self.lock:
                n = self.per_path.get(path, 0) + 1
                self.per_path[path] = n
                req = Req(method, target, headers, body, n, cid)
                self.requests.append(req)
                handler = self.handlers.get(path)
            if handler is None:
                rep = Reply(404, [("Cache-Control", "no-store")], b"no handler for " + path.encode())
            elif isinstance(handler, Reply):
                rep = handler
            else:
                rep = handler(req)
            if rep.delay:
                time.sleep(rep.delay)
            close = "close" in H.conn_tokens(headers)
            self._send(c, method, rep, close)
            if close:
                c.shutdown(socket.SHUT_WR)
                return

    def _send(self, c, method, rep, close):
        lines = ["HTTP/1.1 %d %s" % (rep.status, rep.reason)]
        names = [k.lower() for k, _ in rep.headers]
        if rep.date and "date" not in names:
            lines.append("Date: " + http_date())
        lines += ["%s: %s" % kv for kv in rep.headers]
        no_body = rep.status in (204, 304) or 100 <= rep.status < 200
        if not no_body and "content-length" not in names and "transfer-encoding" not in names:
            lines.append("Transfer-Encoding: chunked" if rep.chunked else "Content-Length: %d" % len(rep.body))
        if close:
            lines.append("Connection: close")
        out = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if no_body or method == "HEAD":
            c.sendall(out)
        elif rep.chunked:
            c.sendall(out)
            mv = memoryview(rep.body)
            for i in range(0, len(rep.body), rep.chunk_size):
                piece = mv[i:i + rep.chunk_size]
                c.sendall(b"%x\r\n" % len(piece) + piece.tobytes() + b"\r\n")
            c.sendall(b"0\r\n\r\n")
        else:
            c.sendall(out + rep.body)


def numbered(value, prefix, extra=()):
    """A handler answering Cache-Control `value` with body '<prefix>-<request number>'."""
    return lambda q: Reply(200, [("Cache-Control", value)] + list(extra), "%s-%d" % (prefix, q.n))


def pattern(n):
    out = bytearray()
    for c in H.pattern_chunks(n):
        out += c
    return bytes(out)


# --------------------------------------------------------------------------------------
# Base with request helpers

class CacheCase(H.ProxyTestCase):
    port = None

    @classmethod
    def corigin(cls):
        o = Origin()
        cls._class_objs.append(o)
        return o

    def origin(self):
        o = Origin()
        self._objs.append(o)
        return o

    def req(self, method, path, headers=(), host="test", body=None, port=None):
        with H.Client(port or self.port, timeout=15) as c:
            return c.request(method, path, host, list(headers), body)

    def get(self, path, headers=(), host="test", port=None):
        return self.req("GET", path, headers, host, port=port)

    def xc(self, r):
        return r.header("X-Cache")

    def assertXC(self, r, label, msg=""):
        msg = str(msg)
        self.assertEqual(r.header("X-Cache"), label,
                         "%s: status %d, X-Cache %r, Cache-Status %r, body %r" % (
                             msg, r.status, r.header("X-Cache"), r.header("Cache-Status"), r.body[:80]))

    def assertHit(self, r, body=None, msg="", status=200):
        msg = str(msg)
        self.assertEqual(r.status, status, msg)
        self.assertXC(r, "HIT", msg)
        self.assertRegex(r.header("Cache-Status") or "", r"^ringlb; hit; ttl=-?\d+$", msg)
        self.assertIsNotNone(r.header("Age"), "a hit carries Age " + msg)
        self.assertEqual(r.header("Content-Length"), str(len(r.body)), msg)
        if body is not None:
            self.assertEqual(r.body, body if isinstance(body, bytes) else body.encode(), msg)

    def assertMissStored(self, r, msg=""):
        self.assertXC(r, "MISS", msg)
        self.assertEqual(r.header("Cache-Status"), "ringlb; fwd=miss; stored", msg)

    def assertMissNotStored(self, r, msg=""):
        self.assertXC(r, "MISS", msg)
        self.assertEqual(r.header("Cache-Status"), "ringlb; fwd=miss", msg)


def main_config(port, origin, **cache_extra):
    cache = {"size": "64m", "max_object": "256k", "purge_token": TOKEN}
    cache.update(cache_extra)
    cfg = H.basic_config(port, [origin.address], workers=1, cache=cache)
    cfg["vhosts"][0]["routes"].append({"path": "/nocache/", "pool": "p", "cache": False})
    return cfg


# --------------------------------------------------------------------------------------
# Storing, serving, keys of the default configuration (one worker)

class CacheTest(CacheCase):
    @classmethod
    def setup_class(cls):
        cls.o = cls.corigin()
        cls.port = H.free_port()
        cls.p = cls.cproxy(main_config(cls.port, cls.o))

    # -- hit / miss / headers -----------------------------------------------------------

    def test_miss_then_hit(self):
        self.o.set("/hit", numbered("max-age=100", "hit"))
        r1 = self.get("/hit")
        self.assertEqual((r1.status, r1.body), (200, b"hit-1"))
        self.assertMissStored(r1)
        for i in range(3):
            r = self.get("/hit")
            self.assertHit(r, "hit-1", "request %d" % (i + 2))
            self.assertRegex(r.header("Age"), r"^\d+$")
            ttl = int(re.search(r"ttl=(-?\d+)", r.header("Cache-Status")).group(1))
            self.assertTrue(95 <= ttl <= 100, ttl)
            self.assertIn("ringlb", ", ".join(r.headers_all("Via")))
            self.assertEqual(len(r.headers_all("Content-Length")), 1)
        self.assertEqual(self.o.count("/hit"), 1)

    def test_hit_keeps_origin_headers_and_keepalive(self):
        self.o.set("/hdrs", Reply(200, [("Cache-Control", "max-age=100"), ("Content-Type", "text/x-test"),
                                        ("X-Origin", "yes")], b"hdrs"))
        with H.Client(self.port, timeout=10) as c:
            r1 = c.request("GET", "/hdrs")
            r2 = c.request("GET", "/hdrs")
            r3 = c.request("GET", "/hdrs")
        self.assertMissStored(r1)
        for r in (r2, r3):
            self.assertHit(r, b"hdrs")
            self.assertEqual(r.header("Content-Type"), "text/x-test")
            self.assertEqual(r.header("X-Origin"), "yes")
            self.assertIsNone(r.header("Transfer-Encoding"))
        self.assertEqual(self.o.count("/hdrs"), 1)

    def test_pipelined_hits(self):
        self.o.set("/pipe", numbered("max-age=100", "pipe"))
        self.assertEqual(self.get("/pipe").body, b"pipe-1")
        with H.Client(self.port, timeout=10) as c:
            c.send(H.build_request("GET", "/pipe") * 5)
            for _ in range(5):
                self.assertHit(c.read_response(), b"pipe-1")
        self.assertEqual(self.o.count("/pipe"), 1)

    def test_query_is_part_of_the_key_by_default(self):
        self.o.set("/q", lambda q: Reply(200, [("Cache-Control", "max-age=100")], q.target))
        self.assertEqual(self.get("/q?a=1&b=2").body, b"/q?a=1&b=2")
        self.assertEqual(self.get("/q?b=2&a=1").body, b"/q?b=2&a=1")
        self.assertHit(self.get("/q?a=1&b=2"), b"/q?a=1&b=2")
        self.assertHit(self.get("/q?b=2&a=1"), b"/q?b=2&a=1")
        self.assertEqual(self.o.count("/q"), 2)

    def test_host_is_part_of_the_key_by_default(self):
        self.o.set("/host", lambda q: Reply(200, [("Cache-Control", "max-age=100")], q.h("host")))
        self.assertEqual(self.get("/host", host="a.example").body, b"a.example")
        self.assertEqual(self.get("/host", host="b.example").body, b"b.example")
        self.assertHit(self.get("/host", host="A.EXAMPLE"), b"a.example")   # host names are case-insensitive
        self.assertHit(self.get("/host", host="b.example:80"), b"b.example")  # the default port is the same key
        self.assertEqual(self.o.count("/host"), 2)

    # -- freshness ----------------------------------------------------------------------

    def test_no_store(self):
        self.o.set("/nostore", numbered("no-store, max-age=100", "ns"))
        r1, r2 = self.get("/nostore"), self.get("/nostore")
        self.assertEqual((r1.body, r2.body), (b"ns-1", b"ns-2"))
        self.assertMissNotStored(r1)
        self.assertMissNotStored(r2)
        self.assertEqual(self.o.count("/nostore"), 2)

    def test_no_store_with_must_understand(self):
        self.o.set("/mu", numbered("must-understand, no-store, max-age=100", "mu"))
        self.assertMissStored(self.get("/mu"))
        self.assertHit(self.get("/mu"), "mu-1")
        self.assertEqual(self.o.count("/mu"), 1)

    def test_request_no_store(self):
        self.o.set("/rqns", numbered("max-age=100", "rqns"))
        r1 = self.get("/rqns", [("Cache-Control", "no-store")])
        self.assertEqual(r1.body, b"rqns-1")
        self.assertMissNotStored(r1)
        r2 = self.get("/rqns")
        self.assertEqual(r2.body, b"rqns-2")
        self.assertMissStored(r2)
        self.assertHit(self.get("/rqns"), "rqns-2")
        self.assertEqual(self.o.count("/rqns"), 2)

    def test_private(self):
        for i, v in enumerate(("private, max-age=100", 'private="Set-Cookie", max-age=100', "max-age=100, PRIVATE")):
            path = "/private/%d" % i
            self.o.set(path, numbered(v, "pv"))
            r1, r2 = self.get(path), self.get(path)
            self.assertEqual((r1.body, r2.body), (b"pv-1", b"pv-2"), v)
            self.assertMissNotStored(r2, v)
            self.assertEqual(self.o.count(path), 2, v)

    def test_public_without_lifetime_is_stored(self):
        # "public" is explicit cacheability; with a validator the entry is kept and revalidated
        self.o.set("/pub", lambda q: Reply(304, [("ETag", '"p1"')]) if q.h("if-none-match") == '"p1"'
                   else Reply(200, [("Cache-Control", "public, max-age=100"), ("ETag", '"p1"')], "pub-%d" % q.n))
        self.get("/pub")
        self.assertHit(self.get("/pub"), "pub-1")
        self.assertEqual(self.o.count("/pub"), 1)

    def test_s_maxage_beats_max_age(self):
        self.o.set("/smax1", numbered("max-age=0, s-maxage=100", "s1"))
        self.o.set("/smax2", numbered("s-maxage=0, max-age=100", "s2"))
        self.get("/smax1")
        self.assertHit(self.get("/smax1"), "s1-1")
        self.assertEqual(self.o.count("/smax1"), 1)
        self.get("/smax2")
        r = self.get("/smax2")
        self.assertEqual(r.body, b"s2-2")
        self.assertNotEqual(self.xc(r), "HIT")
        self.assertEqual(self.o.count("/smax2"), 2)

    def test_expires(self):
        now = time.time()
        self.o.set("/exp-future", lambda q: Reply(200, [("Date", http_date(now)), ("Expires", http_date(now + 100))],
                                                  "ef-%d" % q.n))
        self.o.set("/exp-past", lambda q: Reply(200, [("Expires", http_date(time.time() - 100))], "ep-%d" % q.n))
        self.o.set("/exp-invalid", lambda q: Reply(200, [("Expires", "0")], "ei-%d" % q.n))
        self.o.set("/exp-maxage", lambda q: Reply(200, [("Cache-Control", "max-age=100"),
                                                        ("Expires", http_date(time.time() - 100))], "em-%d" % q.n))
        self.get("/exp-future")
        self.assertHit(self.get("/exp-future"), "ef-1")
        for path in ("/exp-past", "/exp-invalid"):
            self.get(path)
            r = self.get(path)
            self.assertNotEqual(self.xc(r), "HIT", path)
            self.assertTrue(r.body.endswith(b"-2"), (path, r.body))
            self.assertEqual(self.o.count(path), 2, path)
        self.get("/exp-maxage")
        self.assertHit(self.get("/exp-maxage"), "em-1", "max-age beats Expires")

    def test_origin_age_is_counted(self):
        self.o.set("/age50", lambda q: Reply(200, [("Cache-Control", "max-age=100"), ("Age", "50")], "a50-%d" % q.n))
        self.o.set("/age200", lambda q: Reply(200, [("Cache-Control", "max-age=100"), ("Age", "200")], "a200-%d" % q.n))
        r1 = self.get("/age50")
        r2 = self.get("/age50")
        self.assertHit(r2, "a50-1")
        self.assertGreaterEqual(int(r2.header("Age")), 50)
        ttl = int(re.search(r"ttl=(-?\d+)", r2.header("Cache-Status")).group(1))
        self.assertLessEqual(ttl, 50)
        self.assertEqual(r1.status, 200)
        # older than its lifetime on arrival: never a hit
        self.get("/age200")
        r = self.get("/age200")
        self.assertEqual(r.body, b"a200-2")
        self.assertEqual(self.o.count("/age200"), 2)

    def test_statuses(self):
        cases = [(404, "max-age=100", True), (301, "max-age=100", True), (410, "max-age=100", True),
                 (500, "max-age=100", True), (302, None, False), (200, None, False),
                 (299, "max-age=100", True)]  # any final status with explicit freshness (RFC 9111 3)
        for status, ccv, stored in cases:
            path = "/status/%d/%s" % (status, "cc" if ccv else "none")
            hd = [("Cache-Control", ccv)] if ccv else []
            if status in (301, 302):
                hd.append(("Location", "/elsewhere"))
            self.o.set(path, lambda q, st=status, hd=hd: Reply(st, hd, "st-%d" % q.n))
            r1 = self.get(path)
            r2 = self.get(path)
            self.assertEqual((r1.status, r2.status), (status, status), path)
            if stored:
                self.assertHit(r2, "st-1", path, status=status)
                self.assertEqual(self.o.count(path), 1, path)
            else:
                self.assertEqual(r2.body, b"st-2", path)
                self.assertEqual(self.o.count(path), 2, path)

    def test_heuristic_freshness_off_by_default(self):
        lm = http_date(time.time() - 10 * 86400)
        self.o.set("/heur-off", lambda q: Reply(200, [("Last-Modified", lm)], "ho-%d" % q.n))
        self.get("/heur-off")
        r = self.get("/heur-off")
        self.assertNotEqual(self.xc(r), "HIT")
        self.assertEqual(self.o.count("/heur-off"), 2)

    # -- request directives ------------------------------------------------------------

    def _etag_origin(self, path, prefix, ccv="max-age=100", extra=()):
        def h(q):
            if q.h("if-none-match") == '"%s"' % prefix:
                return Reply(304, [("ETag", '"%s"' % prefix), ("Cache-Control", ccv)])
            return Reply(200, [("Cache-Control", ccv), ("ETag", '"%s"' % prefix)] + list(extra),
                         "%s-%d" % (prefix, q.n))
        self.o.set(path, h)

    def test_request_no_cache_revalidates(self):
        self._etag_origin("/rqnc", "rqnc")
        self.assertMissStored(self.get("/rqnc"))
        self.assertHit(self.get("/rqnc"), "rqnc-1")
        for hd in ([("Cache-Control", "no-cache")], [("Pragma", "no-cache")]):
            r = self.get("/rqnc", hd)
            self.assertEqual((r.status, r.body), (200, b"rqnc-1"), hd)
            self.assertXC(r, "REVALIDATED", hd)
            self.assertEqual(r.header("Cache-Status"), "ringlb; fwd=stale; fwd-status=304")
            self.assertEqual(self.o.reqs("/rqnc")[-1].h("if-none-match"), '"rqnc"', hd)
        self.assertEqual(self.o.count("/rqnc"), 3)
        # Pragma is ignored when the request has Cache-Control
        self.assertHit(self.get("/rqnc", [("Pragma", "no-cache"), ("Cache-Control", "max-stale=5")]), "rqnc-1")
        self.assertEqual(self.o.count("/rqnc"), 3)

    def test_request_max_age_and_min_fresh(self):
        self.o.set("/rqma", lambda q: Reply(200, [("Cache-Control", "max-age=100"), ("Age", "10")], "rqma-%d" % q.n))
        self.get("/rqma")
        self.assertHit(self.get("/rqma", [("Cache-Control", "max-age=30")]), "rqma-1")
        r = self.get("/rqma", [("Cache-Control", "max-age=5")])
        self.assertEqual(r.body, b"rqma-2", "an entry older than the request's max-age is not used")
        self.assertEqual(self.o.count("/rqma"), 2)
        self.o.set("/rqmf", numbered("max-age=100", "rqmf"))
        self.get("/rqmf")
        self.assertHit(self.get("/rqmf", [("Cache-Control", "min-fresh=10")]), "rqmf-1")
        r = self.get("/rqmf", [("Cache-Control", "min-fresh=1000")])
        self.assertEqual(r.body, b"rqmf-2")
        self.assertEqual(self.o.count("/rqmf"), 2)

    def test_response_no_cache_always_revalidated(self):
        self._etag_origin("/rsnc", "rsnc", ccv="no-cache, max-age=100")
        self.assertEqual(self.get("/rsnc").body, b"rsnc-1")
        for i in range(2):
            r = self.get("/rsnc")
            self.assertEqual(r.body, b"rsnc-1")
            self.assertXC(r, "REVALIDATED")
        reqs = self.o.reqs("/rsnc")
        self.assertEqual(len(reqs), 3)
        self.assertEqual([q.h("if-none-match") for q in reqs], [None, '"rsnc"', '"rsnc"'])

    def test_only_if_cached(self):
        self.o.set("/oic", numbered("max-age=100", "oic"))
        r = self.get("/oic", [("Cache-Control", "only-if-cached")])
        self.assertEqual(r.status, 504)
        self.assertEqual(self.o.count("/oic"), 0, "only-if-cached must never reach the origin")
        self.get("/oic")
        r = self.get("/oic", [("Cache-Control", "only-if-cached")])
        self.assertHit(r, "oic-1")
        self.assertEqual(self.o.count("/oic"), 1)

    # -- conditionals from the client ---------------------------------------------------

    def test_client_conditionals_against_fresh_entry(self):
        lm = http_date(time.time() - 3600)
        self.o.set("/cond", lambda q: Reply(200, [("Cache-Control", "max-age=100"), ("ETag", '"c1"'),
                                                  ("Last-Modified", lm)], "cond-%d" % q.n))
        self.get("/cond")
        for hd in ([("If-None-Match", '"c1"')], [("If-None-Match", 'W/"c1"')],
                   [("If-None-Match", '"x", "c1"')], [("If-None-Match", "*")],
                   [("If-Modified-Since", lm)], [("If-Modified-Since", http_date(time.time()))]):
            r = self.get("/cond", hd)
            self.assertEqual(r.status, 304, hd)
            self.assertEqual(r.body, b"", hd)
            self.assertEqual(r.header("ETag"), '"c1"', hd)
            self.assertEqual(r.header("X-Cache"), "HIT", hd)
        for hd in ([("If-None-Match", '"other"')], [("If-Modified-Since", http_date(time.time() - 7200))],
                   # If-None-Match decides when both are present (RFC 9110 13.2.2)
                   [("If-None-Match", '"other"'), ("If-Modified-Since", lm)]):
            r = self.get("/cond", hd)
            self.assertHit(r, "cond-1", hd)
        self.assertEqual(self.o.count("/cond"), 1)
        self.assertEqual(self.o.reqs("/cond")[0].h("if-none-match"), None)

    def test_client_validators_not_forwarded_on_a_fetch(self):
        self.o.set("/cvf", lambda q: Reply(200, [("Cache-Control", "max-age=100"), ("ETag", '"v"')], "cvf-%d" % q.n))
        r = self.get("/cvf", [("If-None-Match", '"client-tag"'), ("If-Modified-Since", http_date(time.time()))])
        self.assertEqual((r.status, r.body), (200, b"cvf-1"))
        q = self.o.reqs("/cvf")[0]
        self.assertIsNone(q.h("if-none-match"), q.headers)
        self.assertIsNone(q.h("if-modified-since"), q.headers)
        self.assertHit(self.get("/cvf"), "cvf-1")

    # -- what is not stored -----------------------------------------------------------

    def test_set_cookie_not_stored(self):
        self.o.set("/cookie", numbered("max-age=100", "ck", [("Set-Cookie", "sid=abc; Path=/")]))
        r1, r2 = self.get("/cookie"), self.get("/cookie")
        self.assertEqual((r1.body, r2.body), (b"ck-1", b"ck-2"))
        self.assertEqual(r2.header("Set-Cookie"), "sid=abc; Path=/")
        self.assertMissNotStored(r2)
        self.assertEqual(self.o.count("/cookie"), 2)

    def test_authorization(self):
        auth = [("Authorization", "Basic dXNlcjpwYXNz")]
        self.o.set("/auth/plain", numbered("max-age=100", "ap"))
        r1 = self.get("/auth/plain", auth)
        r2 = self.get("/auth/plain", auth)
        self.assertEqual((r1.body, r2.body), (b"ap-1", b"ap-2"))
        self.assertEqual(self.get("/auth/plain").body, b"ap-3", "an authorized response leaked to another client")
        self.assertEqual(self.o.count("/auth/plain"), 3)
        for ccv in ("public, max-age=100", "s-maxage=100", "must-revalidate, max-age=100"):
            path = "/auth/" + ccv.split(",")[0].split("=")[0]
            self.o.set(path, numbered(ccv, "a"))
            self.assertMissStored(self.get(path, auth), ccv)
            self.assertHit(self.get(path, auth), "a-1", ccv)
            self.assertEqual(self.o.count(path), 1, ccv)

    def test_vary(self):
        def h(q):
            ae = q.h("accept-encoding")
            return Reply(200, [("Cache-Control", "max-age=100"), ("Vary", "Accept-Encoding")],
                         "%s-%d" % (ae, q.n))
        self.o.set("/vary", h)
        gz, ident = [("Accept-Encoding", "gzip")], [("Accept-Encoding", "identity")]
        self.assertEqual(self.get("/vary", gz).body, b"gzip-1")
        self.assertEqual(self.get("/vary", ident).body, b"identity-2")
        for _ in range(2):
            self.assertHit(self.get("/vary", gz), "gzip-1")
            self.assertHit(self.get("/vary", ident), "identity-2")
        self.assertEqual(self.o.count("/vary"), 2)
        r = self.get("/vary", [("Accept-Encoding", "br")])
        self.assertEqual(r.body, b"br-3", "a request matching no variant goes to the origin")
        r = self.get("/vary")
        self.assertEqual(r.body, b"None-4", "no Accept-Encoding is a variant of its own")
        self.assertHit(self.get("/vary", [("Accept-Encoding", "br")]), "br-3")
        self.assertHit(self.get("/vary"), "None-4")
        self.assertEqual(self.o.count("/vary"), 4)

    def test_vary_star_not_stored(self):
        self.o.set("/varystar", numbered("max-age=100", "vs", [("Vary", "*")]))
        self.get("/varystar")
        self.assertEqual(self.get("/varystar").body, b"vs-2")
        self.assertEqual(self.o.count("/varystar"), 2)

    # -- unsafe methods ---------------------------------------------------------------

    def test_invalidation_after_post(self):
        def h(q):
            if q.method == "POST":
                return Reply(200 if q.body != b"fail" else 500, [], "posted")
            return Reply(200, [("Cache-Control", "max-age=100")], "inv-%d" % q.n)
        self.o.set("/inv", h)
        self.get("/inv")
        self.assertHit(self.get("/inv"), "inv-1")
        r = self.req("POST", "/inv", body=b"fail")
        self.assertEqual(r.status, 500)
        self.assertXC(r, "BYPASS")
        self.assertHit(self.get("/inv"), "inv-1", "a failed POST does not invalidate")
        r = self.req("POST", "/inv", body=b"data")
        self.assertEqual(r.status, 200)
        self.assertXC(r, "BYPASS")
        self.assertEqual(r.header("Cache-Status"), "ringlb; fwd=bypass")
        r = self.get("/inv")
        self.assertEqual(r.body, b"inv-4")
        self.assertMissStored(r)
        self.assertEqual(self.o.count("/inv", "GET"), 2)
        self.assertEqual(self.o.count("/inv", "POST"), 2)

    def test_invalidation_by_each_unsafe_method(self):
        for m in ("PUT", "DELETE", "PATCH", "POST"):
            path = "/invm/" + m
            self.o.set(path, lambda q: Reply(200, [("Cache-Control", "max-age=100")], "%s-%d" % (q.method, q.n))
                       if q.method == "GET" else Reply(204, []))
            self.get(path)
            self.assertHit(self.get(path), "GET-1", m)
            r = self.req(m, path, body=b"x" if m != "DELETE" else None)
            self.assertEqual(r.status, 204, m)
            self.assertEqual(self.get(path).body, b"GET-3", "%s did not invalidate" % m)

    def test_invalidation_of_location_and_content_location(self):
        for p in ("/loc/a", "/loc/b", "/loc/c", "/loc/d"):
            self.o.set(p, numbered("max-age=100", p))
            self.get(p)
        self.o.set("/loc/form", lambda q: Reply(303 if q.method == "POST" else 201,
                                                [("Location", "/loc/a"), ("Content-Location", "/loc/b")], "ok")
                   if q.method in ("POST", "PUT") else
                   Reply(204, [("Location", "http://other.example/loc/c"), ("Content-Location", "http://test/loc/d")]))
        for p in ("/loc/a", "/loc/b", "/loc/c", "/loc/d"):
            self.assertHit(self.get(p), "%s-1" % p)
        self.assertEqual(self.req("PUT", "/loc/form", body=b"x").status, 201)
        self.assertEqual(self.get("/loc/a").body, b"/loc/a-2")
        self.assertEqual(self.get("/loc/b").body, b"/loc/b-2")
        self.assertHit(self.get("/loc/c"), "/loc/c-1")
        self.assertEqual(self.req("DELETE", "/loc/form").status, 204)
        self.assertHit(self.get("/loc/c"), "/loc/c-1", "a Location on another host is not invalidated")
        self.assertEqual(self.get("/loc/d").body, b"/loc/d-2", "same-host absolute Content-Location")

    def test_head_answered_from_get_entry_and_not_stored(self):
        self.o.set("/head", numbered("max-age=100", "head-body"))
        self.get("/head")
        r = self.req("HEAD", "/head")
        self.assertEqual(r.status, 200)
        self.assertXC(r, "HIT")
        self.assertEqual(r.header("Content-Length"), str(len(b"head-body-1")))
        self.assertEqual(self.o.count("/head", "HEAD"), 0)
        # the connection is still in sync after the bodiless answer
        with H.Client(self.port, timeout=10) as c:
            self.assertEqual(c.request("HEAD", "/head").body, b"")
            self.assertHit(c.request("GET", "/head"), "head-body-1")
        self.o.set("/head2", numbered("max-age=100", "h2"))
        r = self.req("HEAD", "/head2")
        self.assertEqual(r.status, 200)
        self.assertEqual(self.o.count("/head2", "HEAD"), 1)
        r = self.get("/head2")
        self.assertEqual(r.body, b"h2-2", "a HEAD response must not be stored")
        self.assertMissStored(r)
        self.assertEqual(self.o.count("/head2", "GET"), 1)

    # -- range -------------------------------------------------------------------------

    def test_range_passes_through(self):
        full = b"0123456789abcdef"

        def h(q):
            rg = q.h("range")
            if rg:
                m = re.match(r"bytes=(\d+)-(\d+)", rg)
                a, b = int(m.group(1)), int(m.group(2))
                return Reply(206, [("Cache-Control", "max-age=100"),
                                   ("Content-Range", "bytes %d-%d/%d" % (a, b, len(full)))], full[a:b + 1])
            return Reply(200, [("Cache-Control", "max-age=100")], full)
        self.o.set("/range", h)
        self.o.set("/range2", h)
        self.get("/range")
        self.assertHit(self.get("/range"), full)
        r = self.get("/range", [("Range", "bytes=2-5")])
        self.assertEqual((r.status, r.body), (206, b"2345"))
        self.assertEqual(r.header("Content-Range"), "bytes 2-5/16")
        self.assertXC(r, "BYPASS")
        self.assertEqual(self.o.reqs("/range")[-1].h("range"), "bytes=2-5")
        self.assertHit(self.get("/range"), full, "the whole entry survives a range request")
        self.assertEqual(self.o.count("/range"), 2)
        # a 206 is never stored
        r = self.get("/range2", [("Range", "bytes=0-3")])
        self.assertEqual((r.status, r.body), (206, b"0123"))
        r = self.get("/range2")
        self.assertEqual((r.status, r.body), (200, full))
        self.assertMissStored(r)
        self.assertEqual(self.o.count("/range2"), 2)

    # -- bodies -------------------------------------------------------------------------

    def test_chunked_body_stored(self):
        body = pattern(100 * KIB)
        self.o.set("/chunky", Reply(200, [("Cache-Control", "max-age=100")], body, chunked=True, chunk_size=3000))
        r1 = self.get("/chunky")
        self.assertEqual(r1.body, body)
        self.assertMissStored(r1)
        r2 = self.get("/chunky")
        self.assertHit(r2, body)
        self.assertEqual(r2.header("Content-Length"), str(len(body)))
        self.assertEqual(self.o.count("/chunky"), 1)

    def test_max_object_not_stored_body_whole(self):
        big = pattern(1024 * KIB + 7)  # max_object is 256k here
        sha = hashlib.sha256(big).hexdigest()
        self.o.set("/big/cl", Reply(200, [("Cache-Control", "max-age=100")], big))
        self.o.set("/big/chunked", Reply(200, [("Cache-Control", "max-age=100")], big, chunked=True,
                                         chunk_size=16 * KIB))
        self.o.set("/big/justover", Reply(200, [("Cache-Control", "max-age=100")], pattern(256 * KIB + 1),
                                          chunked=True, chunk_size=1000))
        for path in ("/big/cl", "/big/chunked"):
            for i in range(2):
                r = self.get(path)
                self.assertEqual(r.status, 200, path)
                self.assertEqual(len(r.body), len(big), path)
                self.assertEqual(hashlib.sha256(r.body).hexdigest(), sha, "%s request %d" % (path, i + 1))
                self.assertXC(r, "MISS", path)
            self.assertEqual(self.o.count(path), 2, path)
        self.assertEqual(self.get("/big/justover").body, pattern(256 * KIB + 1))
        self.assertNotEqual(self.xc(self.get("/big/justover")), "HIT")
        self.assertEqual(self.o.count("/big/justover"), 2)
        # the cache still works afterwards
        self.o.set("/big/small", numbered("max-age=100", "small"))
        self.get("/big/small")
        self.assertHit(self.get("/big/small"), "small-1")

    # -- routes ------------------------------------------------------------------------

    def test_route_cache_false(self):
        self.o.set("/nocache/x", numbered("max-age=100", "nc"))
        r1, r2 = self.get("/nocache/x"), self.get("/nocache/x")
        self.assertEqual((r1.body, r2.body), (b"nc-1", b"nc-2"))
        for r in (r1, r2):
            self.assertIsNone(r.header("X-Cache"))
            self.assertIsNone(r.header("Cache-Status"))
        self.assertEqual(self.o.count("/nocache/x"), 2)

    # -- collapsing --------------------------------------------------------------------

    def _burst(self, path, n=20):
        out = [None] * n
        errs = []
        barrier = threading.Barrier(n)

        def run(i):
            try:
                with H.Client(self.port, timeout=15) as c:
                    barrier.wait(5)
                    out[i] = c.request("GET", path)
            except Exception as e:  # reported below
                errs.append(repr(e))
        ts = [threading.Thread(target=run, args=(i,)) for i in range(n)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(20)
        self.assertEqual(errs, [])
        return out

    def test_collapsing_one_origin_request(self):
        self.o.set("/collapse", lambda q: Reply(200, [("Cache-Control", "max-age=100")], "collapsed-%d" % q.n,
                                                delay=0.4))
        before = stats(self.p)
        rs = self._burst("/collapse", 20)
        after = stats(self.p)
        self.assertEqual([r.status for r in rs], [200] * 20)
        self.assertEqual({r.body for r in rs}, {b"collapsed-1"})
        self.assertEqual(self.o.count("/collapse"), 1, "the origin must see one request for 20 concurrent misses")
        self.assertGreaterEqual(after["cache_collapsed"] - before["cache_collapsed"], 10)
        self.assertEqual(after["cache_misses"] - before["cache_misses"], 1)

    def test_collapsing_unstorable_each_goes_to_origin(self):
        self.o.set("/collapse-priv", lambda q: Reply(200, [("Cache-Control", "private, max-age=100")],
                                                     "cp-%d" % q.n, delay=0.4))
        t0 = time.monotonic()
        rs = self._burst("/collapse-priv", 20)
        took = time.monotonic() - t0
        self.assertEqual([r.status for r in rs], [200] * 20)
        self.assertEqual(sorted(r.body for r in rs), sorted(("cp-%d" % i).encode() for i in range(1, 21)))
        self.assertEqual(self.o.count("/collapse-priv"), 20)
        # the waiters go side by side, not one after another (20 x 0.4 s)
        self.assertLess(took, 4.0)

    # -- purge (one worker) --------------------------------------------------------------

    def test_purge_one_and_prefix(self):
        for p in ("/pp/one", "/pp/pre/a", "/pp/pre/b", "/pp/other"):
            self.o.set(p, numbered("max-age=100", p))
            self.get(p)
        r = self.req("PURGE", "/pp/one", [("X-Purge-Token", TOKEN)])
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(self.get("/pp/one").body, b"/pp/one-2")
        r = self.req("PURGE", "/pp/pre*", [("X-Purge-Token", TOKEN)])
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(self.get("/pp/pre/a").body, b"/pp/pre/a-2")
        self.assertEqual(self.get("/pp/pre/b").body, b"/pp/pre/b-2")
        self.assertHit(self.get("/pp/other"), "/pp/other-1")
        self.assertNotIn("PURGE", self.o.methods())

    def test_purge_refused_without_the_token(self):
        self.o.set("/pr", numbered("max-age=100", "pr"))
        self.get("/pr")
        for hd in ([], [("X-Purge-Token", "wrong-token-0123456789abcd")], [("X-Purge-Token", TOKEN[:-1])],
                   [("X-Purge-Token", TOKEN + "x")]):
            r = self.req("PURGE", "/pr", hd)
            self.assertEqual(r.status, 403, hd)
            self.assertHit(self.get("/pr"), "pr-1", hd)
        r = self.req("PURGE", "/pr*", [("X-Purge-Token", "nope")])
        self.assertEqual(r.status, 403)
        self.assertHit(self.get("/pr"), "pr-1")
        self.assertNotIn("PURGE", self.o.methods())

    def test_get_with_body_bypasses(self):
        self.o.set("/gb", numbered("max-age=100", "gb"))
        self.get("/gb")
        r = self.req("GET", "/gb", body=b"payload")
        self.assertEqual(r.body, b"gb-2")
        self.assertXC(r, "BYPASS")
        self.assertEqual(self.o.reqs("/gb")[-1].body, b"payload")
        self.assertHit(self.get("/gb"), "gb-1", "a GET with a body neither replaces nor removes the entry")

    def test_safe_methods_do_not_invalidate(self):
        self.o.set("/safe", lambda q: Reply(200, [("Cache-Control", "max-age=100")], "safe-%d" % q.n))
        self.get("/safe")
        for m in ("OPTIONS", "HEAD"):
            self.assertEqual(self.req(m, "/safe").status, 200, m)
        self.assertHit(self.get("/safe"), "safe-1")
        self.assertEqual(self.o.count("/safe", "GET"), 1)

    def test_stored_response_without_date_gets_one(self):
        """RFC 9110 6.6.1: a cache storing a response that has no Date adds one (when it came)."""
        self.o.set("/nodate", Reply(200, [("Cache-Control", "max-age=100")], "nd", date=False))
        r1 = self.get("/nodate")
        self.assertIsNone(r1.header("Date"), "the forwarded miss is the origin's own")
        r2 = self.get("/nodate")
        self.assertHit(r2, b"nd")
        d = r2.header("Date")
        self.assertIsNotNone(d, "the stored copy has a Date")
        self.assertLess(abs(email.utils.parsedate_to_datetime(d).timestamp() - time.time()), 5)

    def test_204_hit(self):
        self.o.set("/204", lambda q: Reply(204, [("Cache-Control", "max-age=100"), ("X-N", str(q.n))]))
        r1 = self.get("/204")
        self.assertEqual(r1.status, 204)
        with H.Client(self.port, timeout=10) as c:
            r2 = c.request("GET", "/204")
            self.assertEqual((r2.status, r2.header("X-N"), r2.header("X-Cache")), (204, "1", "HIT"))
            # RFC 9110 8.6: no Content-Length in a 204
            self.assertIsNone(r2.header("Content-Length"), r2.raw_head)
            r3 = c.request("GET", "/204")
            self.assertEqual(r3.status, 204)
        self.assertEqual(self.o.count("/204"), 1)

    def test_hop_by_hop_fields_not_stored(self):
        self.o.set("/hop", numbered("max-age=100", "hop", [("Connection", "X-Hop"), ("X-Hop", "1"),
                                                           ("Keep-Alive", "timeout=5"), ("X-End", "2")]))
        r1, r2 = self.get("/hop"), self.get("/hop")
        self.assertHit(r2, "hop-1")
        for r in (r1, r2):
            self.assertIsNone(r.header("X-Hop"), r.raw_head)
            self.assertIsNone(r.header("Keep-Alive"), r.raw_head)
            self.assertEqual(r.header("X-End"), "2")

    def test_chunked_with_trailer_fields(self):
        body = b"t" * 5000
        # a chunked body with a trailer section, written by hand
        raw = (b"%x\r\n" % len(body)) + body + b"\r\n0\r\nX-Trailer: yes\r\n\r\n"

        self.o.set("/trailer", Reply(200, [("Cache-Control", "max-age=100"), ("Transfer-Encoding", "chunked"),
                                           ("Trailer", "X-Trailer")], raw))
        r1 = self.get("/trailer")
        self.assertEqual(r1.body, body)
        with H.Client(self.port, timeout=10) as c:
            r2 = c.request("GET", "/trailer")
            self.assertHit(r2, body)
            self.assertHit(c.request("GET", "/trailer"), body, "the connection stays in sync")
        self.assertEqual(self.o.count("/trailer"), 1)

    def test_hit_for_http10_and_connection_close(self):
        self.o.set("/h10", numbered("max-age=100", "h10"))
        self.get("/h10")
        with H.Client(self.port, timeout=10) as c:
            r = c.request("GET", "/h10", version="HTTP/1.0")
            self.assertHit(r, "h10-1")
            self.assertTrue(c.peer_closed(3), "HTTP/1.0 without keep-alive: closed after the answer")
        with H.Client(self.port, timeout=10) as c:
            r = c.request("GET", "/h10", version="HTTP/1.0", headers=[("Connection", "keep-alive")])
            self.assertHit(r, "h10-1")
            self.assertIn("keep-alive", H.conn_tokens(r.headers))
            self.assertHit(c.request("GET", "/h10", version="HTTP/1.0", headers=[("Connection", "keep-alive")]),
                           "h10-1")
        with H.Client(self.port, timeout=10) as c:
            r = c.request("GET", "/h10", headers=[("Connection", "close")])
            self.assertHit(r, "h10-1")
            self.assertIn("close", H.conn_tokens(r.headers))
            self.assertTrue(c.peer_closed(3))

    def test_pipelined_behind_a_collapsed_wait(self):
        self.o.set("/plw", lambda q: Reply(200, [("Cache-Control", "max-age=100")], "plw-%d" % q.n, delay=0.5))
        self.o.set("/plw2", numbered("max-age=100", "plw2"))
        out = {}
        t = threading.Thread(target=lambda: out.setdefault("a", self.get("/plw")))
        t.start()
        self.assertTrue(OptionsTest._wait(lambda: self.o.count("/plw") >= 1, 3))
        with H.Client(self.port, timeout=10) as c:
            c.send(H.build_request("GET", "/plw") + H.build_request("GET", "/plw2") + H.build_request("GET", "/plw"))
            r1, r2, r3 = c.read_response(), c.read_response(), c.read_response()
        t.join(10)
        self.assertEqual(out["a"].body, b"plw-1")
        self.assertHit(r1, "plw-1")
        self.assertEqual(r2.body, b"plw2-1")
        self.assertHit(r3, "plw-1")
        self.assertEqual(self.o.count("/plw"), 1)

    def test_waiters_served_when_the_first_client_leaves(self):
        self.o.set("/leave", lambda q: Reply(200, [("Cache-Control", "max-age=100")], "leave-%d" % q.n, delay=0.6))
        a = H.Client(self.port, timeout=10)
        a.send(H.build_request("GET", "/leave"))
        self.assertTrue(OptionsTest._wait(lambda: self.o.count("/leave") >= 1, 3))
        out = []
        ts = [threading.Thread(target=lambda: out.append(self.get("/leave"))) for _ in range(3)]
        for t in ts:
            t.start()
        time.sleep(0.15)
        a.close()   # the client whose request made the fetch goes away
        for t in ts:
            t.join(10)
        self.assertEqual([r.status for r in out], [200] * 3)
        for r in out:
            self.assertRegex(r.body, rb"^leave-\d$")
        self.assertLessEqual(self.o.count("/leave"), 4)
        r = self.get("/leave")
        self.assertEqual(r.status, 200)
        self.assertLessEqual(self.o.count("/leave"), 4)

    def test_purge_during_fetch_is_not_stored(self):
        version = {"v": 1}
        self.o.set("/pdf", lambda q: Reply(200, [("Cache-Control", "max-age=100")], "pdf-v%d" % version["v"],
                                           delay=0.5))
        out = {}
        t = threading.Thread(target=lambda: out.setdefault("a", self.get("/pdf")))
        t.start()
        self.assertTrue(OptionsTest._wait(lambda: self.o.count("/pdf") >= 1, 3))
        version["v"] = 2
        self.assertEqual(self.req("PURGE", "/pdf", [("X-Purge-Token", TOKEN)]).status, 200)
        t.join(10)
        self.assertEqual(out["a"].body, b"pdf-v1")
        r = self.get("/pdf")
        self.assertEqual(r.body, b"pdf-v2", "a fetch in flight for a purged key must not be stored")
        self.assertEqual(self.o.count("/pdf"), 2)

    def test_purge_is_per_host(self):
        self.o.set("/ph", lambda q: Reply(200, [("Cache-Control", "max-age=100")], "%s-%d" % (q.h("host"), q.n)))
        self.get("/ph", host="a.example")
        self.get("/ph", host="b.example")
        self.assertEqual(self.req("PURGE", "/ph", [("X-Purge-Token", TOKEN)], host="a.example").status, 200)
        self.assertEqual(self.get("/ph", host="a.example").body, b"a.example-3")
        self.assertHit(self.get("/ph", host="b.example"), "b.example-2")

    def test_vary_new_response_replaces_its_variant(self):
        self.o.set("/vrep", lambda q: Reply(200, [("Cache-Control", "max-age=100"), ("Vary", "Accept-Encoding"),
                                                  ("ETag", '"e%d"' % q.n)], "%s-%d" % (q.h("accept-encoding"), q.n)))
        gz, br = [("Accept-Encoding", "gzip")], [("Accept-Encoding", "br")]
        self.get("/vrep", gz)
        self.get("/vrep", br)
        r = self.get("/vrep", gz + [("Cache-Control", "no-cache")])
        self.assertEqual(r.body, b"gzip-3")   # the origin answered 200 to the revalidation
        self.assertHit(self.get("/vrep", gz), "gzip-3")
        self.assertHit(self.get("/vrep", br), "br-2")
        self.assertEqual(self.o.count("/vrep"), 3)

    def test_invalidation_removes_every_variant(self):
        self.o.set("/vinv", lambda q: Reply(200, [("Cache-Control", "max-age=100"), ("Vary", "Accept-Encoding")],
                                            "%s-%d" % (q.h("accept-encoding"), q.n)) if q.method == "GET"
                   else Reply(204, []))
        gz, br = [("Accept-Encoding", "gzip")], [("Accept-Encoding", "br")]
        self.get("/vinv", gz)
        self.get("/vinv", br)
        self.assertHit(self.get("/vinv", gz), "gzip-1")
        self.assertEqual(self.req("DELETE", "/vinv").status, 204)
        self.assertEqual(self.get("/vinv", gz).body, b"gzip-4")
        self.assertEqual(self.get("/vinv", br).body, b"br-5")

    def test_head_waits_for_a_get_fetch(self):
        self.o.set("/hw", lambda q: Reply(200, [("Cache-Control", "max-age=100")], "hw-%d" % q.n, delay=0.4))
        out = {}
        t = threading.Thread(target=lambda: out.setdefault("a", self.get("/hw")))
        t.start()
        self.assertTrue(OptionsTest._wait(lambda: self.o.count("/hw") >= 1, 3))
        r = self.req("HEAD", "/hw")
        t.join(10)
        self.assertEqual((r.status, r.body, r.header("Content-Length")), (200, b"", "4"))
        self.assertEqual(out["a"].body, b"hw-1")
        self.assertEqual(self.o.count("/hw"), 1)

    def test_collapsed_waiters_of_a_too_big_body_go_side_by_side(self):
        """Past max_object (256k here): with a Content-Length it is known from the head, with a
        chunked body only while it streams; either way the waiters must then go to the origin
        side by side (docs/cache.md), not one fetch after another."""
        big = pattern(600 * KIB)
        for path, chunked in (("/bigw/cl", False), ("/bigw/chunked", True)):
            self.o.set(path, Reply(200, [("Cache-Control", "max-age=100")], big, chunked=chunked,
                                   chunk_size=32 * KIB, delay=0.5))
            t0 = time.monotonic()
            rs = self._burst(path, 8)
            took = time.monotonic() - t0
            for r in rs:
                self.assertEqual(r.status, 200, path)
                self.assertTrue(r.body == big, "%s: a body differs (%d bytes)" % (path, len(r.body)))
            self.assertEqual(self.o.count(path), 8, path)
            starts = [q.t for q in self.o.reqs(path)]
            # side by side: ~2 x 0.5 s; one after another would be 8 x 0.5 s
            self.assertLess(took, 2.5, "%s: the waiters fetched one after another (origin request times %s)"
                            % (path, ["%.2f" % (x - starts[0]) for x in starts]))

    def test_stats_counters(self):
        self.o.set("/st", numbered("max-age=100", "st"))
        before = stats(self.p)
        self.get("/st")
        self.get("/st")
        self.get("/st")
        after = stats(self.p)
        d = {k: after[k] - before[k] for k in ("cache_hits", "cache_misses", "cache_stored")}
        self.assertEqual(d, {"cache_hits": 2, "cache_misses": 1, "cache_stored": 1})
        self.assertGreater(after["cache_objects"], 0)
        self.assertGreater(after["cache_bytes"], 0)


# --------------------------------------------------------------------------------------
# Everything that needs an entry to go stale: primed together, one wait

class ExpiryTest(CacheCase):
    @classmethod
    def setup_class(cls):
        cls.o = cls.corigin()
        cls.down = cls.corigin()     # the origin of /down/, stopped by test_stale_if_error_origin_down
        cls.port = H.free_port()
        cfg = main_config(cls.port, cls.o)
        cfg["pools"].append({"name": "down", "backends": [cls.down.address]})
        cfg["vhosts"][0]["routes"].append({"path": "/down/", "pool": "down"})
        cls.p = cls.cproxy(cfg)
        o = cls.o
        lm = http_date(time.time() - 3600)
        cls.lm = lm

        def v1_then(path, first_cc, later, extra=()):
            def h(q):
                if q.n == 1:
                    return Reply(200, [("Cache-Control", first_cc)] + list(extra), "%s-1" % path)
                return later(q)
            o.set(path, h)

        plain = lambda q: Reply(200, [("Cache-Control", "max-age=100")], "%s-%d" % (q.path, q.n))  # noqa: E731
        err503 = lambda q: Reply(503, [], "down-%d" % q.n)  # noqa: E731

        # /exp/plain: no validator
        v1_then("/exp/plain", "max-age=1", plain)
        # /exp/etag: revalidated by ETag, the 304 brings new fields
        v1_then("/exp/etag", "max-age=1",
                lambda q: Reply(304, [("ETag", '"v1"'), ("Cache-Control", "max-age=100"), ("X-Custom", "b")])
                if q.h("if-none-match") == '"v1"' else Reply(200, [], "unexpected"),
                [("ETag", '"v1"'), ("X-Custom", "a")])
        # /exp/lm: revalidated by Last-Modified
        v1_then("/exp/lm", "max-age=1",
                lambda q: Reply(304, [("Cache-Control", "max-age=100")])
                if q.h("if-modified-since") == lm else Reply(200, [], "unexpected"),
                [("Last-Modified", lm)])
        # /exp/new: the revalidation gets a new 200
        v1_then("/exp/new", "max-age=1",
                lambda q: Reply(200, [("Cache-Control", "max-age=100"), ("ETag", '"v2"')], "/exp/new-%d" % q.n),
                [("ETag", '"v1"')])
        v1_then("/exp/maxstale", "max-age=1", plain)
        v1_then("/exp/mustreval", "max-age=1, must-revalidate", plain)
        v1_then("/exp/proxyreval", "max-age=1, proxy-revalidate", plain)
        v1_then("/exp/smaxage", "s-maxage=1", plain)
        v1_then("/exp/oic", "max-age=1", plain)
        v1_then("/exp/swr", "max-age=1, stale-while-revalidate=60",
                lambda q: Reply(200, [("Cache-Control", "max-age=100")], "/exp/swr-%d" % q.n, delay=1.0))
        v1_then("/exp/sie503", "max-age=1, stale-if-error=60", err503)
        v1_then("/exp/sie500", "max-age=1, stale-if-error=60", lambda q: Reply(500, [], "err"))
        v1_then("/exp/sie502", "max-age=1, stale-if-error=60", lambda q: Reply(502, [], "err"))
        v1_then("/exp/sie504", "max-age=1, stale-if-error=60", lambda q: Reply(504, [], "err"))
        v1_then("/exp/etag2", "max-age=1",
                lambda q: Reply(304, [("ETag", '"b"'), ("Cache-Control", "max-age=100"), ("Content-Length", "999")])
                if q.h("if-none-match") == '"a"' else Reply(200, [], "unexpected"),
                [("ETag", '"a"')])
        v1_then("/exp/cond", "max-age=1",
                lambda q: Reply(304, [("ETag", '"c1"'), ("Cache-Control", "max-age=100")])
                if q.h("if-none-match") == '"c1"' else Reply(200, [], "unexpected"),
                [("ETag", '"c1"')])
        v1_then("/exp/sie-mr", "max-age=1, stale-if-error=60, must-revalidate", err503)
        v1_then("/exp/nosie", "max-age=1", err503)
        v1_then("/exp/sie-req", "max-age=1", err503)
        o.set("/exp/age", plain)
        dn = cls.down
        for path, ccv in (("/down/sie", "max-age=1, stale-if-error=60"), ("/down/nosie", "max-age=1"),
                          ("/down/sie-mr", "max-age=1, must-revalidate, stale-if-error=60")):
            dn.set(path, lambda q, ccv=ccv: Reply(200, [("Cache-Control", ccv)], "%s-%d" % (q.path, q.n)))

        paths = ["/exp/plain", "/exp/etag", "/exp/lm", "/exp/new", "/exp/maxstale", "/exp/mustreval",
                 "/exp/proxyreval", "/exp/smaxage", "/exp/oic", "/exp/swr", "/exp/sie503", "/exp/sie500",
                 "/exp/sie502", "/exp/sie504", "/exp/cond", "/exp/etag2", "/exp/sie-mr", "/exp/nosie",
                 "/exp/sie-req", "/exp/age", "/down/sie", "/down/nosie", "/down/sie-mr"]
        cls.primed = {}
        for path in paths:
            align_second(0.75)   # a MISS and its HIT within one second (lifetimes of 1 s)
            with H.Client(cls.port, timeout=10) as c:
                r1 = c.request("GET", path)
                r2 = c.request("GET", path)
            cls.primed[path] = (r1, r2)
        cls.t_primed = time.monotonic()

    def setUp(self):
        super().setUp()
        left = self.t_primed + 2.2 - time.monotonic()
        if left > 0:
            time.sleep(left)

    def prime(self, path):
        r1, r2 = self.primed[path]
        self.assertMissStored(r1, path)
        self.assertHit(r2, "%s-1" % path, "right after priming " + path)
        return r1, r2

    def test_expiry(self):
        self.prime("/exp/plain")
        r = self.get("/exp/plain")
        self.assertEqual(r.body, b"/exp/plain-2")
        self.assertMissStored(r)
        self.assertEqual(self.o.count("/exp/plain"), 2)
        self.assertHit(self.get("/exp/plain"), "/exp/plain-2")

    def test_age_grows(self):
        _, r2 = self.prime("/exp/age")
        a0 = int(r2.header("Age"))
        r = self.get("/exp/age")
        self.assertHit(r, "/exp/age-1")
        self.assertGreaterEqual(int(r.header("Age")), a0 + 2)
        self.assertLessEqual(int(r.header("Age")), a0 + 30)

    def test_revalidation_304(self):
        self.prime("/exp/etag")
        r = self.get("/exp/etag")
        self.assertEqual((r.status, r.body), (200, b"/exp/etag-1"))
        self.assertXC(r, "REVALIDATED")
        self.assertEqual(r.header("Cache-Status"), "ringlb; fwd=stale; fwd-status=304")
        reqs = self.o.reqs("/exp/etag")
        self.assertEqual(len(reqs), 2)
        self.assertEqual(reqs[1].h("if-none-match"), '"v1"')
        self.assertEqual(r.header("X-Custom"), "b", "the 304's fields update the stored response")
        r = self.get("/exp/etag")
        self.assertHit(r, "/exp/etag-1")
        self.assertEqual(r.header("X-Custom"), "b")
        self.assertEqual(r.header("Cache-Control"), "max-age=100")
        self.assertEqual(len(r.headers_all("X-Custom")), 1)
        self.assertEqual(self.o.count("/exp/etag"), 2)

    def test_revalidation_304_new_etag_and_content_length(self):
        """A 304 whose ETag differs becomes the stored validator; its Content-Length (of the
        representation, or bogus) says nothing about the stored body."""
        self.prime("/exp/etag2")
        r = self.get("/exp/etag2")
        self.assertEqual((r.status, r.body), (200, b"/exp/etag2-1"))
        self.assertEqual(r.header("Content-Length"), str(len(b"/exp/etag2-1")))
        self.assertXC(r, "REVALIDATED")
        r = self.get("/exp/etag2", [("If-None-Match", '"b"')])
        self.assertEqual((r.status, r.header("X-Cache"), r.header("ETag")), (304, "HIT", '"b"'))
        self.assertHit(self.get("/exp/etag2", [("If-None-Match", '"a"')]), "/exp/etag2-1")
        self.assertEqual(self.o.count("/exp/etag2"), 2)

    def test_revalidation_last_modified_ignores_client_validators(self):
        self.prime("/exp/lm")
        r = self.get("/exp/lm", [("If-None-Match", '"client-tag"')])
        self.assertEqual((r.status, r.body), (200, b"/exp/lm-1"))
        self.assertXC(r, "REVALIDATED")
        q = self.o.reqs("/exp/lm")[1]
        self.assertEqual(q.h("if-modified-since"), self.lm)
        self.assertIsNone(q.h("if-none-match"), "the client's If-None-Match went upstream on a cache fetch")
        self.assertHit(self.get("/exp/lm"), "/exp/lm-1")
        self.assertEqual(self.o.count("/exp/lm"), 2)

    def test_client_conditional_on_a_stale_entry(self):
        self.prime("/exp/cond")
        r = self.get("/exp/cond", [("If-None-Match", '"c1"')])
        self.assertEqual((r.status, r.body), (304, b""))
        self.assertEqual(self.o.reqs("/exp/cond")[1].h("if-none-match"), '"c1"')
        r = self.get("/exp/cond", [("If-None-Match", '"c1"')])
        self.assertEqual((r.status, r.header("X-Cache")), (304, "HIT"))
        self.assertHit(self.get("/exp/cond"), "/exp/cond-1")
        self.assertEqual(self.o.count("/exp/cond"), 2)

    def test_revalidation_200_replaces(self):
        self.prime("/exp/new")
        r = self.get("/exp/new")
        self.assertEqual(r.body, b"/exp/new-2")
        self.assertEqual(self.o.reqs("/exp/new")[1].h("if-none-match"), '"v1"')
        self.assertNotIn(self.xc(r), ("HIT", "STALE", "REVALIDATED"))
        r = self.get("/exp/new")
        self.assertHit(r, "/exp/new-2")
        self.assertEqual(r.header("ETag"), '"v2"')
        self.assertEqual(self.o.count("/exp/new"), 2)

    def test_max_stale(self):
        self.prime("/exp/maxstale")
        for hd in ([("Cache-Control", "max-stale=100")], [("Cache-Control", "max-stale")]):
            r = self.get("/exp/maxstale", hd)
            self.assertEqual(r.body, b"/exp/maxstale-1", hd)
            self.assertXC(r, "STALE", hd)
        self.assertEqual(self.o.count("/exp/maxstale"), 1)
        r = self.get("/exp/maxstale", [("Cache-Control", "max-stale=0")])
        self.assertEqual(r.body, b"/exp/maxstale-2")
        self.assertEqual(self.o.count("/exp/maxstale"), 2)

    def test_never_served_stale(self):
        for path in ("/exp/mustreval", "/exp/proxyreval", "/exp/smaxage"):
            self.prime(path)
            r = self.get(path, [("Cache-Control", "max-stale=100")])
            self.assertEqual(r.body, ("%s-2" % path).encode(), path)
            self.assertNotIn(self.xc(r), ("HIT", "STALE"), path)
            self.assertEqual(self.o.count(path), 2, path)

    def test_only_if_cached_stale(self):
        self.prime("/exp/oic")
        r = self.get("/exp/oic", [("Cache-Control", "only-if-cached")])
        self.assertEqual(r.status, 504)
        r = self.get("/exp/oic", [("Cache-Control", "only-if-cached, max-stale=100")])
        self.assertEqual((r.status, r.body), (200, b"/exp/oic-1"))
        self.assertEqual(self.o.count("/exp/oic"), 1)

    def test_stale_while_revalidate(self):
        self.prime("/exp/swr")
        t0 = time.monotonic()
        r = self.get("/exp/swr")
        took = time.monotonic() - t0
        self.assertEqual(r.body, b"/exp/swr-1")
        self.assertXC(r, "STALE")
        self.assertLess(took, 0.7, "the stale answer must not wait for the origin (1 s)")
        r = self.get("/exp/swr")
        self.assertEqual(r.body, b"/exp/swr-1")
        self.assertXC(r, "STALE")
        # A background revalidation is allowed (one at most); if it happened, it is used.
        time.sleep(1.5)
        n = self.o.count("/exp/swr")
        H.log("stale-while-revalidate: %s" % ("revalidated in the background" if n == 2 else "no background fetch"))
        self.assertLessEqual(n, 2)
        r = self.get("/exp/swr")
        if n == 2:
            self.assertHit(r, "/exp/swr-2")
        else:
            self.assertEqual(r.body, b"/exp/swr-1")
            self.assertXC(r, "STALE")

    def test_stale_if_error_on_5xx(self):
        for path in ("/exp/sie503", "/exp/sie500", "/exp/sie502", "/exp/sie504"):
            self.prime(path)
            r = self.get(path)
            self.assertEqual((r.status, r.body), (200, ("%s-1" % path).encode()), path)
            self.assertXC(r, "STALE", path)
            self.assertGreaterEqual(self.o.count(path), 2, path)

    def test_no_stale_if_error_passes_the_error(self):
        for path in ("/exp/sie-mr", "/exp/nosie"):
            self.prime(path)
            r = self.get(path)
            # (ringlb answers a 503 of its own once the origin's 503 exhausted the retries)
            self.assertEqual(r.status, 503, path)
            self.assertNotEqual(r.body, ("%s-1" % path).encode(), path)
            self.assertGreaterEqual(self.o.count(path), 2, path)

    def test_stale_if_error_from_the_request(self):
        self.prime("/exp/sie-req")
        r = self.get("/exp/sie-req", [("Cache-Control", "stale-if-error=60")])
        self.assertEqual((r.status, r.body), (200, b"/exp/sie-req-1"))
        self.assertXC(r, "STALE")

    def test_stale_if_error_origin_down(self):
        for path in ("/down/sie", "/down/nosie", "/down/sie-mr"):
            self.prime(path)
        self.down.stop()
        r = self.get("/down/sie")
        self.assertEqual((r.status, r.body), (200, b"/down/sie-1"))
        self.assertXC(r, "STALE")
        self.assertIsNotNone(r.header("Age"))
        for path in ("/down/nosie", "/down/sie-mr"):
            r = self.get(path)
            self.assertIn(r.status, (502, 503, 504), path)
            self.assertNotEqual(r.body, ("%s-1" % path).encode(), path)
        self.assertEqual(self.down.count("/down/sie"), 1)


# --------------------------------------------------------------------------------------
# Memory: 10x the budget of distinct objects through a 1 MiB cache

class MemoryTest(CacheCase):
    def test_budget_holds_and_lru_keeps_the_hot_object(self):
        """1000 distinct objects of 10 KiB (10x the 1 MiB budget) through one worker: the
        cache stays within its budget, RSS stops growing once the cache is full, the LRU
        keeps an object hit every 40 requests and drops the cold early ones. The provided
        buffer rings are made small (64) so that their lazy first touch (16-32 KiB per
        buffer, 2 x 1024 by default) does not read as growth."""
        o = self.origin()
        self.port = H.free_port()
        cfg = H.basic_config(self.port, [o.address], workers=1, cache={"size": "1m"},
                             buffers={"count": 64, "client_count": 64})
        p = self.proxy(cfg)
        obj = 10 * KIB
        o.set("/mem/hot", Reply(200, [("Cache-Control", "max-age=1000")], b"H" * obj))
        for i in range(1000):
            o.set("/mem/%d" % i, Reply(200, [("Cache-Control", "max-age=1000")], bytes([65 + i % 26]) * obj))
        peak_bytes = 0
        rss_warm = None
        with H.Client(self.port, timeout=15) as c:
            r = c.request("GET", "/mem/hot")
            self.assertEqual(r.body, b"H" * obj)
            for i in range(1000):
                r = c.request("GET", "/mem/%d" % i)
                self.assertEqual(r.body, bytes([65 + i % 26]) * obj, i)
                self.assertMissStored(r, "/mem/%d" % i)
                if i % 40 == 0:
                    self.assertHit(c.request("GET", "/mem/hot"), b"H" * obj, "hot object after %d" % i)
                if i % 100 == 99:
                    s = stats(p)
                    peak_bytes = max(peak_bytes, s["cache_bytes"])
                    self.assertLessEqual(s["cache_bytes"], 1 << 20, "after %d objects" % (i + 1))
                    if i == 199:
                        rss_warm = p.rss_kib()
            s = stats(p)
            self.assertLessEqual(s["cache_bytes"], 1 << 20)
            self.assertGreater(s["cache_bytes"], 512 * KIB, "the budget is used")
            self.assertLess(s["cache_objects"], 100)
            self.assertEqual(s["cache_stored"], 1001)
            rss_end = p.rss_kib()
            # the hot object was never evicted, a cold early one was, a recent one is there
            self.assertHit(c.request("GET", "/mem/hot"), b"H" * obj)
            self.assertEqual(o.count("/mem/hot"), 1)
            self.assertHit(c.request("GET", "/mem/999"), bytes([65 + 999 % 26]) * obj)
            r = c.request("GET", "/mem/0")
            self.assertEqual(r.body, b"A" * obj)
            self.assertXC(r, "MISS")
            self.assertEqual(o.count("/mem/0"), 2)
        H.log("cache memory: peak cache_bytes %d, RSS %s KiB after 200 objects, %d KiB after 1000"
              % (peak_bytes, rss_warm, rss_end))
        if not SANITIZED:
            self.assertLess(rss_end - rss_warm, 2 * 1024,
                            "RSS grew by %d KiB while 8 MiB of objects went through a full 1 MiB cache"
                            % (rss_end - rss_warm))


class EvictionWhileSendingTest(CacheCase):
    def test_entry_evicted_and_purged_while_being_sent(self):
        """A slow client reads a 200 KiB hit while other objects evict it (and a PURGE drops
        it): the bytes it gets are still the stored ones (the entry lives until the send ends)."""
        o = self.origin()
        self.port = H.free_port()
        cfg = H.basic_config(self.port, [o.address], workers=1, cache={"size": "1m", "purge_token": TOKEN})
        self.proxy(cfg)
        big = pattern(200 * KIB)
        o.set("/ev/big", Reply(200, [("Cache-Control", "max-age=1000")], big))
        for i in range(30):
            o.set("/ev/%d" % i, Reply(200, [("Cache-Control", "max-age=1000")], bytes([i]) * (100 * KIB)))
        self.assertEqual(self.get("/ev/big").body, big)
        slows = []
        for _ in range(3):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(("127.0.0.1", self.port))
            s.sendall(H.build_request("GET", "/ev/big"))
            slows.append(s)
        time.sleep(0.3)
        self.assertEqual(self.req("PURGE", "/ev/big", [("X-Purge-Token", TOKEN)]).status, 200)
        for i in range(30):
            self.assertEqual(self.get("/ev/%d" % i).body, bytes([i]) * (100 * KIB))
        for s in slows:
            s.settimeout(10)
            c = H.Client.__new__(H.Client)
            c.sock, c.r = s, H._Reader(s)
            r = c.read_response()
            c.close()
            self.assertEqual(r.header("X-Cache"), "HIT")
            self.assertTrue(r.body == big, "the slow client got different bytes")
        self.assertEqual(o.count("/ev/big"), 1)
        r = self.get("/ev/big")
        self.assertEqual(r.body, big)
        self.assertXC(r, "MISS")


class SpliceHitTest(CacheCase):
    """Hits with a body past cache.splice_min leave by vmsplice + splice from the entry's own pages."""

    def start(self, splice_min=None):
        o = self.origin()
        self.port = H.free_port()
        cache = {"size": "16m", "max_object": "4m"}
        if splice_min is not None:
            cache["splice_min"] = splice_min
        p = self.proxy(H.basic_config(self.port, [o.address], workers=1, cache=cache))
        return o, p

    def test_big_hits_are_spliced_byte_exact(self):
        o, p = self.start()
        big, small = pattern(1024 * KIB + 5), b"s" * 100
        o.set("/sp/big", Reply(200, [("Cache-Control", "max-age=1000")], big))
        o.set("/sp/small", Reply(200, [("Cache-Control", "max-age=1000")], small))
        self.assertEqual(self.get("/sp/big").body, big)
        self.assertEqual(self.get("/sp/small").body, small)
        before = H.stats(p)["splices"]
        r = self.get("/sp/big")
        self.assertHit(r, big)
        self.assertEqual(H.stats(p)["splices"], before + 1, "the hit's body went by splice")
        self.assertHit(self.get("/sp/small"), small)
        self.assertEqual(H.stats(p)["splices"], before + 1, "a small body is sent, not spliced")
        # Pipelined behind and in front of a spliced body: every response in order, whole.
        with H.Client(self.port, timeout=15) as c:
            c.send(H.build_request("GET", "/sp/small") + H.build_request("GET", "/sp/big") * 2 +
                   H.build_request("HEAD", "/sp/big") + H.build_request("GET", "/sp/small"))
            self.assertHit(c.read_response(), small)
            self.assertHit(c.read_response(), big)
            self.assertHit(c.read_response(), big)
            h = c.read_response(method="HEAD")
            self.assertXC(h, "HIT")
            self.assertEqual((h.header("Content-Length"), h.body), (str(len(big)), b""))
            self.assertHit(c.read_response(), small)
        self.assertEqual(o.count("/sp/big"), 1)

    def test_slow_reader_and_early_close(self):
        o, p = self.start()
        big = pattern(2048 * KIB)
        o.set("/sp/slow", Reply(200, [("Cache-Control", "max-age=1000")], big))
        self.assertEqual(self.get("/sp/slow").body, big)
        # A reader with a tiny window: the splice stops on a full socket and resumes on POLLOUT.
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", self.port))
        s.sendall(H.build_request("GET", "/sp/slow"))
        time.sleep(0.3)
        s.settimeout(10)
        c = H.Client.__new__(H.Client)
        c.sock, c.r = s, H._Reader(s)
        r = c.read_response()
        self.assertHit(r)
        self.assertTrue(r.body == big, "the slow reader got other bytes")
        # Then one that leaves after a few KiB: nothing breaks for the next client.
        for _ in range(3):
            s = socket.create_connection(("127.0.0.1", self.port))
            s.sendall(H.build_request("GET", "/sp/slow"))
            s.recv(8192)
            s.close()
        self.assertHit(self.get("/sp/slow"), big)
        self.assertEqual(o.count("/sp/slow"), 1)

    def test_splice_min_zero_sends_every_hit(self):
        o, p = self.start(splice_min=0)
        big = pattern(512 * KIB)
        o.set("/sp/off", Reply(200, [("Cache-Control", "max-age=1000")], big))
        self.assertEqual(self.get("/sp/off").body, big)
        before = H.stats(p)["splices"]
        self.assertHit(self.get("/sp/off"), big)
        self.assertEqual(H.stats(p)["splices"], before)


class MixedLoadTest(CacheCase):
    def test_mixed_concurrent_load_is_byte_exact(self):
        """12 clients x 80 requests over 2 workers with a 512 KiB cache: 300 URLs of 1-40 KiB
        (Content-Length or chunked, some Vary, some slow), GET/HEAD/conditionals/pipelining,
        PURGEs of prefixes meanwhile. Every body must be the one its URL always has (under
        ASan this is the check of hits sent by reference from entries evicted or purged)."""
        import random
        o = self.origin()
        self.port = H.free_port()
        cfg = H.basic_config(self.port, [o.address], workers=2,
                             cache={"size": "512k", "max_object": "64k", "purge_token": TOKEN})
        p = self.proxy(cfg)

        def content(i):
            return (("%05d|" % i).encode() * 9000)[: 1024 + (i * 7919) % (40 * KIB)]

        def h(q):
            i = int(q.path.rsplit("/", 1)[1])
            hd = [("Cache-Control", "max-age=1000"), ("ETag", '"%d"' % i)]
            if i % 5 == 0:
                hd.append(("Vary", "X-V"))
            return Reply(200, hd, content(i), chunked=(i % 3 == 0), chunk_size=5000,
                         delay=0.05 if i % 17 == 0 else 0)
        for i in range(300):
            o.set("/mx/%d" % i, h)
        errors = []

        def client(seed):
            rnd = random.Random(seed)
            try:
                c = H.Client(self.port, timeout=15)
                for k in range(80):
                    i = min(int(rnd.paretovariate(1.2)) - 1, 299) if rnd.random() < 0.7 else rnd.randrange(300)
                    path = "/mx/%d" % i
                    hd = [("X-V", str(rnd.randrange(3)))] if rnd.random() < 0.5 else []
                    roll = rnd.random()
                    if roll < 0.1:
                        r = c.request("HEAD", path, headers=hd)
                        if r.status != 200 or r.body:
                            errors.append("HEAD %s: %d" % (path, r.status))
                    elif roll < 0.2:
                        r = c.request("GET", path, headers=hd + [("If-None-Match", '"%d"' % i)])
                        if r.status not in (200, 304) or (r.status == 200 and r.body != content(i)):
                            errors.append("conditional %s: %d" % (path, r.status))
                    elif roll < 0.3:
                        c.send(H.build_request("GET", path, headers=hd) + H.build_request("GET", "/mx/%d" % (i ^ 1)))
                        r1, r2 = c.read_response(), c.read_response()
                        if r1.body != content(i) or r2.body != content(i ^ 1):
                            errors.append("pipelined %s: wrong body" % path)
                    elif roll < 0.33 and seed % 4 == 0:
                        r = c.request("PURGE", "/mx/%d*" % rnd.randrange(10), headers=[("X-Purge-Token", TOKEN)])
                        if r.status != 200:
                            errors.append("PURGE: %d" % r.status)
                    else:
                        r = c.request("GET", path, headers=hd)
                        if r.status != 200 or r.body != content(i):
                            errors.append("GET %s: %d, %d bytes, X-Cache %s" % (path, r.status, len(r.body),
                                                                               r.header("X-Cache")))
                    if rnd.random() < 0.1:
                        c.close()
                        c = H.Client(self.port, timeout=15)
                c.close()
            except Exception as e:
                errors.append("client %d: %r" % (seed, e))
        ts = [threading.Thread(target=client, args=(n,)) for n in range(12)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        self.assertEqual(errors[:10], [])
        s = stats(p)
        self.assertGreater(s["cache_hits"], 100)
        self.assertLessEqual(s["cache_bytes"], 2 * 512 * KIB)
        self.assertIsNone(p.proc.poll(), "ringlb died")


# --------------------------------------------------------------------------------------
# PURGE reaching every worker

class PurgeWorkersTest(CacheCase):
    def test_purge_reaches_every_worker(self):
        """Two workers, each with its own copy (the origin saw exactly two fetches); after one
        PURGE taken by one worker, no answer may carry the old body (the origin's body
        changes with the purge), and each worker fetches exactly once more."""
        o = self.origin()
        self.port = H.free_port()
        cfg = H.basic_config(self.port, [o.address], workers=2, cache={"size": "4m", "purge_token": TOKEN})
        p = self.proxy(cfg)
        version = {"v": 1}
        o.set("/pw/a", lambda q: Reply(200, [("Cache-Control", "max-age=1000")], "v%d" % version["v"]))
        o.set("/pw/b", lambda q: Reply(200, [("Cache-Control", "max-age=1000")], "b%d" % version["v"]))

        def until_fetched(path, n, want):
            tries = 0
            while o.count(path) < n and tries < 300:
                self.assertEqual(self.get(path).body, want)
                tries += 1
            self.assertEqual(o.count(path), n, "%s: two workers never both took one of %d connections"
                             % (path, tries))
            return tries

        # every worker that takes a connection fetches once
        until_fetched("/pw/a", 2, b"v1")
        until_fetched("/pw/b", 2, b"b1")
        for _ in range(20):
            self.assertEqual(self.get("/pw/a").body, b"v1")
        self.assertEqual(o.count("/pw/a"), 2)
        self.assertEqual(stats(p)["cache_objects"], 4)
        version["v"] = 2
        r = self.req("PURGE", "/pw/a", [("X-Purge-Token", TOKEN)])
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(o.count("/pw/a"), 2)
        # until both workers have answered again; not one answer may be the purged body
        until_fetched("/pw/a", 4, b"v2")
        for _ in range(20):
            self.assertEqual(self.get("/pw/a").body, b"v2")
        self.assertEqual(o.count("/pw/a"), 4, "each worker refetches exactly once")
        self.assertNotIn("PURGE", o.methods())
        # the other object stayed on both workers
        for _ in range(20):
            self.assertHit(self.get("/pw/b"), "b1")
        self.assertEqual(o.count("/pw/b"), 2)

        # a prefix purge
        version["v"] = 3
        r = self.req("PURGE", "/pw/*", [("X-Purge-Token", TOKEN)])
        self.assertEqual(r.status, 200, r.body)
        until_fetched("/pw/b", 4, b"b3")
        until_fetched("/pw/a", 6, b"v3")
        self.assertNotIn("PURGE", o.methods())


class TlsHitTest(CacheCase):
    def test_hits_over_tls_are_byte_exact(self):
        import shutil
        import ssl
        import subprocess
        if not shutil.which("openssl"):
            self.skipTest("no openssl CLI")
        tmp = tempfile.mkdtemp(prefix="ringlb-cache-tls-")
        key, cert = os.path.join(tmp, "k.pem"), os.path.join(tmp, "c.pem")
        r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                            "-days", "2", "-subj", "/CN=test"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        o = self.origin()
        self.port = H.free_port()
        cfg = H.basic_config(self.port, [o.address], workers=1, cache={"size": "16m"})
        cfg["listeners"][0]["tls"] = {"certificates": [{"cert": cert, "key": key}]}
        self.proxy(cfg)
        bodies = {"/t/small": b"s" * 3000, "/t/big": pattern(300 * KIB)}
        o.set("/t/small", Reply(200, [("Cache-Control", "max-age=100")], bodies["/t/small"]))
        o.set("/t/big", Reply(200, [("Cache-Control", "max-age=100")], bodies["/t/big"], chunked=True,
                              chunk_size=7000))
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        for round_ in range(2):
            for path, body in bodies.items():
                s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", self.port), timeout=10),
                                    server_hostname="test")
                c = H.Client.__new__(H.Client)
                c.sock, c.r = s, H._Reader(s)
                try:
                    for k in range(2):
                        r = c.request("GET", path)
                        self.assertEqual(r.status, 200)
                        self.assertTrue(r.body == body, "%s round %d request %d: wrong bytes" % (path, round_, k))
                        if round_ or k:
                            self.assertXC(r, "HIT", path)
                finally:
                    c.close()
        for path in bodies:
            self.assertEqual(o.count(path), 1, path)


# --------------------------------------------------------------------------------------
# Key options

class KeyOptionsTest(CacheCase):
    def test_sorted_query_device_header_shared_host(self):
        o = self.origin()
        self.port = H.free_port()
        cfg = H.basic_config(self.port, [o.address], workers=1,
                             cache={"size": "4m", "key": {"host": False, "query": "sorted", "headers": ["X-Device"]}})
        self.proxy(cfg)
        o.set("/k", lambda q: Reply(200, [("Cache-Control", "max-age=100")],
                                    "%s|%s|%d" % (q.target, q.h("x-device"), q.n)))
        self.assertEqual(self.get("/k?a=1&b=2").body, b"/k?a=1&b=2|None|1")
        self.assertHit(self.get("/k?b=2&a=1"), b"/k?a=1&b=2|None|1")
        self.assertHit(self.get("/k?a=1&b=2", host="other.example"), b"/k?a=1&b=2|None|1")
        self.assertEqual(self.get("/k?a=1&b=3").body, b"/k?a=1&b=3|None|2")
        m, d = [("X-Device", "mobile")], [("X-Device", "desktop")]
        self.assertEqual(self.get("/k?a=1&b=2", m).body, b"/k?a=1&b=2|mobile|3")
        self.assertEqual(self.get("/k?b=2&a=1", d).body, b"/k?b=2&a=1|desktop|4")
        self.assertHit(self.get("/k?b=2&a=1", m, host="x.example"), b"/k?a=1&b=2|mobile|3")
        self.assertHit(self.get("/k?a=1&b=2", d), b"/k?b=2&a=1|desktop|4")
        self.assertHit(self.get("/k?a=1&b=2"), b"/k?a=1&b=2|None|1")
        self.assertEqual(o.count("/k"), 4)

    def test_ab_split_variants_are_cached_apart(self):
        """A/B split routes: each variant's responses are their own entries, and a hit still tells a new
        client its variant."""
        oa, ob = self.origin(), self.origin()
        self.port = H.free_port()
        cfg = H.basic_config(self.port, [oa.address], workers=1, cache={"size": "4m"})
        cfg["pools"] = [{"name": "a", "backends": [oa.address]}, {"name": "b", "backends": [ob.address]}]
        route = {"path": "/", "split": [{"pool": "a", "weight": 50}, {"pool": "b", "weight": 50}]}
        cfg["vhosts"][0]["routes"] = [route]
        self.proxy(cfg)
        oa.set("/ab", lambda q: Reply(200, [("Cache-Control", "max-age=100")], "A%d" % q.n))
        ob.set("/ab", lambda q: Reply(200, [("Cache-Control", "max-age=100")], "B%d" % q.n))
        ca, cb = [("Cookie", "rlb_variant=a")], [("Cookie", "rlb_variant=b")]
        self.assertEqual(self.get("/ab", ca).body, b"A1")
        self.assertEqual(self.get("/ab", cb).body, b"B1")
        self.assertHit(self.get("/ab", ca), b"A1")
        self.assertHit(self.get("/ab", cb), b"B1")
        self.assertEqual((oa.count("/ab"), ob.count("/ab")), (1, 1))
        seen = set()
        for _ in range(12):
            r = self.get("/ab")
            self.assertHit(r)
            cookie = r.header("Set-Cookie") or ""
            self.assertRegex(cookie, r"^rlb_variant=(a|b);", "a hit to a client without a variant names one")
            variant = cookie.split(";")[0].split("=")[1]
            self.assertEqual(r.body, b"A1" if variant == "a" else b"B1", "the body of the variant it names")
            seen.add(variant)
        self.assertEqual(seen, {"a", "b"})
        self.assertEqual((oa.count("/ab"), ob.count("/ab")), (1, 1))

    def test_query_ignored(self):
        o = self.origin()
        self.port = H.free_port()
        cfg = H.basic_config(self.port, [o.address], workers=1, cache={"size": "4m", "key": {"query": "ignore"}})
        self.proxy(cfg)
        o.set("/ki", lambda q: Reply(200, [("Cache-Control", "max-age=100")], "%s|%d" % (q.target, q.n)))
        self.assertEqual(self.get("/ki?x=1").body, b"/ki?x=1|1")
        self.assertEqual(o.reqs("/ki")[0].target, "/ki?x=1", "the origin still gets the query")
        self.assertHit(self.get("/ki?x=2"), b"/ki?x=1|1")
        self.assertHit(self.get("/ki"), b"/ki?x=1|1")
        self.assertEqual(self.get("/ki", host="other").body, b"/ki|2")
        self.assertEqual(o.count("/ki"), 2)


# --------------------------------------------------------------------------------------
# Other options: heuristic, store_set_cookie, status_header false, lock_timeout

class OptionsTest(CacheCase):
    @classmethod
    def setup_class(cls):
        cls.o = cls.corigin()
        cls.port = H.free_port()
        cfg = H.basic_config(cls.port, [cls.o.address], workers=1,
                             cache={"size": "4m", "heuristic": True, "store_set_cookie": True,
                                    "status_header": False, "lock_timeout": "300ms"})
        cls.p = cls.cproxy(cfg)

    def test_heuristic_freshness(self):
        lm = http_date(time.time() - 10 * 86400)
        self.o.set("/heur", lambda q: Reply(200, [("Last-Modified", lm)], "heur-%d" % q.n))
        self.o.set("/heur302", lambda q: Reply(302, [("Last-Modified", lm), ("Location", "/x")], "h302-%d" % q.n))
        self.assertEqual(self.get("/heur").body, b"heur-1")
        r = self.get("/heur")
        self.assertEqual(r.body, b"heur-1")
        self.assertGreaterEqual(int(r.header("Age")), 0)
        self.assertEqual(self.o.count("/heur"), 1)
        self.get("/heur302")
        self.assertEqual(self.get("/heur302").body, b"h302-2", "302 is not heuristically cacheable")

    def test_store_set_cookie_and_no_status_header(self):
        self.o.set("/sc", numbered("max-age=100", "sc", [("Set-Cookie", "a=b")]))
        r1, r2 = self.get("/sc"), self.get("/sc")
        self.assertEqual((r1.body, r2.body), (b"sc-1", b"sc-1"))
        self.assertEqual(r2.header("Set-Cookie"), "a=b")
        self.assertIsNotNone(r2.header("Age"))
        for r in (r1, r2):
            self.assertIsNone(r.header("X-Cache"))
            self.assertIsNone(r.header("Cache-Status"))
        self.assertEqual(self.o.count("/sc"), 1)

    def test_max_object_capped_at_a_quarter_of_size(self):
        # size 4m and max_object left at its default (8m): capped at 1m
        big, small = pattern(1536 * KIB), pattern(900 * KIB)
        self.o.set("/cap/big", Reply(200, [("Cache-Control", "max-age=100")], big))
        self.o.set("/cap/small", Reply(200, [("Cache-Control", "max-age=100")], small))
        for _ in range(2):
            self.assertEqual(self.get("/cap/big").body, big)
            self.assertEqual(self.get("/cap/small").body, small)
        self.assertEqual(self.o.count("/cap/big"), 2)
        self.assertEqual(self.o.count("/cap/small"), 1)

    def test_lock_timeout(self):
        self.o.set("/lt", lambda q: Reply(200, [("Cache-Control", "max-age=100")], "lt-%d" % q.n, delay=1.5))
        out = {}

        def first():
            out["first"] = self.get("/lt")
        t = threading.Thread(target=first)
        t0 = time.monotonic()
        t.start()
        self.assertTrue(self._wait(lambda: self.o.count("/lt") >= 1, 2.0))
        r2 = self.get("/lt")
        t.join(10)
        self.assertEqual(out["first"].body, b"lt-1")
        self.assertEqual(r2.status, 200)
        reqs = self.o.reqs("/lt")
        self.assertEqual(len(reqs), 2, "the waiter must go to the origin after lock_timeout")
        # it went after ~0.3 s of waiting, long before the first fetch ended (1.5 s)
        self.assertLess(reqs[1].t - t0, 1.2)
        self.assertEqual(r2.body, b"lt-2")

    @staticmethod
    def _wait(cond, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return True
            time.sleep(0.01)
        return False


# --------------------------------------------------------------------------------------
# Command line and configuration errors

BAD_BASE = """\
workers: 1
listeners:
  - address: 127.0.0.1:18080
pools:
  - name: p
    backends: [127.0.0.1:9001]
vhosts:
  - hosts: ["*"]
    routes:
      - path: /
        pool: p
cache:
"""


class CliTest(CacheCase):
    def test_one_line_cache(self):
        o = self.origin()
        self.port = H.free_port()
        self.proxy(args=["--listen", "127.0.0.1:%d" % self.port, "--backend", o.address, "--cache", "1m",
                         "--workers", "1"])
        o.set("/ol", numbered("max-age=100", "ol"))
        r = self.get("/ol")
        self.assertMissStored(r)
        self.assertHit(self.get("/ol"), "ol-1")
        self.assertEqual(o.count("/ol"), 1)

    def test_one_line_bad_size(self):
        r = H.run_ringlb(["--listen", "127.0.0.1:%d" % H.free_port(), "--backend", "127.0.0.1:9", "--cache", "1k"],
                         timeout=5)
        self.assertIsNotNone(r.returncode, "ringlb started with --cache 1k")
        self.assertNotEqual(r.returncode, 0)

    def test_bad_config_refused_with_line_and_column(self):
        tmp = tempfile.mkdtemp(prefix="ringlb-cache-cfg-")
        cases = [
            ("  size: 1k\n", 13, 9),
            ("  size: lots\n", 13, 9),
            ("  size: 64m\n  max_object: 0\n", 14, 15),
            ("  size: 64m\n  key:\n    query: random\n", 15, 12),
            ("  size: 64m\n  key:\n    headers: [\"bad header\"]\n", 15, 15),
            ("  size: 64m\n  purge_token: short\n", 14, 16),
            ("  size: 64m\n  lock_timeout: soon\n", 14, 17),
            ("  size: 64m\n  sise: 1\n", 14, 3),
            ("  max_object: 1m\n", 13, 3),   # the map that lacks "size"
        ]
        for i, (tail, line, col) in enumerate(cases):
            path = os.path.join(tmp, "bad%d.yaml" % i)
            with open(path, "w") as f:
                f.write(BAD_BASE + tail)
            for args in (["-t", "-c", path], ["-c", path]):
                r = H.run_ringlb(args, timeout=5)
                self.assertIsNotNone(r.returncode, "ringlb started with %r" % tail)
                self.assertNotEqual(r.returncode, 0, tail)
                self.assertRegex(r.stderr, r"bad%d\.yaml:%d:%d\b" % (i, line, col),
                                 "%r: stderr %r" % (tail, r.stderr))
        good = os.path.join(tmp, "good.yaml")
        with open(good, "w") as f:
            f.write(BAD_BASE + "  size: 64k\n  key: {host: false, query: sorted, headers: [X-Device]}\n"
                    "  purge_token: \"0123456789abcdef\"\n")
        r = H.run_ringlb(["-t", "-c", good])
        self.assertEqual(r.returncode, 0, r.stderr)
        route_off = BAD_BASE.replace("        pool: p\n", "        pool: p\n        cache: maybe\n")
        path = os.path.join(tmp, "badroute.yaml")
        with open(path, "w") as f:
            f.write(route_off + "  size: 1m\n")
        r = H.run_ringlb(["-t", "-c", path])
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertRegex(r.stderr, r"badroute\.yaml:12:16\b", r.stderr)


if __name__ == "__main__":
    H.main(budget=120)
