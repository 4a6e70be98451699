#!/usr/bin/env bash
# gateway.sh - runs bench_gateway against a fake upstream on loopback:
#  1. non-streamed, 500 req/s: straight to the upstream vs through hearth;
#  2. streamed, 200 req/s: a route without vs with a shadow (sample 1) to a
#     second upstream: time to first byte.
# Usage: bench/gateway.sh [BUILD_DIR] [MODEL.gguf]   (bounded: ~30 s)
set -eu
B=${1:-build}
MODEL=${2:-$(dirname "$0")/../../shared/fixtures/models/stories260K.gguf}
T=$(mktemp -d)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$T"' EXIT
port_of() { for _ in $(seq 1 100); do p=$(sed -n "s/$2/\\1/p" "$1" | head -n1); [ -n "$p" ] && { echo "$p"; return; }; sleep 0.05; done; }
"$B/tests/fake_upstream" 2>"$T/f1" & PIDS+=("$!")
"$B/tests/fake_upstream" 2>"$T/f2" & PIDS+=("$!")
F1=$(port_of "$T/f1" '.*listening on \([0-9]*\).*')
F2=$(port_of "$T/f2" '.*listening on \([0-9]*\).*')
cat >"$T/cfg.json" <<JSON
{"backends": [{"name": "up", "base_url": "http://127.0.0.1:$F1/ok/v1", "models": {"fake-ok": {"input": 0.15, "output": 0.6}}},
              {"name": "shadow", "base_url": "http://127.0.0.1:$F2/ok/v1"}],
 "shadow_queue": 256,
 "routes": [{"name": "plain", "targets": [{"backend": "up", "model": "fake-ok"}]},
            {"name": "shadowed", "targets": [{"backend": "up", "model": "fake-ok"}],
             "shadow": {"backend": "shadow", "model": "s", "sample": 1}}]}
JSON
"$B/hearth" serve -m "$MODEL" --port 0 --quiet --usage-db "$T/u.db" --config "$T/cfg.json" 2>"$T/h" & PIDS+=("$!")
for _ in $(seq 1 100); do grep -q ready: "$T/h" && break; sleep 0.1; done
H=$(port_of "$T/h" '.*listening on http:\/\/127\.0\.0\.1:\([0-9]*\).*')
echo "== non-streamed, 500 req/s: direct vs through hearth"
"$B/bench/bench_gateway" --direct "http://127.0.0.1:$F1/ok/v1" --gateway "http://127.0.0.1:$H/v1" \
  --model-direct fake-ok --model-gateway fake-ok --rate 500 --seconds 10 --rounds 10
echo "== streamed, 200 req/s: route without (a) vs with (b) a shadow"
"$B/bench/bench_gateway" --stream --a "http://127.0.0.1:$H/v1" --b "http://127.0.0.1:$H/v1" \
  --model-a plain --model-b shadowed --rate 200 --seconds 10 --rounds 10
curl -s "http://127.0.0.1:$H/metrics" | grep -E '^hearth_pilot_(pairs|shadows_dropped)'
