#!/usr/bin/env python3
"""Randomised abuse for a few seconds: clients that vanish mid-head, mid-body and
mid-response, garbage, pipelined bursts cut by a reset, backends that close, reset and
trickle. Afterwards ringlb must still answer correctly, have forwarded nothing malformed,
and stop cleanly with no sanitizer report (the harness checks the log)."""

import os
import random
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402

DURATION = 5.0
THREADS = 12


def rst_close(s):
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


class ChaosTest(H.ProxyTestCase):
    def test_chaos(self):
        echo = self.backend("echo", name="echo")
        closemid = self.backend("close-mid", name="closemid")
        reset = self.backend("reset", name="reset")
        chunked = self.backend("chunked", name="chunked", chunks=20, chunk_size=3000, chunk_delay=0.002)
        down = self.backend("download", name="down", size=4 * 1024 * 1024)
        silent = self.backend("echo", name="silent", silent_close=True)
        port = H.free_port()
        self.proxy({
            "workers": 2,
            "timeouts": {"client_header": "2s", "client_keepalive": "2s", "upstream_response": "2s",
                         "body_idle": "2s"},
            "buffers": {"count": 256, "size": "16k"},
            "listeners": [{"address": "127.0.0.1:%d" % port}],
            "pools": [
                {"name": "echo", "backends": [echo.address]},
                {"name": "closemid", "backends": [closemid.address]},
                {"name": "reset", "backends": [reset.address]},
                {"name": "chunked", "backends": [chunked.address]},
                {"name": "down", "backends": [down.address]},
                {"name": "silent", "backends": [silent.address, echo.address]},
            ],
            "vhosts": [{"hosts": ["*"], "routes": [
                {"path": "/", "pool": "echo"},
                {"path": "/closemid", "pool": "closemid"},
                {"path": "/reset", "pool": "reset"},
                {"path": "/chunked", "pool": "chunked"},
                {"path": "/down", "pool": "down"},
                {"path": "/silent", "pool": "silent"},
            ]}],
        })

        def connect():
            s = socket.create_connection(("127.0.0.1", port), timeout=3)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.settimeout(0.3)  # chaos clients do not wait politely
            return s

        def drain(s, limit):
            got = 0
            try:
                while got < limit:
                    d = s.recv(65536)
                    if not d:
                        break
                    got += len(d)
            except OSError:
                pass
            return got

        paths = ["/a", "/closemid", "/reset", "/chunked", "/down", "/silent/x"]
        actions = []

        def act_keepalive(rng):
            with H.Client(port, timeout=3) as c:
                for i in range(rng.randint(1, 5)):
                    r = c.request("GET", "/ka%d" % i)
                    assert r.status == 200, r.status

        def act_pipeline_reset(rng):
            s = connect()
            s.sendall(b"".join(H.build_request("GET", rng.choice(paths)) for _ in range(rng.randint(2, 8))))
            drain(s, rng.randint(0, 20000))
            rst_close(s)

        def act_partial_head(rng):
            s = connect()
            req = H.build_request("GET", "/partial", headers=[("X-Pad", "p" * rng.randint(0, 3000))])
            s.sendall(req[: rng.randint(1, len(req) - 1)])
            time.sleep(rng.random() * 0.05)
            (rst_close if rng.random() < 0.5 else socket.socket.close)(s)

        def act_partial_body(rng):
            s = connect()
            if rng.random() < 0.5:
                s.sendall(H.build_request("POST", "/up", headers=[("Content-Length", "100000")]) + b"x" * 5000)
            else:
                s.sendall(H.build_request("POST", "/up", headers=[("Transfer-Encoding", "chunked")]) +
                          b"1000\r\n" + b"y" * 2000)
            time.sleep(rng.random() * 0.05)
            rst_close(s)

        def act_garbage(rng):
            s = connect()
            s.sendall(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 400))))
            drain(s, 4096)
            s.close()

        def act_bad_chunks(rng):
            s = connect()
            s.sendall(H.build_request("POST", "/bad", headers=[("Transfer-Encoding", "chunked")]) +
                      b"5\r\nhello\r\nZZ\r\n")
            drain(s, 4096)
            s.close()

        def act_download_abandon(rng):
            s = connect()
            s.sendall(H.build_request("GET", "/down/big"))
            drain(s, rng.randint(1000, 2 * 1024 * 1024))
            rst_close(s)

        def act_upstream_trouble(rng):
            try:
                with H.Client(port, timeout=3) as c:
                    c.request("GET", rng.choice(["/closemid", "/reset", "/chunked", "/silent/y"]))
            except Exception:
                pass  # truncations and closes are the point here

        actions = [act_keepalive, act_pipeline_reset, act_partial_head, act_partial_body, act_garbage,
                   act_bad_chunks, act_download_abandon, act_upstream_trouble]
        failures = []
        counts = [0]

        def worker(seed):
            rng = random.Random(seed)
            deadline = time.monotonic() + DURATION
            while time.monotonic() < deadline:
                a = rng.choice(actions)
                try:
                    a(rng)
                except (ConnectionError, socket.timeout, H.PeerClosed, H.IncompleteResponse):
                    if a is act_keepalive:
                        failures.append("%s: connection trouble on a healthy backend" % a.__name__)
                except Exception as e:  # noqa: BLE001
                    failures.append("%s: %r" % (a.__name__, e))
                counts[0] += 1

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(DURATION + 30)
        H.log("chaos: %d actions" % counts[0])
        self.assertEqual(failures, [])
        # Still healthy afterwards, on fresh and kept-alive connections.
        with H.Client(port) as c:
            for i in range(5):
                r = c.request("GET", "/after%d" % i)
                self.assertEqual(r.status, 200)
                self.assertEqual(r.json()["target"], "/after%d" % i)
        self.assertEqual(echo.errors, [], "malformed bytes reached a backend")
        self.assertEqual(silent.errors, [])


if __name__ == "__main__":
    H.main()
