#!/usr/bin/env bash
# test.sh - installs missing Debian packages, builds hearth and runs every test.
# With CI=true it also builds with clang -Werror, runs the whole suite under
# AddressSanitizer + UndefinedBehaviorSanitizer, and runs each libFuzzer
# target briefly on its corpus. With CI=true the usage-log tests also run
# against a real PostgreSQL server: a throwaway cluster in a temp folder
# (scripts/pg_scratch.sh; Unix socket only, stopped on exit) whose URL goes
# to the tests in HEARTH_TEST_PG. Outside CI they run on PostgreSQL only when
# HEARTH_TEST_PG is already set (e.g. HEARTH_TEST_PG=postgresql://me@db/hearth_test).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test
jobs=$(nproc)

if [ "${CI:-}" = true ] && [ -z "${HEARTH_TEST_PG:-}" ]; then
  pgdir=$(mktemp -d /tmp/hearth-pg.XXXXXX)
  trap 'scripts/pg_scratch.sh stop "$pgdir"' EXIT
  HEARTH_TEST_PG=$(scripts/pg_scratch.sh start "$pgdir" "${HEARTH_PG_PORT:-55432}")
  export HEARTH_TEST_PG
  echo "== PostgreSQL for the usage-log tests: $HEARTH_TEST_PG"
fi

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$jobs"
ctest --test-dir build --output-on-failure -j"$jobs"

if [ "${CI:-}" = true ] || [ "${HEARTH_FULL_TESTS:-}" = 1 ]; then
  echo "== gcc Release build (-O3 -Werror), as scripts/run.sh builds it"
  cmake -S . -B build-release -G Ninja -DCMAKE_BUILD_TYPE=Release -DHEARTH_TESTS=OFF >/dev/null
  cmake --build build-release -j"$jobs"
  echo "== clang build (-Werror)"
  CC=clang cmake -S . -B build-clang -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHEARTH_FUZZ=ON >/dev/null
  cmake --build build-clang -j"$jobs"
  echo "== fuzz targets, 30 s each on their corpus"
  for f in build-clang/tests/fuzz/fuzz_*; do
    name=$(basename "$f")
    corpus=tests/fuzz/corpus/${name#fuzz_}
    work=$(mktemp -d)
    if ! "$f" -max_total_time=30 -print_final_stats=1 -artifact_prefix="$work/" "$work" "$corpus" >"$work.log" 2>&1; then
      tail -n 40 "$work.log" >&2
      echo "fuzz target $name failed" >&2
      exit 1
    fi
    echo "$name: $(grep -o 'stat::number_of_executed_units: [0-9]*' "$work.log")"
    rm -rf "$work" "$work.log"
  done
  echo "== ASan + UBSan"
  CC=clang cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHEARTH_SANITIZE=ON >/dev/null
  cmake --build build-asan -j"$jobs"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-asan --output-on-failure -j"$jobs"
fi
