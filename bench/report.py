#!/usr/bin/env python3
"""bench/report.py OUTDIR: turn OUTDIR/runs.csv + env.txt (written by bench/compare.sh)
into OUTDIR/report.md, OUTDIR/medians.csv and two grouped-bar charts (rps.png, cpu.png).
Standard library only; gnuplot is optional (no charts without it)."""
import csv
import os
import re
import shutil
import statistics
import subprocess
import sys

out = sys.argv[1]
rows = list(csv.DictReader(open(os.path.join(out, "runs.csv"))))
env = {}
for line in open(os.path.join(out, "env.txt")):
    if "=" in line:
        k, v = line.rstrip("\n").split("=", 1)
        env[k] = v

proxies = env.get("proxies", "").split()
scenarios = env.get("scenarios", "").split()
GOOD = ("ok", "errors")
# ringlb-lc, ringlb-p2c, ringlb-hash: the ringlb row with another balancing algorithm (ringlb variants, not peers)
VARIANT_BALANCE = {"ringlb-lc": "least_conn", "ringlb-p2c": "p2c", "ringlb-hash": "hash"}
VARIANTS = [p for p in proxies if p in VARIANT_BALANCE]
PEERS = [p for p in proxies if p not in ("relay", "direct") and p not in VARIANT_BALANCE]
# the cache scenarios' rows: the caching proxies and nginx-return, the floor (nginx serving the bytes from memory)
CACHE_ROWS = ("ringlb", "nginx", "haproxy", "varnish", "nginx-return")
CACHE_PEERS = ("nginx", "haproxy", "varnish")
CACHE_FLOOR = "nginx-return"


def num(r, k):
    try:
        return float(r.get(k, ""))
    except ValueError:
        return None


def vals(rs, k):
    return [x for x in (num(r, k) for r in rs) if x is not None]


def med(xs):
    return statistics.median(xs) if xs else None


def fmt(x, nd=0):
    return "–" if x is None else f"{x:,.{nd}f}"


def spread(xs, nd=0):
    return f" ({fmt(min(xs), nd)}–{fmt(max(xs), nd)})" if len(xs) >= 2 else ""


def size_name(b):
    b = int(b)
    if b >= 1048576 and b % 1048576 == 0:
        return f"{b // 1048576} MiB"
    if b >= 1024 and b % 1024 == 0:
        return f"{b // 1024} KiB"
    return f"{b} B"


def sel(sc, px, good=True):
    return [r for r in rows if r["scenario"] == sc and r["proxy"] == px and (not good or r["status"] in GOOD)]


def scen_info(sc):
    rs = [r for r in rows if r["scenario"] == sc]
    if not rs:
        return None
    r = rs[0]
    kind, size, conns = r["kind"], int(r["size_bytes"]), r["connections"]
    if kind == "ka":
        d = f"GET /size/{size} ({size_name(size)} response), keep-alive, {conns} connection(s)"
    elif kind == "close":
        d = (f"GET /size/{size} ({size_name(size)} response), `Connection: close` (a new client connection "
             f"per request; upstream stays keep-alive), {conns} connection(s)")
    elif kind == "upload":
        d = f"POST of a {size_name(size)} body (Content-Length) to /size/0, keep-alive, {conns} connection(s)"
    elif kind == "tls-ka":
        d = (f"GET /size/{size} ({size_name(size)} response) over TLS (wrk, https), keep-alive, "
             f"{conns} connection(s)")
    elif kind == "cache":
        d = (f"GET /size/{size}?max-age={env.get('cache_max_age', '3600')} ({size_name(size)} response the origin "
             f"marks `Cache-Control: public, max-age={env.get('cache_max_age', '3600')}`), one URL, keep-alive, "
             f"{conns} connection(s): cache hits after the warm-up (**× floor** here: ÷ `nginx-return`)")
    elif kind == "tls-hs":
        mode, ver = tls_hs_mode(sc)
        d = (f"TLS handshakes, {'resumed (session ticket)' if mode == 'resume' else 'full'}, TLS {ver}: "
             f"bench_tls_handshake, {conns} concurrent connections, each connect, handshake, one GET / "
             f"(`Connection: close`), close; **req/s = handshakes/s, CPU µs/req = CPU µs per handshake**")
    else:
        rate = next((x["target_rate"] for x in rs if x.get("target_rate")), "?")
        d = (f"open loop: bench_openloop at a constant {rate} req/s, GET /size/{size} ({size_name(size)}), "
             f"{conns} connection(s)")
    return kind, size, int(conns), d


def tls_hs_mode(sc):
    """(mode, TLS version) of a tls-hs-MODE[-tls12][-cN] scenario name"""
    m = re.match(r"^tls-hs-(full|resume)(-tls12)?", sc)
    return (m.group(1), "1.2" if m.group(2) else "1.3") if m else ("?", "?")


def scen_kind(sc):
    return (scen_info(sc) or ("",))[0]


def applicable(sc, px):
    """the cache scenarios have the cache rows only; nginx-return runs in no other scenario"""
    if scen_kind(sc) == "cache":
        return px in CACHE_ROWS
    return px != CACHE_FLOOR


def saturation(good):
    s = [r["saturated"] for r in good if r.get("saturated")]
    return max(set(s), key=s.count) if s else "–"


# ------------------------------------------------------------------ medians
M = {}  # (sc, px) -> dict of medians
for sc in scenarios:
    for px in proxies:
        g = sel(sc, px)
        if not g:
            continue
        m = {k: med(vals(g, k)) for k in (
            "rps", "p50_us", "p90_us", "p99_us", "p999_us", "p9999_us", "max_us", "cpu_us_per_req",
            "cpu_user_us_per_req", "cpu_sys_us_per_req", "rss_kb", "proxy_cores_busy_pct", "load_cores_busy_pct",
            "other_on_proxy_cores_pct", "other_on_load_cores_pct", "other_procs_on_proxy_cpus_pct",
            "other_procs_elsewhere_pct", "ring_enters_per_req", "ring_sqes_per_req",
            "bytes_copied_per_req", "zc_sends_per_req", "target_rate", "proxy_cpu_pct", "tls_resumed_pct",
            "client_cpu_us_per_hs")}
        m["errors"] = sum(int(num(r, "errors") or 0) for r in g)
        m["n"] = len(g)
        m["saturated"] = saturation(g)
        M[(sc, px)] = m


def floor_ratio(sc, px):
    if scen_kind(sc) == "cache":  # the cache scenarios' floor is nginx-return
        if px == CACHE_FLOOR:
            return "1.00"
        f = M.get((sc, CACHE_FLOOR), {}).get("cpu_us_per_req")
        c = M.get((sc, px), {}).get("cpu_us_per_req")
        return f"{c / f:.2f}" if f and c is not None else "–"
    if px in ("relay", "direct"):
        return "n/a" if px == "direct" else "1.00"
    f = M.get((sc, "relay"), {}).get("cpu_us_per_req")
    c = M.get((sc, px), {}).get("cpu_us_per_req")
    return f"{c / f:.2f}" if f and c is not None else "–"


def ringlb_ratio(sc, px, key):
    """median of a ringlb variant row ÷ the ringlb (round-robin) row's, same scenario"""
    b = M.get((sc, "ringlb"), {}).get(key)
    v = M.get((sc, px), {}).get(key)
    return v / b if b and v is not None else None


def paired_ratios(sc, px, key):
    """per repetition: the variant's good run ÷ the ringlb row's good run of the same repetition"""
    base = {r["rep"]: num(r, key) for r in sel(sc, "ringlb")}
    out_ = []
    for r in sel(sc, px):
        b, v = base.get(r["rep"]), num(r, key)
        if b and v is not None:
            out_.append(v / b)
    return out_


CACHE_MEDIAN_COLS = ("hit_ratio", "origin_requests", "origin_requests_warmup", "x_best_cache_peer_cpu")


def cache_figures(sc, px):
    """hit ratio and origin requests over a cache row's good runs: the ratio is 1 - Σ origin ÷ Σ requests of the
    measured windows (None for the floor, which has no cache); also the per-run minimum"""
    g = sel(sc, px)
    if not g:
        return None
    req = sum(int(num(r, "requests") or 0) for r in g)
    orig = [int(num(r, "origin_requests")) for r in g if num(r, "origin_requests") is not None]
    warm = [int(num(r, "origin_requests_warmup")) for r in g if num(r, "origin_requests_warmup") is not None]
    hr = vals(g, "hit_ratio")
    return {"requests": req, "origin": sum(orig) if orig else None, "origin_warmup": sum(warm) if warm else None,
            "hit_ratio": (1 - sum(orig) / req) if px != CACHE_FLOOR and orig and req else None,
            "hit_min": min(hr) if hr else None, "n": len(g)}


def best_cache_peer(sc):
    """the cache peer (nginx, HAProxy, Varnish) with the lowest median CPU µs per hit in this scenario"""
    c = {p: M[(sc, p)]["cpu_us_per_req"] for p in CACHE_PEERS
         if (sc, p) in M and M[(sc, p)].get("cpu_us_per_req") is not None}
    return min(c, key=c.get) if c else None


with open(os.path.join(out, "medians.csv"), "w", newline="") as f:
    cols = ["scenario", "proxy", "n", "rps", "p50_us", "p90_us", "p99_us", "p999_us", "p9999_us", "errors",
            "cpu_us_per_req", "cpu_user_us_per_req", "cpu_sys_us_per_req", "x_floor", "rss_kb",
            "proxy_cores_busy_pct", "load_cores_busy_pct", "other_on_proxy_cores_pct", "other_on_load_cores_pct",
            "other_procs_on_proxy_cpus_pct", "other_procs_elsewhere_pct", "saturated", "ring_enters_per_req", "ring_sqes_per_req", "bytes_copied_per_req", "zc_sends_per_req",
            "tls_resumed_pct", "client_cpu_us_per_hs"]
    if VARIANTS:  # ratios to the ringlb (round-robin) row, only in runs that have ringlb variant rows
        cols += ["x_ringlb_rps", "x_ringlb_cpu"]
    HAVE_CACHE = any(scen_kind(sc) == "cache" for sc in scenarios)
    if HAVE_CACHE:  # only in runs with cache scenarios
        cols += ["hit_ratio", "origin_requests", "origin_requests_warmup", "x_best_cache_peer_cpu"]
    w = csv.writer(f)
    w.writerow(cols)
    for (sc, px), m in M.items():
        row = [sc, px] + [("" if m.get(c) is None else m.get(c)) if c != "x_floor" else floor_ratio(sc, px)
                          for c in cols[2:] if not c.startswith("x_ringlb_") and c not in CACHE_MEDIAN_COLS]
        if VARIANTS:
            rr = [ringlb_ratio(sc, px, k) if px == "ringlb" or px in VARIANT_BALANCE else None
                  for k in ("rps", "cpu_us_per_req")]
            row += ["" if x is None else f"{x:.4f}" for x in rr]
        if HAVE_CACHE:
            cf = cache_figures(sc, px) if scen_kind(sc) == "cache" else None
            if cf:
                bp = best_cache_peer(sc)
                x = (m["cpu_us_per_req"] / M[(sc, bp)]["cpu_us_per_req"]
                     if bp and m.get("cpu_us_per_req") is not None and M[(sc, bp)]["cpu_us_per_req"] else None)
                row += ["" if cf["hit_ratio"] is None else f"{cf['hit_ratio']:.6f}", cf["origin"], cf["origin_warmup"],
                        "" if x is None else f"{x:.4f}"]
            else:
                row += ["", "", "", ""]
        w.writerow(row)

# ------------------------------------------------------------------ charts
charts = []
gp = shutil.which(os.environ.get("GNUPLOT_BIN", "gnuplot"))
chart_note = ""
if gp:
    def chart(fname, key, title, ylabel, scens, logy=True):
        cols = [px for px in proxies if any(M.get((sc, px), {}).get(key) for sc in scens)]
        if not scens or not cols:
            return
        dat = os.path.join(out, fname.replace(".png", ".dat"))
        with open(dat, "w") as f:
            f.write("scenario " + " ".join(cols) + "\n")
            for sc in scens:
                vs = [M.get((sc, px), {}).get(key) for px in cols]
                f.write(sc + " " + " ".join("?" if v is None or v <= 0 else f"{v:.3f}" for v in vs) + "\n")
        plot = ", ".join(f"'{os.path.basename(dat)}' using {i + 2}{':xtic(1)' if i == 0 else ''} title columnhead"
                         for i in range(len(cols)))
        script = f"""set terminal pngcairo size {max(900, 110 * len(scens) * max(1, len(cols)) // 3)},520 font ",10"
set output '{fname}'
set title "{title}"
set ylabel "{ylabel}"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set datafile missing "?"
set key outside right top
set grid ytics
set xtics rotate by -30
{'set logscale y' if logy else 'set yrange [0:*]'}
plot {plot}
"""
        gpf = os.path.join(out, fname.replace(".png", ".gp"))
        open(gpf, "w").write(script)
        r = subprocess.run([gp, os.path.basename(gpf)], cwd=out, capture_output=True, text=True)
        if r.returncode == 0 and os.path.exists(os.path.join(out, fname)):
            charts.append((fname, title))
        else:
            global chart_note
            chart_note += f" gnuplot failed for {fname}: {r.stderr.strip()[:200]}"

    closed = [sc for sc in scenarios if (scen_info(sc) or ("",))[0] != "openloop"]
    chart("rps.png", "rps", "requests/s (median; log scale)", "req/s", closed)
    chart("cpu.png", "cpu_us_per_req", "proxy CPU µs per request, user+system (median; log scale)",
          "CPU µs/request", scenarios)
else:
    chart_note = " (gnuplot not found: no charts)"

# ------------------------------------------------------------------ report
L = []
L.append("# ringlb benchmark: ringlb vs peers, the relay floor and direct\n")
peers_skipped = [f"{k[5:]} ({v})" for k, v in env.items() if k.startswith("skip_")]
L.append(f"- date (UTC): {env.get('date_utc')}, host `{env.get('host')}`, {env.get('kernel')}, "
         f"{env.get('cpu_model')} ({env.get('online_cpus')} CPUs online, governor {env.get('governor')})")
L.append(f"- placement: proxies (and the relay) pinned to CPU(s) {env.get('proxy_cpus')} with "
         f"{env.get('workers')} worker(s) each; load generator + backends pinned to CPU(s) {env.get('load_cpus')}; "
         f"other CPUs: {env.get('other_cpus')}")
L.append(f"- runs: {env.get('duration_s')} s measured after {env.get('warmup_s')} s warm-up, "
         f"{env.get('reps')} repetition(s), rows interleaved (order rotated each repetition), fresh proxy per run; "
         f"a run with more than {env.get('disturb_pct')}% of a core of other work on the proxy CPUs is repeated "
         f"(up to {env.get('max_retries')} times); elapsed {env.get('elapsed_s', '?')} s")
vers = [f"nginx {env.get('nginx')}", f"HAProxy {env.get('haproxy')}"]
for p in ("envoy", "caddy", "h2o", "varnish"):
    if env.get(p):
        vers.append(f"{p} {env[p]}")
commit = env.get("ringlb_commit", "")
L.append(f"- versions: {', '.join(vers)}, wrk {env.get('wrk')} ({env.get('wrk_threads')} thread(s)), "
         f"ringlb `{env.get('ringlb')}`" + (f" (commit {commit[:12] if len(commit) == 40 else commit})" if commit else ""))
L.append(f"- backends: bench_backend ({env.get('backend_threads')} thread(s)), round-robin over 2 ports; "
         f"upstream keep-alive with up to {env.get('upstream_keepalive_idle')} idle connections per worker; "
         f"ulimit -n {env.get('nofile')}")
if env.get("ringlb_max_idle"):
    L.append(f"- ringlb rows: `keepalive.max_idle: {env['ringlb_max_idle']}` per backend per worker "
             "(`--ringlb-max-idle`; not the default K/2)")
if VARIANTS:
    L.append("- ringlb variant rows: " + ", ".join(f"`{p}` = `balance: {VARIANT_BALANCE[p]}`" for p in VARIANTS)
             + ", otherwise the `ringlb` row's config (`balance: round_robin`); `hash` keys on the client address, "
               "so the load generator's one address sends every request to one backend")
if peers_skipped:
    L.append(f"- skipped rows: {'; '.join(peers_skipped)}")
if env.get("openloop_skip"):
    L.append(f"- open-loop scenarios skipped: {env['openloop_skip']}")
if env.get("openloop_rate"):
    L.append(f"- open-loop rate: {env['openloop_rate']} req/s ({env.get('openloop_rate_source')})")
L.append(f"- machine load: idle baseline before the runs: proxy CPUs {env.get('idle_baseline_busy_pct_proxy_cpus')}% "
         f"busy, load CPUs {env.get('idle_baseline_busy_pct_load_cpus')}%, other CPUs "
         f"{(env.get('idle_baseline_busy_pct_other_cpus') + '%') if env.get('idle_baseline_busy_pct_other_cpus') else 'n/a'}; loadavg start {env.get('loadavg_start')}, "
         f"end {env.get('loadavg_end')}")

st = vals([r for r in rows if r["status"] in GOOD + ("retried",)], "steal_pct")
if st:
    L.append(f"- hypervisor steal time on the proxy + load CPUs during the runs: median {med(st):.1f}%, "
             f"max {max(st):.1f}% (`steal_pct` in runs.csv)")
# which side saturated
sat = {}
for (sc, px), m in M.items():
    if px in PEERS:
        sat.setdefault(m["saturated"], []).append(f"{sc}/{px}")
parts = [f"{k}: {len(v)}" for k, v in sorted(sat.items())]
L.append(f"- saturated side (busy ≥ 90%) over scenario×proxy cells: {', '.join(parts) or '–'}. "
         + ("The load side is the bottleneck in most cells: req/s then measures wrk + backends as much as the "
            "proxy, so **compare CPU µs/request**, not req/s." if len(sat.get("load", [])) + len(sat.get("both", []))
            >= max(1, sum(len(v) for v in sat.values())) / 2 else
            "Where the proxy side saturated, req/s compares the proxies directly."))
L.append("")
L.append("Medians over the good runs, (min–max) the spread. **CPU µs/req**: user+system time of the proxy's whole "
         "process tree during the measured window ÷ completed requests; **× floor**: that ÷ the relay's (a TCP relay "
         "that knows no HTTP, `bench_relay`). **other % p/P/l**: other work in % of a core: "
         "p = proxy CPUs busy (/proc/stat) minus the proxy's own CPU and minus ksoftirqd (includes softirqs and "
         "short-lived tasks; tick-sampled, can go negative), P = CPU time of other processes last seen on the proxy CPUs "
         "(/proc/*/task/*/stat), l = load CPUs busy minus wrk + backends. **sat**: which side was ≥ 90% busy. "
         "wrk latencies are closed-loop (coordinated omission): compare within a table only; the open-loop table "
         "has the honest percentiles.")
L.append("")
if charts:
    for fn, t in charts:
        L.append(f"![{t}]({fn})")
    L.append("")
    L.append("Charts: " + ", ".join(f"[{fn}]({fn})" for fn, _ in charts) + " (data: `*.dat`, scripts: `*.gp`)."
             + chart_note)
    L.append("")
elif chart_note:
    L.append("No charts:" + chart_note)
    L.append("")

for sc in scenarios:
    info = scen_info(sc)
    if not info:
        continue
    kind, size, conns, desc = info
    L.append(f"## {sc}: {desc}\n")
    if kind == "openloop":
        L.append("| row | runs | target req/s | achieved req/s | p50 µs | p90 µs | p99 µs | p99.9 µs | p99.99 µs | max µs | errors | CPU µs/req | user | sys | × floor | RSS kB | proxy CPUs % | other % p/P/l | sat |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    else:
        L.append("| row | runs | req/s | p50 µs | p90 µs | p99 µs | p99.9 µs | errors | CPU µs/req | user | sys | × floor | RSS kB | proxy CPUs % | load CPUs % | other % p/P/l | sat |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for px in proxies:
        if not applicable(sc, px):
            continue
        allr = sel(sc, px, good=False)
        final = [r for r in allr if r["status"] != "retried"]
        g = sel(sc, px)
        ncols = 19 if kind == "openloop" else 17
        if not g:
            st = sorted(set(r["status"] for r in final)) or ["not run"]
            note = next((r["note"] for r in final if r.get("note")), "")
            L.append(f"| {px} | 0/{len(final)} | {', '.join(st)}{': ' + note if note else ''} " + "|" * (ncols - 2))
            continue
        m = M[(sc, px)]
        rps, p50, p99 = vals(g, "rps"), vals(g, "p50_us"), vals(g, "p99_us")
        cpu = vals(g, "cpu_us_per_req")
        other = (f"{fmt(m['other_on_proxy_cores_pct'], 1)}/{fmt(m['other_procs_on_proxy_cpus_pct'], 1)}/"
                 f"{fmt(m['other_on_load_cores_pct'], 1)}")
        nret = len(allr) - len(final)
        runs = f"{len(g)}/{len(final)}" + (f" (+{nret} retried)" if nret else "")
        if kind == "openloop":
            L.append(f"| {px} | {runs} | {fmt(m['target_rate'])} | {fmt(m['rps'])}{spread(rps)} | "
                     f"{fmt(m['p50_us'])}{spread(p50)} | {fmt(m['p90_us'])} | {fmt(m['p99_us'])}{spread(p99)} | "
                     f"{fmt(m['p999_us'])} | {fmt(m['p9999_us'])} | {fmt(m['max_us'])} | {m['errors']} | "
                     f"{fmt(m['cpu_us_per_req'], 2)}{spread(cpu, 2)} | {fmt(m['cpu_user_us_per_req'], 2)} | "
                     f"{fmt(m['cpu_sys_us_per_req'], 2)} | {floor_ratio(sc, px)} | {fmt(m['rss_kb'])} | "
                     f"{fmt(m['proxy_cores_busy_pct'], 1)} | {other} | {m['saturated']} |")
        else:
            L.append(f"| {px} | {runs} | {fmt(m['rps'])}{spread(rps)} | {fmt(m['p50_us'])}{spread(p50)} | "
                     f"{fmt(m['p90_us'])} | {fmt(m['p99_us'])}{spread(p99)} | {fmt(m['p999_us'])} | {m['errors']} | "
                     f"{fmt(m['cpu_us_per_req'], 2)}{spread(cpu, 2)} | {fmt(m['cpu_user_us_per_req'], 2)} | "
                     f"{fmt(m['cpu_sys_us_per_req'], 2)} | {floor_ratio(sc, px)} | {fmt(m['rss_kb'])} | "
                     f"{fmt(m['proxy_cores_busy_pct'], 1)} | {fmt(m['load_cores_busy_pct'], 1)} | {other} | "
                     f"{m['saturated']} |")
    L.append("")

# ------------------------------------------------------------------ TLS
TLS_ROWS = [p for p in ("ringlb", "nginx", "haproxy") if p in proxies]
TLS_PEERS = [p for p in TLS_ROWS if p != "ringlb"]
tls_scens = sorted((sc for sc in scenarios if (scen_info(sc) or ("",))[0] in ("tls-ka", "tls-hs")),
                   key=lambda sc: (0 if sc.startswith("tls-hs") else 1, scenarios.index(sc)))


def row_state(sc, px):
    """(status list, first note) of a row without good runs"""
    final = [r for r in sel(sc, px, good=False) if r["status"] != "retried"]
    st = sorted(set(r["status"] for r in final)) or ["not run"]
    return ", ".join(st), next((r["note"] for r in final if r.get("note")), "")


def counters_sum(sc, px, keys):
    """sums of ringlb counter deltas (ringlb_counters) over the good runs"""
    tot = {k: 0 for k in keys}
    seen = False
    for r in sel(sc, px):
        kv = dict(x.split("=", 1) for x in (r.get("ringlb_counters") or "").split(";") if "=" in x)
        if all(k in kv for k in keys):
            seen = True
            for k in keys:
                tot[k] += int(kv[k])
    return tot if seen else None


if tls_scens and TLS_ROWS:
    L.append("## TLS: ringlb vs the best of nginx / HAProxy\n")
    L.append(f"All three terminate TLS with the same certificate ({env.get('tls_cert', 'ECDSA P-256')}); TLS 1.2 and "
             "1.3 allowed, session tickets on, each program's default ciphers with the client's preference, plain "
             "HTTP/1.1 to the backends. `tls-ka-*`: wrk (OpenSSL) over kept-alive TLS connections. `tls-hs-*`: "
             "`bench_tls_handshake` (BoringSSL, X25519, no certificate verification): a new connection, handshake "
             "and one `GET /` each, `full` never offering a session, `resume` always offering the ticket of a first "
             "handshake. **CPU µs/handshake** is the proxy's CPU during the window ÷ completed handshakes (each "
             "with its request); **handshakes/s per proxy core** = 10⁶ ÷ that, what one fully busy proxy core would "
             "do. The load CPU usually saturates first in the handshake runs (one client handshake costs about as "
             "much as the server's): then handshakes/s measures the client, and the per-core figure compares the "
             "proxies. **ringlb ÷ best peer**: ringlb's median ÷ the better of nginx's and HAProxy's (higher is "
             "better for rates, lower for CPU).\n")
    L.append("| scenario | measure | " + " | ".join(TLS_ROWS) + " | ringlb ÷ best peer |")
    L.append("|---|---|" + "---|" * len(TLS_ROWS) + "---|")
    tls_notes = {}  # (row, note) -> scenarios
    for sc in tls_scens:
        kind = scen_info(sc)[0]
        if kind == "tls-hs":
            mode, ver = tls_hs_mode(sc)
            measures = [("handshakes/s", "rps", 0, True, False),
                        ("handshakes/s per proxy core", "per_core", 0, True, False),
                        ("CPU µs/handshake", "cpu_us_per_req", 1, False, False)]
            if mode == "resume":
                measures.append(("resumed %", "tls_resumed_pct", 1, None, False))
            measures += [("p99 µs (connect to response)", "p99_us", 0, False, False),
                         ("client CPU µs/handshake", "client_cpu_us_per_hs", 0, None, False)]
        else:
            measures = [("req/s", "rps", 0, True, False),
                        ("CPU µs/request", "cpu_us_per_req", 2, False, False),
                        ("p99 µs", "p99_us", 0, False, False)]
            plain = sc[len("tls-"):]
            if plain in scenarios:
                measures.append((f"CPU × plain `{plain}`", "x_plain", 2, None, False))
        measures.append(("saturated side", "saturated", 0, None, True))
        for label, key, nd, higher, text in measures:
            cells, meds = [], {}
            for px in TLS_ROWS:
                m = M.get((sc, px))
                if not m:
                    st, note = row_state(sc, px)
                    cells.append(st)
                    if note and sc not in tls_notes.setdefault((px, note), []):
                        tls_notes[(px, note)].append(sc)
                    continue
                if text:
                    cells.append(str(m.get(key, "–")))
                    continue
                if key == "per_core":
                    c = m.get("cpu_us_per_req")
                    v = 1e6 / c if c else None
                    xs = [1e6 / x for x in vals(sel(sc, px), "cpu_us_per_req") if x]
                elif key == "x_plain":
                    b = M.get((plain, px), {}).get("cpu_us_per_req")
                    c = m.get("cpu_us_per_req")
                    v = c / b if b and c is not None else None
                    xs = []
                else:
                    v = m.get(key)
                    xs = vals(sel(sc, px), key)
                meds[px] = v
                cells.append(f"{fmt(v, nd)}{spread(xs, nd) if key in ('rps', 'cpu_us_per_req', 'per_core') else ''}")
            ratio = "–"
            pv = {p: meds.get(p) for p in TLS_PEERS if meds.get(p) is not None}
            if higher is not None and meds.get("ringlb") is not None and pv:
                best = (max if higher else min)(pv, key=pv.get)
                if pv[best]:
                    ratio = f"{meds['ringlb'] / pv[best]:.2f} (vs {best})"
            L.append(f"| {sc} | {label} | " + " | ".join(cells) + f" | {ratio} |")
    L.append("")
    # what each client negotiated with each row
    neg = {}
    for r in rows:
        if r["kind"] in ("tls-ka", "tls-hs") and r["status"] in GOOD and r.get("tls_cipher"):
            client = "wrk (OpenSSL)" if r["kind"] == "tls-ka" else "bench_tls_handshake (BoringSSL)"
            neg.setdefault(client, {}).setdefault(r["proxy"], set()).add(f"{r.get('tls_version')} {r['tls_cipher']}")
    for client, per in neg.items():
        allv = set().union(*per.values())
        if len(allv) == 1:
            L.append(f"- {client} negotiated {next(iter(allv))} with every row")
        else:
            L.append(f"- {client} negotiated: " + "; ".join(f"{px} {', '.join(sorted(v))}" for px, v in per.items()))
    if env.get("openssl"):
        L.append(f"- certificate made with {env['openssl']}"
                 + ("; wrk's cipher is that of an `openssl s_client` probe (wrk's library, default offer) before "
                    "each `tls-ka` run" if any(sc.startswith("tls-ka") for sc in tls_scens) else ""))
    for sc in tls_scens:
        if sc.startswith("tls-hs-resume"):
            c = counters_sum(sc, "ringlb", ("tls_handshakes", "tls_resumed"))
            if c and c["tls_handshakes"]:
                L.append(f"- {sc}: ringlb's own counters: {c['tls_resumed']:,} of {c['tls_handshakes']:,} handshakes "
                         f"resumed ({100 * c['tls_resumed'] / c['tls_handshakes']:.1f}%)")
    tdist = [r for r in rows if r["scenario"] in tls_scens and r["proxy"] in TLS_ROWS and r.get("disturbed") == "1"
             and r["status"] in GOOD]
    if tdist:
        ntot = sum(len(sel(sc, px)) for sc in tls_scens for px in TLS_ROWS)
        L.append(f"- **{len(tdist)} of the {ntot} runs behind this table were disturbed** (other work on the proxy "
                 "CPUs after the retries ran out; see *Disturbed runs*): rates are unreliable, CPU per handshake or "
                 "request less so")
    for (px, note), scs in tls_notes.items():
        L.append(f"- {px} ({', '.join(scs)}): {note}")
    for k, v in env.items():
        if k.startswith("tls_skip_") and (k[len("tls_skip_"):], v) not in tls_notes:
            L.append(f"- {k[len('tls_skip_'):]}: TLS scenarios skipped: {v}")
    if env.get("tls_hs_skip"):
        L.append(f"- tls-hs scenarios skipped: {env['tls_hs_skip']}")
    L.append("")

# ------------------------------------------------------------------ cache
cache_scens = [sc for sc in scenarios if scen_kind(sc) == "cache"]
CROWS = [p for p in proxies if p in CACHE_ROWS]
if cache_scens and CROWS:
    L.append("## Cache: hits served from each row's cache, against the best cache peer and the nginx-return floor\n")
    L.append("One URL whose origin response is cacheable (`Cache-Control: public, max-age="
             f"{env.get('cache_max_age', '3600')}`, an ETag and a Last-Modified), fetched by wrk over kept-alive "
             "connections; a fresh proxy per run with an empty in-memory cache, filled by the warm-up. Every row adds "
             "an `X-Cache` header (ringlb also `Cache-Status`). **hits/s**: completed requests/s; **CPU µs/hit**: the "
             "proxy's CPU in the measured window ÷ its requests (all of them hits at a hit ratio of 1); **hit ratio**: "
             "1 − origin requests ÷ requests in the measured windows, from bench_backend's own counter read right "
             "before and after each window; **origin (warm-up)**: the requests that reached the origin during the "
             "warm-up (the misses that filled the cache; HAProxy has no lock, so concurrent first misses all go "
             "through). **× best peer**: CPU µs/hit ÷ that of the cheapest of nginx, HAProxy, Varnish in the same "
             "scenario (hits/s: ÷ the fastest); **× floor**: ÷ `nginx-return`'s, nginx answering the same bytes from "
             "memory without proxying or caching. Targets for ringlb: CPU per hit ≤ 0.8 × the best peer, ≤ 1.1 × the "
             "floor.\n")
    bad_cache = [r for r in rows if r["scenario"] in cache_scens and r["status"] == "not-caching"]
    if bad_cache:
        L.append(f"**⚠ {len(bad_cache)} RUN(S) DID NOT SERVE FROM THE CACHE** (hit ratio below "
                 f"{env.get('cache_min_hit', '0.99')} in the measured window, or the origin was not countable); they "
                 "are left out of every figure here:\n")
        for r in bad_cache:
            L.append(f"- **rep {r['rep']} {r['scenario']} {r['proxy']}: {r.get('note', '')}**")
        L.append("")
    L.append("| scenario | row | runs | hits/s | CPU µs/hit | p50 µs | p99 µs | hit ratio | origin requests | origin (warm-up) "
             "| CPU × best peer | CPU × floor | hits/s × best peer | sat |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    targets = []
    for sc in cache_scens:
        bp = best_cache_peer(sc)
        bp_cpu = M[(sc, bp)]["cpu_us_per_req"] if bp else None
        rp = {p: M[(sc, p)]["rps"] for p in CACHE_PEERS if (sc, p) in M and M[(sc, p)].get("rps")}
        bp_rps = max(rp.values()) if rp else None
        fl = M.get((sc, CACHE_FLOOR), {}).get("cpu_us_per_req")
        for px in CROWS:
            m = M.get((sc, px))
            if not m:
                st, note = row_state(sc, px)
                if "not-caching" in st:
                    st, note = f"**NOT CACHING** ({st})", note.replace("NOT CACHING: ", "", 1)
                L.append(f"| {sc} | {px} | 0 | {st}{': ' + note if note else ''} |" + " |" * 10)
                continue
            cf = cache_figures(sc, px)
            g = sel(sc, px)
            cpu = m["cpu_us_per_req"]
            xb = cpu / bp_cpu if bp_cpu and cpu is not None else None
            xf = cpu / fl if fl and cpu is not None else None
            xr = m["rps"] / bp_rps if bp_rps and m["rps"] is not None else None
            if px == CACHE_FLOOR:
                hr = "n/a (floor)"
            elif cf["hit_ratio"] is None:
                hr = "–"
            else:
                hr = f"{cf['hit_ratio']:.6f}" + (f" (min {cf['hit_min']:.6f})" if cf["n"] > 1 and cf["hit_min"] is not None else "")
            L.append(f"| {sc} | {px}{' (best peer)' if px == bp else ''} | {m['n']} | "
                     f"{fmt(m['rps'])}{spread(vals(g, 'rps'))} | {fmt(cpu, 2)}{spread(vals(g, 'cpu_us_per_req'), 2)} | "
                     f"{fmt(m['p50_us'])} | {fmt(m['p99_us'])} | {hr} | {fmt(cf['origin'])} | {fmt(cf['origin_warmup'])} | "
                     f"{fmt(xb, 2) if px != bp else '1.00'} | {fmt(xf, 2)} | {fmt(xr, 2)} | {m['saturated']} |")
            if px == "ringlb":
                t = []
                if xb is not None:
                    t.append(f"{xb:.2f} × {bp} ({'met' if xb <= 0.8 else 'MISSED'}: target ≤ 0.8)")
                if xf is not None:
                    t.append(f"{xf:.2f} × the floor ({'met' if xf <= 1.1 else 'MISSED'}: target ≤ 1.1)")
                if t:
                    targets.append(f"- {sc}: ringlb's CPU per hit {fmt(cpu, 2)} µs = " + ", ".join(t))
    L.append("")
    L += targets
    for sc in cache_scens:
        c = counters_sum(sc, "ringlb", ("requests", "cache_hits", "cache_misses"))
        if c and c["requests"]:
            L.append(f"- {sc}: ringlb's own counters over the windows: {c['cache_hits']:,} cache hits and "
                     f"{c['cache_misses']:,} misses of {c['requests']:,} requests "
                     f"({100 * c['cache_hits'] / c['requests']:.2f}% hits)")
    probes = {}
    for r in rows:
        if r["scenario"] in cache_scens and r["status"] in GOOD and r.get("cache_probe"):
            probes.setdefault(r["proxy"], set()).add(r["cache_probe"])
    if probes:
        L.append("- the row's status header on a request right after the warm-up: "
                 + "; ".join(f"{px} `{' / '.join(sorted(v))}`" for px, v in probes.items()))
    cdist = [r for r in rows if r["scenario"] in cache_scens and r["proxy"] in CROWS and r.get("disturbed") == "1"
             and r["status"] in GOOD]
    if cdist:
        L.append(f"- **{len(cdist)} of the runs behind this table were disturbed** (other work on the proxy CPUs after "
                 "the retries ran out; see *Disturbed runs*): hits/s are unreliable, CPU per hit less so")
    for k, v in env.items():
        if k.startswith("cache_skip_"):
            L.append(f"- {k[len('cache_skip_'):]}: cache scenarios skipped: {v}")
    if env.get("cache_dir"):
        L.append(f"- nginx's proxy_cache and nginx-return's larger bodies: `{env['cache_dir']}` ({env.get('cache_dir_fs')}); "
                 f"Varnish `-s malloc,{env.get('varnish_cache_mem', '256m')}`; nginx-return answers bodies up to "
                 f"{env.get('nginx_return_literal_max', '4094')} bytes with `return 200 \"…\"`, longer ones from a tmpfs "
                 "file with sendfile and open_file_cache")
    L.append("")

# ringlb's balancing algorithms against its round-robin row
if VARIANTS and any((sc, "ringlb") in M for sc in scenarios):
    L.append("## ringlb balancing algorithms vs round-robin (`ringlb` row)\n")
    L.append("Same binary and config, only `balance` differs. **× rr**: the row's median ÷ the `ringlb` row's "
             "median in the same scenario; **paired**: median (min–max) over the repetitions of the row's run ÷ the "
             "`ringlb` run of the same repetition (rows are interleaved, so a pair shares the machine's state). "
             "CPU below 1 is better, req/s above 1 is better.\n")
    L.append("| scenario | row | balance | runs | req/s | req/s × rr | req/s paired | CPU µs/req | CPU × rr | "
             "CPU paired | p99 µs | sat |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for sc in scenarios:
        if (sc, "ringlb") not in M:
            continue
        for px in ["ringlb"] + VARIANTS:
            m = M.get((sc, px))
            if not m:
                continue
            cells = []
            for key, nd in (("rps", 0), ("cpu_us_per_req", 2)):
                xs = vals(sel(sc, px), key)
                pr = paired_ratios(sc, px, key)
                rr = ringlb_ratio(sc, px, key)
                cells += [f"{fmt(m[key], nd)}{spread(xs, nd)}", fmt(rr, 3),
                          (f"{fmt(med(pr), 3)}{spread(pr, 3)}" if pr and px != "ringlb" else "–")]
            L.append(f"| {sc} | {px} | {VARIANT_BALANCE.get(px, 'round_robin')} | {m['n']} | "
                     + " | ".join(cells) + f" | {fmt(m['p99_us'])} | {m['saturated']} |")
    L.append("")

# ringlb's own counters (and its variant rows')
RL_ROWS = ["ringlb"] + VARIANTS
rl = [(sc, px, M[(sc, px)]) for sc in scenarios for px in RL_ROWS if (sc, px) in M]
if rl and any(m["ring_enters_per_req"] is not None for _, _, m in rl):
    has_zc = any(m["zc_sends_per_req"] is not None for _, _, m in rl)
    L.append("## ringlb counters per request (SIGUSR1 before and after the measured window)\n")
    L.append("Deltas of ringlb's own counters over the window ÷ the requests it counted in it (medians). "
             "`ring_enters`: io_uring_enter calls (submissions per request); `ring_sqes`: SQEs submitted; "
             "`bytes_copied`: bytes memcpy'd in user space. All counter deltas of every run are in runs.csv "
             "(`ringlb_counters`).\n")
    L.append("| scenario | " + ("row | " if VARIANTS else "") + "ring_enters/req | ring_sqes/req | bytes_copied/req |"
             + (" zc_sends/req |" if has_zc else ""))
    L.append("|---|---|---|---|" + ("---|" if VARIANTS else "") + ("---|" if has_zc else ""))
    for sc, px, m in rl:
        L.append(f"| {sc} | " + (f"{px} | " if VARIANTS else "")
                 + f"{fmt(m['ring_enters_per_req'], 3)} | {fmt(m['ring_sqes_per_req'], 3)} | "
                 f"{fmt(m['bytes_copied_per_req'], 1)} |" + (f" {fmt(m['zc_sends_per_req'], 3)} |" if has_zc else ""))
    L.append("")


# scale tables
def scale_table(title, scens, label):
    if len(scens) < 2:
        return
    cols = [px for px in proxies if px != "direct" and any((sc, px) in M for sc, _ in scens)]
    L.append(f"## Scale: {title}\n")
    L.append("Median CPU µs/request (× the relay floor) and RSS (MiB) per row.\n")
    L.append(f"| {label} | " + " | ".join(f"{px} CPU µs/req | {px} RSS MiB" for px in cols) + " |")
    L.append("|---|" + "---|---|" * len(cols))
    for sc, lab in scens:
        cells = []
        for px in cols:
            m = M.get((sc, px))
            if not m:
                st = sorted(set(r["status"] for r in sel(sc, px, good=False) if r["status"] != "retried"))
                cells += [", ".join(st) or "–", "–"]
                continue
            fr = floor_ratio(sc, px)
            cpu = fmt(m["cpu_us_per_req"], 2) + (f" (×{fr})" if px != "relay" and fr not in ("–", "n/a") else "")
            cells += [cpu, fmt(m["rss_kb"] / 1024 if m["rss_kb"] is not None else None, 1)]
        L.append(f"| {lab} | " + " | ".join(cells) + " |")
    L.append("")


infos = {sc: scen_info(sc) for sc in scenarios}
by_size = sorted(((sc, size_name(i[1])) for sc, i in infos.items() if i and i[0] == "ka" and i[2] == 64),
                 key=lambda t: infos[t[0]][1])
scale_table("response size (keep-alive, 64 connections)", by_size, "response")
by_conn = sorted(((sc, f"{i[2]:,}") for sc, i in infos.items() if i and i[0] == "ka" and i[1] == 1024),
                 key=lambda t: infos[t[0]][2])
scale_table("connections (1 KiB, keep-alive)", by_conn, "connections")

# disturbance and failures
dist = [r for r in rows if r.get("disturbed") == "1"]
if dist:
    L.append(f"## Disturbed runs (other work on the proxy CPUs > {env.get('disturb_pct')}% of a core)\n")
    L.append("`retried` runs were repeated and are not in the medians; a disturbed run that is not `retried` "
             "used up its retries and is kept (treat it with care).\n")
    for r in dist:
        L.append(f"- rep {r['rep']} {r['scenario']} {r['proxy']} attempt {r['attempt']}: {r['status']}; other on "
                 f"proxy CPUs {r['other_on_proxy_cores_pct']}% (/proc/stat), {r['other_procs_on_proxy_cpus_pct']}% "
                 f"(other processes: {r.get('other_procs_top', '').strip() or '–'}); other on load CPUs "
                 f"{r['other_on_load_cores_pct']}%; ksoftirqd on proxy CPUs {r.get('ksoftirqd_proxy_cpus_pct') or '–'}%; steal {r.get('steal_pct') or '–'}%; loadavg {r['loadavg1']}")
    L.append("")
bad = [r for r in rows if r["status"] not in ("ok", "retried", "skipped")]
if bad:
    L.append("## Runs that were not clean\n")
    for r in bad:
        L.append(f"- rep {r['rep']} {r['scenario']} {r['proxy']}: {r['status']} (errors {r.get('errors') or '–'}) "
                 f"{r.get('note', '')}")
    L.append("")
cfgs = [c for c in ("ringlb.yaml", "ringlb-lc.yaml", "ringlb-p2c.yaml", "ringlb-hash.yaml", "nginx.conf", "haproxy.cfg",
                    "ringlb-tls.yaml", "nginx-tls.conf", "haproxy-tls.cfg", "tls/cert.pem", "envoy.yaml", "Caddyfile", "h2o.conf",
                    "varnish.vcl", "report.lua", "cmdlines.txt") if os.path.exists(os.path.join(out, c))]
L.append("Per-run data: [`runs.csv`](runs.csv) (one row per run, retried ones included), medians: "
         "[`medians.csv`](medians.csv); generated configs and command lines: "
         + ", ".join(f"[`{c}`]({c})" for c in cfgs)
         + " (configs of peers that are not installed are generated but unused); raw load-generator output and "
           "proxy logs: `logs/`; environment: [`env.txt`](env.txt).")
text = "\n".join(L) + "\n"
open(os.path.join(out, "report.md"), "w").write(text)
sys.stdout.write(text)
