#!/usr/bin/env bash
# Run the README's test command three ways and report each outcome (issue 26):
#   plain   as it is;
#   pinned  pinned to one core (taskset -c 0);
#   busy    beside two busy-loop processes (one per core of a 2-core machine).
# The suite must pass all three: no test may depend on how fast or how loaded the machine is.
#
# Usage: tools/stress_suite.sh [plain|pinned|busy ...] [-- extra pytest arguments]
#   (default: all three modes; e.g. `tools/stress_suite.sh busy -- -m slow`)
# Each run's full log goes to $STRESS_LOGS (default: a new folder under /tmp); the last
# lines printed are one per mode: its exit code, seconds and pytest's summary line.
# Exit code: 0 when every mode passed, 1 otherwise.
set -u
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
modes=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  case "$1" in
    plain|pinned|busy) modes+=("$1") ;;
    *) echo "stress_suite.sh: unknown mode '$1' (plain, pinned or busy)" >&2; exit 2 ;;
  esac
  shift
done
[ $# -gt 0 ] && shift  # the "--"
[ ${#modes[@]} -gt 0 ] || modes=(plain pinned busy)
logs=${STRESS_LOGS:-$(mktemp -d /tmp/stress_suite.XXXXXX)}
mkdir -p "$logs"

busy_pids=()
stop_busy() {
  for pid in "${busy_pids[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${busy_pids[@]}"; do wait "$pid" 2>/dev/null; done
  busy_pids=()
}
trap stop_busy EXIT INT TERM

report=()
failed=0
for mode in "${modes[@]}"; do
  log="$logs/$mode.log"
  echo "== $mode: $py -m pytest $* (log: $log)"
  start=$(date +%s)
  case "$mode" in
    plain) "$py" -m pytest "$@" >"$log" 2>&1 ;;
    pinned) taskset -c 0 "$py" -m pytest "$@" >"$log" 2>&1 ;;
    busy)
      for _ in 1 2; do (while :; do :; done) & busy_pids+=($!); done
      "$py" -m pytest "$@" >"$log" 2>&1 ;;
  esac
  rc=$?
  stop_busy
  seconds=$(( $(date +%s) - start ))
  summary=$(grep -E '(passed|failed|error)' "$log" | tail -n 1)
  line="$mode: exit $rc in ${seconds} s: ${summary:-no summary line}"
  echo "$line"
  report+=("$line")
  [ "$rc" -eq 0 ] || failed=1
done
echo "== stress_suite.sh results ($(date -u +%FT%TZ), $(nproc) cores, logs in $logs)"
printf '%s\n' "${report[@]}"
exit "$failed"
