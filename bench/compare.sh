#!/usr/bin/env bash
# bench/compare.sh — ringlb vs nginx vs HAProxy (and a direct-to-backend
# upper bound) on one machine, same backends, same load, same core budget.
#
#   bench/compare.sh [--duration 10] [--reps 3] [--connections 50] ...
#
# See bench/README.md for the options, the columns and the fairness notes.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# ---------------------------------------------------------------- defaults
RINGLB="$ROOT/build/ringlb"
BACKEND_BIN="$ROOT/build/bench/bench_backend"
NGINX_BIN=${NGINX_BIN:-/usr/sbin/nginx}
HAPROXY_BIN=${HAPROXY_BIN:-/usr/sbin/haproxy}
WRK_BIN=${WRK_BIN:-wrk}
PYTHON=/usr/bin/python3
PROXY_CPUS=1
LOAD_CPUS=0
DURATION=10
WARMUP=1
CONNECTIONS=50
REPS=3
WRK_THREADS=1
BACKEND_THREADS=1
PORT_BASE=18000
BACKEND_PORT1=9001
BACKEND_PORT2=9002
PROXIES="ringlb,nginx,haproxy,direct"
SCENARIOS="small,16k,close"
OUT=""

usage() {
    cat <<EOF
usage: $0 [options]
  --ringlb PATH          ringlb binary            (default: build/ringlb)
  --backend-bin PATH     bench_backend binary     (default: build/bench/bench_backend)
  --proxy-cpus LIST      taskset list for the proxies       (default: $PROXY_CPUS)
  --load-cpus LIST       taskset list for wrk + backends    (default: $LOAD_CPUS)
  --duration SECS        measured seconds per run           (default: $DURATION)
  --warmup SECS          unmeasured warm-up before each run (default: $WARMUP)
  --connections N        wrk connections                    (default: $CONNECTIONS)
  --reps N               repetitions                        (default: $REPS)
  --wrk-threads N        wrk threads                        (default: $WRK_THREADS)
  --backend-threads N    bench_backend threads              (default: $BACKEND_THREADS)
  --port-base N          proxies listen on N+1..N+3         (default: $PORT_BASE)
  --backend-ports A,B    the two backend ports              (default: $BACKEND_PORT1,$BACKEND_PORT2)
  --proxies LIST         subset of ringlb,nginx,haproxy,direct (default: all)
  --scenarios LIST       subset of small,16k,close          (default: all)
  --out DIR              report directory (default: bench/results/<timestamp>)
EOF
    exit "${1:-2}"
}

die() { echo "compare.sh: error: $*" >&2; exit 1; }
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --ringlb) RINGLB=$2; shift 2 ;;
        --backend-bin) BACKEND_BIN=$2; shift 2 ;;
        --proxy-cpus) PROXY_CPUS=$2; shift 2 ;;
        --load-cpus) LOAD_CPUS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --warmup) WARMUP=$2; shift 2 ;;
        --connections) CONNECTIONS=$2; shift 2 ;;
        --reps) REPS=$2; shift 2 ;;
        --wrk-threads) WRK_THREADS=$2; shift 2 ;;
        --backend-threads) BACKEND_THREADS=$2; shift 2 ;;
        --port-base) PORT_BASE=$2; shift 2 ;;
        --backend-ports) BACKEND_PORT1=${2%%,*}; BACKEND_PORT2=${2##*,}; shift 2 ;;
        --proxies) PROXIES=$2; shift 2 ;;
        --scenarios) SCENARIOS=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        -h|--help) usage 0 ;;
        *) echo "unknown option: $1" >&2; usage ;;
    esac
done

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }
for v in DURATION WARMUP CONNECTIONS REPS WRK_THREADS BACKEND_THREADS PORT_BASE BACKEND_PORT1 BACKEND_PORT2; do
    is_uint "${!v}" || die "$v must be a non-negative integer (got '${!v}')"
done
[ "$DURATION" -ge 1 ] && [ "$REPS" -ge 1 ] && [ "$CONNECTIONS" -ge 1 ] || die "duration, reps and connections must be >= 1"
[ "$CONNECTIONS" -ge "$WRK_THREADS" ] || die "--connections must be >= --wrk-threads"

PORT_RINGLB=$((PORT_BASE + 1))
PORT_NGINX=$((PORT_BASE + 2))
PORT_HAPROXY=$((PORT_BASE + 3))

# --------------------------------------------------------------- sanity
command -v taskset >/dev/null || die "taskset not found (util-linux)"
command -v "$WRK_BIN" >/dev/null || die "wrk not found (apt-get install -y wrk)"
[ -x "$PYTHON" ] || die "$PYTHON not found"
[ -x "$BACKEND_BIN" ] || die "backend binary '$BACKEND_BIN' missing: build it (meson compile -C build) or pass --backend-bin"
IFS=, read -r -a PROXY_LIST <<<"$PROXIES"
IFS=, read -r -a SCEN_LIST <<<"$SCENARIOS"
for p in "${PROXY_LIST[@]}"; do
    case "$p" in ringlb|nginx|haproxy|direct) ;; *) die "unknown proxy '$p'" ;; esac
done
for s in "${SCEN_LIST[@]}"; do
    case "$s" in small|16k|close) ;; *) die "unknown scenario '$s'" ;; esac
done

NCPU=$(getconf _NPROCESSORS_ONLN)
cpu_list_expand() { # "0-2,5" -> "0 1 2 5"
    local part out=()
    IFS=, read -r -a parts <<<"$1"
    for part in "${parts[@]}"; do
        if [[ $part =~ ^([0-9]+)-([0-9]+)$ ]]; then
            local i
            for ((i = BASH_REMATCH[1]; i <= BASH_REMATCH[2]; i++)); do out+=("$i"); done
        elif [[ $part =~ ^[0-9]+$ ]]; then
            out+=("$part")
        else
            die "bad cpu list '$1'"
        fi
    done
    echo "${out[@]}"
}
PROXY_CPU_SET=$(cpu_list_expand "$PROXY_CPUS")
LOAD_CPU_SET=$(cpu_list_expand "$LOAD_CPUS")
for c in $PROXY_CPU_SET $LOAD_CPU_SET; do
    [ "$c" -lt "$NCPU" ] || die "cpu $c does not exist (machine has $NCPU online)"
done
for c in $PROXY_CPU_SET; do
    for d in $LOAD_CPU_SET; do [ "$c" != "$d" ] || die "proxy and load cpu sets overlap (cpu $c)"; done
done
OTHER_CPU_SET=""
for ((c = 0; c < NCPU; c++)); do
    case " $PROXY_CPU_SET $LOAD_CPU_SET " in *" $c "*) ;; *) OTHER_CPU_SET+="$c " ;; esac
done

have_ringlb=1
RINGLB_SKIP_REASON=""
if [[ ",$PROXIES," == *,ringlb,* ]] && [ ! -x "$RINGLB" ]; then
    have_ringlb=0
    RINGLB_SKIP_REASON="binary '$RINGLB' not found or not executable"
    log "SKIP ringlb: $RINGLB_SKIP_REASON (build it, or pass --ringlb PATH)"
fi
if [[ ",$PROXIES," == *,nginx,* ]]; then [ -x "$NGINX_BIN" ] || die "nginx not found at $NGINX_BIN (apt-get install -y nginx-light)"; fi
if [[ ",$PROXIES," == *,haproxy,* ]]; then [ -x "$HAPROXY_BIN" ] || die "haproxy not found at $HAPROXY_BIN (apt-get install -y haproxy)"; fi

port_busy() { [ -n "$(ss -Htln "sport = :$1" 2>/dev/null)" ]; }
for p in "$BACKEND_PORT1" "$BACKEND_PORT2" "$PORT_RINGLB" "$PORT_NGINX" "$PORT_HAPROXY"; do
    port_busy "$p" && die "port $p is already in use (see: ss -ltnp 'sport = :$p'); free it or use --port-base/--backend-ports"
done

if [ -z "$OUT" ]; then
    OUT="$ROOT/bench/results/$(date -u +%Y%m%dT%H%M%SZ)"
fi
mkdir -p "$OUT/logs" "$OUT/nginx-tmp"
OUT=$(cd "$OUT" && pwd)
CSV="$OUT/runs.csv"
CLK_TCK=$(getconf CLK_TCK)
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
[ "$NOFILE" = unlimited ] && NOFILE=1048576
# Per-proxy connection cap: room for every client plus slack; each client
# connection costs the proxy ~2 fds (client + upstream) -> must fit NOFILE.
MAXCONN=$((CONNECTIONS * 2 + 1000))
[ $((MAXCONN * 2 + 200)) -le "$NOFILE" ] ||
    die "--connections $CONNECTIONS needs ~$((MAXCONN * 2 + 200)) fds per proxy but ulimit -n is $NOFILE"

# --------------------------------------------------------------- cleanup
declare -a STARTED=()      # every pid we started and may still have to kill
stop_pid() {               # stop_pid PID: TERM, wait up to 3 s, then KILL
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 30; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local i
    for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do
        stop_pid "${STARTED[$i]}"
    done
    [ $rc -eq 0 ] || log "aborted (rc=$rc); partial results in $OUT"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
forget_pid() {
    local keep=() p
    for p in "${STARTED[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    STARTED=("${keep[@]+"${keep[@]}"}")
}

# ------------------------------------------------------------ helpers
# All pids of a process tree rooted at $1 (root first).
proc_tree() {
    local queue=("$1") out=() p c
    while [ ${#queue[@]} -gt 0 ]; do
        p=${queue[0]}; queue=("${queue[@]:1}")
        [ -d "/proc/$p" ] || continue
        out+=("$p")
        # children by parent pid (/proc/PID/task/*/children needs CONFIG_PROC_CHILDREN)
        for c in $(pgrep -P "$p" || true); do queue+=("$c"); done
    done
    echo "${out[@]}"
}
# "utime stime" in clock ticks summed over the given pids (fields 14, 15).
cpu_ticks() {
    local u=0 s=0 p line rest
    for p in "$@"; do
        line=$(cat "/proc/$p/stat" 2>/dev/null) || continue
        rest=${line##*) }           # comm may contain spaces: cut after the last ')'
        read -r -a f <<<"$rest"     # f[0] is field 3 (state) -> field N is f[N-3]
        u=$((u + f[11])); s=$((s + f[12]))
    done
    echo "$u $s"
}
rss_kb() {
    local t=0 p v
    for p in "$@"; do
        v=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || true)
        t=$((t + ${v:-0}))
    done
    echo "$t"
}
# /proc/stat snapshot: one line per cpu "cpuN busy total" (jiffies).
stat_snap() { awk '/^cpu[0-9]+ / { t = 0; for (i = 2; i <= NF; i++) t += $i; idle = $5 + $6; print $1, t - idle, t }' /proc/stat; }
# busy% of a cpu set between two snapshots (files).
busy_pct() { # busy_pct before after "0 1"
    [ -n "$3" ] || { echo ""; return; }
    awk -v set=" $3 " '
        NR == FNR { b[$1] = $2; t[$1] = $3; next }
        { c = substr($1, 4); if (index(set, " " c " ")) { db += $2 - b[$1]; dt += $3 - t[$1] } }
        END { if (dt > 0) printf "%.1f", 100 * db / dt; }' "$1" "$2"
}

wait_ready() { # wait_ready PORT PID NAME: up to 10 s for a 200 through the proxy
    local port=$1 pid=$2 name=$3 i code=none
    for ((i = 0; i < 100; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            local rc=0
            wait "$pid" 2>/dev/null || rc=$?
            START_ERR="exited during start-up with status $rc"
            log "$name $START_ERR"
            return 1
        fi
        code=$(curl -s -o /dev/null -m 1 -w '%{http_code}' "http://127.0.0.1:$port/size/64" 2>/dev/null || true)
        [ "$code" = 200 ] && return 0
        sleep 0.1
    done
    START_ERR="no HTTP 200 on port $port within 10 s (last status '$code')"
    log "$name: $START_ERR"
    return 1
}
wait_port_free() {
    local i
    for ((i = 0; i < 50; i++)); do port_busy "$1" || return 0; sleep 0.1; done
    return 1
}

# ------------------------------------------------------------ configs
write_nginx_conf() {
    cat >"$OUT/nginx.conf" <<EOF
# generated by bench/compare.sh
worker_processes 1;
daemon off;
master_process on;
pid $OUT/nginx.pid;
error_log $OUT/logs/nginx-error.log warn;
worker_rlimit_nofile $NOFILE;
events {
    worker_connections $((MAXCONN * 2));
    use epoll;
}
http {
    access_log off;
    client_body_temp_path $OUT/nginx-tmp/body;
    proxy_temp_path $OUT/nginx-tmp/proxy;
    fastcgi_temp_path $OUT/nginx-tmp/fastcgi;
    uwsgi_temp_path $OUT/nginx-tmp/uwsgi;
    scgi_temp_path $OUT/nginx-tmp/scgi;
    # default is 1000; lift it so neither side is reconnected mid-run
    keepalive_requests 100000000;
    keepalive_timeout 60s;
    upstream backends {
        server 127.0.0.1:$BACKEND_PORT1;
        server 127.0.0.1:$BACKEND_PORT2;
        keepalive 64;
        keepalive_requests 100000000;
    }
    server {
        listen 127.0.0.1:$PORT_NGINX backlog=4096;
        location / {
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
}
write_haproxy_conf() {
    cat >"$OUT/haproxy.cfg" <<EOF
# generated by bench/compare.sh
global
    nbthread 1
    maxconn $MAXCONN
    # no 'log' line: logging off

defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s

frontend fe
    bind 127.0.0.1:$PORT_HAPROXY
    default_backend be

backend be
    balance roundrobin
    server s1 127.0.0.1:$BACKEND_PORT1
    server s2 127.0.0.1:$BACKEND_PORT2
EOF
}
RINGLB_ARGS=(--listen "127.0.0.1:$PORT_RINGLB" --backend "127.0.0.1:$BACKEND_PORT1"
    --backend "127.0.0.1:$BACKEND_PORT2" --workers 1)
ringlb_cmd() { echo "taskset -c $PROXY_CPUS $RINGLB ${RINGLB_ARGS[*]}"; }
write_wrk_lua() {
    cat >"$OUT/report.lua" <<'EOF'
-- generated by bench/compare.sh: print the run's figures in one parseable line
done = function(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        "WRKRESULT requests=%d duration_us=%d bytes=%d connect_err=%d read_err=%d write_err=%d status_err=%d timeout_err=%d p50_us=%d p90_us=%d p99_us=%d p999_us=%d max_us=%d mean_us=%.1f\n",
        summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
        latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
        latency.max, latency.mean))
end
EOF
}

write_nginx_conf
write_haproxy_conf
write_wrk_lua
ringlb_cmd >"$OUT/ringlb.cmdline"
if [[ ",$PROXIES," == *,nginx,* ]]; then
    "$NGINX_BIN" -t -q -e "$OUT/logs/nginx-error.log" -c "$OUT/nginx.conf" >"$OUT/logs/nginx-t.log" 2>&1 ||
        { cat "$OUT/logs/nginx-t.log" >&2; die "nginx rejected $OUT/nginx.conf"; }
fi
if [[ ",$PROXIES," == *,haproxy,* ]]; then
    "$HAPROXY_BIN" -c -q -f "$OUT/haproxy.cfg" >"$OUT/logs/haproxy-c.log" 2>&1 ||
        { cat "$OUT/logs/haproxy-c.log" >&2; die "haproxy rejected $OUT/haproxy.cfg"; }
fi

# ------------------------------------------------------------ backends
log "starting bench_backend on $BACKEND_PORT1,$BACKEND_PORT2 (cpus $LOAD_CPUS, $BACKEND_THREADS thread(s))"
taskset -c "$LOAD_CPUS" "$BACKEND_BIN" --port "$BACKEND_PORT1" --port "$BACKEND_PORT2" \
    --threads "$BACKEND_THREADS" >"$OUT/logs/backend.log" 2>&1 &
BACKEND_PID=$!
STARTED+=("$BACKEND_PID")
wait_ready "$BACKEND_PORT1" "$BACKEND_PID" bench_backend || die "backend did not start (see $OUT/logs/backend.log)"
wait_ready "$BACKEND_PORT2" "$BACKEND_PID" bench_backend || die "backend did not start (see $OUT/logs/backend.log)"

# ------------------------------------------------------------ environment
{
    echo "date_utc=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host=$(uname -n)"
    echo "kernel=$(uname -sr)"
    echo "cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
    echo "online_cpus=$NCPU"
    echo "proxy_cpus=$PROXY_CPUS"
    echo "proxy_cpu_count=$(wc -w <<<"$PROXY_CPU_SET")"
    echo "load_cpus=$LOAD_CPUS"
    echo "other_cpus=${OTHER_CPU_SET:-none}"
    echo "duration_s=$DURATION"
    echo "warmup_s=$WARMUP"
    echo "connections=$CONNECTIONS"
    echo "wrk_threads=$WRK_THREADS"
    echo "reps=$REPS"
    echo "backend_threads=$BACKEND_THREADS"
    echo "clk_tck=$CLK_TCK"
    echo "nginx=$("$NGINX_BIN" -v 2>&1 | sed 's/^nginx version: //')"
    echo "haproxy=$("$HAPROXY_BIN" -v 2>/dev/null | head -1 | awk '{print $3}')"
    echo "wrk=$("$WRK_BIN" -v 2>&1 | head -1 | awk '{print $2}')"
    if [ "$have_ringlb" = 1 ]; then echo "ringlb=$RINGLB"; else echo "ringlb=SKIPPED ($RINGLB_SKIP_REASON)"; fi
    if [ -f "$ROOT/.git/HEAD" ]; then
        head=$(cat "$ROOT/.git/HEAD")
        if [[ $head == ref:* ]]; then
            ref=${head#ref: }
            if [ -f "$ROOT/.git/$ref" ]; then
                echo "ringlb_commit=$(cat "$ROOT/.git/$ref")"
            elif c=$(awk -v r="$ref" '$2 == r { print $1; exit }' "$ROOT/.git/packed-refs" 2>/dev/null) && [ -n "$c" ]; then
                echo "ringlb_commit=$c"
            else
                echo "ringlb_commit=none (no commit on ${ref#refs/heads/} yet)"
            fi
        else
            echo "ringlb_commit=$head"
        fi
        # uncommitted changes cannot be detected without git; say so
        echo "ringlb_worktree=not checked (the script runs no git commands)"
    fi
    echo "ip_local_port_range=$(tr '\t' ' ' </proc/sys/net/ipv4/ip_local_port_range)"
    echo "tcp_tw_reuse=$(cat /proc/sys/net/ipv4/tcp_tw_reuse)"
    echo "somaxconn=$(cat /proc/sys/net/core/somaxconn)"
    echo "governor=$(cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor 2>/dev/null || echo n/a)"
    echo "loadavg_start=$(cut -d' ' -f1-3 /proc/loadavg)"
    # 2 s idle baseline with only the (idle) backend running
    stat_snap >"$OUT/.s0"; sleep 2; stat_snap >"$OUT/.s1"
    echo "idle_baseline_busy_pct_proxy_cpus=$(busy_pct "$OUT/.s0" "$OUT/.s1" "$PROXY_CPU_SET")"
    echo "idle_baseline_busy_pct_load_cpus=$(busy_pct "$OUT/.s0" "$OUT/.s1" "$LOAD_CPU_SET")"
    echo "idle_baseline_busy_pct_other_cpus=$(busy_pct "$OUT/.s0" "$OUT/.s1" "$OTHER_CPU_SET")"
} >"$OUT/env.txt"
base_busy=$(awk -F= '/^idle_baseline_busy_pct_proxy_cpus=/ {print $2}' "$OUT/env.txt")
awk -v b="${base_busy:-0}" 'BEGIN { exit !(b > 5) }' &&
    log "WARNING: proxy cpu(s) $PROXY_CPUS already ${base_busy}% busy while idle; results will be noisy"

# ------------------------------------------------------------ one run
CSV_HEADER="rep,scenario,proxy,status,requests,duration_s,rps,p50_us,p90_us,p99_us,p999_us,max_us,connect_err,read_err,write_err,timeout_err,status_err,cpu_user_us_per_req,cpu_sys_us_per_req,cpu_us_per_req,proxy_cpu_pct,rss_kb,proxy_cores_busy_pct,load_cores_busy_pct,other_cores_busy_pct,loadavg1,note"
echo "$CSV_HEADER" >"$CSV"

scenario_path() { case "$1" in small|close) echo /size/64 ;; 16k) echo /size/16384 ;; esac; }
scenario_hdr() { case "$1" in close) echo "Connection: close" ;; *) echo "" ;; esac; }

bad_row() { # bad_row REP SCEN PROXY STATUS PBUSY LBUSY OBUSY LOADAVG NOTE: a row without wrk figures
    local note=${9//\"/\'}
    # 4 key columns, 18 empty figure columns, 4 load columns, quoted note
    echo "$1,$2,$3,$4,,,,,,,,,,,,,,,,,,,$5,$6,$7,$8,\"$note\"" >>"$CSV"
}

PROXY_PID=""
START_ERR=""
start_proxy() { # start_proxy NAME TAG -> sets PROXY_PID, PORT
    local name=$1 tag=$2
    case "$name" in
        ringlb)
            PORT=$PORT_RINGLB
            taskset -c "$PROXY_CPUS" "$RINGLB" "${RINGLB_ARGS[@]}" >"$OUT/logs/ringlb-$tag.log" 2>&1 &
            ;;
        nginx)
            PORT=$PORT_NGINX
            taskset -c "$PROXY_CPUS" "$NGINX_BIN" -e "$OUT/logs/nginx-error.log" -c "$OUT/nginx.conf" \
                >"$OUT/logs/nginx-$tag.log" 2>&1 &
            ;;
        haproxy)
            PORT=$PORT_HAPROXY
            taskset -c "$PROXY_CPUS" "$HAPROXY_BIN" -db -f "$OUT/haproxy.cfg" >"$OUT/logs/haproxy-$tag.log" 2>&1 &
            ;;
        direct)
            PORT=$BACKEND_PORT1
            PROXY_PID=""
            return 0
            ;;
    esac
    PROXY_PID=$!
    STARTED+=("$PROXY_PID")
    wait_ready "$PORT" "$PROXY_PID" "$name"
}
stop_proxy() {
    [ -n "$PROXY_PID" ] || return 0
    stop_pid "$PROXY_PID"
    forget_pid "$PROXY_PID"
    PROXY_PID=""
    wait_port_free "$PORT" || log "WARNING: port $PORT still busy after stopping the proxy"
}

run_wrk() { # run_wrk SECS URL HDR OUTFILE
    local secs=$1 url=$2 hdr=$3 wfile=$4
    local args=(-t"$WRK_THREADS" -c"$CONNECTIONS" -d"${secs}s" --timeout 5s -s "$OUT/report.lua")
    [ -n "$hdr" ] && args+=(-H "$hdr")
    # in the background + wait, so that INT/TERM traps fire at once, not after wrk
    taskset -c "$LOAD_CPUS" "$WRK_BIN" "${args[@]}" "$url" >"$wfile" 2>&1 &
    local wp=$!
    STARTED+=("$wp")
    wait "$wp" || true
    forget_pid "$wp"
}

one_run() { # one_run REP SCENARIO PROXY
    local rep=$1 sc=$2 px=$3 tag="r$1-$2-$3"
    local path hdr url pids t0 t1 wout rss
    path=$(scenario_path "$sc"); hdr=$(scenario_hdr "$sc")
    if [ "$px" = ringlb ] && [ "$have_ringlb" = 0 ]; then
        bad_row "$rep" "$sc" "$px" skipped "" "" "" "" "$RINGLB_SKIP_REASON"
        return
    fi
    if ! start_proxy "$px" "$tag"; then
        local why
        why="$START_ERR; log: $(tail -n 3 "$OUT/logs/$px-$tag.log" 2>/dev/null | tr '\n",' '   ' | cut -c1-200)"
        log "FAIL $tag: proxy did not come up: $why"
        stop_proxy
        bad_row "$rep" "$sc" "$px" failed "" "" "" "" "start failed: $why"
        return
    fi
    url="http://127.0.0.1:$PORT$path"
    [ "$WARMUP" -gt 0 ] && run_wrk "$WARMUP" "$url" "$hdr" "$OUT/logs/wrk-$tag-warmup.txt"

    pids=""
    [ -n "$PROXY_PID" ] && pids=$(proc_tree "$PROXY_PID")
    # shellcheck disable=SC2086
    t0=$(cpu_ticks $pids)
    stat_snap >"$OUT/.stat0"
    run_wrk "$DURATION" "$url" "$hdr" "$OUT/logs/wrk-$tag.txt"
    stat_snap >"$OUT/.stat1"
    if [ -n "$PROXY_PID" ]; then
        # re-read the tree: a worker that was replaced mid-run would be missed
        local pids2; pids2=$(proc_tree "$PROXY_PID")
        [ "$pids2" = "$pids" ] || log "WARNING $tag: proxy process set changed during the run ($pids -> $pids2)"
        # shellcheck disable=SC2086
        t1=$(cpu_ticks $pids2)
        # shellcheck disable=SC2086
        rss=$(rss_kb $pids2)
    else
        t1="0 0"; rss=""
    fi
    local la; la=$(cut -d' ' -f1 /proc/loadavg)
    local pbusy lbusy obusy
    pbusy=$(busy_pct "$OUT/.stat0" "$OUT/.stat1" "$PROXY_CPU_SET")
    lbusy=$(busy_pct "$OUT/.stat0" "$OUT/.stat1" "$LOAD_CPU_SET")
    obusy=$(busy_pct "$OUT/.stat0" "$OUT/.stat1" "$OTHER_CPU_SET")
    local alive=1
    [ -z "$PROXY_PID" ] || kill -0 "$PROXY_PID" 2>/dev/null || alive=0
    stop_proxy

    wout=$(grep '^WRKRESULT ' "$OUT/logs/wrk-$tag.txt" || true)
    if [ -z "$wout" ]; then
        log "FAIL $tag: no wrk result (see logs/wrk-$tag.txt)"
        bad_row "$rep" "$sc" "$px" failed "$pbusy" "$lbusy" "$obusy" "$la" "no wrk result"
        return
    fi
    local row
    row=$(echo "$wout" | awk -v t0="$t0" -v t1="$t1" -v tck="$CLK_TCK" -v proxy="$px" -v rss="$rss" \
        -v rep="$rep" -v sc="$sc" -v alive="$alive" -v pb="$pbusy" -v lb="$lbusy" -v ob="$obusy" -v la="$la" '
        {
            for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
            split(t0, a, " "); split(t1, b, " ")
            req = v["requests"]; dur = v["duration_us"] / 1e6
            rps = dur > 0 ? req / dur : 0
            status = alive ? "ok" : "proxy-died"
            if (v["connect_err"] + v["read_err"] + v["write_err"] + v["timeout_err"] + v["status_err"] > 0 && status == "ok")
                status = "errors"
            if (proxy == "direct") { cu = cs = ct = cpct = "" }
            else {
                du = (b[1] - a[1]) * 1e6 / tck; ds = (b[2] - a[2]) * 1e6 / tck
                cu = req > 0 ? sprintf("%.3f", du / req) : ""
                cs = req > 0 ? sprintf("%.3f", ds / req) : ""
                ct = req > 0 ? sprintf("%.3f", (du + ds) / req) : ""
                cpct = dur > 0 ? sprintf("%.1f", (du + ds) / 1e6 / dur * 100) : ""
            }
            printf "%s,%s,%s,%s,%d,%.3f,%.1f,%d,%d,%d,%d,%d,%d,%d,%d,%d,%d,%s,%s,%s,%s,%s,%s,%s,%s,%s,\n",
                rep, sc, proxy, status, req, dur, rps, v["p50_us"], v["p90_us"], v["p99_us"], v["p999_us"], v["max_us"],
                v["connect_err"], v["read_err"], v["write_err"], v["timeout_err"], v["status_err"],
                cu, cs, ct, cpct, rss, pb, lb, ob, la
        }')
    echo "$row" >>"$CSV"
    log "$(echo "$row" | awk -F, '{ printf "%-4s %-6s %-8s %-10s rps=%-10s p50=%sus p99=%sus cpu/req=%sus errs=%d rss=%skB proxycore=%s%% loadcore=%s%%", "r"$1, $2, $3, $4, $7, $8, $10, $20, $13+$14+$15+$16+$17, $22, $23, $24 }')"
}

# ------------------------------------------------------------ main loop
total=$((REPS * ${#SCEN_LIST[@]} * ${#PROXY_LIST[@]}))
log "$total runs of ${DURATION}s (+${WARMUP}s warm-up) -> $OUT"
for ((rep = 1; rep <= REPS; rep++)); do
    for sc in "${SCEN_LIST[@]}"; do
        for px in "${PROXY_LIST[@]}"; do
            one_run "$rep" "$sc" "$px"
        done
    done
done
echo "loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/env.txt"
rm -f "$OUT/.s0" "$OUT/.s1" "$OUT/.stat0" "$OUT/.stat1"

# ------------------------------------------------------------ report
"$PYTHON" - "$OUT" "${PROXY_LIST[*]}" "${SCEN_LIST[*]}" <<'PYEOF'
import csv, os, statistics, sys

out, proxies, scenarios = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
rows = list(csv.DictReader(open(os.path.join(out, "runs.csv"))))
env = {}
for line in open(os.path.join(out, "env.txt")):
    if "=" in line:
        k, v = line.rstrip("\n").split("=", 1)
        env[k] = v

def num(r, k):
    v = r.get(k, "")
    try:
        return float(v)
    except ValueError:
        return None

def vals(rs, k):
    return [x for x in (num(r, k) for r in rs) if x is not None]

def med(xs):
    return statistics.median(xs) if xs else None

def fmt(x, nd=0):
    if x is None:
        return "–"
    return f"{x:,.{nd}f}"

def spread(xs, nd=0):
    if len(xs) < 2:
        return ""
    return f" ({fmt(min(xs), nd)}–{fmt(max(xs), nd)})"

desc = {"small": "GET /size/64, keep-alive",
        "16k": "GET /size/16384, keep-alive",
        "close": "GET /size/64, `Connection: close` (new client connection per request)"}

L = []
L.append("# ringlb benchmark: ringlb vs nginx vs HAProxy\n")
L.append(f"- date (UTC): {env.get('date_utc')}, host `{env.get('host')}`, {env.get('kernel')}, "
         f"{env.get('cpu_model')} ({env.get('online_cpus')} CPUs online, governor {env.get('governor')})")
L.append(f"- proxies pinned to CPU(s) {env.get('proxy_cpus')}, one worker each; wrk + backends pinned to CPU(s) "
         f"{env.get('load_cpus')}; other CPUs: {env.get('other_cpus')}")
L.append(f"- wrk {env.get('wrk')}: {env.get('wrk_threads')} thread(s), {env.get('connections')} connections, "
         f"{env.get('duration_s')} s per run after {env.get('warmup_s')} s warm-up, {env.get('reps')} repetition(s), "
         f"proxies interleaved within each repetition")
L.append(f"- nginx {env.get('nginx')}, HAProxy {env.get('haproxy')}, ringlb `{env.get('ringlb')}`"
         + (f" (commit {commit[:12] if len(commit) == 40 else commit})" if (commit := env.get('ringlb_commit', '')) else ""))
L.append(f"- backends: bench_backend ({env.get('backend_threads')} thread(s)), round-robin over 2 ports on 127.0.0.1")
L.append(f"- machine load: idle baseline before the runs: proxy CPUs {env.get('idle_baseline_busy_pct_proxy_cpus')}% busy, "
         f"load CPUs {env.get('idle_baseline_busy_pct_load_cpus')}% busy, other CPUs "
         f"{env.get('idle_baseline_busy_pct_other_cpus') or 'n/a'}%; loadavg start {env.get('loadavg_start')}, "
         f"end {env.get('loadavg_end')}")
L.append("")
L.append("Figures are medians over the repetitions; (min–max) is the spread. CPU µs/req counts user+system time of all "
         "the proxy's processes divided by completed requests; ×HAProxy is that median divided by HAProxy's median. "
         "Busy% columns are whole-core utilisation from /proc/stat during the measured run "
         "(proxy core = proxy + kernel work charged to that core; load core = wrk + backends). "
         "'Other on proxy core' = proxy-core busy time not charged to the proxy's processes (other tasks, "
         "kernel threads, interrupts): it should be small, otherwise something else was competing.")
L.append("")
for sc in scenarios:
    L.append(f"## {sc}: {desc.get(sc, sc)}\n")
    L.append("| proxy | runs | req/s | p50 µs | p99 µs | CPU µs/req | user µs/req | sys µs/req | ×HAProxy CPU | RSS kB | errors | proxy core busy % | other on proxy core % | load core busy % |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    hap = [r for r in rows if r["scenario"] == sc and r["proxy"] == "haproxy" and r["status"] in ("ok", "errors")]
    hap_cpu = med(vals(hap, "cpu_us_per_req"))
    for px in proxies:
        allr = [r for r in rows if r["scenario"] == sc and r["proxy"] == px]
        good = [r for r in allr if r["status"] in ("ok", "errors")]
        if not good:
            st = sorted(set(r["status"] for r in allr)) or ["not run"]
            note = next((r["note"] for r in allr if r.get("note")), "")
            L.append(f"| {px} | 0/{len(allr)} | {', '.join(st)}{': ' + note if note else ''} ||||||||||||")
            continue
        rps, p50, p99 = vals(good, "rps"), vals(good, "p50_us"), vals(good, "p99_us")
        cpu, cu, cs = vals(good, "cpu_us_per_req"), vals(good, "cpu_user_us_per_req"), vals(good, "cpu_sys_us_per_req")
        rss = vals(good, "rss_kb")
        errs = sum(int(num(r, k) or 0) for r in good
                   for k in ("connect_err", "read_err", "write_err", "timeout_err", "status_err"))
        pb, lb = vals(good, "proxy_cores_busy_pct"), vals(good, "load_cores_busy_pct")
        ncpu = float(env.get("proxy_cpu_count") or 1)
        other = [num(r, "proxy_cores_busy_pct") * ncpu - (num(r, "proxy_cpu_pct") or 0.0)
                 for r in good if num(r, "proxy_cores_busy_pct") is not None]
        ratio = "–"
        if px == "direct":
            ratio = "n/a"
        elif hap_cpu and med(cpu) is not None:
            ratio = f"{med(cpu) / hap_cpu:.2f}"
        L.append(f"| {px} | {len(good)}/{len(allr)} | {fmt(med(rps))}{spread(rps)} | {fmt(med(p50))}{spread(p50)} | "
                 f"{fmt(med(p99))}{spread(p99)} | {fmt(med(cpu), 2)}{spread(cpu, 2)} | {fmt(med(cu), 2)} | {fmt(med(cs), 2)} | "
                 f"{ratio} | {fmt(med(rss))} | {errs} | {fmt(med(pb), 1)} | {fmt(med(other), 1)} | {fmt(med(lb), 1)} |")
    L.append("")
noisy = []
for r in rows:
    pb, pc = num(r, "proxy_cores_busy_pct"), num(r, "proxy_cpu_pct")
    if pb is None or r["status"] not in ("ok", "errors"):
        continue
    other = pb * float(env.get("proxy_cpu_count") or 1) - (pc or 0.0)
    if other > 5.0:
        noisy.append((r, other))
if noisy:
    L.append("## Runs with other load on the proxy core (> 5% of a core not charged to the proxy)\n")
    L.append("Something else (another process, kernel threads, interrupts) used the proxy's core during these "
             "runs; treat their figures with care, or re-run on a quiet machine.\n")
    for r, other in noisy:
        L.append(f"- rep {r['rep']} {r['scenario']} {r['proxy']}: {other:.1f}% (loadavg {r['loadavg1']})")
    L.append("")
bad = [r for r in rows if r["status"] not in ("ok",)]
if bad:
    L.append("## Runs that were not clean\n")
    for r in bad:
        L.append(f"- rep {r['rep']} {r['scenario']} {r['proxy']}: {r['status']} {r.get('note', '')}")
    L.append("")
L.append(f"Per-run data: `runs.csv`; generated configs: `nginx.conf`, `haproxy.cfg`, `ringlb.cmdline`, `report.lua`; "
         "raw wrk output and proxy logs: `logs/`; environment: `env.txt`.")
text = "\n".join(L) + "\n"
open(os.path.join(out, "report.md"), "w").write(text)
sys.stdout.write(text)
PYEOF
log "report: $OUT/report.md  runs: $CSV"
