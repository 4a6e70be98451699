#!/usr/bin/env bash
# run.sh MODEL.gguf [hearth run options...]
# Installs missing Debian packages, builds hearth (Release), and runs the model.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ]; then
  echo "usage: scripts/run.sh MODEL.gguf [hearth run options]" >&2
  exit 2
fi
model=$1
shift
scripts/deps.sh build
cmake -S . -B build-release -G Ninja -DCMAKE_BUILD_TYPE=Release -DHEARTH_TESTS=OFF >/dev/null
cmake --build build-release --target hearth >/dev/null
exec build-release/hearth run -m "$model" "$@"
