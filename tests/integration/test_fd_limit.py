#!/usr/bin/env python3
"""Running out of file descriptors: ringlb must not spin on failing accepts nor flood its
log, and must accept again once descriptors are free."""

import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class FdLimitTest(H.ProxyTestCase):
    def test_accept_backs_off_and_recovers(self):
        b = self.backend("echo")
        port = H.free_port()
        p = self.proxy(H.basic_config(port, [b], workers=1), nofile=48)
        held = []
        try:
            for _ in range(80):
                s = socket.create_connection(("127.0.0.1", port), timeout=2)
                held.append(s)
            time.sleep(0.3)
            before = cpu_seconds(p.proc.pid)
            time.sleep(1.5)
            used = cpu_seconds(p.proc.pid) - before
            self.assertLess(used, 0.5, "ringlb burnt %.2fs of CPU in 1.5s while out of descriptors" % used)
        finally:
            for s in held:
                s.close()
        time.sleep(0.5)
        r = H.get_once(port, "/after", timeout=5)
        self.assertEqual(r.status, 200)
        warnings = p.log().count("accept on")
        self.assertGreaterEqual(warnings, 1)
        self.assertLessEqual(warnings, 4, "accept errors must be rate-limited in the log")


if __name__ == "__main__":
    H.main()
