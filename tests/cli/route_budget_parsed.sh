#!/usr/bin/env bash
# Budgets reserve from the parsed request (audit finding 1): "n": 16.0 and
# "max_tokens": 60.0 are the integers 16 and 60 to the budget as they are to
# the engine, so a request whose worst case (prompt + n x max_tokens) does
# not fit the key's budget is refused before it runs, and concurrent ones
# never use more than the budget.
. "$(dirname "$0")/../serve/lib.sh"
command -v sqlite3 >/dev/null || { echo "sqlite3 missing: skipped"; [ "${CI:-}" = true ] && exit 1; exit 77; }

export ROUTE_TEST_SMALL=small-key ROUTE_TEST_TINY=tiny-key
cat >"$TMPD/cfg.json" <<'JSON'
{"budgets": [{"key_env": "ROUTE_TEST_SMALL", "tokens_per_day": 1000},
             {"key_env": "ROUTE_TEST_TINY", "tokens_per_day": 500, "default_max_tokens": 100}]}
JSON
DB=$TMPD/p.db
start_server p -m "$MODEL" --config "$TMPD/cfg.json" --usage-db "$DB" --api-key small-key --api-key tiny-key

req() { # KEY JSON-FIELDS OUT -> status
  curl -s -o "$3" -w '%{http_code}\n' -H "Authorization: Bearer $1" -H 'Content-Type: application/json' \
    --data-binary "{\"messages\":[{\"role\":\"user\",\"content\":\"hello\"}],$2}" "$BASE/v1/chat/completions"
}
# worst case 16 x 60 = 960 completion tokens + the prompt: over 500 at once
check "n as a real, over the budget: refused" 429 "$(req tiny-key '"max_tokens": 60, "n": 16.0, "ignore_eos": true' "$TMPD/r0")"
check "refusal code" budget_exceeded "$(jq -r .error.code "$TMPD/r0")"
check "max_tokens as a real, over the budget: refused" 429 \
  "$(req tiny-key '"max_tokens": 600.0, "ignore_eos": true' "$TMPD/r1")"
# no max_tokens: the key's default (100) per choice, so n = 8 (800) is over 500
check "default max_tokens x n: refused" 429 "$(req tiny-key '"n": 8.0' "$TMPD/r2")"
# ... and the default is what the engine generates at most (ignore_eos: exactly)
check "default max_tokens: answered" 200 "$(req tiny-key '"ignore_eos": true' "$TMPD/r3")"
check "default max_tokens generated" 100 "$(jq -r .usage.completion_tokens "$TMPD/r3")"

# four concurrent requests of 16 x 60 tokens against 1,000 tokens a day:
# one fits (about 980 with the prompt), the others are refused
CL=()
for i in 1 2 3 4; do
  ( req small-key '"max_tokens": 60, "n": 16.0, "ignore_eos": true' "$TMPD/c$i" >"$TMPD/s$i" ) &
  CL+=("$!")
done
wait "${CL[@]}"
n200=$(cat "$TMPD"/s? | grep -c '^200$')
n429=$(cat "$TMPD"/s? | grep -c '^429$')
check "concurrent: one answered" 1 "$n200"
check "concurrent: three refused" 3 "$n429"
used=0
for i in 1 2 3 4; do
  t=$(jq -r '.usage.total_tokens // 0' "$TMPD/c$i")
  used=$((used + t))
done
echo "budget: 4 concurrent n=16.0 x 60 requests used $used tokens of 1000"
check_true "concurrent: within the budget ($used <= 1000)" test "$used" -le 1000
check_true "concurrent: the answered one generated 16 x 60" test "$used" -gt 960
stop_server "$PID"
finish
