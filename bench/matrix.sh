#!/usr/bin/env bash
# bench/matrix.sh - the standard CPU benchmark matrix:
#   {Qwen2.5-0.5B, Llama-3.2-1B} x {Q8_0, Q4_0, Q4_K_M} x {pp512, tg128} x {1, 2 threads}
# on synthetic files (hearth synth; cached, made once), with a memory
# read-bandwidth probe so decode is also shown as a share of what memory can
# deliver, and the peak RSS of each `hearth bench` process. If LLAMA_BENCH
# points to a llama-bench binary, it runs on the same files in the same run
# and the table gets llama.cpp's numbers and the ratio hearth / llama.cpp.
#
# Environment (all optional):
#   HEARTH_BENCH_CACHE  folder for the synthetic GGUFs (default ~/.cache/hearth-bench; ~3.3 GB)
#   HEARTH_BUILD        a build folder with hearth and bench_membw (default: builds build-release/)
#   HEARTH_FIXTURES     fixtures with tokenizer/ggml-vocab-*.gguf (default ../shared/fixtures);
#                       without them the files get a minimal byte-level vocabulary
#   LLAMA_BENCH         path to llama-bench for the side-by-side comparison
#   MODELS TYPES        space-separated lists (defaults above)
#   THREADS PP TG REPS  thread list "1,2", prompt length 512, generation length 128, repetitions 3
#   TIMEOUT             seconds allowed per bench process (default 1800); a run over it shows "timeout"
#
# Run time: bounded by (models x types) x (1 + [llama-bench]) x TIMEOUT, i.e. at most
# 6 x 30 min (x2 with LLAMA_BENCH). Typical on a 2-vCPU machine: synthesis ~1 min for
# all six files, then 3-4 min per Qwen2.5-0.5B file and 8-10 min per Llama-3.2-1B file with
# REPS=3 (pp512 dominates): 32 min of benchmarking measured at load average ~7 on 2 vCPUs.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${HEARTH_BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hearth-bench}
FIXTURES=${HEARTH_FIXTURES:-$ROOT/../shared/fixtures}
MODELS=${MODELS:-"Qwen2.5-0.5B Llama-3.2-1B"}
TYPES=${TYPES:-"Q8_0 Q4_0 Q4_K_M"}
THREADS=${THREADS:-1,2}
PP=${PP:-512}
TG=${TG:-128}
REPS=${REPS:-3}
TIMEOUT=${TIMEOUT:-1800}
LLAMA_BENCH=${LLAMA_BENCH:-}

log() { echo "matrix: $*" >&2; }

# --- build -------------------------------------------------------------------
if [ -n "${HEARTH_BUILD:-}" ]; then
  BUILD=$HEARTH_BUILD
else
  BUILD=$ROOT/build-release
  "$ROOT/scripts/deps.sh" build
  gen=()
  if [ ! -f "$BUILD/CMakeCache.txt" ] && command -v ninja >/dev/null; then gen=(-G Ninja); fi
  # Release (-O3); warnings stay warnings here: gcc 12 -O3 reports a false
  # "maybe uninitialized" in src/gguf/gguf.c that -O2 builds do not see.
  cmake -S "$ROOT" -B "$BUILD" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DHEARTH_TESTS=OFF -DHEARTH_WERROR=OFF >/dev/null
fi
build_log=$(mktemp)
cmake --build "$BUILD" --target hearth bench_membw >"$build_log" 2>&1 || {
  log "build failed:"; cat "$build_log" >&2; rm -f "$build_log"; exit 1; }
rm -f "$build_log"
HEARTH=$BUILD/hearth
MEMBW=$BUILD/bench/bench_membw
[ -x "$HEARTH" ] && [ -x "$MEMBW" ] || { log "no hearth / bench_membw in $BUILD"; exit 1; }
if [ -n "$LLAMA_BENCH" ] && [ ! -x "$LLAMA_BENCH" ]; then
  log "LLAMA_BENCH=$LLAMA_BENCH is not executable"; exit 1
fi
TIME=(); [ -x /usr/bin/time ] && TIME=(/usr/bin/time -v)

mkdir -p "$CACHE"
OUT=$(mktemp -d "${TMPDIR:-/tmp}/hearth-matrix.XXXXXX")
trap 'rm -rf "$OUT"' EXIT

load() { cut -d' ' -f1-3 /proc/loadavg; }
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
log "cpu: $cpu, $(nproc) online CPUs, load average at start: $(load)"
load_start=$(load)
t_start=$(date +%s)

# --- memory bandwidth ----------------------------------------------------------
log "memory read bandwidth (1 GiB, best of 5; again at the end) ..."
"$MEMBW" --size-mib 1024 --reps 5 --threads "$THREADS" > "$OUT/membw.txt"

# --- synthetic files -----------------------------------------------------------
vocab_for() {
  local f=""
  case "$1" in
    Qwen*) f=$FIXTURES/tokenizer/ggml-vocab-qwen2.gguf ;;
    Llama-3*) f=$FIXTURES/tokenizer/ggml-vocab-llama-bpe.gguf ;;
  esac
  if [ -n "$f" ] && [ -f "$f" ]; then echo "--vocab $f"; fi
}
for m in $MODELS; do
  for t in $TYPES; do
    f=$CACHE/$m-$t.gguf
    if [ ! -f "$f" ]; then
      log "synthesising $m $t -> $f"
      # shellcheck disable=SC2046
      "$HEARTH" synth --model "$m" --type "$t" $(vocab_for "$m") -q -o "$f"
    fi
  done
done

# --- runs ------------------------------------------------------------------------
# Each run writes NAME.json (bench output) and NAME.time (/usr/bin/time -v).
run() { # name cmd...
  local name=$1; shift
  local rc=0
  timeout "$TIMEOUT" "${TIME[@]}" "$@" > "$OUT/$name.json" 2> "$OUT/$name.time" || rc=$?
  if [ $rc -eq 124 ]; then echo timeout > "$OUT/$name.status"; log "  $name: timed out after ${TIMEOUT}s";
  elif [ $rc -ne 0 ]; then echo "failed($rc)" > "$OUT/$name.status"; log "  $name: failed, see below"; tail -3 "$OUT/$name.time" >&2;
  else echo ok > "$OUT/$name.status"; fi
}
for m in $MODELS; do
  for t in $TYPES; do
    f=$CACHE/$m-$t.gguf
    log "hearth bench $m $t (load $(load)) ..."
    run "hearth-$m-$t" "$HEARTH" bench -m "$f" -p "$PP" -n "$TG" -t "$THREADS" -r "$REPS" --json
    if [ -n "$LLAMA_BENCH" ]; then
      log "llama-bench $m $t (load $(load)) ..."
      run "llama-$m-$t" "$LLAMA_BENCH" -m "$f" -p "$PP" -n "$TG" -t "$THREADS" -r "$REPS" -o json
    fi
  done
done
load_end=$(load)
t_end=$(date +%s)
# probe again: the best of both probes is what memory can deliver (a busy
# machine lowers either one)
"$MEMBW" --size-mib 1024 --reps 5 --threads "$THREADS" >> "$OUT/membw.txt"

# --- table -------------------------------------------------------------------------
# Parses the one-key-per-line JSON that both benches print: one record per object.
records() { # file prefix
  awk -v P="$2" '
    /"n_prompt"|"n_gen"|"n_threads"|"avg_ts"|"stddev_ts"|"bandwidth_gbs"|"model_size"|"weight_bytes_per_token"/ {
      line = $0; gsub(/[",]/, "", line); split(line, kv, ":"); k = kv[1]; gsub(/ /, "", k);
      v = kv[2]; gsub(/ /, "", v); r[k] = v }
    /^ *}/ { if ("n_prompt" in r) print P, r["n_prompt"], r["n_gen"], r["n_threads"], r["avg_ts"], r["stddev_ts"], r["model_size"];
             delete r }' "$1"
}
peak_kb() { sed -n 's/.*Maximum resident set size (kbytes): *//p' "$1" 2>/dev/null | tail -1; }

{
  while read -r thr gbs; do echo "BW $thr $gbs"; done < <(awk '{print $2, $4}' "$OUT/membw.txt")
  for m in $MODELS; do
    for t in $TYPES; do
      for who in hearth llama; do
        name=$who-$m-$t
        [ -f "$OUT/$name.status" ] || continue
        st=$(cat "$OUT/$name.status")
        rss=$(peak_kb "$OUT/$name.time"); rss=${rss:-0}
        if [ "$st" = ok ]; then
          records "$OUT/$name.json" "R $who $m $t $rss"
        else
          echo "F $who $m $t $st"
        fi
      done
    done
  done
} > "$OUT/all.txt"

for m in $MODELS; do for t in $TYPES; do
  f=$CACHE/$m-$t.gguf
  # weight bytes one decode step reads: from hearth's JSON (same for llama.cpp: the same file)
  wb=$(sed -n 's/.*"weight_bytes_per_token": *\([0-9]*\).*/\1/p' "$OUT/hearth-$m-$t.json" 2>/dev/null | head -1)
  echo "W $m $t ${wb:-0} $(stat -c %s "$f")"
done; done >> "$OUT/all.txt"

awk -v have_llama="${LLAMA_BENCH:+1}" '
  function pad(s) { return sprintf("%" (index(s, "±") ? 21 : 20) "s", s) } # "±" is 2 bytes, 1 column
  $1 == "BW" { if ($3 > bw[$2]) bw[$2] = $3; next }
  $1 == "W"  { wb[$2 " " $3] = $4; fsize[$2 " " $3] = $5; next }
  $1 == "F"  { fail[$2 " " $3 " " $4] = $5; next }
  $1 == "R"  { key = $3 " " $4 " " ($6 > 0 ? "pp" $6 : "tg" $7) " " $8;
               ts[$2 " " key] = $9; sd[$2 " " key] = $10; rss[$2 " " $3 " " $4] = $5;
               if (!(key in seen)) { seen[key] = 1; order[n++] = key } next }
  END {
    printf "| %-13s | %-6s | %8s | %-6s | %3s | %20s | %7s | %7s | %9s |", "model", "type", "file MiB", "test", "thr", "hearth t/s", "GB/s", "% membw", "RSS MiB";
    if (have_llama) printf " %20s | %9s | %7s |", "llama.cpp t/s", "RSS MiB", "ratio";
    printf "\n|---------------|--------|----------|--------|-----|----------------------|---------|---------|-----------|";
    if (have_llama) printf "----------------------|-----------|---------|";
    printf "\n";
    for (i = 0; i < n; i++) {
      split(order[i], k, " "); mt = k[1] " " k[2]; test = k[3]; thr = k[4];
      h = ts["hearth " order[i]];
      gbs = ""; share = "";
      if (substr(test, 1, 2) == "tg" && h != "") {
        g = wb[mt] * h / 1e9; gbs = sprintf("%.2f", g);
        if ((thr in bw) && bw[thr] > 0) share = sprintf("%.0f%%", 100 * g / bw[thr]);
      }
      hs = h != "" ? sprintf("%.2f ± %.2f", h, sd["hearth " order[i]]) : (("hearth " mt) in fail ? fail["hearth " mt] : "-");
      printf "| %-13s | %-6s | %8.1f | %-6s | %3s | " pad(hs) " | %7s | %7s | %9.1f |", k[1], k[2], fsize[mt] / 1048576, test, thr, gbs, share, rss["hearth " mt] / 1024;
      if (have_llama) {
        l = ts["llama " order[i]];
        ls = l != "" ? sprintf("%.2f ± %.2f", l, sd["llama " order[i]]) : (("llama " mt) in fail ? fail["llama " mt] : "-");
        ratio = (l > 0 && h > 0) ? sprintf("%.2f", h / l) : "";
        printf " " pad(ls) " | %9.1f | %7s |", rss["llama " mt] / 1024, ratio;
      }
      printf "\n";
    }
    for (t = 1; t <= 1024; t++) if (t in bw) printf "memory read bandwidth, %s thread(s): %.2f GB/s (bench_membw, 1 GiB, best of 5 before and 5 after)\n", t, bw[t];
  }' "$OUT/all.txt"
echo "GB/s = weights read per generated token (every layer matrix + the output matrix + one embedding row) x tokens/s;"
echo "% membw = that against the probe with the same thread count. RSS = peak resident set of the whole bench"
echo "process (/usr/bin/time -v), mmapped weight pages included."
echo "cpu: $cpu, $(nproc) online CPUs; load average (1/5/15 min) at start: $load_start, at end: $load_end;"
echo "pp$PP/tg$TG, $REPS repetitions, threads $THREADS; $((t_end - t_start)) s of benchmarking; files in $CACHE"
