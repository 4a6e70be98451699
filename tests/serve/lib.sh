# lib.sh - helpers for the `hearth serve` integration tests (sourced).
# Starts servers on free loopback ports, always stops them on exit, and
# counts checks; the closing line is "N passed, N failed".
set -u
BIN=${HEARTH_BIN:?HEARTH_BIN must name the hearth binary}
FIX=${HEARTH_FIXTURES:-${HEARTH_FIXTURES_DEFAULT:-}}
MODEL=$FIX/models/stories260K.gguf
TMPD=$(mktemp -d "${HEARTH_TMP:-/tmp}/serve.XXXXXX")
PASS=0
FAIL=0
SERVER_PIDS=()

cleanup() {
  for p in "${SERVER_PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
  jobs -p | xargs -r kill 2>/dev/null
  rm -rf "$TMPD"
}
trap cleanup EXIT

ok() { PASS=$((PASS + 1)); }
bad() { FAIL=$((FAIL + 1)); echo "FAIL: $*" >&2; }
# check NAME EXPECTED ACTUAL
check() { if [ "$2" = "$3" ]; then ok; else bad "$1: expected [$2], got [$3]"; fi; }
# check_true NAME COMMAND...
check_true() { local n=$1; shift; if "$@"; then ok; else bad "$n"; fi; }
# missing_prereq WHAT: a prerequisite is missing. Under CI (CI=true) that is a
# failure (exit 1): CI must run every test; elsewhere a skip (exit 77).
missing_prereq() {
  if [ "${CI:-}" = true ]; then echo "FAIL: $* (required when CI=true)" >&2; exit 1; fi
  echo "skipped: $*"; exit 77
}

# start_server NAME ARGS...: sets BASE_<NAME>-style globals BASE and PID
start_server() {
  local log=$TMPD/server.$1.log db=$TMPD/usage.$1.db; shift
  "$BIN" serve --port 0 --quiet --usage-db "$db" "$@" 2>"$log" &
  PID=$!
  SERVER_PIDS+=("$PID")
  local port=""
  for _ in $(seq 1 300); do
    port=$(sed -n 's/.*listening on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log" | head -n1)
    if [ -n "$port" ] && grep -q "ready:" "$log"; then break; fi
    if ! kill -0 "$PID" 2>/dev/null; then echo "server died:" >&2; cat "$log" >&2; exit 1; fi
    sleep 0.1
  done
  grep -q "ready:" "$log" || { echo "server not ready:" >&2; cat "$log" >&2; exit 1; }
  BASE=http://127.0.0.1:$port
  LOG=$log
}

# wait_clients: waits for the background jobs that are not servers. A bare
# `wait $(jobs -p | grep -v SERVER)` waits for every child, servers included
# (forever), when the clients are already gone and the list comes out empty.
wait_clients() {
  local p pids=()
  for p in $(jobs -p); do
    [[ " ${SERVER_PIDS[*]} " == *" $p "* ]] || pids+=("$p")
  done
  [ ${#pids[@]} -eq 0 ] || wait "${pids[@]}" 2>/dev/null
  return 0
}

# stop_server PID: SIGTERM, must exit 0 within 10 s
stop_server() {
  kill -TERM "$1"
  local rc=0
  for _ in $(seq 1 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$1" 2>/dev/null; then bad "server did not stop on SIGTERM"; kill -KILL "$1"; fi
  wait "$1" || rc=$?
  check "server exit status after SIGTERM" 0 "$rc"
}

# post PATH JSON [curl args...]: body to $TMPD/body, prints the status code
post() {
  local path=$1 data=$2; shift 2
  curl -s -o "$TMPD/body" -w '%{http_code}' -H 'Content-Type: application/json' "$@" --data-binary "$data" "$BASE$path"
}
body() { cat "$TMPD/body"; }
jqb() { jq -r "$1" "$TMPD/body"; }

# metric NAME: the value of an unlabelled metric
metric() { curl -s "$BASE/metrics" | awk -v n="$1" '$1 == n { print $2 }'; }

# SSE file -> concatenated text of choice $2 (chat content or completion text)
sse_text() {
  grep '^data: {' "$1" | sed 's/^data: //' |
    jq -j --argjson i "${2:-0}" '.choices[]? | select(.index == $i) | (.delta.content // .text // empty)'
}

finish() {
  echo "$PASS passed, $FAIL failed"
  [ "$FAIL" -eq 0 ]
}
