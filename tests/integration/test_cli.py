#!/usr/bin/env python3
"""Command line: --help, --version, -t, config errors, one-line mode."""

import os
import re
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402


def project_version():
    try:
        with open(os.path.join(H.SOURCE_ROOT, "meson.build")) as f:
            m = re.search(r"version:\s*'([^']+)'", f.read())
            return m.group(1) if m else None
    except OSError:
        return None


GOOD = """\
workers: 1
listeners:
  - name: web
    address: 127.0.0.1:18080
pools:
  - name: shop
    backends:
      - address: 127.0.0.1:9001
        weight: 5
      - 127.0.0.1:9002
vhosts:
  - hosts: ["shop.example.com", "*.example.com"]
    routes:
      - path: /
        pool: shop
"""

# line 3, column 1: unknown top-level key
BAD_TOP = """\
workers: 1
via: ringlb
bogus_key: 1
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
"""

# line 4, column 3: unknown key inside timeouts
BAD_NESTED = """\
workers: 1
timeouts:
  client_header: 1s
  client_headr: 2s
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
"""


class CliTest(H.ProxyTestCase):
    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp(prefix="ringlb-cli-")

    def write(self, name, text):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_help(self):
        r = H.run_ringlb(["--help"])
        self.assertEqual(r.returncode, 0, r.stderr)
        text = r.stdout + r.stderr
        self.assertTrue(text.strip())
        self.assertIn("-c", text)

    def test_version(self):
        r = H.run_ringlb(["--version"])
        self.assertEqual(r.returncode, 0, r.stderr)
        text = (r.stdout + r.stderr).strip()
        self.assertTrue(text)
        v = project_version()
        if v:
            self.assertIn(v, text)

    def test_check_good_config(self):
        path = self.write("good.yaml", GOOD)
        r = H.run_ringlb(["-t", "-c", path])
        self.assertEqual(r.returncode, 0, "stdout=%r stderr=%r" % (r.stdout, r.stderr))

    def test_check_bad_config_top_level(self):
        path = self.write("bad.yaml", BAD_TOP)
        r = H.run_ringlb(["-t", "-c", path])
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertRegex(r.stderr, r"bad\.yaml:3:1\b", "stderr: %r" % r.stderr)
        self.assertIn("bogus_key", r.stderr)

    def test_check_bad_config_nested(self):
        path = self.write("bad.yaml", BAD_NESTED)
        r = H.run_ringlb(["-t", "-c", path])
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertRegex(r.stderr, r"bad\.yaml:4:3\b", "stderr: %r" % r.stderr)

    def test_bad_config_refuses_to_start(self):
        path = self.write("bad.yaml", BAD_TOP)
        r = H.run_ringlb(["-c", path], timeout=5)
        self.assertIsNotNone(r.returncode, "ringlb started with a bad config")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("bad.yaml:3:1", r.stderr)

    def test_missing_config(self):
        path = os.path.join(self.tmp, "missing.yaml")
        r = H.run_ringlb(["-c", path], timeout=5)
        self.assertIsNotNone(r.returncode, "ringlb kept running without its config")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("missing.yaml", r.stderr)

    def test_one_line_mode(self):
        a = self.backend("fixed", name="backend-A")
        b = self.backend("fixed", name="backend-B")
        port = H.free_port()
        p = self.proxy(args=["--listen", "127.0.0.1:%d" % port, "--backend", a.address,
                             "--backend", b.address, "--workers", "2"])
        bodies = []
        with H.Client(port) as c:
            for i in range(10):
                r = c.request("GET", "/one%d" % i)
                self.assertEqual(r.status, 200)
                bodies.append(r.body)
        self.assertEqual(sorted(set(bodies)), [b"backend-A", b"backend-B"])
        for x, y in zip(bodies, bodies[1:]):
            self.assertNotEqual(x, y, "not alternating: %r" % bodies)
        self.assertEqual(len(a.requests), 5)
        self.assertEqual(len(b.requests), 5)
        self.assertEqual(p.stop(), 0, p.log())


if __name__ == "__main__":
    H.main()
