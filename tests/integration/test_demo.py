#!/usr/bin/env python3
"""README's first command ends in `ringlb --demo`: it must serve, balance and hide."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402


class DemoTest(H.ProxyTestCase):
    def test_demo_balances_two_builtin_backends(self):
        port = H.free_port()
        p = self.proxy(args=["--demo", "--listen", "127.0.0.1:%d" % port, "--workers", "1"])
        seen = []
        with H.Client(port) as c:
            for i in range(4):
                r = c.request("GET", "/hello/%d" % i)
                self.assertEqual(r.status, 200)
                self.assertIsNone(r.header("server"), "the demo hides the backends' Server header")
                self.assertIn(b"Via", r.raw_head)
                seen.append(r.header("x-backend"))
                self.assertIn(("/hello/%d" % i).encode(), r.body)
        self.assertEqual(seen, ["demo-backend-1", "demo-backend-2"] * 2)
        self.assertIn("curl -i http://127.0.0.1:%d/" % port, p.log())
        self.assertEqual(p.stop(), 0)

    def test_demo_with_cache_serves_assets_from_it(self):
        port = H.free_port()
        p = self.proxy(args=["--demo", "--cache", "16m", "--listen", "127.0.0.1:%d" % port, "--workers", "1"])
        with H.Client(port) as c:
            r1 = c.request("GET", "/static/logo.png")
            r2 = c.request("GET", "/static/logo.png")
            r3 = c.request("GET", "/page")
            r4 = c.request("GET", "/page")
        self.assertEqual((r1.header("x-cache"), r2.header("x-cache")), ("MISS", "HIT"))
        self.assertEqual(r2.body, r1.body, "the hit is the stored answer (same request number)")
        self.assertEqual((r3.header("x-cache"), r4.header("x-cache")), ("MISS", "MISS"), "pages are not cacheable")
        self.assertIn("curl -i http://127.0.0.1:%d/static/logo.png" % port, p.log())
        self.assertEqual(p.stop(), 0)


if __name__ == "__main__":
    H.main()
