#!/usr/bin/env python3
"""Streaming: chunked responses and requests, 256 MiB upload and download with bounded
proxy memory and backpressure, Expect: 100-continue."""

import hashlib
import os
import random
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402
from harness import RssSampler  # noqa: E402

BIG = 256 * 1024 * 1024
RSS_LIMIT_KIB = 64 * 1024


class StreamingTest(H.ProxyTestCase):
    @classmethod
    def setup_class(cls):
        cls.chunky = cls.cbackend("chunked", name="chunky", chunks=40, chunk_size=3000, chunk_delay=0.005)
        cls.up = cls.cbackend("upload", name="upload")
        cls.down = cls.cbackend("download", name="download", size=BIG)
        cls.cont = cls.cbackend("100-continue", name="continue")
        cls.port = H.free_port()
        cfg = {
            "workers": 1,
            "listeners": [{"name": "web", "address": "127.0.0.1:%d" % cls.port}],
            "pools": [
                {"name": "chunky", "backends": [cls.chunky.address]},
                {"name": "up", "backends": [cls.up.address]},
                {"name": "down", "backends": [cls.down.address]},
                {"name": "cont", "backends": [cls.cont.address]},
            ],
            "vhosts": [{"hosts": ["*"], "routes": [
                {"path": "/", "pool": "chunky"},
                {"path": "/up", "pool": "up"},
                {"path": "/down", "pool": "down"},
                {"path": "/cont", "pool": "cont"},
            ]}],
        }
        cls.p = cls.cproxy(cfg)

    def test_chunked_response(self):
        want = b"".join(H.chunk_payload(i, 3000) for i in range(40))
        with H.Client(self.port) as c:
            r = c.request("GET", "/chunks")
            self.assertEqual(r.status, 200)
            self.assertEqual(len(r.body), len(want))
            self.assertEqual(r.body, want)
            r2 = c.request("GET", "/chunks-again")  # framing kept the connection in sync
            self.assertEqual(r2.body, want)
        res = H.curl(["http://127.0.0.1:%d/curl-chunks" % self.port])
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertEqual(res.stdout, want)

    def test_chunked_request_body(self):
        rnd = random.Random(1234)
        chunks = [bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 5000))) for _ in range(30)]
        data = b"".join(chunks)
        with H.Client(self.port) as c:
            c.send(H.build_request("POST", "/up/chunked", headers=[("Transfer-Encoding", "chunked")]))
            enc = H.chunked_encode(chunks)
            for i in range(0, len(enc), 7000):   # several writes
                c.send(enc[i:i + 7000])
                time.sleep(0.002)
            r = c.read_response()
            self.assertEqual(r.status, 200, r.body[:200])
            j = r.json()
            self.assertEqual(j["bytes"], len(data))
            self.assertEqual(j["sha256"], hashlib.sha256(data).hexdigest())
            # connection still in sync
            r2 = c.request("POST", "/up/after", body=b"abc")
            self.assertEqual(r2.json()["bytes"], 3)

    def test_chunked_request_extensions_and_trailers(self):
        chunks = [b"a" * 10, b"b" * 300, b"c" * 7]
        body = b"".join(b"%x;ext=%d;name=\"v\"\r\n" % (len(c), i) + c + b"\r\n" for i, c in enumerate(chunks))
        body += b"0\r\nX-Trailer: yes\r\n\r\n"
        with H.Client(self.port) as c:
            c.send(H.build_request("POST", "/up/ext", headers=[("Transfer-Encoding", "chunked")]) + body)
            r = c.read_response()
            self.assertEqual(r.status, 200, r.body[:200])
            j = r.json()
            self.assertEqual(j["bytes"], 317)
            self.assertEqual(j["sha256"], hashlib.sha256(b"".join(chunks)).hexdigest())
            self.assertEqual(c.request("GET", "/up/next").status, 200)

    def test_big_upload_content_length(self):
        want = H.pattern_sha256(BIG)
        base = self.p.rss_kib()
        with H.Client(self.port, timeout=20) as c, RssSampler(self.p) as s:
            c.send(H.build_request("POST", "/up/big", headers=[("Content-Length", str(BIG))]))
            for chunk in H.pattern_chunks(BIG, 256 * 1024):
                c.sock.sendall(chunk)
            r = c.read_response()
        self.assertEqual(r.status, 200, r.body[:200])
        j = r.json()
        self.assertEqual(j["bytes"], BIG)
        self.assertEqual(j["sha256"], want)
        H.log("upload: rss base %d KiB, peak %d KiB, %d samples" % (base, s.peak, len(s.samples)))
        self.assertGreater(len(s.samples), 0)
        if not H.ASAN:  # AddressSanitizer's quarantine/shadow memory makes RSS meaningless
            self.assertLess(s.peak - base, RSS_LIMIT_KIB, "proxy RSS grew by %d KiB" % (s.peak - base))

    def test_big_download_with_pause(self):
        want = H.pattern_sha256(BIG)
        base = self.p.rss_kib()
        h = hashlib.sha256()
        got = 0
        paused = False
        with H.Client(self.port, timeout=20) as c, RssSampler(self.p) as s:
            c.sock.setsockopt(H.socket.SOL_SOCKET, H.socket.SO_RCVBUF, 256 * 1024)
            c.send(H.build_request("GET", "/down/big"))
            resp = c.read_head()
            self.assertEqual(resp.status, 200)
            self.assertEqual(resp.header("content-length"), str(BIG))
            if c.r.buf:
                h.update(c.r.buf)
                got += len(c.r.buf)
                c.r.buf.clear()
            buf = bytearray(1 << 18)
            mv = memoryview(buf)
            while got < BIG:
                if not paused and got >= BIG // 2:
                    paused = True
                    time.sleep(1.0)   # backpressure: the proxy must not buffer the rest
                n = c.sock.recv_into(mv, min(len(buf), BIG - got))
                if n == 0:
                    break
                h.update(mv[:n])
                got += n
        H.log("download: rss base %d KiB, peak %d KiB, %d samples" % (base, s.peak, len(s.samples)))
        self.assertEqual(got, BIG)
        self.assertEqual(h.hexdigest(), want)
        self.assertGreater(len(s.samples), 0)
        if not H.ASAN:  # AddressSanitizer's quarantine/shadow memory makes RSS meaningless
            self.assertLess(s.peak - base, RSS_LIMIT_KIB, "proxy RSS grew by %d KiB" % (s.peak - base))

    def test_expect_100_continue(self):
        body = bytes(range(256)) * 400
        with H.Client(self.port, timeout=5) as c:
            c.send(H.build_request("POST", "/cont/upload", headers=[
                ("Expect", "100-continue"), ("Content-Length", str(len(body)))]))
            interim = c.read_head()   # the client waits for 100 before sending the body
            self.assertEqual(interim.status, 100, "expected 100 Continue, got %r" % interim)
            c.send(body)
            r = c.read_response()
            self.assertEqual(r.status, 200, r.body[:200])
            j = r.json()
            self.assertEqual(j["bytes"], len(body))
            self.assertEqual(j["sha256"], hashlib.sha256(body).hexdigest())
            r2 = c.request("POST", "/cont/again", body=b"12345")
            self.assertEqual(r2.json()["bytes"], 5)


if __name__ == "__main__":
    H.main()
