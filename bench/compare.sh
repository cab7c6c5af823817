#!/usr/bin/env bash
# bench/compare.sh — ringlb vs nginx vs HAProxy (plus Envoy, Caddy, h2o, Varnish when
# installed), a bare TCP relay (the physical floor) and a direct-to-backend upper bound,
# on one machine: same backends, same load, same CPU set, interleaved repetitions.
#
#   bench/compare.sh                      # default matrix, 3 reps x 5 s (<= 20 min on 2 cores)
#   bench/compare.sh --quick              # 1 rep x 3 s, a subset (~3 min)
#   bench/compare.sh --scenarios ka-1k,close-0,openloop --reps 5
#   bench/compare.sh --scale              # adds 100 and 10,000-connection runs
#   bench/compare.sh --scenarios ka-0,ka-1k --reps 5 --proxies ringlb,ringlb-lc,ringlb-p2c,ringlb-hash
#                                         # ringlb's balancing algorithms against its round-robin row
#   bench/compare.sh --scenarios cache --proxies ringlb,nginx,haproxy,varnish,nginx-return
#                                         # response-cache hits: one cacheable URL, every row caching in memory
#
# See bench/README.md for the options, scenarios, columns and the fairness notes.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR="$ROOT/bench"

# ---------------------------------------------------------------- defaults
RINGLB="$ROOT/build/ringlb"
BACKEND_BIN="$ROOT/build/bench/bench_backend"
RELAY_BIN="$ROOT/build/bench/bench_relay"
OPENLOOP_BIN="$ROOT/build/bench/bench_openloop"
TLS_HS_BIN="$ROOT/build/bench/bench_tls_handshake"
OPENSSL_BIN=${OPENSSL_BIN:-openssl}
NGINX_BIN=${NGINX_BIN:-/usr/sbin/nginx}
HAPROXY_BIN=${HAPROXY_BIN:-/usr/sbin/haproxy}
ENVOY_BIN=${ENVOY_BIN:-$(command -v envoy || true)}
CADDY_BIN=${CADDY_BIN:-$(command -v caddy || true)}
H2O_BIN=${H2O_BIN:-$(command -v h2o || true)}
VARNISHD_BIN=${VARNISHD_BIN:-$(command -v varnishd || true)}
WRK_BIN=${WRK_BIN:-wrk}
GNUPLOT_BIN=${GNUPLOT_BIN:-gnuplot}
PYTHON=/usr/bin/python3
PROXY_CPUS=1
LOAD_CPUS=0
DURATION=5
WARMUP=1
REPS=3
WRK_THREADS=""
BACKEND_THREADS=""
PORT_BASE=18000
CONFIGS_ONLY=0
BACKEND_PORT1=9001
BACKEND_PORT2=9002
PROXIES=""
SCENARIOS=""
RATE=""
RATE_DEFAULT=20000
RATE_FRACTION=50
MAX_RETRIES=2
DISTURB_PCT=5
QUICK=0
SCALE=0
TLS=0
CACHE=0
CACHE_MIN_HIT=0.99          # a cache row below this hit ratio in the measured window is flagged not-caching
CACHE_MAX_AGE=3600
CACHE_DIR_OPT=""
VARNISH_CACHE_MEM=256m      # varnish -s malloc size in the cache scenarios
OUT=""
RINGLB_MAX_IDLE=""

DEFAULT_SCENARIOS="ka-0,ka-1k,ka-16k,ka-256k,ka-1m,close-0,close-1k,ka-1k-c1,ka-1k-c1000,upload-1m,openloop"
QUICK_SCENARIOS="ka-0,ka-16k,ka-1m,close-0,ka-1k-c1000,upload-1m,openloop"
SCALE_SCENARIOS="ka-1k-c1,ka-1k-c100,ka-1k-c1000,ka-1k-c10000"
# `tls` in --scenarios (or --tls) stands for these; only ringlb, nginx and HAProxy have TLS rows
TLS_SCENARIOS="tls-ka-0,tls-ka-256k,tls-hs-full,tls-hs-resume"
# `cache` in --scenarios (or --cache) stands for these; rows ringlb, nginx, haproxy, varnish, nginx-return
CACHE_SCENARIOS="cache-1k,cache-64k"

usage() {
    cat <<EOF
usage: $0 [options]
  --quick                1 rep, 3 s, scenarios $QUICK_SCENARIOS
  --scale                add the connection-scaling runs ($SCALE_SCENARIOS)
  --tls                  add the TLS runs ($TLS_SCENARIOS)
  --cache                add the response-cache runs ($CACHE_SCENARIOS)
  --scenarios LIST       comma list (default: $DEFAULT_SCENARIOS)
                         names: ka-SIZE[-cN], close-SIZE[-cN], upload-SIZE[-cN], openloop[-SIZE][-cN],
                         tls-ka-SIZE[-cN] (wrk over TLS), tls-hs-full|resume[-tls12][-cN] (handshakes/s,
                         bench_tls_handshake; TLS 1.3 unless -tls12), and 'tls' for all four TLS runs,
                         cache-SIZE[-cN] (wrk keep-alive GETs of one URL the origin marks
                         'Cache-Control: public, max-age=$CACHE_MAX_AGE': cache hits), and 'cache' for $CACHE_SCENARIOS
                         SIZE: bytes, or with k/m suffix (0, 1k, 16k, 256k, 1m); N: connections (default 64)
  --proxies LIST         rows, from ringlb,nginx,haproxy,envoy,caddy,h2o,varnish,relay,direct
                         (default: ringlb,nginx,haproxy, every installed one of envoy/caddy/h2o/varnish, relay, direct)
                         plus, on request only, ringlb-lc, ringlb-p2c, ringlb-hash: the ringlb row's config
                         with balance least_conn / p2c / hash (Maglev on the client address)
                         and nginx-return (cache scenarios only: nginx answering the same bytes from
                         memory, the floor; in the default list when a cache scenario runs)
  --proxy-cpus LIST      taskset list for the proxies; one worker per CPU   (default: $PROXY_CPUS)
  --load-cpus LIST       taskset list for the load generator + backends     (default: $LOAD_CPUS)
  --duration SECS        measured seconds per run                           (default: $DURATION)
  --warmup SECS          unmeasured warm-up before each run                 (default: $WARMUP)
  --reps N               repetitions                                        (default: $REPS)
  --rate R               open-loop request rate (default: $RATE_FRACTION% of the lowest proxy req/s in
                         ka-0/ka-1k at 64 connections earlier in this run, else $RATE_DEFAULT)
  --max-retries N        re-runs of a disturbed run                         (default: $MAX_RETRIES)
  --disturb-pct P        'other on proxy cores' above P% of a core = disturbed (default: $DISTURB_PCT)
  --wrk-threads N        wrk (and bench_tls_handshake) threads (default: one per load CPU)
  --backend-threads N    bench_backend threads (default: one per load CPU)
  --port-base N          proxies listen on N+1..N+9, ringlb-lc/-p2c/-hash on N+10..N+12, nginx-return on
                         N+13 (default: $PORT_BASE)
  --cache-dir DIR        memory-backed directory for nginx's proxy_cache and nginx-return's files
                         (default: /dev/shm/ringlb-bench.PID, removed at exit)
  --cache-min-hit R      cache rows with a lower hit ratio in the measured window are flagged
                         not-caching (default: $CACHE_MIN_HIT)
  --configs-only         write the proxies' configs into --out and stop (bench/profile.sh uses them)
  --backend-ports A,B    the two backend ports                              (default: $BACKEND_PORT1,$BACKEND_PORT2)
  --ringlb-max-idle N    keepalive.max_idle (per backend per worker) of every ringlb row (default: K/2, K in
                         all over the two backends like nginx 'keepalive K'; K = max(64, largest connection count))
  --ringlb PATH  --backend-bin PATH  --relay-bin PATH  --openloop-bin PATH  --tls-handshake-bin PATH
  --out DIR              report directory (default: bench/results/<UTC timestamp>)
EOF
    exit "${1:-2}"
}

die() { echo "compare.sh: error: $*" >&2; exit 1; }
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

SCEN_OPT=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1; shift ;;
        --scale) SCALE=1; shift ;;
        --tls) TLS=1; shift ;;
        --cache) CACHE=1; shift ;;
        --cache-dir) CACHE_DIR_OPT=$2; shift 2 ;;
        --cache-min-hit) CACHE_MIN_HIT=$2; shift 2 ;;
        --tls-handshake-bin) TLS_HS_BIN=$2; shift 2 ;;
        --ringlb) RINGLB=$2; shift 2 ;;
        --ringlb-max-idle) RINGLB_MAX_IDLE=$2; shift 2 ;;
        --backend-bin) BACKEND_BIN=$2; shift 2 ;;
        --relay-bin) RELAY_BIN=$2; shift 2 ;;
        --openloop-bin) OPENLOOP_BIN=$2; shift 2 ;;
        --proxy-cpus) PROXY_CPUS=$2; shift 2 ;;
        --load-cpus) LOAD_CPUS=$2; shift 2 ;;
        --duration) DURATION=$2; DUR_SET=1; shift 2 ;;
        --warmup) WARMUP=$2; shift 2 ;;
        --reps) REPS=$2; REPS_SET=1; shift 2 ;;
        --rate) RATE=$2; shift 2 ;;
        --max-retries) MAX_RETRIES=$2; shift 2 ;;
        --disturb-pct) DISTURB_PCT=$2; shift 2 ;;
        --wrk-threads) WRK_THREADS=$2; shift 2 ;;
        --backend-threads) BACKEND_THREADS=$2; shift 2 ;;
        --port-base) PORT_BASE=$2; shift 2 ;;
        --configs-only) CONFIGS_ONLY=1; shift ;;
        --backend-ports) BACKEND_PORT1=${2%%,*}; BACKEND_PORT2=${2##*,}; shift 2 ;;
        --proxies) PROXIES=$2; shift 2 ;;
        --scenarios) SCEN_OPT=$2; shift 2 ;;
        --connections) die "--connections is gone: put the count in the scenario name, e.g. ka-1k-c200" ;;
        --out) OUT=$2; shift 2 ;;
        -h|--help) usage 0 ;;
        *) echo "unknown option: $1" >&2; usage ;;
    esac
done
if [ "$QUICK" = 1 ]; then
    [ -n "${REPS_SET:-}" ] || REPS=1
    [ -n "${DUR_SET:-}" ] || DURATION=3
    SCENARIOS=${SCEN_OPT:-$QUICK_SCENARIOS}
else
    SCENARIOS=${SCEN_OPT:-$DEFAULT_SCENARIOS}
fi
[ "$SCALE" = 1 ] && SCENARIOS="$SCENARIOS,$SCALE_SCENARIOS"
[ "$TLS" = 1 ] && SCENARIOS="$SCENARIOS,$TLS_SCENARIOS"
[ "$CACHE" = 1 ] && SCENARIOS="$SCENARIOS,$CACHE_SCENARIOS"

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }
for v in DURATION WARMUP REPS PORT_BASE BACKEND_PORT1 BACKEND_PORT2 MAX_RETRIES RATE_DEFAULT; do
    is_uint "${!v}" || die "$v must be a non-negative integer (got '${!v}')"
done
[[ $DISTURB_PCT =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "--disturb-pct must be a number"
[[ $CACHE_MIN_HIT =~ ^(0(\.[0-9]+)?|1(\.0*)?)$ ]] || die "--cache-min-hit must be a number from 0 to 1"
[ -z "$RATE" ] || { is_uint "$RATE" && [ "$RATE" -ge 1 ]; } || die "--rate must be a positive integer"
[ -z "$RINGLB_MAX_IDLE" ] || is_uint "$RINGLB_MAX_IDLE" || die "--ringlb-max-idle must be a non-negative integer"
[ "$DURATION" -ge 1 ] && [ "$REPS" -ge 1 ] || die "duration and reps must be >= 1"

PORT_RINGLB=$((PORT_BASE + 1)); PORT_NGINX=$((PORT_BASE + 2)); PORT_HAPROXY=$((PORT_BASE + 3))
PORT_RELAY=$((PORT_BASE + 4)); PORT_ENVOY=$((PORT_BASE + 5)); PORT_CADDY=$((PORT_BASE + 6))
PORT_H2O=$((PORT_BASE + 7)); PORT_VARNISH=$((PORT_BASE + 8)); PORT_VARNISH_ADMIN=$((PORT_BASE + 9))
PORT_NGINX_RETURN=$((PORT_BASE + 13))
# ringlb rows: the same binary and config, one balancing algorithm each (ringlb-* only on request)
declare -A RINGLB_BALANCE=([ringlb]=round_robin [ringlb-lc]=least_conn [ringlb-p2c]=p2c [ringlb-hash]=hash)
declare -A RINGLB_PORT=([ringlb]=$PORT_RINGLB [ringlb-lc]=$((PORT_BASE + 10)) [ringlb-p2c]=$((PORT_BASE + 11))
    [ringlb-hash]=$((PORT_BASE + 12)))
is_ringlb() { [ -n "${RINGLB_BALANCE[$1]:-}" ]; }

# --------------------------------------------------------------- cpu sets
NCPU=$(getconf _NPROCESSORS_ONLN)
cpu_list_expand() { # "0-2,5" -> "0 1 2 5"
    local part out=() i
    IFS=, read -r -a parts <<<"$1"
    for part in "${parts[@]}"; do
        if [[ $part =~ ^([0-9]+)-([0-9]+)$ ]]; then
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
NPROXY_CPU=$(wc -w <<<"$PROXY_CPU_SET")
NLOAD_CPU=$(wc -w <<<"$LOAD_CPU_SET")
WORKERS=$NPROXY_CPU                       # one worker per proxy CPU, for every proxy
[ -n "$WRK_THREADS" ] || WRK_THREADS=$NLOAD_CPU
[ -n "$BACKEND_THREADS" ] || BACKEND_THREADS=$NLOAD_CPU
is_uint "$WRK_THREADS" && [ "$WRK_THREADS" -ge 1 ] || die "--wrk-threads must be >= 1"
is_uint "$BACKEND_THREADS" && [ "$BACKEND_THREADS" -ge 1 ] || die "--backend-threads must be >= 1"

# --------------------------------------------------------------- tools
command -v taskset >/dev/null || die "taskset not found (util-linux)"
command -v "$WRK_BIN" >/dev/null || die "wrk not found (apt-get install -y wrk)"
command -v curl >/dev/null || die "curl not found"
[ -x "$PYTHON" ] || die "$PYTHON not found"
[ -x "$BACKEND_BIN" ] || die "backend binary '$BACKEND_BIN' missing: build it (ninja -C build) or pass --backend-bin"

if [ -z "$PROXIES" ]; then
    PROXIES="ringlb,nginx,haproxy"
    [ -n "$ENVOY_BIN" ] && PROXIES+=",envoy"
    [ -n "$CADDY_BIN" ] && PROXIES+=",caddy"
    [ -n "$H2O_BIN" ] && PROXIES+=",h2o"
    [ -n "$VARNISHD_BIN" ] && PROXIES+=",varnish"
    PROXIES+=",relay,direct"
    # the cache scenarios' floor row, only when one of them runs
    [[ ,$SCENARIOS, =~ ,cache(-[^,]*)?, ]] && PROXIES+=",nginx-return"
fi
IFS=, read -r -a PROXY_LIST <<<"$PROXIES"
declare -A SKIP=()          # row -> reason it is skipped for the whole run
for p in "${PROXY_LIST[@]}"; do
    case "$p" in
        ringlb|ringlb-lc|ringlb-p2c|ringlb-hash) [ -x "$RINGLB" ] || SKIP[$p]="binary '$RINGLB' not found" ;;
        nginx|nginx-return) [ -x "$NGINX_BIN" ] || die "nginx not found at $NGINX_BIN (apt-get install -y nginx-light)" ;;
        haproxy) [ -x "$HAPROXY_BIN" ] || die "haproxy not found at $HAPROXY_BIN (apt-get install -y haproxy)" ;;
        envoy) [ -n "$ENVOY_BIN" ] || SKIP[$p]="envoy not installed" ;;
        caddy) [ -n "$CADDY_BIN" ] || SKIP[$p]="caddy not installed" ;;
        h2o) [ -n "$H2O_BIN" ] || SKIP[$p]="h2o not installed" ;;
        varnish) [ -n "$VARNISHD_BIN" ] || SKIP[$p]="varnishd not installed" ;;
        relay) [ -x "$RELAY_BIN" ] || SKIP[$p]="binary '$RELAY_BIN' not found" ;;
        direct) ;;
        *) die "unknown proxy '$p'" ;;
    esac
    [ -z "${SKIP[$p]:-}" ] || log "SKIP $p: ${SKIP[$p]}"
done

# --------------------------------------------------------------- fds
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
[ "$NOFILE" = unlimited ] && NOFILE=1048576
# A proxied connection costs the proxy 2 fds (client + upstream): cap the
# concurrency a scenario may ask for so that every proxy fits ulimit -n.
CONN_CAP=$(((NOFILE - 400) / 2))

# --------------------------------------------------------------- scenarios
# scen_parse NAME: sets S_KIND (ka|close|upload|openloop|tls-ka|tls-hs|cache) S_SIZE S_CONNS S_REQ_CONNS S_PATH S_HDR,
# S_TLS (1 for the TLS kinds), S_HS_MODE (full|resume) and S_TLS_VER (1.3|1.2) for tls-hs, S_CACHE (1 for cache)
size_bytes() {
    case "$1" in
        *[kK]) echo $((${1%[kK]} * 1024)) ;;
        *[mM]) echo $((${1%[mM]} * 1048576)) ;;
        *) echo "$1" ;;
    esac
}
scen_parse() {
    local n=$1 sz c
    S_TLS=0; S_HS_MODE=""; S_TLS_VER=""; S_CACHE=0
    if [[ $n =~ ^(ka|close|upload)-([0-9]+[kKmM]?)(-c([0-9]+))?$ ]]; then
        S_KIND=${BASH_REMATCH[1]}; sz=${BASH_REMATCH[2]}; c=${BASH_REMATCH[4]:-64}
    elif [[ $n =~ ^openloop(-([0-9]+[kKmM]?))?(-c([0-9]+))?$ ]]; then
        S_KIND=openloop; sz=${BASH_REMATCH[2]:-1k}; c=${BASH_REMATCH[4]:-64}
    elif [[ $n =~ ^tls-ka-([0-9]+[kKmM]?)(-c([0-9]+))?$ ]]; then
        S_KIND="tls-ka"; S_TLS=1; sz=${BASH_REMATCH[1]}; c=${BASH_REMATCH[3]:-64}
    elif [[ $n =~ ^tls-hs-(full|resume)(-tls12)?(-c([0-9]+))?$ ]]; then
        # one small GET / per connection (bench_backend answers any other path with 0 bytes)
        S_KIND="tls-hs"; S_TLS=1; S_HS_MODE=${BASH_REMATCH[1]}; sz=0; c=${BASH_REMATCH[4]:-64}
        S_TLS_VER=1.3; [ -z "${BASH_REMATCH[2]}" ] || S_TLS_VER=1.2
    elif [[ $n =~ ^cache-([0-9]+[kKmM]?)(-c([0-9]+))?$ ]]; then
        # wrk keep-alive GETs of one URL whose response the origin marks cacheable
        S_KIND=cache; S_CACHE=1; sz=${BASH_REMATCH[1]}; c=${BASH_REMATCH[3]:-64}
    else
        return 1
    fi
    S_SIZE=$(size_bytes "$sz")
    S_REQ_CONNS=$c
    [ "$c" -ge 1 ] || return 1
    S_CONNS=$c
    [ "$c" -le "$CONN_CAP" ] || S_CONNS=$CONN_CAP
    S_HDR=""
    case "$S_KIND" in
        upload) S_PATH=/size/0 ;;  # the body goes up, nothing comes back
        close) S_PATH=/size/$S_SIZE; S_HDR="Connection: close" ;;
        tls-hs) S_PATH=/ ;;
        cache) S_PATH="/size/$S_SIZE?max-age=$CACHE_MAX_AGE" ;;  # bench_backend: Cache-Control: public, max-age=N
        *) S_PATH=/size/$S_SIZE ;;
    esac
    return 0
}
IFS=, read -r -a SCEN_IN <<<"$SCENARIOS"
# expand the `tls` and `cache` group names
SCEN_X=()
for s in "${SCEN_IN[@]}"; do
    if [ "$s" = tls ]; then IFS=, read -r -a tl <<<"$TLS_SCENARIOS"; SCEN_X+=("${tl[@]}")
    elif [ "$s" = cache ]; then IFS=, read -r -a tl <<<"$CACHE_SCENARIOS"; SCEN_X+=("${tl[@]}")
    else SCEN_X+=("$s"); fi
done
SCEN_IN=("${SCEN_X[@]}")
SCEN_LIST=()
declare -A SEEN=()
OPENLOOP_SCENS=()
MAXC=64
HAVE_TLS=0                  # a TLS scenario is in the list
HAVE_TLS_HS=0               # a tls-hs scenario is in the list
HAVE_CACHE=0                # a cache scenario is in the list
CACHE_SIZES=()              # their response sizes (nginx-return has one location per size)
for s in "${SCEN_IN[@]}"; do
    [ -n "$s" ] || continue
    [ -z "${SEEN[$s]:-}" ] || continue
    SEEN[$s]=1
    scen_parse "$s" || die "unknown scenario '$s' (see --help)"
    [ "$S_CONNS" -gt "$MAXC" ] && MAXC=$S_CONNS
    [ "$S_TLS" = 0 ] || HAVE_TLS=1
    [ "$S_KIND" != tls-hs ] || HAVE_TLS_HS=1
    if [ "$S_CACHE" = 1 ]; then
        HAVE_CACHE=1
        case " ${CACHE_SIZES[*]-} " in *" $S_SIZE "*) ;; *) CACHE_SIZES+=("$S_SIZE") ;; esac
    fi
    [ "$S_CONNS" = "$S_REQ_CONNS" ] || log "NOTE $s: $S_REQ_CONNS connections capped to $S_CONNS (ulimit -n hard limit $NOFILE, 2 fds per proxied connection)"
    # open-loop runs go last in each repetition (their rate may depend on the others)
    if [ "$S_KIND" = openloop ]; then OPENLOOP_SCENS+=("$s"); else SCEN_LIST+=("$s"); fi
done
SCEN_LIST+=("${OPENLOOP_SCENS[@]+"${OPENLOOP_SCENS[@]}"}")
[ ${#SCEN_LIST[@]} -gt 0 ] || die "no scenarios"

# Which rows a scenario has. The cache scenarios run the rows that can cache (ringlb, nginx, HAProxy,
# Varnish) and the nginx-return floor; nginx-return runs nowhere else. The others are left out of the
# cache scenarios entirely (no CSV row): bench_relay and direct have no cache, and Envoy, Caddy, h2o
# and the ringlb-lc/-p2c/-hash variants have no cache config here.
has_cache_row() { case "$1" in ringlb|nginx|haproxy|varnish|nginx-return) return 0 ;; *) return 1 ;; esac; }
applicable() { # applicable SCENARIO ROW
    scen_parse "$1"
    if [ "$S_CACHE" = 1 ]; then has_cache_row "$2"; else [ "$2" != nginx-return ]; fi
}
HAVE_OPENSSL=0
command -v "$OPENSSL_BIN" >/dev/null && HAVE_OPENSSL=1
[ "$HAVE_TLS" = 0 ] || [ "$HAVE_OPENSSL" = 1 ] ||
    die "the TLS scenarios need the openssl command line tool for their certificate (apt-get install -y openssl)"

port_busy() { [ -n "$(ss -Htln "sport = :$1" 2>/dev/null)" ]; }
EXTRA_PORTS=()              # the ports of the ringlb-* rows, checked only when they run
for p in "${PROXY_LIST[@]}"; do
    [ "$p" = ringlb ] || ! is_ringlb "$p" || EXTRA_PORTS+=("${RINGLB_PORT[$p]}")
    [ "$p" != nginx-return ] || [ "$HAVE_CACHE" = 0 ] || EXTRA_PORTS+=("$PORT_NGINX_RETURN")
done
for p in "$BACKEND_PORT1" "$BACKEND_PORT2" $(seq $((PORT_BASE + 1)) $((PORT_BASE + 9))) \
    "${EXTRA_PORTS[@]+"${EXTRA_PORTS[@]}"}"; do
    [ "$CONFIGS_ONLY" = 1 ] || ! port_busy "$p" || die "port $p is already in use (see: ss -ltnp 'sport = :$p'); free it or use --port-base/--backend-ports"
done

if [ -z "$OUT" ]; then
    OUT="$ROOT/bench/results/$(date -u +%Y%m%dT%H%M%SZ)"
fi
mkdir -p "$OUT/logs" "$OUT/nginx-tmp"
OUT=$(cd "$OUT" && pwd)
CSV="$OUT/runs.csv"
TLS_DIR="$OUT/tls"
CLK_TCK=$(getconf CLK_TCK)
# Memory-backed directory for nginx's proxy_cache (a file cache: on tmpfs its files are page cache) and
# nginx-return's bodies above nginx's 4,094-byte limit for a config string. Only created when a cache
# scenario is in the list; removed at exit, except with --configs-only (the configs name it).
CACHE_DIR_MADE=0
if [ -n "$CACHE_DIR_OPT" ]; then
    CACHE_DIR=$CACHE_DIR_OPT
elif [ -d /dev/shm ] && [ -w /dev/shm ]; then
    CACHE_DIR=/dev/shm/ringlb-bench.$$
else
    CACHE_DIR=$OUT/cache-tmp
fi
NGINX_CACHE_DIR=$CACHE_DIR/nginx-cache
NGINX_RETURN_DIR=$CACHE_DIR/nginx-return
NGINX_RETURN_LITERAL_MAX=4094   # longest string nginx's config parser takes in one token (measured, 1.22)
if [ "$HAVE_CACHE" = 1 ]; then
    if [ ! -d "$CACHE_DIR" ]; then
        mkdir -p "$CACHE_DIR" || die "cannot create the cache directory $CACHE_DIR"
        [ -n "$CACHE_DIR_OPT" ] || CACHE_DIR_MADE=1
    fi
    CACHE_DIR=$(cd "$CACHE_DIR" && pwd)
    NGINX_CACHE_DIR=$CACHE_DIR/nginx-cache
    NGINX_RETURN_DIR=$CACHE_DIR/nginx-return
    CACHE_FS=$(stat -f -c %T "$CACHE_DIR" 2>/dev/null || echo unknown)
    [ "$CACHE_FS" = tmpfs ] || [ "$CACHE_FS" = ramfs ] ||
        log "WARNING: cache directory $CACHE_DIR is on $CACHE_FS, not tmpfs: nginx's cache is then not memory-backed"
fi

# Connection-dependent sizes, the same for every proxy: the biggest scenario sets them.
KEEP=$MAXC                                   # idle upstream connections kept (per worker, both backends)
[ "$KEEP" -ge 64 ] || KEEP=64
HAP_MAXCONN=$((MAXC + 1000))
[ "$HAP_MAXCONN" -le $(((NOFILE - 100) / 2)) ] || HAP_MAXCONN=$(((NOFILE - 100) / 2))
RINGLB_MAXCONN=$((2 * MAXC + 1000))
RINGLB_IDLE_NOTE="per backend per worker: $KEEP in all, like nginx 'keepalive $KEEP'"
RINGLB_MAX_IDLE_SET=0
if [ -n "$RINGLB_MAX_IDLE" ]; then
    RINGLB_MAX_IDLE_SET=1
    RINGLB_IDLE_NOTE="per backend per worker: set with --ringlb-max-idle (default $(((KEEP + 1) / 2)))"
else
    RINGLB_MAX_IDLE=$(((KEEP + 1) / 2))
fi
[ "$RINGLB_MAXCONN" -ge 16384 ] || RINGLB_MAXCONN=16384
NGINX_WCONN=$((2 * MAXC + 1000))

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
    # the tmpfs directory this script made (never one given with --cache-dir; kept with --configs-only)
    if [ "$CACHE_DIR_MADE" = 1 ] && [ "$CONFIGS_ONLY" = 0 ] && [[ $CACHE_DIR == /dev/shm/ringlb-bench.* ]]; then
        rm -rf -- "$CACHE_DIR"
    fi
    [ $rc -eq 0 ] || log "aborted (rc=$rc); partial results in $OUT"
    exit $rc
}
trap cleanup EXIT
set -E
trap 'rc=$?; [ "$BASH_SUBSHELL" -gt 0 ] || log "internal error: line $LINENO: $BASH_COMMAND exited with $rc"' ERR
trap 'exit 130' INT
trap 'exit 143' TERM
forget_pid() {
    local keep=() p
    for p in "${STARTED[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    STARTED=("${keep[@]+"${keep[@]}"}")
}

# ------------------------------------------------------------ helpers
proc_tree() { # all pids of the tree rooted at $1 (root first)
    local queue=("$1") out=() p c
    while [ ${#queue[@]} -gt 0 ]; do
        p=${queue[0]}; queue=("${queue[@]:1}")
        [ -d "/proc/$p" ] || continue
        out+=("$p")
        for c in $(pgrep -P "$p" || true); do queue+=("$c"); done
    done
    echo "${out[@]}"
}
cpu_ticks() { # "utime stime" in clock ticks summed over the given pids (fields 14, 15; threads included)
    local u=0 s=0 p line rest
    local -a f
    for p in "$@"; do
        line=$(cat "/proc/$p/stat" 2>/dev/null) || continue
        rest=${line##*) }
        read -r -a f <<<"$rest"
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
# CPU µs of this shell's waited-for children (wrk / bench_openloop), from the `times` builtin.
# Must run in this shell, not in a subshell, hence the file.
children_cpu_us() { # -> CHILD_US (not echoed: a $(...) subshell would report its own, empty, children)
    times >"$OUT/.times"
    CHILD_US=$(awk 'NR == 2 {
        t = 0
        for (i = 1; i <= 2; i++) { split($i, a, "m"); sub("s", "", a[2]); t += a[1] * 60 + a[2] }
        printf "%.0f", t * 1e6 }' "$OUT/.times")
}
# /proc/stat snapshot: "cpuN busy total steal" (jiffies; busy includes steal, i.e. time the hypervisor gave to others)
stat_snap() { awk '/^cpu[0-9]+ / { t = 0; for (i = 2; i <= NF; i++) t += $i; idle = $5 + $6; print $1, t - idle, t, $9 }' /proc/stat; }
steal_pct() { # steal_pct before after "0 1": % of that cpu set's time stolen by the hypervisor
    [ -n "$3" ] || { echo ""; return; }
    awk -v set=" $3 " '
        NR == FNR { s[$1] = $4; t[$1] = $3; next }
        { c = substr($1, 4); if (index(set, " " c " ")) { ds += $4 - s[$1]; dt += $3 - t[$1] } }
        END { if (dt > 0) printf "%.1f", 100 * ds / dt; }' "$1" "$2"
}
busy_pct() { # busy_pct before after "0 1": busy % of that cpu set between two snapshots
    [ -n "$3" ] || { echo ""; return; }
    awk -v set=" $3 " '
        NR == FNR { b[$1] = $2; t[$1] = $3; next }
        { c = substr($1, 4); if (index(set, " " c " ")) { db += $2 - b[$1]; dt += $3 - t[$1] } }
        END { if (dt > 0) printf "%.1f", 100 * db / dt; }' "$1" "$2"
}
# Every thread on the machine: "tgid tid ticks last_cpu" (utime+stime, fields 14/15 and 39).
task_snap() {
    # grep exits 2 when a thread vanished between the glob and the read: not an error here
    { grep -H '' /proc/[0-9]*/task/[0-9]*/stat 2>/dev/null || true; } |
        awk '{ split($0, h, ":"); split(h[1], p, "/"); l = $0; sub(/.*\) /, "", l); split(l, a, " ")
               c = $0; sub(/^[^(]*\(/, "", c); sub(/\) [^)]*$/, "", c); gsub(/ /, "_", c)
               print p[3], p[5], a[12] + a[13], a[37], c }'
}
# other_procs SNAP0 SNAP1 "our tgids" "proxy cpus" -> "ticks_on_proxy_cpus ticks_elsewhere ksoftirqd_on_proxy_cpus"
# used by threads that are not ours (threads that both started and ended inside the window are missed).
# ksoftirqd is counted apart: it mostly runs network softirqs raised by the benchmark's own traffic.
other_procs() {
    awk -v ours=" $3 " -v set=" $4 " '
        NR == FNR { t0[$2] = $3; next }
        index(ours, " " $1 " ") == 0 {
            d = $3 - ($2 in t0 ? t0[$2] : 0)
            if (d <= 0) next
            if ($5 ~ /^ksoftirqd\//) { if (index(set, " " $4 " ")) k += d; next }
            if (index(set, " " $4 " ")) p += d; else e += d
        }
        END { printf "%d %d %d\n", p, e, k }' "$1" "$2"
}
other_top() { # the 3 busiest other processes: "comm(pid):ticks ..."
    awk -v ours=" $3 " '
        NR == FNR { t0[$2] = $3; next }
        index(ours, " " $1 " ") == 0 { d = $3 - ($2 in t0 ? t0[$2] : 0); if (d > 0) s[$1] += d }
        END { for (k in s) print s[k], k }' "$1" "$2" | sort -rn | awk 'NR <= 3' |
        while read -r t p; do printf '%s(%s):%sms ' "$(cat "/proc/$p/comm" 2>/dev/null || echo '?')" "$p" "$((t * 1000 / CLK_TCK))"; done
}
calc() { awk "BEGIN { printf \"%.${2:-3}f\", ($1) }"; }

START_ERR=""
wait_ready() { # wait_ready PORT PID NAME [https]: up to 10 s for a 200 through the proxy
    local port=$1 pid=$2 name=$3 scheme=${4:-http} i code=none crc tls_err=0 cerr=""
    for ((i = 0; i < 100; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            local rc=0
            wait "$pid" 2>/dev/null || rc=$?
            START_ERR="exited during start-up with status $rc"
            START_RC=$rc
            return 1
        fi
        crc=0
        code=$(curl -sS -k -o /dev/null -m 1 -w '%{http_code}' "$scheme://127.0.0.1:$port/size/64" 2>"$OUT/.curlerr") || crc=$?
        [ "$code" = 200 ] && return 0
        if [ "$scheme" = https ] && [ "$crc" = 35 ]; then
            # TCP accepted, TLS handshake failed: after 2 s of that, say why instead of waiting 10 s
            cerr=$(tr '\n' ' ' <"$OUT/.curlerr" | cut -c1-160)
            if [ $((++tls_err)) -ge 20 ]; then
                code=$(curl -s -o /dev/null -m 1 -w '%{http_code}' "http://127.0.0.1:$port/size/64" 2>/dev/null || true)
                if [ "$code" != 000 ] && [ -n "$code" ]; then
                    START_ERR="$name answers plain HTTP ($code) on its TLS port $port: it does not terminate TLS with this config"
                else
                    START_ERR="TLS handshake with $name on port $port fails: $cerr"
                fi
                START_RC=""
                return 1
            fi
        fi
        sleep 0.1
    done
    START_ERR="no HTTP 200 on port $port within 10 s (last status '$code'${cerr:+; $cerr})"
    START_RC=""
    return 1
}
wait_port_free() {
    local i
    for ((i = 0; i < 50; i++)); do port_busy "$1" || return 0; sleep 0.1; done
    return 1
}

# ------------------------------------------------------------ configs
# Every proxy: the two backends, round-robin, upstream keep-alive (up to $KEEP idle
# connections per worker), no access log, $WORKERS worker(s).
write_ringlb_yaml() { # write_ringlb_yaml ROW [tls|cache]: $OUT/ROW.yaml, or $OUT/ROW-tls.yaml: the same with a TLS
                      # listener, or $OUT/ROW-cache.yaml: the same with the response cache;
                      # the ringlb rows differ in port and balance only
    local row=$1 tls=${2:-} hash_note="" max_idle=$RINGLB_MAX_IDLE idle_note=$RINGLB_IDLE_NOTE file=$OUT/$1.yaml tls_block=""
    local cache_block=""
    if [ "$tls" = cache ]; then
        file=$OUT/$row-cache.yaml
        # the agreed cache section: per-worker memory budget, largest object, X-Cache / Cache-Status headers
        cache_block="
cache:
  size: 64m            # per worker
  max_object: 8m
  status_header: true  # X-Cache: HIT|MISS|... and Cache-Status (every cache row sends a status header)"
    elif [ "$tls" = tls ]; then
        file=$OUT/$row-tls.yaml
        # the agreed listener format (docs/tls.md); protocols (TLS 1.2 + 1.3), session tickets (on) and
        # ciphers are ringlb's defaults; ktls: the kernel takes the records where it can, else userspace TLS
        tls_block="
    tls:
      certificates:
        - cert: $TLS_DIR/cert.pem
          key: $TLS_DIR/key.pem
      ktls: true"
    fi
    if [ "${RINGLB_BALANCE[$row]}" = hash ]; then
        hash_note="   # key: client_ip (the default): wrk's one client address maps to one backend"
        # nginx's 'keepalive K' is per pool: when hashing puts every connection on one
        # backend, the pool's whole idle budget may sit there.
        if [ "$RINGLB_MAX_IDLE_SET" = 0 ]; then
            max_idle=$KEEP
            idle_note="the pool's whole budget, as nginx 'keepalive $KEEP': hashing puts it all on one backend"
        fi
    fi
    cat >"$file" <<EOF
# generated by bench/compare.sh
workers: $WORKERS
max_connections: $RINGLB_MAXCONN
listeners:
  - name: bench
    address: 127.0.0.1:${RINGLB_PORT[$row]}
    backlog: 4096$tls_block
pools:
  - name: backends
    balance: ${RINGLB_BALANCE[$row]}$hash_note
    keepalive:
      max_idle: $max_idle   # $idle_note
      idle_timeout: 60s
    backends:
      - 127.0.0.1:$BACKEND_PORT1
      - 127.0.0.1:$BACKEND_PORT2
vhosts:
  - hosts: ["*"]
    routes:
      - path: /
        pool: backends$cache_block
EOF
}
# nginx_conf [tls], haproxy_cfg [tls]: the config on stdout; with "tls" the listener terminates TLS with
# the run's certificate (TLS 1.2 + 1.3, session tickets on, each program's default ciphers, the client's
# cipher preference), everything else identical.
nginx_conf() {
    local tls=${1:-} tls_lines="" cache_http="" cache_loc=""
    if [ "$tls" = cache ]; then
        tls=""
        # proxy_cache is a file cache: its directory is on tmpfs, so a hit reads the page cache.
        # keys_zone in shared memory, the default key ($scheme$proxy_host$request_uri); the lock lets one
        # request fill an entry while the others wait for it. sendfile and open_file_cache are nginx's
        # cheapest way to send a cached file (measured: 64 KiB hits 16 instead of 23 CPU µs, 1 KiB even).
        cache_http="
    proxy_cache_path $NGINX_CACHE_DIR levels=1:2 keys_zone=bench:10m max_size=256m inactive=1h use_temp_path=off;"
        cache_loc="
            proxy_cache bench;
            proxy_cache_valid 200 1h;
            proxy_cache_lock on;
            # the response head in one buffer, a 64 KiB body in memory (the cache file is written anyway)
            proxy_buffer_size 16k;
            proxy_buffers 8 16k;
            sendfile on;
            open_file_cache max=1000 inactive=60s;
            open_file_cache_valid 60s;
            add_header X-Cache \$upstream_cache_status always;"
    fi
    [ -z "$tls" ] || tls_lines="
        ssl_certificate $TLS_DIR/cert.pem;
        ssl_certificate_key $TLS_DIR/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        # tickets on (the default, stated) like ringlb and HAProxy; the shared cache serves TLS 1.2
        # session-ID resumption (HAProxy has one by default); ssl_session_timeout: default 5m
        ssl_session_tickets on;
        ssl_session_cache shared:SSL:10m;
        # ssl_ciphers, ssl_ecdh_curve: defaults; ssl_prefer_server_ciphers off (default): the client's order"
    cat <<EOF
# generated by bench/compare.sh
worker_processes $WORKERS;
daemon off;
master_process on;
pid $OUT/nginx.pid;
error_log $OUT/logs/nginx-error.log warn;
worker_rlimit_nofile $NOFILE;
events {
    worker_connections $NGINX_WCONN;
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
    # stream request bodies (the upload scenario) like the others instead of spooling to disk
    client_max_body_size 0;
    proxy_request_buffering off;$cache_http
    upstream backends {
        server 127.0.0.1:$BACKEND_PORT1;
        server 127.0.0.1:$BACKEND_PORT2;
        keepalive $KEEP;
        keepalive_requests 100000000;
        keepalive_timeout 60s;
    }
    server {
        listen 127.0.0.1:$PORT_NGINX${tls:+ ssl} backlog=4096;$tls_lines
        location / {
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";$cache_loc
        }
    }
}
EOF
}
# nginx_return_conf: the cache scenarios' floor. nginx answers GET /size/N (the query is ignored) with the
# same status, similar headers and the same N bytes from memory: `return 200 "..."` for bodies up to
# $NGINX_RETURN_LITERAL_MAX bytes (the longest string nginx's config parser takes); a longer body is a file on
# tmpfs sent with sendfile through open_file_cache, nginx's cheapest in-memory way to send it (cheaper than
# `return` with a string built from variables, which copies it per request: see bench/README.md).
nginx_return_conf() {
    local sz locs="" body
    for sz in "${CACHE_SIZES[@]+"${CACHE_SIZES[@]}"}"; do
        if [ "$sz" -le "$NGINX_RETURN_LITERAL_MAX" ]; then
            body=$(head -c "$sz" /dev/zero | tr '\0' x)
            locs+="
        location = /size/$sz {
            add_header Cache-Control \"public, max-age=$CACHE_MAX_AGE\";
            add_header ETag '\"bench-v1\"';
            add_header Last-Modified \"Thu, 01 Jan 2026 00:00:00 GMT\";
            add_header X-Cache HIT;
            return 200 \"$body\";
        }"
        else
            # nginx sends its own ETag and Last-Modified (the file's mtime: the origin's date)
            locs+="
        location = /size/$sz {
            root $NGINX_RETURN_DIR;
            sendfile on;
            open_file_cache max=1000 inactive=60s;
            open_file_cache_valid 60s;
            add_header Cache-Control \"public, max-age=$CACHE_MAX_AGE\";
            add_header X-Cache HIT;
        }"
        fi
    done
    cat <<EOF
# generated by bench/compare.sh: the cache scenarios' floor (no proxying, no cache: the bytes from memory)
worker_processes $WORKERS;
daemon off;
master_process on;
pid $OUT/nginx-return.pid;
error_log $OUT/logs/nginx-return-error.log warn;
worker_rlimit_nofile $NOFILE;
events {
    worker_connections $NGINX_WCONN;
    use epoll;
}
http {
    access_log off;
    client_body_temp_path $OUT/nginx-tmp/body;
    proxy_temp_path $OUT/nginx-tmp/proxy;
    fastcgi_temp_path $OUT/nginx-tmp/fastcgi;
    uwsgi_temp_path $OUT/nginx-tmp/uwsgi;
    scgi_temp_path $OUT/nginx-tmp/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 60s;
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:$PORT_NGINX_RETURN backlog=4096;$locs
        # anything else (the readiness probe): an empty 200
        location / {
            return 200 "";
        }
    }
}
EOF
}
# nginx-return's bodies above the literal limit: files of N 'x' bytes (bench_backend's body) dated like the origin's
write_nginx_return_files() {
    local sz
    mkdir -p "$NGINX_RETURN_DIR/size" && chmod 755 "$CACHE_DIR" "$NGINX_RETURN_DIR" "$NGINX_RETURN_DIR/size" || return 1
    for sz in "${CACHE_SIZES[@]+"${CACHE_SIZES[@]}"}"; do
        [ "$sz" -gt "$NGINX_RETURN_LITERAL_MAX" ] || continue
        head -c "$sz" /dev/zero | tr '\0' x >"$NGINX_RETURN_DIR/size/$sz" || return 1
        chmod 644 "$NGINX_RETURN_DIR/size/$sz"
        touch -d '2026-01-01 00:00:00 UTC' "$NGINX_RETURN_DIR/size/$sz"
    done
}
haproxy_cfg() {
    local tls=${1:-} tls_global="" cache_sec="" cache_fe="" cache_be=""
    if [ "$tls" = cache ]; then
        tls=""
        # HAProxy's cache lives in shared memory (total-max-size in MB); max-object-size like ringlb's
        # max_object; max-age caps the origin's max-age (default 60 s). No lock: concurrent misses all go
        # to the origin (the warm-up takes them).
        cache_sec="
cache bench
    total-max-size 256
    max-object-size 8388608
    max-age $CACHE_MAX_AGE
"
        cache_fe="
    http-response set-header X-Cache HIT if { res.cache_hit }
    http-response set-header X-Cache MISS if !{ res.cache_hit }"
        cache_be="
    http-request cache-use bench
    http-response cache-store bench"
    fi
    # prefer-client-ciphers: HAProxy prefers its own order by default, nginx and ringlb the client's;
    # tickets are on by default, tune.ssl.cachesize (the TLS 1.2 session-ID cache) stays at its default
    [ -z "$tls" ] || tls_global="
    ssl-default-bind-options ssl-min-ver TLSv1.2 prefer-client-ciphers"
    cat <<EOF
# generated by bench/compare.sh
global
    nbthread $WORKERS
    maxconn $HAP_MAXCONN
    # by default HAProxy closes idle server connections once 25% of its fds are in use,
    # which at 1,000+ clients turns upstream keep-alive into a connect per request
    tune.pool-low-fd-ratio 80
    tune.pool-high-fd-ratio 90
    # no 'log' line: logging off$tls_global

defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
$cache_sec
frontend fe
    bind 127.0.0.1:$PORT_HAPROXY${tls:+ ssl crt $TLS_DIR/haproxy.pem} backlog 4096$cache_fe
    default_backend be

backend be
    balance roundrobin$cache_be
    server s1 127.0.0.1:$BACKEND_PORT1
    server s2 127.0.0.1:$BACKEND_PORT2
EOF
}
# The TLS scenarios' certificate, the same file for every proxy: ECDSA P-256, self-signed, SAN localhost
# and 127.0.0.1. HAProxy wants the key in the same file (haproxy.pem).
write_tls_files() {
    mkdir -p "$TLS_DIR"
    "$OPENSSL_BIN" req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
        -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -keyout "$TLS_DIR/key.pem" -out "$TLS_DIR/cert.pem" >"$OUT/logs/tls-cert.log" 2>&1 || return 1
    cat "$TLS_DIR/cert.pem" "$TLS_DIR/key.pem" >"$TLS_DIR/haproxy.pem"
    chmod 600 "$TLS_DIR/key.pem" "$TLS_DIR/haproxy.pem"
}
write_configs() {
    local p
    write_ringlb_yaml ringlb
    for p in "${PROXY_LIST[@]}"; do
        [ "$p" = ringlb ] || ! is_ringlb "$p" || write_ringlb_yaml "$p"
    done
    nginx_conf >"$OUT/nginx.conf"
    haproxy_cfg >"$OUT/haproxy.cfg"
    # the cache scenarios' configs: each row's plain config plus its cache, and the nginx-return floor
    write_ringlb_yaml ringlb cache
    nginx_conf cache >"$OUT/nginx-cache.conf"
    haproxy_cfg cache >"$OUT/haproxy-cache.cfg"
    nginx_return_conf >"$OUT/nginx-return.conf"
    if [ "$HAVE_CACHE" = 1 ]; then
        write_nginx_return_files || die "cannot write nginx-return's files into $NGINX_RETURN_DIR"
    fi
    # the TLS rows' configs (ringlb, nginx, HAProxy only) and their certificate
    if [ "$HAVE_OPENSSL" = 0 ]; then
        log "NOTE: openssl not found: no TLS certificate and configs written"
    elif ! write_tls_files; then
        [ "$HAVE_TLS" = 0 ] || die "could not create the TLS certificate: $(tail -n 3 "$OUT/logs/tls-cert.log")"
        log "NOTE: could not create the TLS certificate (logs/tls-cert.log): no TLS configs written"
    else
        write_ringlb_yaml ringlb tls
        nginx_conf tls >"$OUT/nginx-tls.conf"
        haproxy_cfg tls >"$OUT/haproxy-tls.cfg"
    fi
    cat >"$OUT/envoy.yaml" <<EOF
# generated by bench/compare.sh (run with --concurrency $WORKERS; no access log configured)
static_resources:
  listeners:
  - name: bench
    address: { socket_address: { address: 127.0.0.1, port_value: $PORT_ENVOY } }
    per_connection_buffer_limit_bytes: 1048576
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          codec_type: HTTP1
          generate_request_id: false
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: backends, timeout: 60s }
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
              dynamic_stats: false
  clusters:
  - name: backends
    connect_timeout: 5s
    type: STATIC
    lb_policy: ROUND_ROBIN
    per_connection_buffer_limit_bytes: 1048576
    circuit_breakers:
      thresholds:
      - { max_connections: 1000000, max_pending_requests: 1000000, max_requests: 1000000 }
    load_assignment:
      cluster_name: backends
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: $BACKEND_PORT1 } } }
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: $BACKEND_PORT2 } } }
EOF
    cat >"$OUT/Caddyfile" <<EOF
# generated by bench/compare.sh (run with GOMAXPROCS=$WORKERS; Caddy writes no access log unless told to)
{
    admin off
    auto_https off
    persist_config off
}
http://127.0.0.1:$PORT_CADDY {
    reverse_proxy 127.0.0.1:$BACKEND_PORT1 127.0.0.1:$BACKEND_PORT2 {
        lb_policy round_robin
        transport http {
            keepalive 60s
            keepalive_idle_conns $KEEP
        }
    }
}
EOF
    cat >"$OUT/h2o.conf" <<EOF
# generated by bench/compare.sh
num-threads: $WORKERS
max-connections: $HAP_MAXCONN
user: nobody
pid-file: $OUT/h2o.pid
error-log: $OUT/logs/h2o-error.log
proxy.timeout.keepalive: 60000
listen:
  host: 127.0.0.1
  port: $PORT_H2O
hosts:
  default:
    paths:
      /:
        proxy.reverse.url: [ "http://127.0.0.1:$BACKEND_PORT1/", "http://127.0.0.1:$BACKEND_PORT2/" ]
EOF
    cat >"$OUT/varnish.vcl" <<EOF
vcl 4.1;
# generated by bench/compare.sh: no caching (every request is passed to a backend),
# round-robin; run with -p thread_pools=$WORKERS. Varnish logs to shared memory only.
import directors;
backend b1 { .host = "127.0.0.1"; .port = "$BACKEND_PORT1"; }
backend b2 { .host = "127.0.0.1"; .port = "$BACKEND_PORT2"; }
sub vcl_init {
    new rr = directors.round_robin();
    rr.add_backend(b1);
    rr.add_backend(b2);
}
sub vcl_recv {
    set req.backend_hint = rr.backend();
    return (pass);
}
EOF
    cat >"$OUT/varnish-cache.vcl" <<EOF
vcl 4.1;
# generated by bench/compare.sh: the cache scenarios' Varnish. The built-in vcl_recv looks a GET up
# in the cache (no Cookie or Authorization here); the origin's max-age sets the TTL. Objects in
# memory (-s malloc,$VARNISH_CACHE_MEM). Run with -p thread_pools=$WORKERS; logs to shared memory only.
import directors;
backend b1 { .host = "127.0.0.1"; .port = "$BACKEND_PORT1"; }
backend b2 { .host = "127.0.0.1"; .port = "$BACKEND_PORT2"; }
sub vcl_init {
    new rr = directors.round_robin();
    rr.add_backend(b1);
    rr.add_backend(b2);
}
sub vcl_recv {
    set req.backend_hint = rr.backend();
}
sub vcl_deliver {
    if (obj.hits > 0) {
        set resp.http.X-Cache = "HIT";
    } else {
        set resp.http.X-Cache = "MISS";
    }
}
EOF
    # wrk scripts: one parseable result line; the upload script also sets the POST body
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
write_upload_lua() { # write_upload_lua BYTES -> path
    local lf="$OUT/upload-$1.lua"
    [ -f "$lf" ] || {
        cat "$OUT/report.lua"
        cat <<EOF
-- POST a $1-byte body (Content-Length) to the scenario's path
wrk.method = "POST"
wrk.body = string.rep("x", $1)
wrk.headers["Content-Type"] = "application/octet-stream"
EOF
    } >"$lf"
    echo "$lf"
}
RELAY_ARGS=(--listen "127.0.0.1:$PORT_RELAY" --backend "127.0.0.1:$BACKEND_PORT1" --backend "127.0.0.1:$BACKEND_PORT2")

write_configs
if [ "$CONFIGS_ONLY" = 1 ]; then
    [ "$HAVE_CACHE" = 0 ] || echo "cache scenarios: nginx's cache directory and nginx-return's files are in $CACHE_DIR (kept; remove it when done)"
    echo "configs written to $OUT"
    exit 0
fi
{
    echo "ringlb:  taskset -c $PROXY_CPUS $RINGLB -c $OUT/ringlb.yaml"
    for p in "${PROXY_LIST[@]}"; do
        [ "$p" = ringlb ] || ! is_ringlb "$p" || echo "$p: taskset -c $PROXY_CPUS $RINGLB -c $OUT/$p.yaml"
    done
    echo "nginx:   taskset -c $PROXY_CPUS $NGINX_BIN -e $OUT/logs/nginx-error.log -c $OUT/nginx.conf"
    echo "haproxy: taskset -c $PROXY_CPUS $HAPROXY_BIN -db -f $OUT/haproxy.cfg"
    echo "envoy:   taskset -c $PROXY_CPUS ${ENVOY_BIN:-envoy} -c $OUT/envoy.yaml --concurrency $WORKERS --disable-hot-restart -l warning"
    echo "caddy:   GOMAXPROCS=$WORKERS taskset -c $PROXY_CPUS ${CADDY_BIN:-caddy} run --config $OUT/Caddyfile --adapter caddyfile"
    echo "h2o:     taskset -c $PROXY_CPUS ${H2O_BIN:-h2o} -c $OUT/h2o.conf"
    echo "varnish: taskset -c $PROXY_CPUS ${VARNISHD_BIN:-varnishd} -F -n $OUT/varnish-work -a 127.0.0.1:$PORT_VARNISH -T 127.0.0.1:$PORT_VARNISH_ADMIN -f $OUT/varnish.vcl -s malloc,64m -p thread_pools=$WORKERS"
    echo "relay:   taskset -c $PROXY_CPUS $RELAY_BIN ${RELAY_ARGS[*]}"
    echo "direct:  (no proxy: load generator -> 127.0.0.1:$BACKEND_PORT1)"
    echo "backend: taskset -c $LOAD_CPUS $BACKEND_BIN --port $BACKEND_PORT1 --port $BACKEND_PORT2 --threads $BACKEND_THREADS"
    echo "wrk:     taskset -c $LOAD_CPUS $WRK_BIN -t<min($WRK_THREADS,conns)> -c<conns> -d<secs>s --timeout 5s -s report.lua|upload-N.lua [-H 'Connection: close'] URL"
    echo "openloop: taskset -c $LOAD_CPUS $OPENLOOP_BIN --url URL --rate R --duration S --connections C --warmup 0"
    echo "# TLS scenarios (rows ringlb, nginx, haproxy; same ports, TLS configs):"
    echo "ringlb-tls:  taskset -c $PROXY_CPUS $RINGLB -c $OUT/ringlb-tls.yaml"
    echo "nginx-tls:   taskset -c $PROXY_CPUS $NGINX_BIN -e $OUT/logs/nginx-error.log -c $OUT/nginx-tls.conf"
    echo "haproxy-tls: taskset -c $PROXY_CPUS $HAPROXY_BIN -db -f $OUT/haproxy-tls.cfg"
    echo "wrk (tls-ka): the wrk line above with https://127.0.0.1:PORT/size/N"
    echo "# cache scenarios (rows ringlb, nginx, haproxy, varnish with their cache configs; nginx-return the floor):"
    echo "ringlb-cache:  taskset -c $PROXY_CPUS $RINGLB -c $OUT/ringlb-cache.yaml"
    echo "nginx-cache:   taskset -c $PROXY_CPUS $NGINX_BIN -e $OUT/logs/nginx-error.log -c $OUT/nginx-cache.conf   (cache dir $NGINX_CACHE_DIR, emptied before each run)"
    echo "haproxy-cache: taskset -c $PROXY_CPUS $HAPROXY_BIN -db -f $OUT/haproxy-cache.cfg"
    echo "varnish-cache: taskset -c $PROXY_CPUS ${VARNISHD_BIN:-varnishd} -F -n $OUT/varnish-work -a 127.0.0.1:$PORT_VARNISH -T 127.0.0.1:$PORT_VARNISH_ADMIN -f $OUT/varnish-cache.vcl -s malloc,$VARNISH_CACHE_MEM -p thread_pools=$WORKERS"
    echo "nginx-return:  taskset -c $PROXY_CPUS $NGINX_BIN -e $OUT/logs/nginx-return-error.log -c $OUT/nginx-return.conf   (bodies above $NGINX_RETURN_LITERAL_MAX bytes: $NGINX_RETURN_DIR)"
    echo "wrk (cache-SIZE): the wrk line above with http://127.0.0.1:PORT/size/SIZE?max-age=$CACHE_MAX_AGE; origin counter: curl http://127.0.0.1:$BACKEND_PORT1/bench-backend/stats"
    echo "tls-hs:  taskset -c $LOAD_CPUS $TLS_HS_BIN --host 127.0.0.1 --port PORT --concurrency C --duration S --mode full|resume --tls 1.3|1.2 --sni localhost --path / --threads $WRK_THREADS"
} >"$OUT/cmdlines.txt"

check_config() { # check_config NAME CMD...: a rejected config skips that row
    local name=$1; shift
    if ! "$@" >"$OUT/logs/$name-check.log" 2>&1; then
        SKIP[$name]="config rejected: $(tail -n 2 "$OUT/logs/$name-check.log" | tr '\n",' '   ' | cut -c1-200)" || true
        log "SKIP $name: ${SKIP[$name]}"
    fi
}
# The TLS scenarios run the ringlb, nginx and HAProxy rows with their TLS configs; a rejected TLS
# config skips that row's TLS scenarios only.
declare -A SKIP_TLS=()
has_tls_row() { case "$1" in ringlb|nginx|haproxy) return 0 ;; *) return 1 ;; esac; }
check_tls_config() { # check_tls_config NAME CMD...
    local name=$1; shift
    if ! "$@" >"$OUT/logs/$name-tls-check.log" 2>&1; then
        SKIP_TLS[$name]="TLS config rejected ($name failed to start with it): $(grep -v '^\s*$' "$OUT/logs/$name-tls-check.log" | tail -n 2 | tr '\n",' '   ' | cut -c1-200)" || true
        log "SKIP $name TLS scenarios: ${SKIP_TLS[$name]}"
    fi
}
for p in "${PROXY_LIST[@]}"; do
    [ -z "${SKIP[$p]:-}" ] || continue
    case "$p" in
        ringlb|ringlb-*) check_config "$p" "$RINGLB" -t -c "$OUT/$p.yaml" ;;
        nginx) check_config nginx "$NGINX_BIN" -t -q -e "$OUT/logs/nginx-error.log" -c "$OUT/nginx.conf" ;;
        haproxy) check_config haproxy "$HAPROXY_BIN" -c -q -f "$OUT/haproxy.cfg" ;;
        envoy) check_config envoy "$ENVOY_BIN" --mode validate -c "$OUT/envoy.yaml" ;;
        caddy) check_config caddy "$CADDY_BIN" validate --config "$OUT/Caddyfile" --adapter caddyfile ;;
        h2o) check_config h2o "$H2O_BIN" -t -c "$OUT/h2o.conf" ;;
        varnish) check_config varnish "$VARNISHD_BIN" -C -n "$OUT/varnish-work" -f "$OUT/varnish.vcl" ;;
    esac
done
# The cache scenarios run each cache row with its cache config; a rejected one skips that row's cache
# scenarios only (ringlb before its cache lands: "unknown key cache"). nginx-return runs nowhere else.
declare -A SKIP_CACHE=()
check_cache_config() { # check_cache_config NAME CMD...
    local name=$1; shift
    if ! "$@" >"$OUT/logs/$name-cache-check.log" 2>&1; then
        SKIP_CACHE[$name]="cache config rejected: $(grep -v '^\s*$' "$OUT/logs/$name-cache-check.log" | tail -n 2 | tr '\n",' '   ' | cut -c1-200)" || true
        log "SKIP $name cache scenarios: ${SKIP_CACHE[$name]}"
    fi
}
if [ "$HAVE_CACHE" = 1 ]; then
    for p in "${PROXY_LIST[@]}"; do
        [ -z "${SKIP[$p]:-}" ] || continue
        case "$p" in
            ringlb) check_cache_config ringlb "$RINGLB" -t -c "$OUT/ringlb-cache.yaml" ;;
            nginx) check_cache_config nginx "$NGINX_BIN" -t -q -e "$OUT/logs/nginx-error.log" -c "$OUT/nginx-cache.conf" ;;
            haproxy) check_cache_config haproxy "$HAPROXY_BIN" -c -q -f "$OUT/haproxy-cache.cfg" ;;
            varnish) check_cache_config varnish "$VARNISHD_BIN" -C -n "$OUT/varnish-work" -f "$OUT/varnish-cache.vcl" ;;
            nginx-return) check_cache_config nginx-return "$NGINX_BIN" -t -q -e "$OUT/logs/nginx-return-error.log" -c "$OUT/nginx-return.conf" ;;
        esac
    done
    crows=""
    for p in "${PROXY_LIST[@]}"; do ! has_cache_row "$p" || crows+="$p "; done
    log "cache scenarios: rows ${crows:-none }(other rows are left out of them)"
fi
TLSHS_SKIP=""
if [ "$HAVE_TLS" = 1 ]; then
    for p in "${PROXY_LIST[@]}"; do
        [ -z "${SKIP[$p]:-}" ] || continue
        case "$p" in
            ringlb) check_tls_config ringlb "$RINGLB" -t -c "$OUT/ringlb-tls.yaml" ;;
            nginx) check_tls_config nginx "$NGINX_BIN" -t -q -e "$OUT/logs/nginx-error.log" -c "$OUT/nginx-tls.conf" ;;
            haproxy) check_tls_config haproxy "$HAPROXY_BIN" -c -q -f "$OUT/haproxy-tls.cfg" ;;
        esac
    done
    if [ "$HAVE_TLS_HS" = 1 ] && [ ! -x "$TLS_HS_BIN" ]; then
        TLSHS_SKIP="bench_tls_handshake not found at $TLS_HS_BIN (ninja -C build; needs BoringSSL)"
        log "SKIP tls-hs scenarios: $TLSHS_SKIP"
    fi
fi

# ------------------------------------------------------------ backends
log "starting bench_backend on $BACKEND_PORT1,$BACKEND_PORT2 (cpus $LOAD_CPUS, $BACKEND_THREADS thread(s))"
taskset -c "$LOAD_CPUS" "$BACKEND_BIN" --port "$BACKEND_PORT1" --port "$BACKEND_PORT2" \
    --threads "$BACKEND_THREADS" >"$OUT/logs/backend.log" 2>&1 &
BACKEND_PID=$!
STARTED+=("$BACKEND_PID")
wait_ready "$BACKEND_PORT1" "$BACKEND_PID" bench_backend || die "backend did not start: $START_ERR (see $OUT/logs/backend.log)"
wait_ready "$BACKEND_PORT2" "$BACKEND_PID" bench_backend || die "backend did not start: $START_ERR (see $OUT/logs/backend.log)"
# origin_count: requests bench_backend has answered so far (both ports, every thread; its stats path)
origin_count() {
    curl -sS -m 2 "http://127.0.0.1:$BACKEND_PORT1/bench-backend/stats" 2>/dev/null |
        awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^requests=[0-9]+$/) { sub("requests=", "", $i); print $i } }' || true
}
if [ "$HAVE_CACHE" = 1 ]; then
    [ -n "$(origin_count)" ] || die "bench_backend at $BACKEND_BIN does not answer /bench-backend/stats (the cache scenarios count origin requests with it): rebuild it (ninja -C build bench/bench_backend)"
    c=$(curl -sS -m 2 -D - -o /dev/null "http://127.0.0.1:$BACKEND_PORT1/size/1?max-age=$CACHE_MAX_AGE" 2>/dev/null | tr -d '\r' | grep -i '^cache-control:' || true)
    [ -n "$c" ] || die "bench_backend at $BACKEND_BIN sends no Cache-Control for ?max-age=N: rebuild it (ninja -C build bench/bench_backend)"
fi

# ------------------------------------------------------------ probes: skip a tool that does not work
OPENLOOP_SKIP=""
if [ ${#OPENLOOP_SCENS[@]} -gt 0 ]; then
    if [ ! -x "$OPENLOOP_BIN" ]; then
        OPENLOOP_SKIP="bench_openloop not found at $OPENLOOP_BIN"
    else
        timeout 15 taskset -c "$LOAD_CPUS" "$OPENLOOP_BIN" --url "http://127.0.0.1:$BACKEND_PORT1/size/0" \
            --rate 200 --duration 1 --connections 2 --warmup 0 >"$OUT/logs/openloop-probe.txt" 2>&1 || true
        grep -q '^openloop .*completed=' "$OUT/logs/openloop-probe.txt" ||
            OPENLOOP_SKIP="bench_openloop printed no result line in a 1 s probe"
    fi
    [ -z "$OPENLOOP_SKIP" ] || log "SKIP open-loop scenarios: $OPENLOOP_SKIP"
fi

# ------------------------------------------------------------ environment
{
    echo "date_utc=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host=$(uname -n)"
    echo "kernel=$(uname -sr)"
    echo "cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
    echo "online_cpus=$NCPU"
    echo "proxy_cpus=$PROXY_CPUS"
    echo "proxy_cpu_count=$NPROXY_CPU"
    echo "workers=$WORKERS"
    echo "load_cpus=$LOAD_CPUS"
    echo "load_cpu_count=$NLOAD_CPU"
    echo "other_cpus=${OTHER_CPU_SET:-none}"
    echo "duration_s=$DURATION"
    echo "warmup_s=$WARMUP"
    echo "reps=$REPS"
    echo "quick=$QUICK"
    echo "scale=$SCALE"
    echo "scenarios=${SCEN_LIST[*]}"
    echo "proxies=${PROXY_LIST[*]}"
    for p in "${!SKIP[@]}"; do echo "skip_$p=${SKIP[$p]}"; done
    echo "openloop_skip=$OPENLOOP_SKIP"
    if [ "$HAVE_TLS" = 1 ]; then
        echo "tls_cert=$("$OPENSSL_BIN" x509 -in "$TLS_DIR/cert.pem" -noout -text 2>/dev/null |
            awk '/Public Key Algorithm/ { a = ($NF == "id-ecPublicKey") ? "ECDSA" : $NF } /NIST CURVE/ { c = $NF }
                 END { print a " " c }'), self-signed, SAN DNS:localhost and IP:127.0.0.1"
        echo "tls_dir=$TLS_DIR"
        echo "openssl=$("$OPENSSL_BIN" version 2>/dev/null)"
        echo "tls_hs_bin=$TLS_HS_BIN"
        echo "tls_hs_skip=$TLSHS_SKIP"
        for p in "${!SKIP_TLS[@]}"; do echo "tls_skip_$p=${SKIP_TLS[$p]}"; done
    fi
    if [ "$HAVE_CACHE" = 1 ]; then
        echo "cache_dir=$CACHE_DIR"
        echo "cache_dir_fs=$CACHE_FS"
        echo "cache_max_age=$CACHE_MAX_AGE"
        echo "cache_min_hit=$CACHE_MIN_HIT"
        echo "varnish_cache_mem=$VARNISH_CACHE_MEM"
        echo "nginx_return_literal_max=$NGINX_RETURN_LITERAL_MAX"
        for p in "${!SKIP_CACHE[@]}"; do echo "cache_skip_$p=${SKIP_CACHE[$p]}"; done
    fi
    echo "max_retries=$MAX_RETRIES"
    echo "disturb_pct=$DISTURB_PCT"
    echo "wrk_threads=$WRK_THREADS"
    echo "backend_threads=$BACKEND_THREADS"
    echo "nofile=$NOFILE"
    echo "conn_cap=$CONN_CAP"
    echo "upstream_keepalive_idle=$KEEP"
    [ "$RINGLB_MAX_IDLE_SET" = 0 ] || echo "ringlb_max_idle=$RINGLB_MAX_IDLE"
    echo "clk_tck=$CLK_TCK"
    echo "nginx=$("$NGINX_BIN" -v 2>&1 | sed 's/^nginx version: //')"
    echo "haproxy=$("$HAPROXY_BIN" -v 2>/dev/null | head -1 | awk '{print $3}')"
    [ -z "$ENVOY_BIN" ] || echo "envoy=$("$ENVOY_BIN" --version 2>/dev/null | tr -s ' \n' ' ' | cut -c1-120)"
    [ -z "$CADDY_BIN" ] || echo "caddy=$("$CADDY_BIN" version 2>/dev/null | head -1)"
    [ -z "$H2O_BIN" ] || echo "h2o=$("$H2O_BIN" --version 2>/dev/null | head -1)"
    [ -z "$VARNISHD_BIN" ] || echo "varnish=$("$VARNISHD_BIN" -V 2>&1 | head -1)"
    echo "wrk=$("$WRK_BIN" -v 2>&1 | head -1 | awk '{print $2}')"
    echo "ringlb=$RINGLB"
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
        echo "ringlb_worktree=not checked (the script runs no git commands)"
    fi
    echo "ip_local_port_range=$(tr '\t' ' ' </proc/sys/net/ipv4/ip_local_port_range)"
    echo "tcp_tw_reuse=$(cat /proc/sys/net/ipv4/tcp_tw_reuse)"
    echo "somaxconn=$(cat /proc/sys/net/core/somaxconn)"
    echo "governor=$(cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor 2>/dev/null || echo n/a)"
    echo "loadavg_start=$(cut -d' ' -f1-3 /proc/loadavg)"
    stat_snap >"$OUT/.s0"; sleep 2; stat_snap >"$OUT/.s1"
    echo "idle_baseline_busy_pct_proxy_cpus=$(busy_pct "$OUT/.s0" "$OUT/.s1" "$PROXY_CPU_SET")"
    echo "idle_baseline_busy_pct_load_cpus=$(busy_pct "$OUT/.s0" "$OUT/.s1" "$LOAD_CPU_SET")"
    echo "idle_baseline_busy_pct_other_cpus=$(busy_pct "$OUT/.s0" "$OUT/.s1" "$OTHER_CPU_SET")"
} >"$OUT/env.txt"
base_busy=$(awk -F= '/^idle_baseline_busy_pct_proxy_cpus=/ {print $2}' "$OUT/env.txt")
awk -v b="${base_busy:-0}" 'BEGIN { exit !(b > 5) }' &&
    log "WARNING: proxy cpu(s) $PROXY_CPUS already ${base_busy}% busy while idle; results will be noisy"

# ------------------------------------------------------------ one run
COLS=(rep scenario kind size_bytes connections proxy attempt status disturbed requests duration_s rps target_rate
    p50_us p90_us p99_us p999_us p9999_us max_us connect_err read_err write_err timeout_err status_err errors
    cpu_user_us_per_req cpu_sys_us_per_req cpu_us_per_req proxy_cpu_pct rss_kb
    proxy_cores_busy_pct load_cores_busy_pct other_cores_busy_pct load_procs_cpu_pct
    other_on_proxy_cores_pct other_on_load_cores_pct other_procs_on_proxy_cpus_pct other_procs_elsewhere_pct
    other_procs_top ksoftirqd_proxy_cpus_pct steal_pct saturated
    ring_enters_per_req ring_sqes_per_req bytes_copied_per_req zc_sends_per_req ringlb_requests ringlb_counters
    tls_version tls_cipher tls_resumed tls_resumed_pct client_cpu_us_per_hs
    hit_ratio origin_requests origin_requests_warmup cache_probe
    loadavg1 note)
(IFS=,; echo "${COLS[*]}") >"$CSV"
declare -A R=()
emit_row() {
    local line="" c v
    for c in "${COLS[@]}"; do
        v=${R[$c]:-}
        case "$c" in note|ringlb_counters|other_procs_top|cache_probe) v="\"${v//\"/\'}\"" ;; esac
        line+="$v,"
    done
    echo "${line%,}" >>"$CSV"
}

PROXY_PID=""
PORT=""
start_proxy() { # start_proxy NAME TAG [tls|cache] -> PROXY_PID, PORT; with tls/cache: the row's TLS/cache config (same port)
    local name=$1 tag=$2 tls=${3:-} lf="$OUT/logs/$1-$2.log" sfx="" vcl="$OUT/varnish.vcl" vmem=64m
    [ -z "$tls" ] || sfx=-$tls
    if [ "$tls" = cache ]; then
        vcl="$OUT/varnish-cache.vcl"; vmem=$VARNISH_CACHE_MEM
        # every run starts with an empty cache: nginx would load the previous run's entries from its directory
        [ "$name" != nginx ] || rm -rf -- "$NGINX_CACHE_DIR"
    fi
    case "$name" in
        ringlb|ringlb-*) PORT=${RINGLB_PORT[$name]}
            taskset -c "$PROXY_CPUS" "$RINGLB" -c "$OUT/$name$sfx.yaml" >"$lf" 2>&1 & ;;
        nginx) PORT=$PORT_NGINX
            taskset -c "$PROXY_CPUS" "$NGINX_BIN" -e "$OUT/logs/nginx-error.log" -c "$OUT/nginx$sfx.conf" >"$lf" 2>&1 & ;;
        haproxy) PORT=$PORT_HAPROXY
            taskset -c "$PROXY_CPUS" "$HAPROXY_BIN" -db -f "$OUT/haproxy$sfx.cfg" >"$lf" 2>&1 & ;;
        envoy) PORT=$PORT_ENVOY
            taskset -c "$PROXY_CPUS" "$ENVOY_BIN" -c "$OUT/envoy.yaml" --concurrency "$WORKERS" \
                --disable-hot-restart -l warning >"$lf" 2>&1 & ;;
        caddy) PORT=$PORT_CADDY
            GOMAXPROCS=$WORKERS taskset -c "$PROXY_CPUS" "$CADDY_BIN" run --config "$OUT/Caddyfile" \
                --adapter caddyfile >"$lf" 2>&1 & ;;
        h2o) PORT=$PORT_H2O
            taskset -c "$PROXY_CPUS" "$H2O_BIN" -c "$OUT/h2o.conf" >"$lf" 2>&1 & ;;
        varnish) PORT=$PORT_VARNISH
            taskset -c "$PROXY_CPUS" "$VARNISHD_BIN" -F -n "$OUT/varnish-work" -a "127.0.0.1:$PORT_VARNISH" \
                -T "127.0.0.1:$PORT_VARNISH_ADMIN" -f "$vcl" -s "malloc,$vmem" \
                -p "thread_pools=$WORKERS" >"$lf" 2>&1 & ;;
        nginx-return) PORT=$PORT_NGINX_RETURN
            taskset -c "$PROXY_CPUS" "$NGINX_BIN" -e "$OUT/logs/nginx-return-error.log" -c "$OUT/nginx-return.conf" >"$lf" 2>&1 & ;;
        relay) PORT=$PORT_RELAY
            taskset -c "$PROXY_CPUS" "$RELAY_BIN" "${RELAY_ARGS[@]}" >"$lf" 2>&1 & ;;
        direct) PORT=$BACKEND_PORT1; PROXY_PID=""; return 0 ;;
    esac
    PROXY_PID=$!
    STARTED+=("$PROXY_PID")
    local scheme=""
    [ "$tls" != tls ] || scheme=https
    wait_ready "$PORT" "$PROXY_PID" "$name" "$scheme"
}
stop_proxy() {
    [ -n "$PROXY_PID" ] || return 0
    stop_pid "$PROXY_PID"
    forget_pid "$PROXY_PID"
    PROXY_PID=""
    wait_port_free "$PORT" || log "WARNING: port $PORT still busy after stopping the proxy"
}

LOADGEN_PID=""
run_wrk() { # run_wrk SECS URL HDR LUA CONNS OUTFILE
    local secs=$1 url=$2 hdr=$3 lua=$4 conns=$5 wfile=$6 th=$WRK_THREADS
    [ "$th" -le "$conns" ] || th=$conns
    local args=(-t"$th" -c"$conns" -d"${secs}s" --timeout 5s -s "$lua")
    [ -n "$hdr" ] && args+=(-H "$hdr")
    # in the background + wait, so that INT/TERM traps fire at once, not after wrk
    taskset -c "$LOAD_CPUS" "$WRK_BIN" "${args[@]}" "$url" >"$wfile" 2>&1 &
    LOADGEN_PID=$!
    STARTED+=("$LOADGEN_PID")
    wait "$LOADGEN_PID" || true
    forget_pid "$LOADGEN_PID"
}
run_openloop() { # run_openloop SECS URL RATE CONNS OUTFILE
    # --warmup 0: the script runs its own warm-up invocation, so the measured window holds measured requests only
    taskset -c "$LOAD_CPUS" "$OPENLOOP_BIN" --url "$2" --rate "$3" --duration "$1" --connections "$4" --warmup 0 \
        >"$5" 2>&1 &
    LOADGEN_PID=$!
    STARTED+=("$LOADGEN_PID")
    wait "$LOADGEN_PID" || true
    forget_pid "$LOADGEN_PID"
}

run_tlshs() { # run_tlshs SECS PORT MODE TLSVER CONNS OUTFILE: bench_tls_handshake, one thread per load CPU
    local th=$WRK_THREADS
    [ "$th" -le "$5" ] || th=$5
    taskset -c "$LOAD_CPUS" "$TLS_HS_BIN" --host 127.0.0.1 --port "$2" --concurrency "$5" --duration "$1" \
        --mode "$3" --tls "$4" --sni localhost --path / --threads "$th" >"$6" 2>&1 &
    LOADGEN_PID=$!
    STARTED+=("$LOADGEN_PID")
    wait "$LOADGEN_PID" || true
    forget_pid "$LOADGEN_PID"
}
# tls_probe PORT: "VERSION CIPHER" an OpenSSL client (wrk's library, default settings) negotiates
tls_probe() {
    timeout 5 taskset -c "$LOAD_CPUS" "$OPENSSL_BIN" s_client -connect "127.0.0.1:$1" -servername localhost \
        </dev/null 2>/dev/null | awk '/^New, / { gsub(",", ""); print $2, $NF; exit }' || true
}

# ringlb counters: SIGUSR1 makes it log "stats (SIGUSR1): key=value ..." to stderr.
ringlb_stats() { # ringlb_stats LOGFILE: signal, wait (<= 2 s) for the new line
    local lf=$1 n0 i
    n0=$(grep -c 'stats (SIGUSR1)' "$lf" || true)
    kill -USR1 "$PROXY_PID" 2>/dev/null || return 1
    for ((i = 0; i < 200; i++)); do
        [ "$(grep -c 'stats (SIGUSR1)' "$lf" || true)" -gt "$n0" ] && return 0
        sleep 0.01
    done
    return 1
}
ringlb_deltas() { # last two stats lines -> "requests per_enters per_sqes per_copied per_zc counters"
    { grep 'stats (SIGUSR1)' "$1" || true; } | tail -n 2 | awk '
        {
            for (i = 1; i <= NF; i++) if ($i ~ /^[a-z0-9_]+=[0-9]+$/) {
                split($i, kv, "="); v[NR, kv[1]] = kv[2]; if (NR == 1) keys[++nk] = kv[1]
            }
        }
        END {
            if (NR < 2) exit
            req = v[2, "requests"] - v[1, "requests"]
            s = ""
            for (k = 1; k <= nk; k++) s = s (k > 1 ? ";" : "") keys[k] "=" (v[2, keys[k]] - v[1, keys[k]])
            e = (req > 0) ? sprintf("%.3f", (v[2, "ring_enters"] - v[1, "ring_enters"]) / req) : ""
            q = (req > 0) ? sprintf("%.3f", (v[2, "ring_sqes"] - v[1, "ring_sqes"]) / req) : ""
            c = (req > 0 && ((2, "bytes_copied") in v)) ? sprintf("%.1f", (v[2, "bytes_copied"] - v[1, "bytes_copied"]) / req) : ""
            z = (req > 0 && ((2, "zc_sends") in v)) ? sprintf("%.3f", (v[2, "zc_sends"] - v[1, "zc_sends"]) / req) : ""
            printf "%d %s %s %s %s %s\n", req, (e == "" ? "-" : e), (q == "" ? "-" : q), (c == "" ? "-" : c), (z == "" ? "-" : z), s
        }'
}

OL_RATE=""
OL_RATE_SRC=""
choose_rate() {
    if [ -n "$RATE" ]; then OL_RATE=$RATE; OL_RATE_SRC="--rate"; return; fi
    local r
    r=$("$PYTHON" - "$CSV" "$RATE_FRACTION" <<'PYEOF'
import csv, statistics, sys
rows = [r for r in csv.DictReader(open(sys.argv[1]))
        if r["kind"] == "ka" and r["size_bytes"] in ("0", "1024") and r["connections"] == "64"
        and r["proxy"] not in ("direct", "relay") and r["status"] in ("ok", "errors") and r["rps"]]
by = {}
for r in rows:
    by.setdefault((r["proxy"], r["scenario"]), []).append(float(r["rps"]))
if by:
    low = min(statistics.median(v) for v in by.values())
    print(max(100, int(low * float(sys.argv[2]) / 100 / 100) * 100))
PYEOF
)
    if [ -n "$r" ]; then
        OL_RATE=$r; OL_RATE_SRC="$RATE_FRACTION% of the lowest proxy median req/s in ka-0/ka-1k (64 connections)"
    else
        OL_RATE=$RATE_DEFAULT; OL_RATE_SRC="default (no ka-0/ka-1k 64-connection result to derive it from)"
    fi
    echo "openloop_rate=$OL_RATE" >>"$OUT/env.txt"
    echo "openloop_rate_source=$OL_RATE_SRC" >>"$OUT/env.txt"
    log "open-loop rate: $OL_RATE req/s ($OL_RATE_SRC)"
}

# cache_verdict ROW TAG REQUESTS ORIGIN0 ORIGIN1: hit ratio and origin requests of the measured window into R[];
# a cache row whose hit ratio is below --cache-min-hit (or whose origin count cannot be read) gets status
# not-caching (left out of the medians, listed in the report), and a loud line in the log.
cache_verdict() {
    local px=$1 tag=$2 req=$3 o0=$4 o1=$5 why=""
    if [ -z "$o0" ] || [ -z "$o1" ]; then
        why="could not read the origin's request counter (bench_backend /bench-backend/stats)"
    else
        R[origin_requests]=$((o1 - o0))
        if [ "$px" = nginx-return ]; then
            # the floor proxies nothing: it must not have reached the origin at all
            [ "${R[origin_requests]}" = 0 ] || why="nginx-return reached the origin ${R[origin_requests]} time(s)"
        else
            # origin requests still in flight at the window's edges can outnumber completed requests: clamp at 0
            R[hit_ratio]=$(calc "${R[origin_requests]} >= $req ? 0 : 1 - ${R[origin_requests]} / $req" 6)
            if awk -v h="${R[hit_ratio]}" -v m="$CACHE_MIN_HIT" 'BEGIN { exit !(h < m) }'; then
                why="hit ratio ${R[hit_ratio]} < $CACHE_MIN_HIT: ${R[origin_requests]} of $req requests went to the origin"
            fi
            case "${R[cache_probe]:-}" in
                *[Hh][Ii][Tt]*) ;;
                "") R[note]="${R[note]:+${R[note]}; }the probe after the warm-up got no X-Cache header" ;;
                *) R[note]="${R[note]:+${R[note]}; }the probe after the warm-up was not a hit (${R[cache_probe]})" ;;
            esac
        fi
    fi
    if [ -n "$why" ]; then
        R[status]=not-caching
        R[note]="NOT CACHING: $why${R[note]:+; ${R[note]}}"
        log "FAIL $tag: *** $px IS NOT SERVING FROM ITS CACHE: $why ***"
    fi
}

RUN_DISTURBED=0
one_run() { # one_run REP SCENARIO PROXY ATTEMPT -> appends a row, sets RUN_DISTURBED
    local rep=$1 sc=$2 px=$3 attempt=$4 tag="r$1-$2-$3"
    [ "$attempt" -gt 1 ] && tag+="-a$attempt"
    scen_parse "$sc"
    R=([rep]=$rep [scenario]=$sc [kind]=$S_KIND [size_bytes]=$S_SIZE [connections]=$S_CONNS [proxy]=$px
        [attempt]=$attempt [disturbed]=0)
    [ "$S_CONNS" = "$S_REQ_CONNS" ] || R[note]="connections capped from $S_REQ_CONNS to $S_CONNS by ulimit -n $NOFILE"
    RUN_DISTURBED=0
    if [ -n "${SKIP[$px]:-}" ]; then
        R[status]=skipped; R[note]=${SKIP[$px]}; emit_row; return
    fi
    if [ "$S_KIND" = openloop ] && [ -n "$OPENLOOP_SKIP" ]; then
        R[status]=skipped; R[note]=$OPENLOOP_SKIP; emit_row; return
    fi
    local tls=""
    if [ "$S_TLS" = 1 ]; then
        tls=tls
        if ! has_tls_row "$px"; then
            R[status]=skipped; R[note]="no TLS row: the TLS scenarios run ringlb, nginx and haproxy"; emit_row; return
        fi
        if [ -n "${SKIP_TLS[$px]:-}" ]; then
            R[status]=skipped; R[note]=${SKIP_TLS[$px]}; emit_row; return
        fi
        if [ "$S_KIND" = tls-hs ] && [ -n "$TLSHS_SKIP" ]; then
            R[status]=skipped; R[note]=$TLSHS_SKIP; emit_row; return
        fi
    fi
    local mode=$tls   # start_proxy's config: "", tls or cache
    if [ "$S_CACHE" = 1 ]; then
        mode=cache
        if [ -n "${SKIP_CACHE[$px]:-}" ]; then
            R[status]=skipped; R[note]=${SKIP_CACHE[$px]}; emit_row; return
        fi
    fi
    local lua="$OUT/report.lua"
    [ "$S_KIND" = upload ] && lua=$(write_upload_lua "$S_SIZE")
    [ "$S_KIND" = openloop ] && R[target_rate]=$OL_RATE

    START_RC=""
    if ! start_proxy "$px" "$tag" "$mode"; then
        local why
        why="$START_ERR; log: $(tail -n 3 "$OUT/logs/$px-$tag.log" 2>/dev/null | tr '\n",' '   ' | cut -c1-200)" || true
        stop_proxy
        if [ "$px" = relay ] && [ "${START_RC:-x}" = 0 ]; then
            SKIP[relay]="bench_relay exited at once with status 0 and never accepted"
            log "SKIP relay: ${SKIP[relay]}"
            R[status]=skipped; R[note]=${SKIP[relay]}; emit_row; return
        fi
        local with=""
        [ -z "$mode" ] || with=" with its ${mode/tls/TLS} config"
        log "FAIL $tag: $px failed to start$with: $why"
        R[status]=failed; R[note]="$px failed to start$with: $why"; emit_row; return
    fi
    local url="http${tls:+s}://127.0.0.1:$PORT$S_PATH" wfile="$OUT/logs/load-$tag.txt"
    ORIGIN_BEFORE_WARMUP=""
    [ "$S_CACHE" = 0 ] || ORIGIN_BEFORE_WARMUP=$(origin_count)
    if [ "$S_KIND" = tls-ka ]; then
        # what wrk (OpenSSL, default offer) negotiates with this row
        local pv; pv=$(tls_probe "$PORT")
        R[tls_version]=${pv%% *}; R[tls_cipher]=${pv#* }
    fi
    if [ "$WARMUP" -gt 0 ]; then
        if [ "$S_KIND" = tls-hs ]; then
            run_tlshs "$WARMUP" "$PORT" "$S_HS_MODE" "$S_TLS_VER" "$S_CONNS" "$OUT/logs/load-$tag-warmup.txt"
        elif [ "$S_KIND" = openloop ]; then
            run_openloop "$WARMUP" "$url" "$OL_RATE" "$S_CONNS" "$OUT/logs/load-$tag-warmup.txt"
        else
            run_wrk "$WARMUP" "$url" "$S_HDR" "$lua" "$S_CONNS" "$OUT/logs/load-$tag-warmup.txt"
        fi
    fi
    # cache scenarios: what the row says about a request now (its X-Cache header), and the origin's counter
    # right before the window; the warm-up filled the cache (origin_requests_warmup: the misses that did it)
    local o0="" o1=""
    if [ "$S_CACHE" = 1 ]; then
        local o_pre=${ORIGIN_BEFORE_WARMUP:-}
        R[cache_probe]=$(curl -sS -m 5 -D - -o /dev/null "$url" 2>/dev/null | tr -d '\r' |
            awk -F': *' 'tolower($1) == "x-cache" || tolower($1) == "cache-status" { printf "%s%s: %s", (n++ ? "; " : ""), $1, $2 }' || true)
        o0=$(origin_count)
        [ -z "$o_pre" ] || [ -z "$o0" ] || R[origin_requests_warmup]=$((o0 - o_pre))
    fi

    local pids="" t0 t1 b0 b1 c0 c1 stats_ok=0
    [ -n "$PROXY_PID" ] && pids=$(proc_tree "$PROXY_PID")
    is_ringlb "$px" && ringlb_stats "$OUT/logs/$px-$tag.log" && stats_ok=1
    # shellcheck disable=SC2086
    t0=$(cpu_ticks $pids)
    b0=$(cpu_ticks "$BACKEND_PID")
    children_cpu_us; c0=$CHILD_US
    task_snap >"$OUT/.tasks0"
    stat_snap >"$OUT/.stat0"
    local w0; w0=$(date +%s%N)
    if [ "$S_KIND" = tls-hs ]; then
        run_tlshs "$DURATION" "$PORT" "$S_HS_MODE" "$S_TLS_VER" "$S_CONNS" "$wfile"
    elif [ "$S_KIND" = openloop ]; then
        run_openloop "$DURATION" "$url" "$OL_RATE" "$S_CONNS" "$wfile"
    else
        run_wrk "$DURATION" "$url" "$S_HDR" "$lua" "$S_CONNS" "$wfile"
    fi
    stat_snap >"$OUT/.stat1"
    local w1; w1=$(date +%s%N)
    task_snap >"$OUT/.tasks1"
    children_cpu_us; c1=$CHILD_US
    b1=$(cpu_ticks "$BACKEND_PID")
    local rss=""
    if [ -n "$PROXY_PID" ]; then
        local pids2; pids2=$(proc_tree "$PROXY_PID")
        [ "$pids2" = "$pids" ] || log "WARNING $tag: proxy process set changed during the run ($pids -> $pids2)"
        # shellcheck disable=SC2086
        t1=$(cpu_ticks $pids2)
        # shellcheck disable=SC2086
        rss=$(rss_kb $pids2)
    else
        t1="0 0"; t0="0 0"
    fi
    is_ringlb "$px" && [ "$stats_ok" = 1 ] && { ringlb_stats "$OUT/logs/$px-$tag.log" || stats_ok=0; }
    [ "$S_CACHE" = 0 ] || o1=$(origin_count)
    R[loadavg1]=$(cut -d' ' -f1 /proc/loadavg)
    R[proxy_cores_busy_pct]=$(busy_pct "$OUT/.stat0" "$OUT/.stat1" "$PROXY_CPU_SET")
    R[load_cores_busy_pct]=$(busy_pct "$OUT/.stat0" "$OUT/.stat1" "$LOAD_CPU_SET")
    R[other_cores_busy_pct]=$(busy_pct "$OUT/.stat0" "$OUT/.stat1" "$OTHER_CPU_SET")
    R[steal_pct]=$(steal_pct "$OUT/.stat0" "$OUT/.stat1" "$PROXY_CPU_SET $LOAD_CPU_SET")
    local alive=1
    [ -z "$PROXY_PID" ] || kill -0 "$PROXY_PID" 2>/dev/null || alive=0
    stop_proxy

    # load generator figures -> R[...]
    local line kv req dur resume_fail=0
    if [ "$S_KIND" = tls-hs ]; then
        line=$(grep -m1 '^tls_handshake ' "$wfile" || true)
        if [ -z "$line" ]; then
            log "FAIL $tag: no bench_tls_handshake result (see logs/load-$tag.txt)"
            R[status]=failed; R[note]="no bench_tls_handshake result: $(tail -n 2 "$wfile" | tr '\n",' '   ' | cut -c1-200)"
            emit_row; return
        fi
        declare -A H=()
        for kv in ${line#tls_handshake }; do H[${kv%%=*}]=${kv#*=}; done
        req=${H[handshakes]:-0}
        dur=${H[seconds]:-$DURATION}
        R[requests]=$req; R[duration_s]=$dur; R[rps]=${H[hs_per_s]:-}
        for kv in p50_us p90_us p99_us p999_us max_us connect_err timeout_err status_err; do R[$kv]=${H[$kv]:-}; done
        R[read_err]=$((${H[io_err]:-0} + ${H[handshake_err]:-0})); R[write_err]=0
        R[errors]=${H[errors]:-0}
        R[tls_version]=${H[version]:-}; R[tls_cipher]=${H[cipher]:-}
        R[tls_resumed]=${H[resumed]:-}; R[tls_resumed_pct]=${H[resumed_pct]:-}
        R[client_cpu_us_per_hs]=${H[client_cpu_us_per_hs]:-}
        [ "${H[handshake_err]:-0}" = 0 ] || R[note]="handshake_err=${H[handshake_err]} (in read_err)"
        local first; first=$(grep '^bench_tls_handshake: first' "$wfile" | sed 's/^bench_tls_handshake: //' | tr '\n",' '   ' | cut -c1-240 || true)
        [ -z "$first" ] || R[note]="${R[note]:+${R[note]}; }$first"
        if [ "$S_HS_MODE" = resume ] && [ "$req" -gt 0 ] && [ "${H[resumed]:-0}" = 0 ]; then
            resume_fail=1
            R[note]="RESUMPTION FAILED: no handshake was resumed (the session ticket was not accepted)${R[note]:+; ${R[note]}}"
            log "FAIL $tag: RESUMPTION FAILED: $req handshakes, none resumed"
        elif grep -q 'RESUMPTION FAILED' "$wfile"; then
            resume_fail=1
            R[note]="$(grep -m1 'RESUMPTION FAILED' "$wfile" | sed 's/^bench_tls_handshake: //')${R[note]:+; ${R[note]}}"
            log "FAIL $tag: ${R[note]}"
        elif [ "$S_HS_MODE" = resume ] && awk -v p="${H[resumed_pct]:-0}" 'BEGIN { exit !(p < 90) }'; then
            R[note]="only ${H[resumed_pct]}% of the handshakes resumed${R[note]:+; ${R[note]}}"
        fi
    elif [ "$S_KIND" = openloop ]; then
        line=$(grep -m1 '^openloop ' "$wfile" || true)
        if [ -z "$line" ]; then
            log "FAIL $tag: no bench_openloop result (see logs/load-$tag.txt)"
            R[status]=failed; R[note]="no bench_openloop result"; emit_row; return
        fi
        declare -A O=()
        for kv in ${line#openloop }; do O[${kv%%=*}]=${kv#*=}; done
        req=${O[completed]:-0}
        dur=${O[duration]:-$DURATION}; dur=${dur%s}
        R[requests]=$req; R[duration_s]=$dur; R[rps]=${O[achieved_rps]:-}
        R[p50_us]=${O[p50_us]:-}; R[p90_us]=${O[p90_us]:-}; R[p99_us]=${O[p99_us]:-}
        R[p999_us]=${O[p999_us]:-}; R[p9999_us]=${O[p9999_us]:-}; R[max_us]=${O[max_us]:-}
        R[errors]=${O[errors]:-0}
        local lost=$(( ${O[sent]:-0} - req - ${O[errors]:-0} ))
        [ "$lost" -le 0 ] || R[note]="$lost request(s) sent but neither completed nor failed"
        awk -v a="${O[achieved_rps]:-0}" -v r="$OL_RATE" 'BEGIN { exit !(a < 0.97 * r) }' &&
            R[note]="${R[note]:+${R[note]}; }achieved rate below 97% of the target: saturated"
    else
        line=$(grep -m1 '^WRKRESULT ' "$wfile" || true)
        if [ -z "$line" ]; then
            log "FAIL $tag: no wrk result (see logs/load-$tag.txt)"
            R[status]=failed; R[note]="no wrk result"; emit_row; return
        fi
        declare -A W=()
        for kv in ${line#WRKRESULT }; do W[${kv%%=*}]=${kv#*=}; done
        req=${W[requests]}
        dur=$(calc "${W[duration_us]} / 1e6" 3)
        R[requests]=$req; R[duration_s]=$dur
        R[rps]=$(calc "$dur > 0 ? $req / $dur : 0" 1)
        for kv in p50_us p90_us p99_us p999_us max_us connect_err read_err write_err timeout_err status_err; do R[$kv]=${W[$kv]}; done
        R[errors]=$((W[connect_err] + W[read_err] + W[write_err] + W[timeout_err] + W[status_err]))
    fi
    R[status]=ok
    [ "${R[errors]:-0}" -gt 0 ] && R[status]=errors
    if [ "${req:-0}" -le 0 ]; then
        R[status]=failed; R[note]="${R[note]:+${R[note]}; }no request completed in the measured window"
    fi
    [ "$resume_fail" = 0 ] || R[status]=failed
    [ "$alive" = 1 ] || R[status]=proxy-died
    if [ "$S_CACHE" = 1 ] && [ "${req:-0}" -gt 0 ]; then
        cache_verdict "$px" "$tag" "$req" "$o0" "$o1"
    fi

    # CPU: proxy tree, and load side (wrk/openloop via `times`, backend via /proc)
    local tu ts pcpu=0
    local -a a0 a1
    read -r -a a0 <<<"$t0"; read -r -a a1 <<<"$t1"
    tu=$(calc "(${a1[0]} - ${a0[0]}) * 1e6 / $CLK_TCK" 0)
    ts=$(calc "(${a1[1]} - ${a0[1]}) * 1e6 / $CLK_TCK" 0)
    if [ -n "$pids" ] && [ "$req" -gt 0 ]; then
        R[cpu_user_us_per_req]=$(calc "$tu / $req")
        R[cpu_sys_us_per_req]=$(calc "$ts / $req")
        R[cpu_us_per_req]=$(calc "($tu + $ts) / $req")
        pcpu=$(calc "($tu + $ts) / (($w1 - $w0) / 1e3) * 100" 1)
        R[proxy_cpu_pct]=$pcpu
        R[rss_kb]=$rss
    fi
    read -r -a a0 <<<"$b0"; read -r -a a1 <<<"$b1"
    local load_us
    load_us=$(calc "(${a1[0]} + ${a1[1]} - ${a0[0]} - ${a0[1]}) * 1e6 / $CLK_TCK + $c1 - $c0" 0)
    R[load_procs_cpu_pct]=$(calc "$load_us / (($w1 - $w0) / 1e3) * 100" 1)
    R[other_on_proxy_cores_pct]=$(calc "${R[proxy_cores_busy_pct]:-0} * $NPROXY_CPU - $pcpu" 1)
    R[other_on_load_cores_pct]=$(calc "${R[load_cores_busy_pct]:-0} * $NLOAD_CPU - ${R[load_procs_cpu_pct]}" 1)
    # other processes (everything but the proxy tree, the backend, and this script + its children)
    local op oe ok
    # shellcheck disable=SC2086
    read -r op oe ok <<<"$(other_procs "$OUT/.tasks0" "$OUT/.tasks1" "${pids:-} $BACKEND_PID $$ $BASHPID" "$PROXY_CPU_SET")"
    R[other_procs_on_proxy_cpus_pct]=$(calc "$op * 1e6 / $CLK_TCK / (($w1 - $w0) / 1e3) * 100" 1)
    R[ksoftirqd_proxy_cpus_pct]=$(calc "$ok * 1e6 / $CLK_TCK / (($w1 - $w0) / 1e3) * 100" 1)
    # the /proc/stat figure without ksoftirqd (softirq work caused by the benchmark's own traffic)
    R[other_on_proxy_cores_pct]=$(calc "${R[other_on_proxy_cores_pct]} - ${R[ksoftirqd_proxy_cpus_pct]}" 1)
    R[other_procs_elsewhere_pct]=$(calc "$oe * 1e6 / $CLK_TCK / (($w1 - $w0) / 1e3) * 100" 1)
    R[other_procs_top]=$(other_top "$OUT/.tasks0" "$OUT/.tasks1" "${pids:-} $BACKEND_PID $$ $BASHPID")
    local ps=0 ls=0
    awk -v b="${R[proxy_cores_busy_pct]:-0}" 'BEGIN { exit !(b >= 90) }' && ps=1
    awk -v b="${R[load_cores_busy_pct]:-0}" 'BEGIN { exit !(b >= 90) }' && ls=1
    case "$ps$ls" in 11) R[saturated]=both ;; 10) R[saturated]=proxy ;; 01) R[saturated]=load ;; *) R[saturated]=none ;; esac
    [ "$px" = direct ] && [ "$ls" = 1 ] && R[saturated]=load
    # disturbed: either measure says another task used the proxy CPUs
    if awk -v o="${R[other_on_proxy_cores_pct]}" -v q="${R[other_procs_on_proxy_cpus_pct]}" -v t="$DISTURB_PCT" \
        'BEGIN { exit !(o > t || q > t) }'; then
        R[disturbed]=1; RUN_DISTURBED=1
    fi

    # ringlb's own counters over the measured window
    if is_ringlb "$px"; then
        if [ "$stats_ok" = 1 ]; then
            local d; d=$(ringlb_deltas "$OUT/logs/$px-$tag.log")
            if [ -n "$d" ]; then
                local rq e q cpy z cn
                read -r rq e q cpy z cn <<<"$d"
                R[ringlb_requests]=$rq; R[ringlb_counters]=$cn
                [ "$e" = - ] || R[ring_enters_per_req]=$e
                [ "$q" = - ] || R[ring_sqes_per_req]=$q
                [ "$cpy" = - ] || R[bytes_copied_per_req]=$cpy
                [ "$z" = - ] || R[zc_sends_per_req]=$z
            fi
        else
            R[note]="${R[note]:+${R[note]}; }no SIGUSR1 stats line from ringlb"
        fi
    fi
    [ "$RUN_DISTURBED" = 1 ] && [ "$attempt" -le "$MAX_RETRIES" ] && R[status]=retried
    emit_row
    log "$(printf 'r%-2s %-14s %-8s %-9s rps=%-9s p99=%-7s cpu/req=%-8s errs=%-4s rss=%-7s proxy=%s%% load=%s%% other(proxy stat/procs, load)=%s %s%% sat=%s%s%s' \
        "$rep" "$sc" "$px" "${R[status]}" "${R[rps]}" "${R[p99_us]}" "${R[cpu_us_per_req]:-}" "${R[errors]}" "${R[rss_kb]:-}" \
        "${R[proxy_cores_busy_pct]}" "${R[load_cores_busy_pct]}" "${R[other_on_proxy_cores_pct]}/${R[other_procs_on_proxy_cpus_pct]}" "${R[other_on_load_cores_pct]}" "${R[saturated]}" \
        "${R[tls_resumed_pct]:+ resumed=${R[tls_resumed_pct]}%}${R[tls_cipher]:+ ${R[tls_version]}/${R[tls_cipher]}}" \
        "${R[origin_requests]:+ origin=${R[origin_requests]}}${R[hit_ratio]:+ hit=${R[hit_ratio]}}")"
}

# ------------------------------------------------------------ main loop
# In braces up to the final exit: bash parses the whole block before running it, so
# editing this file while a run is in progress cannot derail the run.
{
nrows=${#PROXY_LIST[@]}
total=0
for sc in "${SCEN_LIST[@]}"; do
    for px in "${PROXY_LIST[@]}"; do ! applicable "$sc" "$px" || total=$((total + REPS)); done
done
log "$total runs of ${DURATION}s (+${WARMUP}s warm-up): ${#SCEN_LIST[@]} scenario(s) x up to $nrows row(s) x $REPS rep(s) -> $OUT"
T_START=$(date +%s)
for ((rep = 1; rep <= REPS; rep++)); do
    for sc in "${SCEN_LIST[@]}"; do
        scen_parse "$sc"
        [ "$S_KIND" != openloop ] || [ -n "$OL_RATE" ] || [ -n "$OPENLOOP_SKIP" ] || choose_rate
        # rotate the row order each repetition so no row always runs first after a scenario change
        for ((i = 0; i < nrows; i++)); do
            px=${PROXY_LIST[$(((i + rep - 1) % nrows))]}
            applicable "$sc" "$px" || continue
            for ((attempt = 1; attempt <= MAX_RETRIES + 1; attempt++)); do
                one_run "$rep" "$sc" "$px" "$attempt"
                [ "$RUN_DISTURBED" = 1 ] && [ "$attempt" -le "$MAX_RETRIES" ] || break
                log "  disturbed (other work on the proxy CPUs ${R[other_on_proxy_cores_pct]}% by /proc/stat, ${R[other_procs_on_proxy_cpus_pct]}% by other processes; limit $DISTURB_PCT%): retry $attempt/$MAX_RETRIES"
                sleep 1
            done
        done
    done
done
echo "loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/env.txt"
echo "elapsed_s=$(($(date +%s) - T_START))" >>"$OUT/env.txt"
rm -f "$OUT/.s0" "$OUT/.s1" "$OUT/.stat0" "$OUT/.stat1" "$OUT/.times" "$OUT/.tasks0" "$OUT/.tasks1" "$OUT/.curlerr"

# ------------------------------------------------------------ report
GNUPLOT_BIN=$GNUPLOT_BIN "$PYTHON" "$BENCH_DIR/report.py" "$OUT"
log "report: $OUT/report.md  runs: $CSV  ($(($(date +%s) - T_START)) s)"
exit 0
}
