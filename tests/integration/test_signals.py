#!/usr/bin/env python3
"""Graceful stop: requests in flight complete, new connections are refused, exit 0."""

import os
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402

DRAIN = 5.0


class SignalTest(H.ProxyTestCase):
    def test_sigterm_drains_in_flight(self):
        b = self.backend("slow", delay=1.5)
        port = H.free_port()
        p = self.proxy(H.basic_config(port, [b], workers=1, timeouts={"drain": "5s"}))
        results = [None] * 5

        def one(i):
            try:
                with H.Client(port, timeout=8) as c:
                    r = c.request("GET", "/inflight%d" % i)
                    results[i] = (r.status, r.json()["target"])
            except Exception as e:  # noqa: BLE001
                results[i] = repr(e)

        threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(5)]
        for t in threads:
            t.start()
        self.assertTrue(b.wait_requests(5, timeout=5), "backend did not get 5 requests")
        t_sig = time.monotonic()
        p.signal(signal.SIGTERM)
        time.sleep(0.3)
        refused = False
        how = "connect succeeded"
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=1)
            s.close()
        except ConnectionRefusedError:
            refused = True
        except OSError as e:
            how = repr(e)
        for t in threads:
            t.join(8)
        try:
            rc = p.proc.wait(timeout=DRAIN + 2)
        except H.subprocess.TimeoutExpired:
            rc = "still running after %.1fs" % (DRAIN + 2)
        dt = time.monotonic() - t_sig
        self.assertEqual(results, [(200, "/inflight%d" % i) for i in range(5)])
        self.assertTrue(refused, "new connection not refused after SIGTERM: " + how)
        self.assertEqual(rc, 0, "exit status %r; log:\n%s" % (rc, p.log()))
        self.assertLess(dt, DRAIN + 2)

    def test_sigterm_idle_exits_0(self):
        b = self.backend("echo")
        port = H.free_port()
        p = self.proxy(H.basic_config(port, [b], workers=2, timeouts={"drain": "5s"}))
        self.assertEqual(H.get_once(port, "/x").status, 200)
        t0 = time.monotonic()
        rc = p.stop(timeout=DRAIN + 2)
        self.assertEqual(rc, 0, p.log())
        self.assertLess(time.monotonic() - t0, DRAIN + 1, "idle proxy did not stop within the drain timeout")


if __name__ == "__main__":
    H.main()
