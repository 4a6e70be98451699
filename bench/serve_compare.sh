#!/usr/bin/env bash
# serve_compare.sh MODEL.gguf - hearth serve against llama-server on the same
# machine, model file and load (bench_serve: streamed /v1/completions,
# ~128-token prompts, 64 generated tokens, temperature 0, ignore_eos).
#
#   LLAMA_SERVER=/path/to/llama-server bench/serve_compare.sh MODEL.gguf
#
# llama-server runs once per level with -np equal to the concurrency
# (continuous batching is its default) and -c 1024 per slot; hearth serve
# runs once with --max-running equal to the largest level. Each server's
# peak resident memory (VmHWM) is printed after its run. Env: THREADS (2),
# LEVELS ("1 4 16 64"), RUNS (2), HEARTH (build-release/hearth),
# BENCH (build-release/bench/bench_serve), MAX_SECONDS per level (120).
# Loopback only; run it on an otherwise idle machine.
set -euo pipefail
MODEL=${1:?usage: serve_compare.sh MODEL.gguf}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
HEARTH=${HEARTH:-$ROOT/build-release/hearth}
BENCH=${BENCH:-$ROOT/build-release/bench/bench_serve}
THREADS=${THREADS:-2}
LEVELS=${LEVELS:-1 4 16 64}
RUNS=${RUNS:-2}
MAX_SECONDS=${MAX_SECONDS:-120}
PORT=${PORT:-18390}
LOG=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$LOG"' EXIT

wait_up() {
    for _ in $(seq 600); do
        curl -sf "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    echo "server did not come up; log:" >&2
    tail -20 "$LOG/server.log" >&2
    return 1
}
peak() { awk '/VmHWM/ {printf "%.0f MiB", $2 / 1024}' "/proc/$1/status"; }
stop() { kill "$1"; wait "$1" 2>/dev/null || true; }

max=1
for l in $LEVELS; do [ "$l" -gt "$max" ] && max=$l; done
echo "# $(basename "$MODEL"), $THREADS threads, $(nproc) cores, $(date -u +%FT%TZ)"
for run in $(seq "$RUNS"); do
    if [ -n "${LLAMA_SERVER:-}" ]; then
        for l in $LEVELS; do
            "$LLAMA_SERVER" -m "$MODEL" -t "$THREADS" -np "$l" -c $((l * 1024)) --host 127.0.0.1 --port "$PORT" \
                >"$LOG/server.log" 2>&1 &
            pid=$!
            wait_up
            echo "## run $run llama-server -np $l"
            "$BENCH" --url "http://127.0.0.1:$PORT" --levels "$l" --max-seconds "$MAX_SECONDS" | tail -n +2 || true
            echo "peak RSS $(peak $pid)"
            stop $pid
        done
    fi
    "$HEARTH" serve -m "$MODEL" -t "$THREADS" --max-running "$max" --port "$PORT" --usage-db none --quiet \
        >"$LOG/server.log" 2>&1 &
    pid=$!
    wait_up
    echo "## run $run hearth serve --max-running $max"
    "$BENCH" --url "http://127.0.0.1:$PORT" --levels "$(echo $LEVELS | tr ' ' ,)" --max-seconds "$MAX_SECONDS" | tail -n +2 || true
    echo "peak RSS $(peak $pid)"
    stop $pid
done
