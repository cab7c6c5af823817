#!/usr/bin/env python3
"""bench/cache_hitratio.py: what ringlb's per-worker response caches cost in hit ratio.

Each ringlb worker has its own cache and SO_REUSEPORT hands every client connection to one worker,
so with N workers a popular object is fetched from the origin up to N times instead of once. This
script replays one realistic access pattern against ringlb with 1 worker, then with N workers (a
fresh ringlb, empty caches, each time) and counts what reached the origin:

  - origin: bench_backend (build/bench/bench_backend, the suite's C origin; URLs
    /size/<bytes>?max-age=3600&id=<k>, so every object is cacheable for an hour) or, with
    --origin python or without that binary, a small origin in a child process of this script with the
    same URLs and headers; both count the requests they answer (GET /bench-backend/stats).
  - objects: --urls distinct URLs (10,000), each with a fixed size drawn log-uniformly from
    --min-size..--max-size (1-16 KiB), ranked by a random permutation.
  - requests: --requests (50,000) draws from a Zipf distribution over the ranks (exponent --zipf,
    1.0), cut into client sessions: each session opens a connection, makes 1..--max-per-conn (8)
    keep-alive requests and closes, so the kernel spreads the sessions over the workers. --clients
    (8) threads run the sessions concurrently. The trace (URLs and session boundaries) depends on
    --seed only: every worker count replays the same one.

Per worker count it reports requests, origin requests, hit ratio = 1 - origin / requests, what the
clients saw in X-Cache, ringlb's own cache counters (SIGUSR1), and the loss from 1 to N workers. For
scale it also gives two models of the same trace: one infinite cache (1 - distinct URLs / requests),
and N infinite caches with the sessions dealt to them at random (what SO_REUSEPORT's hash does).

Needs a ringlb with the response cache (a `cache:` section); exits with status 2 and says so when
`ringlb -t` rejects the config. Standard library only. Usage:

  bench/cache_hitratio.py [--workers 1,2] [--requests 50000] [--urls 10000] [--zipf 1.0]
                          [--binary build/ringlb] [--out FILE.json] [--cache-size 64m] ...
"""
import argparse
import bisect
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_AGE = 3600
STATS_PATH = "/bench-backend/stats"


def die(msg, code=1):
    print(f"cache_hitratio: error: {msg}", file=sys.stderr)
    sys.exit(code)


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ trace
def object_size(k, lo, hi, seed):
    """fixed size of object k: log-uniform in [lo, hi] bytes"""
    r = random.Random(f"{seed}/size/{k}")
    return int(round(lo * (hi / lo) ** r.random())) if hi > lo else lo


def url_of(k, size):
    return f"/size/{size}?max-age={MAX_AGE}&id={k}"


def make_trace(a):
    """-> (sessions: list of lists of object ids, sizes: dict id -> bytes)"""
    rnd = random.Random(a.seed)
    ids = list(range(a.urls))
    rnd.shuffle(ids)  # rank -> object id: popularity unrelated to id and size
    cum, t = [], 0.0
    for rank in range(1, a.urls + 1):
        t += 1.0 / rank ** a.zipf
        cum.append(t)
    draws = rnd.choices(ids, cum_weights=cum, k=a.requests)
    sessions, i = [], 0
    while i < len(draws):
        n = rnd.randint(1, a.max_per_conn)
        sessions.append(draws[i:i + n])
        i += n
    sizes = {k: object_size(k, a.min_size, a.max_size, a.seed) for k in set(draws)}
    return sessions, sizes


def model_hit_ratio(sessions, n, seed):
    """N infinite caches, each session dealt to one at random: 1 - distinct (cache, object) pairs / requests"""
    rnd = random.Random(f"{seed}/deal/{n}")
    seen = set()
    req = 0
    for s in sessions:
        w = rnd.randrange(n)
        for k in s:
            seen.add((w, k))
        req += len(s)
    return 1 - len(seen) / req if req else None


# ------------------------------------------------------------------ python origin
def python_origin(port, ready_fd):
    """a minimal HTTP/1.1 origin (child process): /size/N[?...max-age=M...] -> N bytes, cacheable with max-age"""
    import http.server
    import socketserver

    lock = threading.Lock()
    count = [0, 0]
    body = b"x" * (16 << 20)

    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # the head and the body are two writes: no 40 ms delayed-ACK stalls
        server_version = "cache-hitratio-origin"
        sys_version = ""

        def log_message(self, *args):
            pass

        def do_GET(self):
            path, _, query = self.path.partition("?")
            if path == STATS_PATH:
                with lock:
                    b = f"requests={count[0]} cacheable={count[1]}\n".encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Cache-Control", "no-store")
                self.send_header("Content-Length", str(len(b)))
                self.end_headers()
                self.wfile.write(b)
                return
            m = re.match(r"^/size/(\d+)", path)
            n = min(int(m.group(1)), len(body)) if m else 0
            ma = re.search(r"(?:^|&)max-age=(\d+)", query)
            with lock:
                count[0] += 1
                count[1] += 1 if ma else 0
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(n))
            if ma:
                self.send_header("Cache-Control", f"public, max-age={ma.group(1)}")
                self.send_header("ETag", '"bench-v1"')
                self.send_header("Last-Modified", "Thu, 01 Jan 2026 00:00:00 GMT")
            self.end_headers()
            self.wfile.write(body[:n])

    class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True
        allow_reuse_address = True
        request_queue_size = 1024

    srv = S(("127.0.0.1", port), H)
    os.write(ready_fd, b"ok")
    os.close(ready_fd)
    srv.serve_forever()


def start_origin(a, logdir):
    """-> (Popen or pid, kind)"""
    if a.origin == "bench_backend":
        lf = open(os.path.join(logdir, "origin.log"), "w")
        p = subprocess.Popen([a.backend_bin, "--port", str(a.origin_port), "--threads", "1"],
                             stdout=lf, stderr=subprocess.STDOUT)
        return p
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: the origin
        os.close(r)
        try:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            python_origin(a.origin_port, w)
        finally:
            os._exit(1)
    os.close(w)
    ok = os.read(r, 2)
    os.close(r)
    if ok != b"ok":
        die(f"the Python origin did not start on port {a.origin_port}")
    return pid


# ------------------------------------------------------------------ http client
class Conn:
    """one client connection: sequential keep-alive GETs, Content-Length framed responses"""

    def __init__(self, port, timeout):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def get(self, path, close=False):
        """-> (status, headers dict lower-case, body length)"""
        self.s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{'Connection: close' + chr(13) + chr(10) if close else ''}\r\n".encode())
        while b"\r\n\r\n" not in self.buf:
            d = self.s.recv(65536)
            if not d:
                raise ConnectionError("connection closed before a response head")
            self.buf += d
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        hdr = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            hdr[k.strip().lower()] = v.strip()
        n = int(hdr.get("content-length", "0"))
        while len(self.buf) < n:
            d = self.s.recv(max(65536, n - len(self.buf)))
            if not d:
                raise ConnectionError("connection closed inside a response body")
            self.buf += d
        self.buf = self.buf[n:]
        return status, hdr, n

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def http_get(port, path, timeout=2.0):
    c = Conn(port, timeout)
    try:
        st, hdr, _ = c.get(path, close=True)
        return st, hdr
    finally:
        c.close()


def origin_requests(port):
    """the origin's own count of the requests it answered (its stats request not counted)"""
    s = socket.create_connection(("127.0.0.1", port), timeout=3.0)
    try:
        s.sendall(f"GET {STATS_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            data += d
    finally:
        s.close()
    m = re.search(rb"\r\n\r\n.*?requests=(\d+)", data, re.S)
    if not m:
        raise RuntimeError(f"origin on port {port} gave no request count (is it bench_backend with {STATS_PATH}?)")
    return int(m.group(1))


def wait_port(port, proc_alive, what, secs=10.0):
    t = time.time() + secs
    while time.time() < t:
        if not proc_alive():
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    die(f"{what} did not listen on port {port} within {secs:.0f} s")


def port_free(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


# ------------------------------------------------------------------ ringlb
def ringlb_yaml(a, workers):
    return f"""# generated by bench/cache_hitratio.py
workers: {workers}
listeners:
  - name: hitratio
    address: 127.0.0.1:{a.port}
    backlog: 4096
pools:
  - name: origin
    keepalive:
      max_idle: 64
    backends:
      - 127.0.0.1:{a.origin_port}
vhosts:
  - hosts: ["*"]
    routes:
      - path: /
        pool: origin
cache:
  size: {a.cache_size}          # per worker
  max_object: 8m
  status_header: true
"""


def ringlb_counters(logfile):
    """the last 'stats (SIGUSR1): k=v ...' line of ringlb's log -> dict"""
    last = None
    try:
        for ln in open(logfile, errors="replace"):
            if "stats (SIGUSR1)" in ln:
                last = ln
    except OSError:
        return {}
    if not last:
        return {}
    return {k: int(v) for k, v in re.findall(r"\b([a-z0-9_]+)=(\d+)\b", last)}


def stop(p):
    if p is None:
        return
    if isinstance(p, int):
        try:
            os.kill(p, signal.SIGTERM)
        except ProcessLookupError:
            return
        for _ in range(30):
            if os.waitpid(p, os.WNOHANG)[0]:
                return
            time.sleep(0.1)
        os.kill(p, signal.SIGKILL)
        os.waitpid(p, 0)
        return
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(3)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


# ------------------------------------------------------------------ one replay
def replay(a, workers, sessions, sizes, workdir):
    cfg = os.path.join(workdir, f"ringlb-w{workers}.yaml")
    with open(cfg, "w") as f:
        f.write(ringlb_yaml(a, workers))
    chk = subprocess.run([a.binary, "-t", "-c", cfg], capture_output=True, text=True)
    if chk.returncode != 0:
        msg = (chk.stderr + chk.stdout).strip().splitlines()
        die("ringlb rejected the cache configuration, so it has no response cache to measure (this script needs a "
            f"ringlb built with the `cache:` section):\n  {a.binary} -t -c {cfg}\n  " + "\n  ".join(msg[-3:]), 2)
    logf = os.path.join(workdir, f"ringlb-w{workers}.log")
    lf = open(logf, "w")
    cmd = [a.binary, "-c", cfg]
    if a.cpus:
        cmd = ["taskset", "-c", a.cpus] + cmd
    p = subprocess.Popen(cmd, stdout=lf, stderr=subprocess.STDOUT)
    try:
        if not wait_port(a.port, lambda: p.poll() is None, "ringlb"):
            die(f"ringlb exited during start-up (status {p.returncode}): "
                + " | ".join(open(logf, errors="replace").read().strip().splitlines()[-3:]))
        # readiness through the proxy: an uncacheable URL outside the trace
        for _ in range(100):
            try:
                if http_get(a.port, "/size/0")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.05)
        else:
            die("ringlb did not answer 200 on /size/0 within 5 s")
        o0 = origin_requests(a.origin_port)

        lock = threading.Lock()
        it = iter(sessions)
        stats = {"requests": 0, "ok": 0, "errors": 0, "sessions": 0, "x_cache": {}, "first_error": ""}
        deadline = time.time() + a.max_seconds
        timed_out = [False]

        def client():
            xc, req, ok, err, ns, first = {}, 0, 0, 0, 0, ""
            while True:
                if time.time() > deadline:
                    timed_out[0] = True
                    break
                with lock:
                    s = next(it, None)
                if s is None:
                    break
                ns += 1
                c = None
                try:
                    c = Conn(a.port, 5.0)
                    for i, k in enumerate(s):
                        req += 1
                        st, hdr, n = c.get(url_of(k, sizes[k]))
                        if st == 200 and n == sizes[k]:
                            ok += 1
                        else:
                            err += 1
                            first = first or f"status {st}, {n} of {sizes[k]} bytes for {url_of(k, sizes[k])}"
                        v = hdr.get("x-cache", "(none)").split()[0] if hdr.get("x-cache") else "(none)"
                        xc[v] = xc.get(v, 0) + 1
                except (OSError, ConnectionError, ValueError, IndexError) as e:
                    err += 1
                    first = first or f"{type(e).__name__}: {e}"
                finally:
                    if c:
                        c.close()
            with lock:
                stats["requests"] += req
                stats["ok"] += ok
                stats["errors"] += err
                stats["sessions"] += ns
                stats["first_error"] = stats["first_error"] or first
                for k, v in xc.items():
                    stats["x_cache"][k] = stats["x_cache"].get(k, 0) + v

        t0 = time.time()
        th = [threading.Thread(target=client) for _ in range(a.clients)]
        for t in th:
            t.start()
        for t in th:
            t.join()
        elapsed = time.time() - t0
        o1 = origin_requests(a.origin_port)
        try:
            p.send_signal(signal.SIGUSR1)
            time.sleep(0.3)
        except ProcessLookupError:
            pass
        alive = p.poll() is None
    finally:
        stop(p)
        lf.close()
    cnt = ringlb_counters(logf)
    req = stats["requests"]
    orig = o1 - o0
    res = {
        "workers": workers,
        "requests": req,
        "ok": stats["ok"],
        "errors": stats["errors"],
        "first_error": stats["first_error"],
        "sessions": stats["sessions"],
        "seconds": round(elapsed, 3),
        "requests_per_s": round(req / elapsed, 1) if elapsed > 0 else None,
        "origin_requests": orig,
        "hit_ratio": round(1 - orig / req, 6) if req else None,
        "x_cache": stats["x_cache"],
        "x_cache_hit_ratio": round(stats["x_cache"].get("HIT", 0) / req, 6) if req else None,
        "ringlb_counters": {k: v for k, v in cnt.items() if k.startswith("cache_") or k in ("requests", "accepted")},
        "ringlb_alive_at_end": alive,
        "time_limit_hit": timed_out[0],
    }
    if a.keep:
        res["config"], res["log"] = cfg, logf
    return res


# ------------------------------------------------------------------ main
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", default="1,2", help="comma list of worker counts; the first is the baseline (default 1,2)")
    ap.add_argument("--requests", type=int, default=50000, help="requests in the trace (default 50000)")
    ap.add_argument("--urls", type=int, default=10000, help="distinct URLs (default 10000)")
    ap.add_argument("--zipf", type=float, default=1.0, help="Zipf exponent s (default 1.0)")
    ap.add_argument("--binary", default=os.path.join(ROOT, "build", "ringlb"), help="ringlb binary (default build/ringlb)")
    ap.add_argument("--out", help="write the results as JSON to this file")
    ap.add_argument("--cache-size", default="64m", help="cache.size per worker (default 64m)")
    ap.add_argument("--clients", type=int, default=8, help="concurrent client threads (default 8)")
    ap.add_argument("--max-per-conn", type=int, default=8,
                    help="requests per connection: uniform 1..this, then the client closes (default 8)")
    ap.add_argument("--min-size", type=int, default=1024, help="smallest object, bytes (default 1024)")
    ap.add_argument("--max-size", type=int, default=16384, help="largest object, bytes (default 16384)")
    ap.add_argument("--seed", type=int, default=1, help="trace seed (default 1)")
    ap.add_argument("--max-seconds", type=float, default=25.0,
                    help="stop a replay after this long and report what it did (default 25)")
    ap.add_argument("--origin", choices=("bench_backend", "python"), default=None,
                    help="the origin: bench_backend when built (default), else a Python origin")
    ap.add_argument("--backend-bin", default=os.path.join(ROOT, "build", "bench", "bench_backend"))
    ap.add_argument("--port", type=int, default=18201, help="ringlb's listener port (default 18201)")
    ap.add_argument("--origin-port", type=int, default=18202, help="the origin's port (default 18202)")
    ap.add_argument("--cpus", default="", help="taskset CPU list for ringlb (default: not pinned)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (configs, ringlb logs)")
    a = ap.parse_args()

    try:
        wl = [int(x) for x in a.workers.split(",") if x.strip()]
    except ValueError:
        die("--workers takes a comma list of integers, e.g. 1,2")
    if not wl or min(wl) < 1:
        die("--workers needs at least one count >= 1")
    if a.requests < 1 or a.urls < 1 or a.clients < 1 or a.max_per_conn < 1 or a.zipf < 0:
        die("--requests, --urls, --clients, --max-per-conn must be >= 1 and --zipf >= 0")
    if not (0 < a.min_size <= a.max_size <= 16 << 20):
        die("need 0 < --min-size <= --max-size <= 16 MiB")
    if not (os.path.isfile(a.binary) and os.access(a.binary, os.X_OK)):
        die(f"ringlb binary {a.binary} not found (ninja -C build, or --binary PATH)")
    if a.origin is None:
        a.origin = "bench_backend" if os.access(a.backend_bin, os.X_OK) else "python"
    elif a.origin == "bench_backend" and not os.access(a.backend_bin, os.X_OK):
        die(f"{a.backend_bin} not found (ninja -C build bench/bench_backend, or --origin python)")
    if a.cpus and not shutil.which("taskset"):
        die("--cpus needs taskset (util-linux)")
    for pt in (a.port, a.origin_port):
        if not port_free(pt):
            die(f"port {pt} is in use (--port / --origin-port)")

    sessions, sizes = make_trace(a)
    ntrace = sum(len(s) for s in sessions)
    distinct = len(sizes)
    log(f"trace: {ntrace} requests in {len(sessions)} connections over {distinct} distinct URLs (of {a.urls}; "
        f"Zipf s={a.zipf}, 1-{a.max_per_conn} requests per connection, seed {a.seed}); "
        f"{sum(sizes.values()) / 1048576:.1f} MiB of distinct objects")

    workdir = tempfile.mkdtemp(prefix="ringlb-hitratio.")
    origin = None
    results = []
    try:
        origin = start_origin(a, workdir)
        alive = (lambda: origin.poll() is None) if not isinstance(origin, int) else (lambda: True)
        wait_port(a.origin_port, alive, f"the origin ({a.origin})")
        try:
            origin_requests(a.origin_port)
            st, hdr = http_get(a.origin_port, url_of(0, 1))
            if "cache-control" not in hdr:
                die(f"the origin sends no Cache-Control for ?max-age=N: rebuild bench_backend (ninja -C build "
                    f"bench/bench_backend) or use --origin python")
        except (OSError, RuntimeError) as e:
            die(f"the origin ({a.origin}) cannot count requests: {e}; rebuild bench_backend or use --origin python")
        for w in wl:
            log(f"ringlb with {w} worker(s): replaying ...")
            r = replay(a, w, sessions, sizes, workdir)
            r["model_hit_ratio"] = round(model_hit_ratio(sessions, w, a.seed), 6)
            results.append(r)
            log(f"  {w} worker(s): {r['requests']} requests ({r['errors']} errors) in {r['seconds']} s, "
                f"{r['origin_requests']} origin requests, hit ratio {r['hit_ratio']}, X-Cache {r['x_cache']}")
            if r["time_limit_hit"]:
                log(f"  WARNING: stopped at --max-seconds {a.max_seconds}: not the whole trace was replayed")
            if r["errors"]:
                log(f"  WARNING: {r['errors']} failed requests; first: {r['first_error']}")
    finally:
        stop(origin)
        if not a.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    base = results[0]
    for r in results:
        if base["hit_ratio"] is not None and r["hit_ratio"] is not None:
            r["hit_ratio_loss_pp"] = round(100 * (base["hit_ratio"] - r["hit_ratio"]), 3)
            r["origin_requests_x_base"] = (round(r["origin_requests"] / base["origin_requests"], 3)
                                           if base["origin_requests"] else None)
    out = {
        "ringlb": a.binary,
        "origin": a.origin,
        "trace": {"requests": ntrace, "connections": len(sessions), "urls": a.urls, "distinct_urls": distinct,
                  "zipf": a.zipf, "max_per_conn": a.max_per_conn, "min_size": a.min_size, "max_size": a.max_size,
                  "distinct_bytes": sum(sizes.values()), "seed": a.seed,
                  "one_infinite_cache_hit_ratio": round(1 - distinct / ntrace, 6)},
        "clients": a.clients,
        "cache_size_per_worker": a.cache_size,
        "results": results,
    }
    if a.keep:
        out["workdir"] = workdir
    print()
    print(f"trace: {ntrace:,} requests, {len(sessions):,} connections, {distinct:,} distinct URLs of {a.urls:,} "
          f"(Zipf s={a.zipf}); one infinite cache would hit {100 * (1 - distinct / ntrace):.2f}%")
    print(f"{'workers':>7} {'requests':>9} {'errors':>6} {'origin':>7} {'hit ratio':>9} {'loss pp':>8} "
          f"{'origin x':>8} {'model':>7} {'X-Cache HIT':>11} {'cache_hits':>10} {'secs':>6}")
    for r in results:
        rc = r["ringlb_counters"]
        print(f"{r['workers']:>7} {r['requests']:>9,} {r['errors']:>6} {r['origin_requests']:>7,} "
              f"{100 * r['hit_ratio']:>8.2f}% {r.get('hit_ratio_loss_pp', 0):>8.2f} "
              f"{(r.get('origin_requests_x_base') or 0):>8.2f} {100 * r['model_hit_ratio']:>6.2f}% "
              f"{r['x_cache'].get('HIT', 0):>11,} {rc.get('cache_hits', '–'):>10} {r['seconds']:>6}")
    print("hit ratio = 1 - origin requests / requests; loss pp = percentage points below the first row; "
          "model = the same trace on that many infinite caches, connections dealt at random")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(out, f, indent=2)
        print(f"results: {a.out}")
    bad = [r for r in results if r["errors"] or r["time_limit_hit"] or not r["ringlb_alive_at_end"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
