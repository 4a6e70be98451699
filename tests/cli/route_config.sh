#!/usr/bin/env bash
# Routing config validation (audit finding 10): a second budget for the
# same key (two "*" rules), a route or backend model named like the local
# model, and credentials in a base_url's userinfo are refused at start
# with one clear line; the near-misses that are fine still start.
. "$(dirname "$0")/../serve/lib.sh"

bad_cfg() { # NAME JSON EXPECTED [serve args...]
  local name=$1 json=$2 want=$3; shift 3
  echo "$json" >"$TMPD/bad.json"
  out=$(ROUTE_CFG_A=key-a timeout 10 "$BIN" serve -m "$MODEL" --port 0 --usage-db none --config "$TMPD/bad.json" "$@" 2>&1); rc=$?
  check "bad config ($name) exit" 1 "$rc"
  check "bad config ($name) one line" 1 "$(printf '%s\n' "$out" | wc -l)"
  check_true "bad config ($name) says '$want' (got: $out)" grep -q -- "$want" <<<"$out"
}
bad_cfg "two * budgets" '{"budgets": [{"key_id": "*", "tokens_per_day": 10}, {"key_id": "*", "usd_per_day": 1}]}' \
  "budgets\[1\]: a second budget for '\*' (budgets\[0\] has it)"
bad_cfg "two budgets for one key" '{"budgets": [{"key_env": "ROUTE_CFG_A", "tokens_per_day": 10}, {"key_env": "ROUTE_CFG_A", "tokens_per_day": 5}]}' \
  "a second budget for ROUTE_CFG_A"
bad_cfg "route named like the model" '{"routes": [{"name": "stories260K", "targets": [{"backend": "local"}]}]}' \
  "route 'stories260K' has the name of the local model"
bad_cfg "route named like the alias" '{"routes": [{"name": "pet", "targets": [{"backend": "local"}]}]}' \
  "route 'pet' has the name of the local model" --alias pet
bad_cfg "route named like the file under an alias" '{"routes": [{"name": "stories260K", "targets": [{"backend": "local"}]}]}' \
  "route 'stories260K' has the name of the local model" --alias pet
bad_cfg "backend model named like the model" '{"backends": [{"name": "x", "base_url": "http://127.0.0.1:1/v1", "models": {"stories260K": {"input": 1, "output": 1}}}]}' \
  "backend model 'stories260K' has the name of the local model"
bad_cfg "userinfo" '{"backends": [{"name": "x", "base_url": "http://user:sk-secret@127.0.0.1:1/v1"}]}' \
  "must not carry credentials"
check_true "the refusal does not echo the password" test -z "$(grep -o sk-secret <<<"$out")"
bad_cfg "userinfo without password" '{"backends": [{"name": "x", "base_url": "https://token@api.example.com/v1"}]}' \
  "must not carry credentials"

# near misses start: one "*" and one named budget, an "@" in the path, a
# route whose name only contains the model's name
cat >"$TMPD/ok.json" <<'JSON'
{"backends": [{"name": "x", "base_url": "http://127.0.0.1:1/v1/@team", "models": {"m": {"input": 1, "output": 1}}}],
 "routes": [{"name": "stories260K-fast", "targets": [{"backend": "local"}]}],
 "budgets": [{"key_id": "*", "tokens_per_day": 100}, {"key_env": "ROUTE_CFG_A", "tokens_per_day": 10}]}
JSON
ROUTE_CFG_A=key-a start_server ok -m "$MODEL" --config "$TMPD/ok.json"
check "a good config serves" 200 "$(curl -s -o /dev/null -w '%{http_code}' "$BASE/health")"
stop_server "$PID"
finish
