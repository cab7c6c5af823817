#!/usr/bin/env python3
"""Balancing and availability: health checks, passive ejection, slow start, retries and
their budget, failover tiers, consistent hashing, A/B split, least-loaded picks, zones.

Backends here are TBackend (below), not harness.Backend: these tests need a fixed port (to
bring a stopped backend back on the same address), a chosen status (500/503), a separate
health-check path whose answer can be flipped at run time, and a timestamped request log.
Every backend names itself in the body and in an X-Backend header."""

import os
import re
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402
from harness import full_log, stats  # noqa: E402

SLOW = 2.0 if H.ASAN else 1.0   # timing slack factor for sanitizer builds
HC_PATH = "/hc"
REASONS = {200: "OK", 500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
           504: "Gateway Timeout"}


# --------------------------------------------------------------------------------------
# Test backend

class TBackend(H.TestServer):
    """HTTP/1.1 keep-alive server on 127.0.0.1:`port` (0: any free port).

    Answers `status` (mutable) with body = name and "X-Backend: name" after `delay` s;
    requests for HC_PATH get `health_status` (mutable) and are only counted in
    `health_hits`. `hits` is a list of (monotonic time, target, headers) of the others."""

    def __init__(self, name, port=0, status=200, health_status=200, delay=0.0):
        self.name = name
        self.status = status
        self.health_status = health_status
        self.delay = delay
        self.hits = []
        self.health_hits = 0
        self._listen(port=port)

    def count(self, t0=None, t1=None):
        with self.lock:
            return sum(1 for t, _, _ in self.hits if (t0 is None or t >= t0) and (t1 is None or t < t1))

    conn_timeout = 30

    def _serve(self, c, cid):
        r = H._Reader(c)
        while self._running:
            head = r.read_until(b"\r\n\r\n", 1 << 16)
            start, headers, _ = H.parse_head(head)
            parts = start.split(" ")
            if len(parts) != 3:
                return
            cl = H.hget(headers, "content-length")
            if cl:
                r.read_exact(int(cl))
            target = parts[1]
            close = "close" in H.conn_tokens(headers)
            if target == HC_PATH:
                status = self.health_status
                with self.lock:
                    self.health_hits += 1
            else:
                status = self.status
                with self.lock:
                    self.hits.append((time.monotonic(), target, headers))
            if self.delay:
                time.sleep(self.delay)
            if not self._running:
                return
            body = self.name.encode()
            resp = ("HTTP/1.1 %d %s\r\nX-Backend: %s\r\nContent-Type: text/plain\r\n"
                    "Content-Length: %d\r\n%s\r\n" % (status, REASONS.get(status, "X"), self.name, len(body),
                                                       "Connection: close\r\n" if close else ""))
            c.sendall(resp.encode() + body)
            if close:
                return


class SrcClient(H.Client):
    """A Client whose connection comes from a chosen loopback source address."""

    def __init__(self, port, src, timeout=5.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(src, 0))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.r = H._Reader(self.sock)


# --------------------------------------------------------------------------------------
# Helpers

def wait_log(p, pattern, timeout, after=0):
    """Waits until regex `pattern` matches the log beyond offset `after`; returns the
    monotonic time it was seen, or None."""
    rx = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while True:
        if rx.search(full_log(p), after):
            return time.monotonic()
        if time.monotonic() > deadline:
            return None
        time.sleep(0.01)



def get(port, target="/", headers=(), src=None, timeout=5.0):
    """One request on a new connection (from `src` if given)."""
    c = SrcClient(port, src, timeout) if src else H.Client(port, timeout=timeout)
    with c:
        return c.request("GET", target, "test", headers)


def hc(interval="100ms", timeout="80ms", fall=2, rise=2):
    return {"path": HC_PATH, "interval": interval, "timeout": timeout, "fall": fall, "rise": rise}


def config(port, pools, routes=None, workers=2, **top):
    cfg = {"workers": workers}
    cfg.update(top)
    cfg.update({
        "listeners": [{"name": "web", "address": "127.0.0.1:%d" % port}],
        "pools": pools,
        "vhosts": [{"hosts": ["*"], "routes": routes or [{"path": "/", "pool": pools[0]["name"]}]}],
    })
    return cfg


class Load:
    """`threads` clients sending sequential GETs until stop(); each alternates between a
    keep-alive connection (up to `ka` requests) and single-request connections.
    Every outcome is recorded as (time, backend name or None, error or None)."""

    def __init__(self, port, threads=4, ka=5, valid=None, pause=0.0):
        self.port, self.ka, self.valid, self.pause = port, ka, valid, pause
        self.lock = threading.Lock()
        self.results = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]
        for t in self._threads:
            t.start()

    def _record(self, name, err):
        with self.lock:
            self.results.append((time.monotonic(), name, err))

    def _check(self, r):
        name = r.header("x-backend")
        if r.status != 200:
            return name, "status %d from %s: %r" % (r.status, name, r.body[:100])
        if self.valid is not None and (name not in self.valid or r.body != name.encode()):
            return name, "unexpected backend %r body %r" % (name, r.body[:100])
        return name, None

    def _run(self, i):
        n = 0
        while not self._stop.is_set():
            n += 1
            keep = (n + i) % 2 == 0
            try:
                with H.Client(self.port, timeout=5) as c:
                    for _ in range(self.ka if keep else 1):
                        if self._stop.is_set():
                            break
                        r = c.request("GET", "/load/%d/%d" % (i, n))
                        self._record(*self._check(r))
                        if r.header("connection") == "close":
                            break
                        if self.pause:
                            time.sleep(self.pause)
            except Exception as e:  # noqa: BLE001 - every failure counts
                self._record(None, "%s: %r" % (type(e).__name__, e))

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)

    def failures(self):
        with self.lock:
            return [r for r in self.results if r[2]]

    def served(self, t0=None, t1=None):
        """{backend name: count} of successful requests finished within [t0, t1)."""
        out = {}
        with self.lock:
            for t, name, err in self.results:
                if err is None and (t0 is None or t >= t0) and (t1 is None or t < t1):
                    out[name] = out.get(name, 0) + 1
        return out


class BalancingTest(H.ProxyTestCase):
    def tbackend(self, *a, **kw):
        b = TBackend(*a, **kw)
        self._objs.append(b)
        return b

    # ---------------------------------------------------------------------------------
    # 1. a backend dies under load

    def test_kill_backend_under_load_costs_nothing(self):
        bs = [self.tbackend("b%d" % i) for i in range(3)]
        port = H.free_port()
        p = self.proxy(config(port, [{
            "name": "p", "balance": "round_robin",
            "health_check": hc("200ms", "100ms", 2, 2),
            "passive": {"eject": "1s"},
            "backends": [b.address for b in bs]}]))
        load = Load(port, threads=4, valid={"b0", "b1", "b2"})
        try:
            time.sleep(1.0)
            for b in bs:
                self.assertGreater(b.count(), 5, "every backend serves before the kill: %s"
                                   % [x.count() for x in bs])
            t_kill = time.monotonic()
            bs[2].stop()
            t_down = wait_log(p, r"health: pool p backend %s is DOWN" % re.escape(bs[2].address), 2.0 * SLOW)
            time.sleep(max(0.0, t_kill + 2.0 - time.monotonic()))
        finally:
            load.stop()
        fails = load.failures()
        self.assertEqual(fails, [], "%d of %d client requests failed after a backend was stopped (first: %s)"
                         % (len(fails), len(load.results), fails[:5]))
        self.assertIsNotNone(t_down, "the health checker never reported the stopped backend DOWN; log:\n" + p.log())
        self.assertLess(t_down - t_kill, 1.0 * SLOW, "DOWN only %.2fs after the kill" % (t_down - t_kill))
        after = load.served(t_down + 0.05)
        self.assertNotIn("b2", after)
        self.assertGreater(after.get("b0", 0), 10, after)
        self.assertGreater(after.get("b1", 0), 10, after)
        s = stats(p)
        H.log("kill under load: %d requests, stats retries=%d denied=%d ejections=%d connect_failures=%d"
              % (len(load.results), s["upstream_retries"], s["retries_denied"], s["ejections"],
                 s["upstream_connect_failures"]))
        self.assertGreater(len(load.results), 200)

    # ---------------------------------------------------------------------------------
    # 2. a revived backend is found and ramped in

    def _revive(self, slow_start, weight=None):
        """Stops B, waits for DOWN, starts it again on the same port under load, waits for
        UP; returns B's share of the requests in [0, 0.5) s and [1.5, 2.5) s after UP."""
        a = self.tbackend("A")
        b = self.tbackend("B")
        port = H.free_port()

        def be(x):
            return {"address": x.address, "weight": weight} if weight else x.address
        p = self.proxy(config(port, [{
            "name": "p", "health_check": hc("100ms", "80ms", 2, 2), "slow_start": slow_start,
            "backends": [be(a), be(b)]}]))
        for i in range(6):
            self.assertEqual(get(port, "/warm%d" % i).status, 200)
        b.stop()
        self.assertIsNotNone(wait_log(p, r"backend %s is DOWN" % re.escape(b.address), 2.0 * SLOW),
                             "B not reported DOWN; log:\n" + p.log())
        off = len(full_log(p))
        load = Load(port, threads=4, ka=20, valid={"A", "B"}, pause=0.002)
        try:
            time.sleep(0.3)
            t_start = time.monotonic()
            b2 = self.tbackend("B", port=b.port)
            t_up = wait_log(p, r"backend %s is UP" % re.escape(b.address), 2.0 * SLOW, after=off)
            self.assertIsNotNone(t_up, "revived B not reported UP; log:\n" + p.log())
            self.assertLess(t_up - t_start, 1.0 * SLOW, "UP %.2fs after the restart" % (t_up - t_start))
            time.sleep(max(0.0, t_up + 2.5 - time.monotonic()))
        finally:
            load.stop()
        self.assertEqual(load.failures(), [])
        early = load.served(t_up, t_up + 0.5)
        late = load.served(t_up + 1.5, t_up + 2.5)
        share = [x.get("B", 0) / max(1, sum(x.values())) for x in (early, late)]
        H.log("revive slow_start=%s weight=%s: B share early %.2f %s late %.2f %s (B's new instance saw %d)"
              % (slow_start, weight, share[0], early, share[1], late, b2.count()))
        return share, early, late

    def test_revived_backend_is_found_and_ramped_in(self):
        """slow_start 2s with the default weight (1): B must start near 10% of its weight."""
        share, early, late = self._revive("2s")
        self.assertGreater(share[1], 0.40, "B's share at the end of the ramp: %s" % late)
        self.assertLess(share[0], 0.40,
                        "slow_start has no effect with weight-1 backends: B took %.0f%% of the requests "
                        "in the first 0.5 s after coming back (%s), as much as without slow start. "
                        "upstream.c weigh_pool scales the integer weight (1 * pct / 100 = 0, clamped to 1)."
                        % (100 * share[0], early))

    def test_revived_backend_ramped_in_with_weights(self):
        """Same with weight 10 on both backends: the ramp has room to show."""
        share, early, late = self._revive("2s", weight=10)
        self.assertLess(share[0], 0.40, "no ramp: %s" % early)
        self.assertGreater(share[1], 0.40, "B's share at the end of the ramp: %s" % late)

    def test_revived_backend_without_slow_start_takes_full_share(self):
        share, early, late = self._revive(0)
        self.assertGreaterEqual(share[0], 0.40, "without slow start B should take half at once: %s" % early)

    # ---------------------------------------------------------------------------------
    # 3. failover tiers

    def test_primary_pool_down_fails_over_to_backup_and_back(self):
        m = [self.tbackend("m%d" % i) for i in range(2)]
        dr = self.tbackend("dr")
        port = H.free_port()
        p = self.proxy(config(port, [
            {"name": "main", "health_check": hc(), "backup": ["dr"], "backends": [x.address for x in m]},
            {"name": "dr", "backends": [dr.address]}]))
        for i in range(10):
            r = get(port, "/a%d" % i)
            self.assertEqual((r.status, r.header("x-backend")[:1]), (200, "m"))
        self.assertEqual(dr.count(), 0)
        self.assertEqual(stats(p)["failovers"], 0)
        off = len(full_log(p))
        for x in m:
            x.health_status = 503
        for x in m:
            self.assertIsNotNone(wait_log(p, r"pool main backend %s is DOWN" % re.escape(x.address), 2 * SLOW, off),
                                 "main backend not DOWN; log:\n" + p.log())
        time.sleep(0.05)
        for i in range(20):
            r = get(port, "/b%d" % i)
            self.assertEqual((r.status, r.header("x-backend")), (200, "dr"),
                             "request %d after main went down: %r %r" % (i, r, r.body))
        self.assertGreater(stats(p)["failovers"], 0)
        off = len(full_log(p))
        t_flip = time.monotonic()
        for x in m:
            x.health_status = 200
        back = None
        while time.monotonic() < t_flip + 2.0 * SLOW:
            r = get(port, "/c")
            self.assertEqual(r.status, 200)
            if r.header("x-backend") != "dr":
                back = time.monotonic()
                break
            time.sleep(0.01)
        self.assertIsNotNone(back, "traffic never came back to main; log:\n" + p.log())
        self.assertLess(back - t_flip, 1.0 * SLOW, "back to main only %.2fs after it was healthy" % (back - t_flip))
        # Both main backends are UP by now or within one interval.
        wait_log(p, r"(?s)is UP.*is UP", 1.0, off)
        n_dr = dr.count()
        for i in range(20):
            r = get(port, "/d%d" % i)
            self.assertEqual(r.status, 200)
            self.assertIn(r.header("x-backend"), ("m0", "m1"))
        self.assertEqual(dr.count(), n_dr)

    def test_panic_serves_when_nothing_is_pickable(self):
        """Every backend of main and of its backup fails its health check but still answers:
        ringlb ignores health (panic) instead of answering 503."""
        m = [self.tbackend("m%d" % i, health_status=503) for i in range(2)]
        dr = self.tbackend("dr", health_status=503)
        port = H.free_port()
        p = self.proxy(config(port, [
            {"name": "main", "health_check": hc(), "backup": ["dr"], "backends": [x.address for x in m]},
            {"name": "dr", "health_check": hc(), "backends": [dr.address]}]))
        for x in m + [dr]:
            self.assertIsNotNone(wait_log(p, r"backend %s is DOWN" % re.escape(x.address), 2 * SLOW),
                                 "not DOWN; log:\n" + p.log())
        time.sleep(0.05)
        seen = set()
        for i in range(20):
            r = get(port, "/panic%d" % i)
            self.assertEqual(r.status, 200, "nothing pickable: ringlb should panic and serve, got %r" % r)
            seen.add(r.header("x-backend"))
        self.assertEqual(seen, {"m0", "m1"}, "panic happens in the route's own pool")

    # ---------------------------------------------------------------------------------
    # 4. consistent hashing

    def _ip_map(self, port, ips, rounds):
        mapping = {}
        for _ in range(rounds):
            for ip in ips:
                r = get(port, "/h", src=ip)
                self.assertEqual(r.status, 200)
                mapping.setdefault(ip, set()).add(r.header("x-backend"))
        for ip, names in mapping.items():
            self.assertEqual(len(names), 1, "client %s was sent to several backends: %s" % (ip, sorted(names)))
        return {ip: names.pop() for ip, names in mapping.items()}

    def test_same_client_ip_same_backend_across_workers_and_restart(self):
        bs = [self.tbackend("b%d" % i) for i in range(5)]
        port = H.free_port()
        cfg = config(port, [{"name": "p", "balance": "hash", "hash": {"key": "client_ip"},
                             "backends": [b.address for b in bs]}])
        p = self.proxy(cfg)
        ips = ["127.0.0.%d" % i for i in range(1, 21)]
        first = self._ip_map(port, ips, 4)
        self.assertGreaterEqual(len(set(first.values())), 2, "20 client addresses all hashed to one backend")
        self.assertEqual(p.stop(), 0)
        self.proxy(cfg)
        second = self._ip_map(port, ips, 2)
        self.assertEqual(first, second, "the client-address mapping changed across a restart")

    def test_hash_header_one_line(self):
        bs = [self.tbackend("b%d" % i) for i in range(5)]
        port = H.free_port()
        args = ["--listen", "127.0.0.1:%d" % port, "--workers", "2", "--balance", "hash:header:X-User"]
        for b in bs:
            args += ["--backend", b.address]
        self.proxy(args=args)
        users = ["user-%d" % i for i in range(20)]
        seen = {}
        for rnd in range(4):
            for u in users:
                r = get(port, "/u", headers=[("X-User", u)])
                self.assertEqual(r.status, 200)
                seen.setdefault(u, set()).add(r.header("x-backend"))
        for u, names in seen.items():
            self.assertEqual(len(names), 1, "X-User %s went to several backends: %s" % (u, sorted(names)))
        self.assertGreaterEqual(len({next(iter(v)) for v in seen.values()}), 2)
        # Different users from the same address are spread, the same user from other addresses is not.
        for u in users[:5]:
            r = get(port, "/u", headers=[("X-User", u)], src="127.0.0.9")
            self.assertEqual({r.header("x-backend")}, seen[u])

    def test_hash_only_keys_of_a_down_backend_move(self):
        """Maglev: when the checker marks a backend down only its clients move, and they
        all come back when it is up again."""
        bs = [self.tbackend("b%d" % i) for i in range(5)]
        port = H.free_port()
        p = self.proxy(config(port, [{"name": "p", "balance": "hash", "health_check": hc(),
                                      "backends": [b.address for b in bs]}]))
        ips = ["127.0.0.%d" % i for i in range(1, 21)]
        before = self._ip_map(port, ips, 2)
        victim = max(bs, key=lambda b: sum(1 for v in before.values() if v == b.name))
        moved = [ip for ip, v in before.items() if v == victim.name]
        off = len(full_log(p))
        victim.health_status = 503
        self.assertIsNotNone(wait_log(p, r"backend %s is DOWN" % re.escape(victim.address), 2 * SLOW, off))
        time.sleep(0.05)
        during = self._ip_map(port, ips, 2)
        for ip in ips:
            if ip in moved:
                self.assertNotEqual(during[ip], victim.name, "%s still sent to the down backend" % ip)
            else:
                self.assertEqual(during[ip], before[ip], "%s moved although its backend stayed up" % ip)
        off = len(full_log(p))
        victim.health_status = 200
        self.assertIsNotNone(wait_log(p, r"backend %s is UP" % re.escape(victim.address), 2 * SLOW, off))
        time.sleep(0.05)
        self.assertEqual(self._ip_map(port, ips, 1), before, "the mapping did not come back with the backend")

    # ---------------------------------------------------------------------------------
    # 5. retry budget

    def _storm(self, retry, n, workers=2, tries=None, backends=3):
        bs = [self.tbackend("b%d" % i, status=503) for i in range(backends)]
        port = H.free_port()
        r_cfg = dict(retry)
        if tries:
            r_cfg["tries"] = tries
        p = self.proxy(config(port, [{"name": "p", "retry": r_cfg, "backends": [b.address for b in bs]}],
                              workers=workers))
        statuses = {}
        t0 = time.monotonic()
        for i in range(n):
            r = get(port, "/s%d" % i)
            statuses[r.status] = statuses.get(r.status, 0) + 1
        elapsed = time.monotonic() - t0
        seen = sum(b.count() for b in bs)
        s = stats(p)
        H.log("retry storm %s: %d requests in %.2fs, backends saw %d, statuses %s, retries=%d denied=%d"
              % (retry, n, elapsed, seen, statuses, s["upstream_retries"], s["retries_denied"]))
        return statuses, seen, elapsed, s

    def test_retry_budget_stops_a_retry_storm(self):
        n = 200
        statuses, seen, elapsed, s = self._storm({"budget_percent": 0, "budget_min": 1}, n)
        self.assertEqual(statuses, {503: n})
        # 10 saved retries per worker at start, plus 1 per second each.
        bound = n + 2 * (10 + int(elapsed) + 2)
        self.assertLessEqual(seen, bound, "a retry storm: backends saw %d requests for %d (bound %d)"
                             % (seen, n, bound))
        self.assertGreater(s["retries_denied"], 0)
        self.assertEqual(seen, n + s["upstream_retries"])

    def test_generous_retry_budget_tries_every_backend(self):
        n = 200
        statuses, seen, elapsed, s = self._storm({"budget_percent": 100, "budget_min": 1000}, n)
        self.assertEqual(statuses, {503: n})
        self.assertEqual(seen, 3 * n, "tries: 3 with 3 backends answering 503")
        self.assertEqual(s["upstream_retries"], 2 * n)

    def test_retry_budget_is_spent_on_retries_only(self):
        """budget_min 1 saves 10 retries at start (workers 1, no earning per request); with
        tries 2 each failing request can use one retry, so the first 10 requests get one."""
        n = 20
        statuses, seen, elapsed, s = self._storm({"budget_percent": 0, "budget_min": 1}, n, workers=1,
                                                 tries=2, backends=2)
        self.assertEqual(statuses, {503: n})
        expect = n + 10
        self.assertGreaterEqual(
            seen, expect,
            "the retry budget is charged for retries that never happen: with 10 saved retries and "
            "tries 2, %d requests answered 503 should make %d upstream requests, got %d (upstream_retries=%d, "
            "retries_denied=%d). After the last allowed attempt, read_response_head / upstream_failed call "
            "rlb_upstream_retry_allowed (taking a token or counting a denial) before "
            "rlb__proxy_replay_request finds no attempt left." % (n, expect, seen, s["upstream_retries"],
                                                                   s["retries_denied"]))

    # ---------------------------------------------------------------------------------
    # 6. outlier ejection on consecutive 5xx

    def test_outlier_5xx_ejects(self):
        bad = self.tbackend("bad", status=500)
        good = self.tbackend("good")
        port = H.free_port()
        p = self.proxy(config(port, [{"name": "p", "passive": {"consecutive_5xx": 3, "eject": "2s"},
                                      "retry": {"on_5xx": False}, "backends": [bad.address, good.address]}],
                              workers=1))
        t_ej = None
        with H.Client(port) as c:
            for i in range(20):
                r = c.request("GET", "/o%d" % i)
                self.assertIn(r.status, (200, 500))
                t_ej = wait_log(p, r"backend %s of pool p ejected for 2000 ms \(consecutive 5xx\)"
                                % re.escape(bad.address), 0)
                if t_ej:
                    break
            self.assertIsNotNone(t_ej, "no ejection after 20 requests, bad saw %d; log:\n%s" % (bad.count(), p.log()))
            self.assertEqual(bad.count(), 3, "ejected after exactly 3 consecutive 5xx")
            n_bad = bad.count()
            n = 0
            while time.monotonic() < t_ej + 1.5:
                r = c.request("GET", "/w%d" % n)
                self.assertEqual((r.status, r.header("x-backend")), (200, "good"))
                n += 1
            self.assertEqual(bad.count(), n_bad, "the ejected backend got requests within its 2s ejection")
            self.assertGreater(n, 20)
            time.sleep(max(0.0, t_ej + 2.3 * SLOW - time.monotonic()))
            for i in range(10):
                c.request("GET", "/x%d" % i)
            self.assertGreater(bad.count(), n_bad, "the backend was not tried again after its ejection")
        # Three more 5xx in a row: ejected again, for twice as long.
        self.assertIsNotNone(wait_log(p, r"ejected for 4000 ms \(consecutive 5xx\)", 1.0),
                             "second ejection not doubled; log:\n" + p.log())

    # ---------------------------------------------------------------------------------
    # 7. A/B split

    def test_ab_split_sticky_cookie(self):
        a = self.tbackend("backend-a")
        b = self.tbackend("backend-b")
        port = H.free_port()
        self.proxy(config(port, [{"name": "a", "backends": [a.address]}, {"name": "b", "backends": [b.address]}],
                          routes=[{"path": "/", "split": [{"pool": "a", "weight": 80}, {"pool": "b", "weight": 20}]}]))
        counts = {"a": 0, "b": 0}
        bad = []
        lock = threading.Lock()

        def worker(k):
            # Alternate keep-alive batches and single-request connections (both workers).
            done = 0
            while done < 100:
                with H.Client(port) as c:
                    for _ in range(10 if k % 2 else 1):
                        r = c.request("GET", "/ab/%d/%d" % (k, done))
                        done += 1
                        name = r.header("x-backend") or ""
                        pool = name[-1:]
                        cookies = r.headers_all("set-cookie")
                        want = "rlb_variant=%s; Path=/; Max-Age=2592000; HttpOnly; SameSite=Lax" % pool
                        with lock:
                            if r.status != 200 or pool not in counts or cookies != [want]:
                                bad.append((r.status, name, cookies))
                            else:
                                counts[pool] += 1
        ts = [threading.Thread(target=worker, args=(k,)) for k in range(10)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        self.assertEqual(bad[:5], [], "%d responses without the right backend/Set-Cookie" % len(bad))
        total = sum(counts.values())
        self.assertEqual(total, 1000)
        share_b = counts["b"] / total
        H.log("split 80/20: %s" % counts)
        self.assertTrue(0.15 <= share_b <= 0.25, "variant b got %.1f%% (want 20 +- 5)" % (100 * share_b))

        with H.Client(port) as c:
            for i in range(50):
                cookie = "rlb_variant=b" if i % 2 else "theme=dark; rlb_variant=b; x=1"
                r = c.request("GET", "/sticky%d" % i, headers=[("Cookie", cookie)])
                self.assertEqual((r.status, r.header("x-backend")), (200, "backend-b"))
                self.assertEqual(r.headers_all("set-cookie"), [], "a client with a valid variant is not re-assigned")
            seen = set()
            for i in range(40):
                r = c.request("GET", "/unknown%d" % i, headers=[("Cookie", "rlb_variant=zz")])
                self.assertEqual(r.status, 200)
                pool = r.header("x-backend")[-1:]
                seen.add(pool)
                self.assertEqual(r.headers_all("set-cookie"),
                                 ["rlb_variant=%s; Path=/; Max-Age=2592000; HttpOnly; SameSite=Lax" % pool])
            self.assertIn("a", seen)

    # ---------------------------------------------------------------------------------
    # 8. least loaded

    def _closed_loop(self, balance, clients=20, duration=1.2):
        slow = self.tbackend("slow", delay=0.3)
        fast = self.tbackend("fast")
        port = H.free_port()
        self.proxy(config(port, [{"name": "p", "balance": balance, "backends": [slow.address, fast.address]}],
                          workers=1))
        stop_at = time.monotonic() + duration
        errors = []

        def client():
            try:
                with H.Client(port, timeout=5) as c:
                    while time.monotonic() < stop_at:
                        r = c.request("GET", "/lc")
                        if r.status != 200:
                            errors.append(r.status)
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e))
        ts = [threading.Thread(target=client) for _ in range(clients)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(20)
        self.assertEqual(errors, [])
        f, s = fast.count(), slow.count()
        H.log("%s: fast %d slow %d" % (balance, f, s))
        return f / max(1, f + s)

    def test_least_conn_prefers_idle_backend(self):
        share = self._closed_loop("least_conn")
        self.assertGreaterEqual(share, 0.60, "least_conn: fast backend's share %.2f" % share)

    def test_p2c_prefers_idle_backend(self):
        share = self._closed_loop("p2c")
        self.assertGreaterEqual(share, 0.55, "p2c: fast backend's share %.2f" % share)

    # ---------------------------------------------------------------------------------
    # 9. zones

    def test_zone_preference(self):
        za = self.tbackend("za")
        zb = self.tbackend("zb")
        port = H.free_port()
        p = self.proxy(config(port, [{"name": "p", "local_zone": "a", "health_check": hc(),
                                      "backends": [{"address": za.address, "zone": "a"},
                                                   {"address": zb.address, "zone": "b"}]}]))
        for i in range(20):
            r = get(port, "/z%d" % i)
            self.assertEqual((r.status, r.header("x-backend")), (200, "za"))
        self.assertEqual(zb.count(), 0)
        za.stop()
        # Before the checker notices, a refused connect moves the request on: no failures.
        t_stop = time.monotonic()
        while time.monotonic() < t_stop + 0.3:
            r = get(port, "/gap")
            self.assertEqual((r.status, r.header("x-backend")), (200, "zb"))
        self.assertIsNotNone(wait_log(p, r"backend %s is DOWN" % re.escape(za.address), 2 * SLOW),
                             "zone a backend not DOWN; log:\n" + p.log())
        for i in range(20):
            r = get(port, "/y%d" % i)
            self.assertEqual((r.status, r.header("x-backend")), (200, "zb"))
        off = len(full_log(p))
        za2 = self.tbackend("za", port=za.port)
        self.assertIsNotNone(wait_log(p, r"backend %s is UP" % re.escape(za.address), 2 * SLOW, off),
                             "zone a backend not UP again; log:\n" + p.log())
        # Its passive ejection (from the refused connects) may outlast the health verdict.
        deadline = time.monotonic() + 5 * SLOW
        while time.monotonic() < deadline and za2.count() == 0:
            get(port, "/back")
            time.sleep(0.02)
        self.assertGreater(za2.count(), 0, "traffic never returned to zone a")
        n_b = zb.count()
        for i in range(20):
            r = get(port, "/v%d" % i)
            self.assertEqual((r.status, r.header("x-backend")), (200, "za"))
        self.assertEqual(zb.count(), n_b)


if __name__ == "__main__":
    H.main(budget=170)
