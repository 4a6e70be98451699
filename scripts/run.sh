#!/usr/bin/env bash
# run.sh MODEL.gguf [hearth serve options...]
# Installs missing Debian packages, builds hearth (Release) and serves the
# model on http://127.0.0.1:8080 (OpenAI-compatible) until Ctrl-C / SIGTERM.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ]; then
  echo "usage: scripts/run.sh MODEL.gguf [hearth serve options]" >&2
  exit 2
fi
model=$1
shift
scripts/deps.sh build
cmake -S . -B build-release -G Ninja -DCMAKE_BUILD_TYPE=Release -DHEARTH_TESTS=OFF -DHEARTH_BENCH=OFF >/dev/null
cmake --build build-release --target hearth >/dev/null
exec build-release/hearth serve -m "$model" "$@"
