#!/usr/bin/env bash
# Budgets per API key: under 40 concurrent clients the key's 2xx tokens
# never pass the limit (reservations are taken atomically before
# forwarding), the refusals are 429 with a clear message, another key is
# unaffected, and a restart keeps the day's usage (seeded from the log).
. "$(dirname "$0")/../serve/lib.sh"
. "$(dirname "$0")/../serve/route_lib.sh"
command -v sqlite3 >/dev/null || missing_prereq "sqlite3 not installed"

start_fake ok
F=http://127.0.0.1:$FAKE_PORT
export ROUTE_TEST_LIMITED=limited-key ROUTE_TEST_MONEY=money-key
LIMIT=3000
cat >"$TMPD/cfg.json" <<JSON
{"backends": [{"name": "fok", "base_url": "$F/ok/v1", "models": {"fake-ok": {"input": 1000, "output": 1000}}}],
 "budgets": [{"key_env": "ROUTE_TEST_LIMITED", "tokens_per_day": $LIMIT},
             {"key_env": "ROUTE_TEST_MONEY", "usd_per_month": 0.5}]}
JSON
DB=$TMPD/b.db
start_server b -m "$MODEL" --config "$TMPD/cfg.json" --usage-db "$DB" \
  --api-key limited-key --api-key money-key --api-key free-key

req() { # KEY -> status
  curl -s -o "$TMPD/r.$BASHPID" -w '%{http_code}\n' -H "Authorization: Bearer $1" -H 'Content-Type: application/json' \
    --data-binary '{"model":"fake-ok","messages":[{"role":"user","content":"hello"}],"max_tokens":20}' \
    "$BASE/v1/chat/completions"
  if grep -q budget "$TMPD/r.$BASHPID" 2>/dev/null; then cat "$TMPD/r.$BASHPID" >"$TMPD/refusal" 2>/dev/null; fi
  return 0
}
: >"$TMPD/codes"
CL=()
for c in $(seq 1 40); do
  ( for _ in $(seq 1 6); do req limited-key; done >>"$TMPD/codes" ) &
  CL+=("$!")
done
wait "${CL[@]}"
n200=$(grep -c '^200$' "$TMPD/codes")
n429=$(grep -c '^429$' "$TMPD/codes")
check "every request answered 200 or 429" 240 "$((n200 + n429))"
check_true "some refused (200: $n200, 429: $n429)" test "$n429" -gt 0
check_true "most of the budget used ($n200 x 20 tokens)" test "$((n200 * 20))" -gt $((LIMIT / 2))
check "refusal type" "insufficient_quota" "$(jq -r .error.type "$TMPD/refusal")"
check_true "refusal message names the limit" grep -q "tokens per day" "$TMPD/refusal"
check "other keys unaffected" 200 "$(req free-key)"
# money: 1000 USD / 1M tokens = 0.001 $/token; 20 tokens per request = 0.02 $ -> well under 25 requests
: >"$TMPD/codes2"
CL=()
for c in $(seq 1 10); do ( for _ in $(seq 1 5); do req money-key; done >>"$TMPD/codes2" ) & CL+=("$!"); done
wait "${CL[@]}"
m200=$(grep -c '^200$' "$TMPD/codes2")
check_true "USD budget stops requests ($m200 answered)" test "$m200" -lt 25 -a "$m200" -gt 0
stop_server "$PID"

kid=$(sqlite3 "$DB" "select key_id from usage where status = 429 limit 1")
used=$(sqlite3 "$DB" "select coalesce(sum(prompt_tokens + completion_tokens), 0) from usage where status = 200 and key_id = (select key_id from usage where status = 429 and finish_reason = '' limit 1)")
used_limited=$(sqlite3 "$DB" "select sum(prompt_tokens + completion_tokens) from usage where status = 200 and key_id in (select key_id from usage group by key_id having count(*) >= 200)")
echo "budget: $n200 answered, $n429 refused; limited key used $used_limited of $LIMIT tokens"
check_true "limited key's tokens within the limit ($used_limited <= $LIMIT)" test "$used_limited" -le "$LIMIT"
check_true "refusals are rows ($kid $used)" test -n "$kid"
usd=$(sqlite3 "$DB" "select sum(prompt_tokens * 1000 + completion_tokens * 1000) / 1e6 from usage where status = 200 and key_id in (select key_id from usage group by key_id having count(*) between 40 and 60)")
check_true "money key within 0.5 USD ($usd)" awk -v u="$usd" 'BEGIN { exit !(u <= 0.5) }'

# a restart keeps the day's usage: the limited key stays refused
start_server b2 -m "$MODEL" --config "$TMPD/cfg.json" --usage-db "$DB" --api-key limited-key --api-key free-key
check "still refused after a restart" 429 "$(req limited-key)"
check "free key fine" 200 "$(req free-key)"
stop_server "$PID"
finish
