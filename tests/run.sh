#!/usr/bin/env bash
# Every test ringlb has: set-up and build, unit + integration tests, the same
# again under ASan+UBSan, then each libFuzzer harness for a bounded time.
# Ends with one "N passed, N failed" line; exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
FUZZ_SECONDS=${FUZZ_SECONDS:-20}

tests/setup.sh || { echo "0 passed, 1 failed"; exit 1; }

passed=0
failed=0
failures=()

# Adds the counts of one "meson test" run to the totals.
run_meson() {
  local label=$1 dir=$2
  shift 2
  local log
  log=$(mktemp)
  echo "=== $label"
  meson test -C "$dir" --print-errorlogs "$@" 2>&1 | tee "$log" | grep -E "^ *[0-9]+/[0-9]+ |^(Ok|Fail|Skipped|Timeout|Unexpected Pass|Expected Fail): "
  local ok fail to up
  ok=$(awk '/^Ok:/ {print $2}' "$log")
  fail=$(awk '/^Fail:/ {print $2}' "$log")
  to=$(awk '/^Timeout:/ {print $2}' "$log")
  up=$(awk '/^Unexpected Pass:/ {print $3}' "$log")
  if [ -z "$ok" ]; then
    echo "$label: meson test did not run"; tail -20 "$log"
    failed=$((failed + 1)); failures+=("$label: did not run")
  else
    passed=$((passed + ok))
    failed=$((failed + ${fail:-0} + ${to:-0} + ${up:-0}))
    grep -E "^ *[0-9]+/[0-9]+ .*(FAIL|ERROR|TIMEOUT)" "$log" | sed "s/^/$label: /" >> "$root/build/failures.txt" || true
  fi
  rm -f "$log"
}

rm -f build/failures.txt
run_meson "build" build

echo "=== sanitizers (ASan+UBSan)"
if [ ! -f build-asan/build.ninja ]; then
  meson setup build-asan -Db_sanitize=address,undefined -Db_lundef=false -Dbench=false >/dev/null
fi
if ninja -C build-asan >/dev/null; then
  # Memory figures are meaningless under ASan: RSS assertions are relaxed there.
  RINGLB_SANITIZED=1 ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
    UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 run_meson "asan" build-asan
else
  failed=$((failed + 1)); failures+=("asan build")
fi

echo "=== fuzzers (${FUZZ_SECONDS}s each)"
if [ ! -f build-fuzz/build.ninja ]; then
  CC=clang meson setup build-fuzz -Dfuzz=true -Dtests=false -Dbench=false >/dev/null
fi
if ninja -C build-fuzz >/dev/null; then
  for fuzzer in build-fuzz/tests/fuzz/fuzz_*; do
    [ -f "$fuzzer" ] && [ -x "$fuzzer" ] || continue
    name=$(basename "$fuzzer")
    corpus=tests/fuzz/corpus/${name#fuzz_}
    work=$(mktemp -d)
    cp -r "$corpus"/. "$work"/ 2>/dev/null || true
    if "$fuzzer" -max_total_time="$FUZZ_SECONDS" -print_final_stats=1 "$work" > "build-fuzz/$name.log" 2>&1; then
      echo "$name: ok ($(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "build-fuzz/$name.log" | awk '{print $2}') runs)"
      passed=$((passed + 1))
    else
      echo "$name: FAILED"; tail -30 "build-fuzz/$name.log"
      failed=$((failed + 1)); failures+=("$name")
    fi
    rm -rf "$work"
  done
else
  failed=$((failed + 1)); failures+=("fuzz build")
fi

echo "==="
[ -s build/failures.txt ] && cat build/failures.txt
for f in "${failures[@]}"; do echo "failed: $f"; done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
