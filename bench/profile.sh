#!/usr/bin/env bash
# bench/profile.sh: perf profiles of ringlb, the relay floor (bench_relay) and, where a target
# compares with them, nginx / HAProxy, under the same wrk load as bench/compare.sh.
#
#   bench/profile.sh                         # every case below (13), ~5 min
#   bench/profile.sh --cases ringlb:ka-256k,relay:ka-256k
#
# Cases are PROXY:SCENARIO. PROXY: ringlb | ringlb+KEY=VAL[+KEY=VAL] (ringlb with these
# buffers: keys, e.g. ringlb+size=64k (the relay's buffer size), ringlb+count=64) | relay |
# nginx | haproxy. SCENARIO: ka-SIZE (keep-alive) or
# close-SIZE (wrk -H 'Connection: close': a new client connection per request), SIZE in
# bytes or with k/m. Each case: a fresh proxy pinned to PROXY_CPU (1), wrk -t1 -c64 -d10s and
# bench_backend (1 thread, two ports) pinned to LOAD_CPU (0), 3 s warm-up, then during the
# measured run, from second 1 to second 9:
#   perf record -e cpu-clock -g -p PID -- sleep 8
# plus /proc/PID/stat CPU before/after and, for ringlb, SIGUSR1 stats lines before/after; then a
# second, separate wrk run (3 s; counting tracepoints slows the traced task, so it is kept out
# of the profile) with, attached from 1 s before its start to 1 s after its end:
#   perf stat -e <syscall / io_uring / net tracepoints> -p PID -- sleep 5
# The 3 s warm-up (no perf attached) gives the CPU/request baseline without perf.
# perf itself is pinned to LOAD_CPU, so that only the proxy runs on PROXY_CPU.
# PID is the proxy process (all its threads); for nginx the single worker process.
#
# Output (git-ignored): bench/results/profile-<UTC date>/<case>/
#   perf.data, sym.txt (perf report --no-children --sort sym), dso.txt (--sort dso),
#   children.txt (--children --sort sym: inclusive cost of kernel entry points),
#   callgraph.txt (--no-children --sort sym with call chains), stat.txt (tracepoint counts),
#   wrk.txt, proxy.log; and summary.md for all cases.
# Binaries are copied into <out>/bin first, so that a rebuild by someone else mid-run cannot
# change what is measured. Only processes started here are stopped, by PID.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/bench/results/profile-$(date -u +%Y%m%dT%H%M%SZ)}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
DUR=${DUR:-10}
PERF_SECS=${PERF_SECS:-8}
STAT_SECS=${STAT_SECS:-3}
WARMUP=${WARMUP:-3}
CONNS=${CONNS:-64}
BPORT1=${BPORT1:-19001}
BPORT2=${BPORT2:-19002}
PORT=${PORT:-19101}
CASES=${CASES:-ringlb:ka-0,relay:ka-0,ringlb:ka-16k,relay:ka-16k,ringlb:ka-256k,relay:ka-256k,ringlb+size=64k:ka-256k,ringlb+count=128:ka-16k,ringlb+count=256:ka-256k,haproxy:ka-256k,ringlb:close-0,relay:close-0,nginx:close-0}
NGINX_BIN=${NGINX_BIN:-$(command -v nginx || echo /usr/sbin/nginx)}
HAPROXY_BIN=${HAPROXY_BIN:-$(command -v haproxy || echo /usr/sbin/haproxy)}

while [ $# -gt 0 ]; do
    case "$1" in
        --cases) CASES=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

command -v perf >/dev/null || { echo "perf not found: apt-get install -y linux-perf" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk not found" >&2; exit 1; }
for p in "$BPORT1" "$BPORT2" "$PORT"; do
    if ss -Htln "sport = :$p" | grep -q .; then echo "port $p already listening" >&2; exit 1; fi
done
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

mkdir -p "$OUT/bin"
cp "$ROOT/build/ringlb" "$ROOT/build/bench/bench_backend" "$ROOT/build/bench/bench_relay" "$OUT/bin/"
BIN=$OUT/bin
CLK_TCK=$(getconf CLK_TCK)

STARTED=()
cleanup() {
    local p
    for p in "${STARTED[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${STARTED[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
size_bytes() { # 16k -> 16384
    local s=$1
    case "$s" in *k) echo $((${s%k} * 1024)) ;; *m) echo $((${s%m} * 1048576)) ;; *) echo "$s" ;; esac
}
ticks() { awk '{ print $14 + $15, $14, $15 }' "/proc/$1/stat"; } # utime+stime (whole thread group)
wait_up() {
    local i code
    for ((i = 0; i < 100; i++)); do
        code=$(curl -s -o /dev/null -m 1 -w '%{http_code}' "http://127.0.0.1:$PORT/size/64" 2>/dev/null || true)
        [ "$code" = 200 ] && return 0
        sleep 0.1
    done
    return 1
}
ksoftirqd_pid() { local f; for f in /proc/[0-9]*/comm; do [ "$(cat "$f" 2>/dev/null)" = "ksoftirqd/$PROXY_CPU" ] && { f=${f#/proc/}; echo "${f%/comm}"; return; }; done; }
KSOFT=$(ksoftirqd_pid || true)

cat >"$OUT/report.lua" <<'EOF'
done = function(summary, latency, requests)
    local e = summary.errors
    io.write(string.format("WRKRESULT requests=%d duration_us=%d errors=%d p50_us=%d p99_us=%d\n",
        summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
        latency:percentile(50), latency:percentile(99)))
end
EOF

# The proxies' configs are compare.sh's own (1 worker, the default scenarios' connection
# sizes), only moved to this script's ports: one proxy runs at a time, always on $PORT.
CFG="$OUT/cfg"
"$(dirname "$0")/compare.sh" --configs-only --out "$CFG" --port-base $((PORT - 1)) \
    --backend-ports "$BPORT1,$BPORT2" --proxies ringlb,nginx,haproxy >/dev/null
cp "$CFG/ringlb.yaml" "$OUT/ringlb.yaml"
sed "s/127\.0\.0\.1:$((PORT + 1))\b/127.0.0.1:$PORT/" "$CFG/nginx.conf" >"$OUT/nginx.conf"
sed "s/127\.0\.0\.1:$((PORT + 2))\b/127.0.0.1:$PORT/" "$CFG/haproxy.cfg" >"$OUT/haproxy.cfg"
grep -q "127.0.0.1:$PORT " "$OUT/nginx.conf" && grep -q "127.0.0.1:$PORT " "$OUT/haproxy.cfg" ||
    { echo "profile.sh: could not move the peers' configs to port $PORT" >&2; exit 1; }

# Tracepoints counted during the perf window (per task of PID): syscalls, io_uring
# submissions/completions/poll arming/io-wq punts, packets put on loopback.
STAT_EVENTS=raw_syscalls:sys_enter,syscalls:sys_enter_io_uring_enter,syscalls:sys_enter_close,syscalls:sys_enter_setsockopt,syscalls:sys_enter_shutdown,syscalls:sys_enter_socket,syscalls:sys_enter_connect,syscalls:sys_enter_accept4,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_recvfrom,syscalls:sys_enter_sendto,syscalls:sys_enter_readv,syscalls:sys_enter_writev,syscalls:sys_enter_read,syscalls:sys_enter_write,syscalls:sys_enter_splice,io_uring:io_uring_submit_req,io_uring:io_uring_complete,io_uring:io_uring_poll_arm,io_uring:io_uring_queue_async_work,net:net_dev_xmit

{
    echo "date_utc=$(date -u +%FT%TZ)"
    echo "kernel=$(uname -r)"
    echo "perf=$(perf --version)"
    echo "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)"
    echo "ringlb_sha256=$(sha256sum "$BIN/ringlb" | cut -c1-16) (copied from build/ringlb, mtime $(stat -c %y "$ROOT/build/ringlb"))"
    echo "loadavg_start=$(cut -d' ' -f1-3 /proc/loadavg)"
    echo "proxy_cpu=$PROXY_CPU load_cpu=$LOAD_CPU wrk=-t1 -c$CONNS -d${DUR}s perf_window=${PERF_SECS}s warmup=${WARMUP}s"
    echo "cases=$CASES"
} >"$OUT/env.txt"

log "bench_backend on $BPORT1,$BPORT2 (cpu $LOAD_CPU) -> $OUT"
taskset -c "$LOAD_CPU" "$BIN/bench_backend" --port "$BPORT1" --port "$BPORT2" --threads 1 >"$OUT/backend.log" 2>&1 &
BACKEND_PID=$!
STARTED+=("$BACKEND_PID")
sleep 0.3

stats_line() { # stats_line LOG: SIGUSR1 ringlb and print the new stats line
    local lf=$1 n0 i
    n0=$(grep -c 'stats (SIGUSR1)' "$lf" || true)
    kill -USR1 "$PROXY_PID"
    for ((i = 0; i < 200; i++)); do
        [ "$(grep -c 'stats (SIGUSR1)' "$lf" || true)" -gt "$n0" ] && break
        sleep 0.01
    done
    grep 'stats (SIGUSR1)' "$lf" | tail -n 1
}
stats_delta() { # stats_delta LINE0 LINE1 -> "k=delta ..."
    printf '%s\n%s\n' "$1" "$2" | awk '
        { for (i = 1; i <= NF; i++) if ($i ~ /^[a-z0-9_]+=[0-9]+$/) { split($i, kv, "="); v[NR, kv[1]] = kv[2]; if (NR == 1) k[++n] = kv[1] } }
        END { for (i = 1; i <= n; i++) printf "%s=%d ", k[i], v[2, k[i]] - v[1, k[i]]; printf "\n" }'
}

SUMMARY=$OUT/summary.md
{
    echo "| case | req/s | req in window | CPU µs/req no perf (warm-up) | CPU µs/req (perf window) | user | sys | proxy CPU % | ksoftirqd/$PROXY_CPU % | kernel % | proxy binary % | libc % | other dso % | syscalls/req | io_uring SQEs/req | poll_arm/req | io-wq punts/req | pkts xmit/req |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
} >"$SUMMARY"

IFS=, read -r -a CASE_LIST <<<"$CASES"
for cs in "${CASE_LIST[@]}"; do
    px=${cs%%:*} sc=${cs#*:}
    kind=${sc%%-*} size=$(size_bytes "${sc#*-}")
    hdr=()
    [ "$kind" = close ] && hdr=(-H 'Connection: close')
    d=$OUT/${px}-${sc}
    mkdir -p "$d"
    lf=$d/proxy.log
    PERF_PID=
    case "$px" in
        ringlb) taskset -c "$PROXY_CPU" "$BIN/ringlb" -c "$OUT/ringlb.yaml" >"$lf" 2>&1 & ;;
        ringlb+*) # ringlb+size=64k+count=256: the same config with these buffers: keys
            y=$OUT/$px.yaml
            { sed -n '1,/^max_connections/p' "$OUT/ringlb.yaml"; echo "buffers:"
              tr '+' '\n' <<<"${px#ringlb+}" | sed 's/^\(.*\)=\(.*\)$/  \1: \2/'
              sed '1,/^max_connections/d' "$OUT/ringlb.yaml"; } >"$y"
            taskset -c "$PROXY_CPU" "$BIN/ringlb" -c "$y" >"$lf" 2>&1 & ;;
        relay) taskset -c "$PROXY_CPU" "$BIN/bench_relay" --listen "127.0.0.1:$PORT" \
            --backend "127.0.0.1:$BPORT1" --backend "127.0.0.1:$BPORT2" >"$lf" 2>&1 & ;;
        nginx) taskset -c "$PROXY_CPU" "$NGINX_BIN" -e "$OUT/nginx-error.log" -c "$OUT/nginx.conf" >"$lf" 2>&1 & ;;
        haproxy) taskset -c "$PROXY_CPU" "$HAPROXY_BIN" -db -f "$OUT/haproxy.cfg" >"$lf" 2>&1 & ;;
        *) log "unknown proxy $px"; continue ;;
    esac
    PROXY_PID=$!
    STARTED+=("$PROXY_PID")
    if ! wait_up; then
        log "FAIL $cs: proxy did not answer"; kill -TERM "$PROXY_PID" 2>/dev/null || true; wait "$PROXY_PID" 2>/dev/null || true
        continue
    fi
    PERF_PID=$PROXY_PID
    if [ "$px" = nginx ]; then # profile the one worker, a child of the master we started
        sleep 0.2; PERF_PID=$(pgrep -P "$PROXY_PID" | head -n 1)
    fi
    url="http://127.0.0.1:$PORT/size/$size"
    # 0) warm-up, also the CPU/request baseline without perf attached
    read -r a0 _ <<<"$(ticks "$PERF_PID")"
    taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${WARMUP}s" --timeout 5s -s "$OUT/report.lua" "${hdr[@]}" "$url" >"$d/wrk-warmup.txt" 2>&1 || true
    read -r a1 _ <<<"$(ticks "$PERF_PID")"
    wureq=$(sed -n 's/^WRKRESULT requests=\([0-9]*\).*/\1/p' "$d/wrk-warmup.txt")
    nocpu=$(awk -v t=$((a1 - a0)) -v n="${wureq:-0}" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", (n > 0 ? t * 1e6 / hz / n : 0) }')

    # 1) profile: perf record only (tracepoint counting would add its own overhead to the profile)
    taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${DUR}s" --timeout 5s -s "$OUT/report.lua" "${hdr[@]}" "$url" >"$d/wrk.txt" 2>&1 &
    WRK_PID=$!
    STARTED+=("$WRK_PID")
    sleep 1
    s0=""
    case "$px" in ringlb*) s0=$(stats_line "$lf") ;; esac
    read -r c0 u0 y0 <<<"$(ticks "$PERF_PID")"
    k0=0; [ -n "$KSOFT" ] && k0=$(ticks "$KSOFT" | cut -d' ' -f1)
    w0=$(date +%s%N)
    taskset -c "$LOAD_CPU" perf record -q -e cpu-clock -g -p "$PERF_PID" -o "$d/perf.data" -- sleep "$PERF_SECS" \
        >/dev/null 2>"$d/perf-record.log" || true
    w1=$(date +%s%N)
    read -r c1 u1 y1 <<<"$(ticks "$PERF_PID")"
    k1=0; [ -n "$KSOFT" ] && k1=$(ticks "$KSOFT" | cut -d' ' -f1)
    s1=""
    case "$px" in ringlb*) s1=$(stats_line "$lf") ;; esac
    { echo "time_wait_proxy_port_local=$(ss -Htan state time-wait "sport = :$PORT" | wc -l)  # the proxy closed first"
      echo "time_wait_proxy_port_remote=$(ss -Htan state time-wait "dport = :$PORT" | wc -l)  # wrk closed first"
      echo "time_wait_backend_ports=$(ss -Htan state time-wait "( sport = :$BPORT1 or sport = :$BPORT2 or dport = :$BPORT1 or dport = :$BPORT2 )" | wc -l)"
    } >"$d/time-wait.txt"
    wait "$WRK_PID" || true

    # 2) count: a separate wrk run, perf stat on tracepoints attached from before its start to
    # after its end, so the counts divide by wrk's request count exactly
    taskset -c "$LOAD_CPU" perf stat -x, -e "$STAT_EVENTS" -p "$PERF_PID" -o "$d/stat.txt" -- sleep "$((STAT_SECS + 2))" 2>/dev/null &
    STAT_PID=$!
    STARTED+=("$STAT_PID")
    sleep 1
    taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${STAT_SECS}s" --timeout 5s -s "$OUT/report.lua" "${hdr[@]}" "$url" >"$d/wrk-count.txt" 2>&1 || true
    wait "$STAT_PID" || true
    kill -TERM "$PROXY_PID" 2>/dev/null || true
    wait "$PROXY_PID" 2>/dev/null || true

    # figures
    res=$(grep -m1 '^WRKRESULT' "$d/wrk.txt" || true)
    req=$(sed -n 's/.*requests=\([0-9]*\).*/\1/p' <<<"$res")
    dus=$(sed -n 's/.*duration_us=\([0-9]*\).*/\1/p' <<<"$res")
    rps=$(awk -v r="${req:-0}" -v d="${dus:-1}" 'BEGIN { printf "%.0f", r / (d / 1e6) }')
    win_s=$(awk -v a="$w0" -v b="$w1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
    delta=""
    [ -n "$s0" ] && [ -n "$s1" ] && delta=$(stats_delta "$s0" "$s1")
    [ -n "$delta" ] && echo "$delta" >"$d/ringlb-stats-delta.txt"
    # requests in the perf window: wrk's rate x the window (the same rule for every proxy)
    wreq=$(awk -v r="$rps" -v w="$win_s" 'BEGIN { printf "%.0f", r * w }')
    per() { awk -v x="$1" -v n="$wreq" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", (n > 0 ? x * 1e6 / hz / n : 0) }'; }
    cpu=$(per $((c1 - c0))); usr=$(per $((u1 - u0))); sys=$(per $((y1 - y0)))
    pct=$(awk -v t=$((c1 - c0)) -v w="$win_s" -v hz="$CLK_TCK" 'BEGIN { printf "%.1f", t * 100 / hz / w }')
    kpct=$(awk -v t=$((k1 - k0)) -v w="$win_s" -v hz="$CLK_TCK" 'BEGIN { printf "%.1f", t * 100 / hz / w }')

    perf report -i "$d/perf.data" --no-children --sort sym --stdio -g none --percent-limit 0.3 >"$d/sym.txt" 2>/dev/null
    perf report -i "$d/perf.data" --no-children --sort dso --stdio -g none >"$d/dso.txt" 2>/dev/null
    perf report -i "$d/perf.data" --children --sort sym --stdio -g none --percent-limit 0.1 >"$d/children.txt" 2>/dev/null
    perf report -i "$d/perf.data" --no-children --sort sym --stdio -g graph,0.5,caller --percent-limit 2 >"$d/callgraph.txt" 2>/dev/null
    dso() { awk -v pat="$1" '$1 ~ /%$/ && $2 ~ pat { s += $1 } END { printf "%.1f", s }' "$d/dso.txt"; }
    kern=$(dso '^\[kernel'); libc=$(dso '^libc'); own=$(dso "^($(basename "$NGINX_BIN")|$(basename "$HAPROXY_BIN")|ringlb|bench_relay)\$")
    oth=$(awk -v a="$kern" -v b="$libc" -v c="$own" 'BEGIN { printf "%.1f", 100 - a - b - c }')
    # requests in the counting window: all of the counting wrk run's
    creq=$(sed -n 's/^WRKRESULT requests=\([0-9]*\).*/\1/p' "$d/wrk-count.txt")
    echo "requests_in_count_window=$creq" >>"$d/stat.txt"
    ev() { awk -F, -v e="$1" -v n="$creq" '$3 == e { printf "%.2f", (n > 0 ? $1 / n : 0) }' "$d/stat.txt"; }
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
        "$px $sc" "$rps" "$wreq" "$nocpu" "$cpu" "$usr" "$sys" "$pct" "$kpct" "$kern" "$own" "$libc" "$oth" \
        "$(ev raw_syscalls:sys_enter)" "$(ev io_uring:io_uring_submit_req)" "$(ev io_uring:io_uring_poll_arm)" \
        "$(ev io_uring:io_uring_queue_async_work)" "$(ev net:net_dev_xmit)" >>"$SUMMARY"
    log "$cs rps=$rps cpu/req=$cpu (u $usr s $sys) proxy=$pct% kernel=$kern% own=$own% libc=$libc% ${delta:+| $delta}"
done
echo "loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/env.txt"
log "done: $SUMMARY"
cat "$SUMMARY"
