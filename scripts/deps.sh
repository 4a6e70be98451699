#!/usr/bin/env bash
# deps.sh - installs the Debian packages hearth needs, only those missing.
# Usage: scripts/deps.sh build|test    (sourced or run; needs root to install)
set -euo pipefail

need_build=(gcc cmake ninja-build pkg-config libjansson-dev libpcre2-dev libutf8proc-dev libxxhash-dev
            libmicrohttpd-dev libcurl4-openssl-dev libsqlite3-dev libpq-dev)
need_test=(libcmocka-dev clang libclang-rt-14-dev curl jq sqlite3 python3)
# CI (CI=true) also starts a throwaway PostgreSQL server for the usage-log tests
if [ "${CI:-}" = true ]; then need_test+=(postgresql); fi

pkgs=("${need_build[@]}")
if [ "${1:-build}" = test ]; then
  pkgs+=("${need_test[@]}")
  # the openai npm client test needs node and npm; a NodeSource nodejs
  # package brings npm itself, so only ask Debian when either is missing
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    pkgs+=(nodejs npm)
  fi
fi

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "deps: installing ${missing[*]}" >&2
if [ "$(id -u)" -ne 0 ]; then
  echo "deps: not root; run: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
