#!/usr/bin/env bash
# decide.sh - `hearth models`, `hearth fit` and `hearth cost` from the
# command line: the JSON fields, hand-checked KV figures, one-line errors
# with exit 1 for bad names and files, usage errors with exit 2, and the
# cost chart (a well-formed SVG with the expected lines and labels). Every
# check runs: the usage log is seeded with Python's sqlite3 module, and a
# missing fixture is a failure, not a skip.
set -u
BIN=${HEARTH_BIN:?HEARTH_BIN not set}
FIX=${HEARTH_FIXTURES:-${HEARTH_FIXTURES_DEFAULT:?}}
TMP=$(mktemp -d "${HEARTH_TMP:-/tmp}/decide.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
fails=0
check() { # name, want, got
    if [ "$2" != "$3" ]; then
        echo "FAIL $1"; echo "  want: $2"; echo "  got:  $3"; fails=$((fails + 1))
    fi
}
one_line_err() { # name, want-status, command...
    local name=$1 want=$2; shift 2
    local err rc
    err=$("$@" 2>&1 >/dev/null); rc=$?
    check "$name status" "$want" "$rc"
    check "$name lines" 1 "$(printf '%s\n' "$err" | wc -l | tr -d ' ')"
}
jget() { # file, python expression over `d`
    python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print($2)" "$1"
}

# catalog: stable lowercase names, the guide's models present
"$BIN" models --catalog --json > "$TMP/cat.json"; check "catalog status" 0 $?
for n in qwen2.5-0.5b-instruct llama-3.1-70b-instruct gpt-oss-120b deepseek-v3.2 kimi-k2.5 glm-5 qwen3.5-27b \
         mistral-small-4 gemma-3-27b-it phi-4 qwen3-235b-a22b deepseek-r1-distill-qwen-32b; do
    check "catalog has $n" 1 "$(jget "$TMP/cat.json" "sum(1 for m in d if m['name'] == '$n')")"
done
check "catalog names lowercase" True "$(jget "$TMP/cat.json" "all(m['name'] == m['name'].lower() for m in d)")"
"$BIN" models --catalog | grep -q "^llama-3.1-70b-instruct "; check "catalog text" 0 $?
"$BIN" models --prices --json > "$TMP/p.json"; check "prices status" 0 $?
check "prices sourced" True "$(jget "$TMP/p.json" "all(a['source'] and a['date'] for a in d)")"
"$BIN" models --gpus | grep -q "^h100-80gb"; check "gpus text" 0 $?

# fit: the hand-checked KV figures, required JSON fields
"$BIN" fit --model llama-3.1-70b-instruct --hw H100-80GB --quant F16 --json > "$TMP/f.json"; check "fit status" 0 $?
check "70B kv/token" 327680 "$(jget "$TMP/f.json" "d['kv_bytes_per_token']")"
check "70B F16 fits one H100" False "$(jget "$TMP/f.json" "d['fits']")"
check "fit fields" True "$(jget "$TMP/f.json" "all(k in d for k in ['weights_bytes','kv_bytes_per_token','kv_bytes','total_bytes','device_bytes','fits','max_users','decode_tokens_per_s_per_user','decode_tokens_per_s_total','assumptions'])")"
"$BIN" fit --model llama-3.1-70b-instruct --hw h100-80gb --quant F16 --gpus 2 --json > "$TMP/f2.json"
check "70B F16 fits two H100s" True "$(jget "$TMP/f2.json" "d['fits']")"
"$BIN" fit --model qwen2.5-0.5b-instruct --hw rtx4090 --json > "$TMP/q.json"
check "0.5B kv/token" 12288 "$(jget "$TMP/q.json" "d['kv_bytes_per_token']")"
"$BIN" fit --model llama-3.1-70b-instruct --hw l4 --quant F16 | grep -q "DOES NOT FIT: .*weights"
check "says why" 0 $?
"$BIN" fit --model "$FIX/models/synth/qwen2-Q8_0.gguf" --hw a100-80gb --json > "$TMP/g.json"
check "fit gguf status" 0 $?
check "gguf weights exact" True "$(jget "$TMP/g.json" "d['weights_exact']")"
one_line_err "unknown hw" 1 "$BIN" fit --model qwen2.5-0.5b-instruct --hw tpu-v9
one_line_err "unknown model" 1 "$BIN" fit --model no-such-model --hw l4
one_line_err "unknown quant" 1 "$BIN" fit --model qwen2.5-0.5b-instruct --hw l4 --quant Q9
one_line_err "missing gguf" 1 "$BIN" fit --model "$TMP/nope.gguf" --hw l4
one_line_err "measure on gpu" 1 "$BIN" fit --model qwen2.5-0.5b-instruct --hw l4 --measure
echo '{"gpus": [{"name": "x"}]}' > "$TMP/badgpu.json"
one_line_err "bad gpu file" 1 "$BIN" fit --model qwen2.5-0.5b-instruct --hw l4 --gpu-file "$TMP/badgpu.json"
"$BIN" fit --hw l4 >/dev/null 2>&1; check "fit usage" 2 $?
"$BIN" fit --model qwen2.5-0.5b-instruct --hw l4 --ctx abc >/dev/null 2>&1; check "fit bad ctx" 2 $?

# cost: a log seeded with the schema hearth writes (version 2)
python3 -c 'import sqlite3, sys; sqlite3.connect(sys.argv[1]).executescript(sys.stdin.read())' "$TMP/u.db" <<'SQL'
CREATE TABLE usage (id INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL, request_id TEXT NOT NULL DEFAULT '', key_id TEXT NOT NULL DEFAULT '', model TEXT NOT NULL DEFAULT '', backend TEXT NOT NULL DEFAULT '', prompt_tokens INTEGER NOT NULL DEFAULT 0, cached_tokens INTEGER NOT NULL DEFAULT 0, completion_tokens INTEGER NOT NULL DEFAULT 0, reasoning_tokens INTEGER NOT NULL DEFAULT 0, ttft_ms REAL, duration_ms REAL NOT NULL DEFAULT 0, status INTEGER NOT NULL DEFAULT 0, finish_reason TEXT NOT NULL DEFAULT '', stream INTEGER NOT NULL DEFAULT 0);
CREATE INDEX usage_ts ON usage(ts_ms);
PRAGMA user_version = 2;
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 9999)
INSERT INTO usage (ts_ms, model, prompt_tokens, cached_tokens, completion_tokens, duration_ms, status, stream)
SELECT 1761955200000 + i * 259200, 'm', 4000, 1000, 1000, 1500, 200, i % 2 FROM n;
SQL
# 10,000 requests over 30 days (2025-11-01 .. 2025-12-01): 50M tokens in the period,
# 730/720 x 50M per month
"$BIN" cost --usage-db "$TMP/u.db" --since 2025-11-01 --until 2025-12-01 --hw h100-80gb --api gpt-4o --api o3 \
    --json --svg "$TMP/c.svg" > "$TMP/c.json"; check "cost status" 0 $?
check "cost monthly total" 50694444 "$(jget "$TMP/c.json" "round(d['monthly']['total_tokens'])")"
# gpt-4o: (30M uncached x 2.50 + 10M cached x 1.25 + 10M output x 10) / 1M x 730/720 = 190.10
check "cost gpt-4o" 190.1 "$(jget "$TMP/c.json" "round(d['apis'][0]['monthly'], 2)")"
check "cost self" 1825.0 "$(jget "$TMP/c.json" "d['self_hosted']['monthly']")"
check "cost band" "self-hosting usually pays above ~50M tokens/month, but not at these prices" \
    "$(jget "$TMP/c.json" "d['recommendation']")"
grep -q "</svg>" "$TMP/c.svg"; check "svg written" 0 $?
"$BIN" cost --usage-db "$TMP/u.db" | grep -q "^recommendation: "; check "cost text" 0 $?
# well-formed XML; 1000x520; one line per API and the self-hosting line, every
# point a finite number; the legend names both APIs; the current volume marked
check "svg content" "ok" "$(python3 - "$TMP/c.svg" <<'PY'
import math, sys, xml.etree.ElementTree as ET
ns = "{http://www.w3.org/2000/svg}"
root = ET.parse(sys.argv[1]).getroot()
bad = []
if root.tag != ns + "svg" or root.get("width") != "1000" or root.get("height") != "520":
    bad.append("root %s %s %s" % (root.tag, root.get("width"), root.get("height")))
lines = root.findall(ns + "polyline")
if len(lines) != 3:
    bad.append("%d polylines" % len(lines))
for pl in lines:
    pts = [float(v) for p in pl.get("points").split() for v in p.split(",")]
    if len(pts) < 130 or not all(math.isfinite(v) for v in pts):
        bad.append("polyline points")
texts = ["".join(t.itertext()) for t in root.iter(ns + "text")]
for want in ("gpt-4o ($", "o3 ($", "self-hosted (", "now: "):
    if not any(t.startswith(want) for t in texts):
        bad.append("no text " + want)
print("; ".join(bad) or "ok")
PY
)"
one_line_err "cost unknown api" 1 "$BIN" cost --usage-db "$TMP/u.db" --api gpt-9
printf 'garbage%.0s' $(seq 1 500) > "$TMP/bad.db"
one_line_err "cost corrupt db" 1 "$BIN" cost --usage-db "$TMP/bad.db"
one_line_err "cost missing db" 1 "$BIN" cost --usage-db "$TMP/none.db"
one_line_err "cost empty period" 1 "$BIN" cost --usage-db "$TMP/u.db" --since 2030-01-01
"$BIN" cost --usage-db "$TMP/u.db" --since yesterday >/dev/null 2>&1; check "cost bad date" 2 $?
"$BIN" cost >/dev/null 2>&1; check "cost usage" 2 $?

if [ "$fails" -ne 0 ]; then
    echo "$fails check(s) failed"; exit 1
fi
echo "decide.sh: all checks passed"
