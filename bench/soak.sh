#!/usr/bin/env bash
# soak.sh - soak and chaos run against `hearth serve` on loopback (bounded).
#
# Starts a server on a free port with a route "up" to a fake upstream
# (tests/tools/fake_upstream, mode "slow": 300 ms, then a streamed answer),
# warms up, records the server's RSS, then drives REQUESTS streamed
# completions at CONC concurrent with bench_serve: DROP of the clients close
# mid-stream, SLOW of the others read at 2 kB/s, ALT of the requests go to
# the route; meanwhile the upstream is SIGSTOPped for STOP_S seconds every
# PERIOD_S seconds. Afterwards it waits for the server to go idle and checks:
#   - RSS within 10% of the post-warm-up baseline
#   - every KV block free (hearth_kv_blocks_used 0, free = total), nothing
#     running, queued or open
#   - /metrics agree with the client: 200 responses = requests sent,
#     hearth_http_client_disconnects_total = local clients that dropped
#     mid-stream, requests finished by the scheduler = local requests
# and exits 1 if any check fails. Not a test: run by hand (minutes).
#
# usage: bench/soak.sh [MODEL.gguf]     (default: the stories260K fixture)
#   env: BUILD (build dir, default build), REQUESTS (1000), CONC (64),
#        DROP (0.3), SLOW (0.1), ALT (0.1), GEN (128 tokens), STOP_S (1),
#        PERIOD_S (4), WARMUP (128), KV_MEM (16M)
#
# The KV pool is allocated at start and its pages are touched as blocks
# are first used (the prefix cache keeps freed blocks and hands out unused
# ones first), so RSS grows until the whole pool has been used once: KV_MEM
# is kept small enough for the warm-up to touch all of it, else the RSS
# check would measure first touches, not leaks.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
BUILD=${BUILD:-$ROOT/build}
BIN=$BUILD/hearth
BENCH=$BUILD/bench/bench_serve
FAKE=$BUILD/tests/fake_upstream
MODEL=${1:-${HEARTH_FIXTURES:-$ROOT/../shared/fixtures}/models/stories260K.gguf}
REQUESTS=${REQUESTS:-1000} KV_MEM=${KV_MEM:-16M} CONC=${CONC:-64} DROP=${DROP:-0.3} SLOW=${SLOW:-0.1} ALT=${ALT:-0.1}
GEN=${GEN:-128} STOP_S=${STOP_S:-1} PERIOD_S=${PERIOD_S:-4} WARMUP=${WARMUP:-128}
for f in "$BIN" "$BENCH" "$FAKE" "$MODEL"; do
  [ -e "$f" ] || { echo "soak: missing $f (build first: cmake --build $BUILD)" >&2; exit 2; }
done
command -v curl >/dev/null || { echo "soak: curl missing" >&2; exit 2; }

TMPD=$(mktemp -d "${TMPDIR:-/tmp}/soak.XXXXXX")
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -CONT "$p" 2>/dev/null; kill -KILL "$p" 2>/dev/null; done
  rm -rf "$TMPD"
}
trap cleanup EXIT

"$FAKE" 2>"$TMPD/fake.log" &
FAKE_PID=$!
PIDS+=("$FAKE_PID")
for _ in $(seq 1 100); do
  FPORT=$(sed -n 's/.*listening on \([0-9]*\).*/\1/p' "$TMPD/fake.log" 2>/dev/null)
  [ -n "$FPORT" ] && break
  sleep 0.05
done
[ -n "${FPORT:-}" ] || { echo "soak: fake_upstream did not start" >&2; exit 1; }
cat >"$TMPD/cfg.json" <<JSON
{"backends": [{"name": "fake", "base_url": "http://127.0.0.1:$FPORT/slow/v1", "first_byte_timeout_s": 30}],
 "routes": [{"name": "up", "targets": [{"backend": "fake", "model": "m"}]}]}
JSON

"$BIN" serve -m "$MODEL" --port 0 --quiet --usage-db none --max-running 32 --kv-mem "$KV_MEM" --config "$TMPD/cfg.json" \
  2>"$TMPD/server.log" &
SPID=$!
PIDS+=("$SPID")
for _ in $(seq 1 300); do
  PORT=$(sed -n 's/.*listening on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$TMPD/server.log" 2>/dev/null | head -n1)
  [ -n "$PORT" ] && grep -q "ready:" "$TMPD/server.log" && break
  kill -0 "$SPID" 2>/dev/null || { cat "$TMPD/server.log" >&2; exit 1; }
  sleep 0.1
done
BASE=http://127.0.0.1:$PORT
grep -q "ready:" "$TMPD/server.log" || { echo "soak: server not ready" >&2; exit 1; }

MCALLS=0 # /metrics answers are 200s too: counted to subtract them
metrics() { curl -s "$BASE/metrics" >"$TMPD/metrics"; MCALLS=$((MCALLS + 1)); }
m() { awk -v n="$1" '$1 == n { print $2; f = 1 } END { if (!f) print 0 }' "$TMPD/metrics"; }
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$SPID/status"; }
# wait_idle: up to 60 s for no open generation, nothing running or queued
wait_idle() {
  for _ in $(seq 1 600); do
    metrics
    [ "$(m hearth_http_generations_open)" = 0 ] && [ "$(m hearth_running_sequences)" = 0 ] &&
      [ "$(m hearth_queue_depth)" = 0 ] && return 0
    sleep 0.1
  done
  return 1
}
FAILS=0
check() { if [ "$2" = "$3" ]; then echo "ok    $1: $3"; else echo "FAIL  $1: expected $2, got $3"; FAILS=$((FAILS + 1)); fi; }

# warm-up: the same mix (drops, slow readers, routed share) without the
# upstream stops, so the allocator's high-water mark and the prefix cache settle
"$BENCH" --url "$BASE" --levels "$CONC" --requests "$WARMUP" --gen-tokens "$GEN" --prompt-tokens 64 \
  --drop-fraction "$DROP" --slow-fraction "$SLOW" --alt-model up --alt-fraction "$ALT" >"$TMPD/warmup.txt" || { cat "$TMPD/warmup.txt"; echo "soak: warm-up failed"; exit 1; }
wait_idle || { echo "soak: server not idle after warm-up"; exit 1; }
RSS0=$(rss_kb)
OK0=$(m 'hearth_http_requests_total{code="200"}') DISC0=$(m hearth_http_client_disconnects_total)
FIN0=$(m hearth_requests_finished_total) M0=$MCALLS
echo "post-warm-up RSS: $RSS0 kB (KV pool $(($(m hearth_kv_blocks_total) * $(m hearth_kv_block_bytes) / 1024)) kB)"

# chaos: stop the upstream for STOP_S every PERIOD_S while the load runs
(
  while sleep "$PERIOD_S"; do
    kill -STOP "$FAKE_PID" 2>/dev/null || exit 0
    sleep "$STOP_S"
    kill -CONT "$FAKE_PID" 2>/dev/null || exit 0
  done
) &
CHAOS=$!
PIDS+=("$CHAOS")
T0=$(date +%s.%N)
"$BENCH" --url "$BASE" --levels "$CONC" --requests "$REQUESTS" --gen-tokens "$GEN" --prompt-tokens 64 \
  --drop-fraction "$DROP" --slow-fraction "$SLOW" --alt-model up --alt-fraction "$ALT" --max-seconds 600 \
  | tee "$TMPD/soak.txt"
T1=$(date +%s.%N)
kill "$CHAOS" 2>/dev/null
wait "$CHAOS" 2>/dev/null
kill -CONT "$FAKE_PID"
echo "load phase: $(awk -v a="$T0" -v b="$T1" 'BEGIN { printf "%.1f", b - a }') s"

idle=yes
wait_idle || idle=no
check "server idle afterwards" yes "$idle"
sleep 1 # let freed memory settle (allocator trims, closed connections)
RSS1=$(rss_kb)
metrics
read -r req ok failed dropped slow alt alt_ok alt_dropped < <(sed -n 's/^# totals: requests \([0-9]*\) ok \([0-9]*\) failed \([0-9]*\) dropped \([0-9]*\) slow \([0-9]*\) alt \([0-9]*\) alt_ok \([0-9]*\) alt_dropped \([0-9]*\)$/\1 \2 \3 \4 \5 \6 \7 \8/p' "$TMPD/soak.txt")
echo "client: $req requests, $ok complete, $failed failed, $dropped dropped mid-stream ($alt_dropped routed), $slow slow readers, $alt routed ($alt_ok complete)"
echo "server RSS: $RSS0 kB after warm-up, $RSS1 kB after the soak"
check "RSS within 10% of the baseline" yes \
  "$(awk -v a="$RSS0" -v b="$RSS1" 'BEGIN { d = b - a; if (d < 0) d = -d; print (d <= 0.1 * a) ? "yes" : "no (" b " vs " a " kB)" }')"
check "client requests completed" "$REQUESTS" "$req"
check "client failures (other than deliberate drops)" 0 "$failed"
check "KV blocks used" 0 "$(m hearth_kv_blocks_used)"
check "KV blocks free" "$(m hearth_kv_blocks_total)" "$(m hearth_kv_blocks_free)"
check "running sequences" 0 "$(m hearth_running_sequences)"
check "open generations" 0 "$(m hearth_http_generations_open)"
# + 1: bench_serve's /tokenize call that sizes its prompts
check "200 responses = requests sent (+ /tokenize, /metrics polls)" "$((req + 1 + MCALLS - M0))" \
  "$(($(m 'hearth_http_requests_total{code="200"}') - OK0))"
check "client disconnects = local drops" "$((dropped - alt_dropped))" "$(($(m hearth_http_client_disconnects_total) - DISC0))"
check "scheduler finished = local requests" "$((req - alt))" "$(($(m hearth_requests_finished_total) - FIN0))"
grep -E '^hearth_(route|upstream)' "$TMPD/metrics" | grep -v '^#' | sed 's/^/metric  /'
kill -0 "$SPID" 2>/dev/null || { echo "FAIL  server died"; FAILS=$((FAILS + 1)); }
[ "$FAILS" -eq 0 ] && echo "soak: all checks passed" || echo "soak: $FAILS check(s) failed"
[ "$FAILS" -eq 0 ]
