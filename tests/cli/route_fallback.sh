#!/usr/bin/env bash
# Routing (docs/ROUTING.md): hearth B routes to hearth A (an upstream with
# its own model and key) and to a failing fake upstream. Fallback before
# the first byte (500, 429, hang, a stream cut before its first event,
# garbage), no fallback after it (a mid-stream cut is an error event),
# client errors passed through, local-first priority, weighted split,
# metering rows with the provider's counts, bad configs refused at start.
. "$(dirname "$0")/../serve/lib.sh"
. "$(dirname "$0")/../serve/route_lib.sh"
command -v sqlite3 >/dev/null || missing_prereq "sqlite3 not installed"

# A: the "upstream API", its own model name and key
start_server a -m "$MODEL" --alias up-model --api-key a-secret
A=$BASE
start_fake f
F=http://127.0.0.1:$FAKE_PORT
export ROUTE_TEST_A_KEY=a-secret
cat >"$TMPD/cfg.json" <<JSON
{"backends": [
  {"name": "a", "base_url": "$A/v1", "api_key_env": "ROUTE_TEST_A_KEY", "models": {"up-model": {"input": 1, "output": 2}}},
  {"name": "f500", "base_url": "$F/500/v1"},
  {"name": "f429", "base_url": "$F/429/v1"},
  {"name": "fhang", "base_url": "$F/hang/v1", "first_byte_timeout_s": 0.5},
  {"name": "fcut", "base_url": "$F/cut/v1"},
  {"name": "fcut0", "base_url": "$F/cut0/v1"},
  {"name": "fgarbage", "base_url": "$F/garbage/v1"},
  {"name": "fok", "base_url": "$F/ok/v1", "models": {"fake-ok": {"input": 0, "output": 0}}},
  {"name": "fnousage", "base_url": "$F/nousage/v1"}
 ],
 "routes": [
  {"name": "fb500", "targets": [{"backend": "f500", "model": "m"}, {"backend": "a", "model": "up-model"}]},
  {"name": "fb429", "targets": [{"backend": "f429", "model": "m"}, {"backend": "a", "model": "up-model"}]},
  {"name": "fbhang", "targets": [{"backend": "fhang", "model": "m"}, {"backend": "a", "model": "up-model"}]},
  {"name": "fbcut0", "targets": [{"backend": "fcut0", "model": "m"}, {"backend": "a", "model": "up-model"}]},
  {"name": "fbgarbage", "targets": [{"backend": "fgarbage", "model": "m"}, {"backend": "a", "model": "up-model"}]},
  {"name": "cut", "targets": [{"backend": "fcut", "model": "m"}, {"backend": "a", "model": "up-model"}]},
  {"name": "allbad", "targets": [{"backend": "f500", "model": "m"}, {"backend": "f429", "model": "m"}]},
  {"name": "alltimeout", "targets": [{"backend": "f500", "model": "m"}, {"backend": "fhang", "model": "m"}]},
  {"name": "localfirst", "targets": [{"backend": "local"}, {"backend": "a", "model": "up-model"}]},
  {"name": "split", "policy": "weighted", "targets": [{"backend": "a", "model": "up-model", "weight": 1}, {"backend": "fok", "model": "fake-ok", "weight": 3}]},
  {"name": "lb", "policy": "least_busy", "targets": [{"backend": "fok", "model": "fake-ok"}, {"backend": "a", "model": "up-model"}]},
  {"name": "nousage", "targets": [{"backend": "fnousage", "model": "m"}]}
 ]}
JSON
DB=$TMPD/b.db
start_server b -m "$MODEL" --config "$TMPD/cfg.json" --usage-db "$DB"

# the reference: A asked directly
B=$BASE
BASE=$A
AUTH=(-H "Authorization: Bearer a-secret")
chat up-model >/dev/null
want=$(jqb '.choices[0].message.content')
BASE=$B
AUTH=()
check_true "A answers" test -n "$want"

code=$(chat up-model); check "implicit route to the upstream model" 200 "$code"
check "same text as A directly" "$want" "$(jqb '.choices[0].message.content')"
check "upstream's model name kept" "up-model" "$(jqb .model)"
for r in fb500 fb429 fbhang fbgarbage; do
  t0=$(date +%s.%N)
  code=$(chat $r); check "$r status" 200 "$code"
  check "$r text from the fallback" "$want" "$(jqb '.choices[0].message.content')"
  dt=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
  check_true "$r within 3 s (took $dt)" awk -v d="$dt" 'BEGIN { exit !(d < 3) }'
done
for r in fb500 fb429 fbhang fbcut0 fbgarbage; do
  chat_stream $r "$TMPD/sse"
  check "$r streamed text from the fallback" "$want" "$(sse_text "$TMPD/sse")"
  check "$r stream ends with [DONE]" "data: [DONE]" "$(grep '^data:' "$TMPD/sse" | tail -n 1)"
  check "$r stream has no error" 0 "$(grep -c '"error"' "$TMPD/sse")"
done

# a cut after the first event: an error event, never a clean end
chat_stream cut "$TMPD/sse"
check "mid-stream cut: partial text" "The quick" "$(sse_text "$TMPD/sse")"
check "mid-stream cut: one error event" 1 "$(grep -c '^data: {"error"' "$TMPD/sse")"
check "mid-stream cut: error names the cut" 1 "$(grep '^data: {"error"' "$TMPD/sse" | grep -c 'mid-stream')"
check "mid-stream cut: no finish_reason stop" 0 "$(grep -c '"finish_reason":"stop"' "$TMPD/sse")"

code=$(chat allbad); check "every target failed, last 429" 429 "$code"
check_true "message lists the last failure" grep -q "f429" "$TMPD/body"
code=$(chat alltimeout); check "every target failed, last a timeout" 504 "$code"
code=$(post /v1/chat/completions '{"model":"fb500","messages":[{"role":"user","content":"x"}],"max_tokens":-3}')
check "client errors of the upstream pass through (no fallback to success)" 400 "$code"
code=$(chat no-such-route); check "unknown model" 404 "$code"

code=$(chat localfirst); check "local first" 200 "$code"
check "local answered" "stories260K" "$(jqb .model)"

for i in $(seq 1 24); do chat split >/dev/null; done
code=$(chat lb); check "least busy" 200 "$code"
code=$(chat nousage); check "upstream without usage" 200 "$code"
chat_stream nousage "$TMPD/sse"
check "no usage chunk invented" 0 "$(grep -c '"usage":{' "$TMPD/sse")"

# include_usage not asked: the injected usage chunk is not forwarded
curl -sN -H 'Content-Type: application/json' "$BASE/v1/chat/completions" --data-binary \
  '{"model":"fok/fake-ok","messages":[{"role":"user","content":"x"}],"stream":true}' >"$TMPD/sse"
check "usage chunk only when asked" 0 "$(grep -c '"usage":{' "$TMPD/sse")"
check "but the stream is complete" "data: [DONE]" "$(grep '^data:' "$TMPD/sse" | tail -n 1)"

code=$(curl -s -o "$TMPD/body" -w '%{http_code}' "$BASE/v1/models")
check "models lists routes" 1 "$(jq '[.data[].id] | map(select(. == "fb500")) | length' "$TMPD/body")"
curl -s "$BASE/metrics" >"$TMPD/metrics"
check_true "fallbacks counted" grep -q 'hearth_route_fallbacks_total{backend="f500"} [1-9]' "$TMPD/metrics"
stop_server "$PID"

# metering: the provider's own counts; failed tries are rows too
q() { sqlite3 "$DB" "$1"; }
check "upstream rows use the provider's counts" 0 \
  "$(q "select count(*) from usage where backend='a' and status=200 and (prompt_tokens=0 or completion_tokens=0)")"
check_true "fallback tries recorded" test "$(q "select count(*) from usage where backend='f500' and status=500")" -ge 2
check_true "timeouts recorded as 504" test "$(q "select count(*) from usage where backend='fhang' and status=504")" -ge 2
check "local row" 1 "$(q "select count(*) from usage where backend='local' and status=200")"
na=$(q "select count(*) from usage where backend='a' and model='up-model' and request_id in (select request_id from usage) and ts_ms > 0 and status = 200")
check_true "weighted: some to a" test "$(q "select count(*) from usage where backend='fok'")" -ge 4
check_true "weighted: some to fok" test "$na" -ge 2
check "estimated counts for an upstream without usage, flagged" 2 \
  "$(q "select count(*) from usage where backend='fnousage' and status=200 and prompt_tokens>0 and completion_tokens>0 and estimated=1")"
check "provider counts not flagged" 0 "$(q "select count(*) from usage where backend='a' and estimated<>0")"

# bad configs: one line, non-zero exit, before listening
bad_cfg() {
  echo "$2" >"$TMPD/bad.json"
  out=$("$BIN" serve -m "$MODEL" --port 0 --usage-db none --config "$TMPD/bad.json" 2>&1); rc=$?
  check "bad config ($1) exit" 1 "$rc"
  check "bad config ($1) one line" 1 "$(printf '%s\n' "$out" | wc -l)"
  check_true "bad config ($1) says '$3' (got: $out)" grep -q -- "$3" <<<"$out"
}
bad_cfg "not JSON" '{"backends": [' "expected"
bad_cfg "key in file" '{"backends": [{"name": "x", "base_url": "http://127.0.0.1:1/v1", "api_key": "sk-1"}]}' "api_key_env"
bad_cfg "missing env" '{"backends": [{"name": "x", "base_url": "http://127.0.0.1:1/v1", "api_key_env": "HEARTH_NO_SUCH_VAR_1"}]}' "HEARTH_NO_SUCH_VAR_1"
bad_cfg "unknown backend" '{"routes": [{"name": "r", "targets": [{"backend": "nope", "model": "m"}]}]}' "no backend named 'nope'"
bad_cfg "bad policy" '{"routes": [{"name": "r", "policy": "random", "targets": [{"backend": "local"}]}]}' "policy"
bad_cfg "typo" '{"backends": [{"name": "x", "base_url": "http://127.0.0.1:1/v1", "timeout": 3}]}' "unknown field 'timeout'"
bad_cfg "bad url" '{"backends": [{"name": "x", "base_url": "ftp://x"}]}' "base_url"
bad_cfg "sample" '{"routes": [{"name": "r", "targets": [{"backend": "local"}], "shadow": {"backend": "local", "sample": 2}}]}' "sample"
finish
