#!/usr/bin/env python3
"""buffers.zerocopy_min: large sends go out with send-zero-copy, and the bytes are exactly
the same as without it (buffers are recycled only after the kernel's notification)."""

import hashlib
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402

SIZE = 48 * 1024 * 1024


class ZeroCopyTest(H.ProxyTestCase):
    def test_zero_copy_both_ways_byte_exact(self):
        down = self.backend("download", size=SIZE)
        up = self.backend("upload")
        port = H.free_port()
        p = self.proxy({
            "workers": 1,
            "buffers": {"count": 128, "size": "32k", "zerocopy_min": "16k", "splice_min": 0},
            "listeners": [{"address": "127.0.0.1:%d" % port}],
            "pools": [{"name": "down", "backends": [down.address]}, {"name": "up", "backends": [up.address]}],
            "vhosts": [{"hosts": ["*"], "routes": [{"path": "/", "pool": "down"}, {"path": "/up", "pool": "up"}]}],
        })
        for round_ in range(2):  # the second round reuses buffers released by notifications
            with H.Client(port, timeout=30) as c:
                c.send(H.build_request("GET", "/big%d" % round_))
                r = c.read_response()
                self.assertEqual(r.status, 200)
                self.assertEqual(len(r.body), SIZE)
                self.assertEqual(hashlib.sha256(r.body).hexdigest(), H.pattern_sha256(SIZE))
        body = os.urandom(8 * 1024 * 1024)
        with H.Client(port, timeout=30) as c:
            r = c.request("POST", "/up", body=body)
            self.assertEqual(r.json()["sha256"], hashlib.sha256(body).hexdigest())
        os.kill(p.proc.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 3
        while "stats (SIGUSR1)" not in p.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        line = [ln for ln in p.log().splitlines() if "stats (SIGUSR1)" in ln][-1]
        zc = int(line.split("zc_sends=")[1].split()[0])
        self.assertGreater(zc, 100, line)


    def test_rechunked_bodies_stay_exact(self):
        """Re-chunked bodies interleave generated chunk-size lines with received bytes: the
        generated ones must never be sent zero-copy (their memory is reused at once)."""
        chunky = self.backend("chunked", chunks=60, chunk_size=40000, chunk_delay=0)
        port = H.free_port()
        self.proxy({
            "workers": 1,
            "buffers": {"count": 64, "size": "64k", "zerocopy_min": "4k", "splice_min": 0},
            "listeners": [{"address": "127.0.0.1:%d" % port}],
            "pools": [{"name": "c", "backends": [chunky.address]}],
            "vhosts": [{"hosts": ["*"], "routes": [{"path": "/", "pool": "c"}]}],
        })
        want = b"".join(H.chunk_payload(i, 40000) for i in range(60))
        with H.Client(port, timeout=20) as c:
            for i in range(3):
                r = c.request("GET", "/c%d" % i)
                self.assertEqual(r.header("transfer-encoding"), "chunked")
                self.assertEqual(r.body, want)

    def test_one_line_flag(self):
        down = self.backend("download", size=4 * 1024 * 1024)
        port = H.free_port()
        p = self.proxy(args=["--listen", "127.0.0.1:%d" % port, "--backend", down.address, "--workers", "1",
                             "--zerocopy-min", "16k", "--splice-min", "0"])
        r = H.get_once(port, "/x", timeout=10)
        self.assertEqual(len(r.body), 4 * 1024 * 1024)
        os.kill(p.proc.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 3
        while "zc_sends=" not in p.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertNotIn("zc_sends=0 ", p.log())
        self.assertEqual(H.run_ringlb(["--listen", "127.0.0.1:1", "--backend", "127.0.0.1:2",
                                       "--zerocopy-min", "lots"]).returncode, 2)


if __name__ == "__main__":
    H.main()
