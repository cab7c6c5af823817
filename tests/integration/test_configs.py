#!/usr/bin/env python3
"""Every shipped configs/*.yaml validates with `ringlb -t -c`."""

import glob
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402

CONFIGS = sorted(glob.glob(os.path.join(H.SOURCE_ROOT, "configs", "*.yaml")))


class ConfigsTest(unittest.TestCase):
    @unittest.skipUnless(CONFIGS, "no configs/*.yaml in the source tree")
    def test_all_configs_validate(self):
        for path in CONFIGS:
            with self.subTest(config=os.path.basename(path)):
                r = H.run_ringlb(["-t", "-c", path])
                self.assertEqual(r.returncode, 0, "%s: stdout=%r stderr=%r" % (path, r.stdout, r.stderr))


if __name__ == "__main__":
    H.main()
