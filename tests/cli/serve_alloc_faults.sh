#!/usr/bin/env bash
# serve_alloc_faults.sh - allocation failures inside a running server
# (tests/unit/alloc_hook.h, the test-only hearth_faults binary): for each N,
# a request whose Nth allocation fails gets 200 (the failure was absorbed)
# or a 500/503 with an OpenAI error message, and the next request, with no
# faults, gets the fault-free answer; the server never dies and no KV block
# stays used.
source "$(dirname "$0")/../serve/lib.sh"
BIN=${HEARTH_FAULT_BIN:?HEARTH_FAULT_BIN must name the hearth_faults binary (tests/CMakeLists.txt)}
[ -x "$BIN" ] || { echo "FAIL: $BIN is not executable" >&2; exit 1; }

CTL=$TMPD/fail_alloc
echo 0 >"$CTL"
export HEARTH_TEST_FAIL_ALLOC_FILE=$CTL
start_server faults -m "$MODEL" -c 256
S=$PID

# arm VALUE: write the control file, signal, wait until the hook has said so
arm() {
  local before
  before=$(grep -c '^alloc_hook: \(armed\|disarmed\)' "$LOG")
  echo "$1" >"$CTL"
  kill -USR2 "$S"
  for _ in $(seq 1 500); do
    [ "$(grep -c '^alloc_hook: \(armed\|disarmed\)' "$LOG")" -gt "$before" ] && return 0
    sleep 0.01
  done
  bad "the hook did not answer SIGUSR2"
  return 1
}

CHAT='{"messages":[{"role":"user","content":"Tell me a story"}],"max_tokens":8,"temperature":0,"stop":["zzz"]}'
COMP='{"prompt":"Once upon a time","max_tokens":8,"temperature":0,"stream":true}'
check "fault-free chat" 200 "$(post /v1/chat/completions "$CHAT")"
REF_CHAT=$(jqb '.choices[0].message.content')
curl -sN -H 'Content-Type: application/json' -d "$COMP" "$BASE/v1/completions" >"$TMPD/sse"
REF_COMP=$(sse_text "$TMPD/sse")
check_true "reference texts" test -n "$REF_CHAT" -a -n "$REF_COMP"

# how many allocations one request makes (all threads; the count varies a little)
count_allocs() {
  arm 1000000000
  "$@" >/dev/null
  arm 0
  grep '^alloc_hook: counted' "$LOG" | tail -n1 | awk '{ print $3 }'
}
K_CHAT=$(count_allocs post /v1/chat/completions "$CHAT")
echo "one chat request: $K_CHAT allocations"
check_true "chat allocations counted ($K_CHAT)" test "${K_CHAT:-0}" -gt 10

n5xx=0
n200=0
sweep_chat() {
  local n=$1 code
  arm "$n" || return
  code=$(post /v1/chat/completions "$CHAT")
  arm 0 || return
  case $code in
    200)
      n200=$((n200 + 1))
      check "chat N=$n: a 200 has the fault-free answer" "$REF_CHAT" "$(jqb '.choices[0].message.content')" ;;
    500|503)
      n5xx=$((n5xx + 1))
      check_true "chat N=$n: $code has an error message" test -n "$(jqb '.error.message // empty')" ;;
    *) bad "chat N=$n: status $code ($(body | head -c 200))" ;;
  esac
  check "chat N=$n: the next request" 200 "$(post /v1/chat/completions "$CHAT")"
  check "chat N=$n: the next answer" "$REF_CHAT" "$(jqb '.choices[0].message.content')"
}
for n in $(seq 1 $((K_CHAT + 5))); do sweep_chat "$n"; done
for n in 1 2 5 10 20 50 100; do [ "$n" -le "$K_CHAT" ] && sweep_chat "$n+"; done
echo "chat sweep: $n5xx answered 500/503, $n200 absorbed"
check_true "some chat requests failed with 500/503 ($n5xx; $n200 absorbed)" test "$n5xx" -gt 0

# streamed: the stream ends (with an error event, or normally), the next one is whole
K_COMP=$(count_allocs curl -sN -H 'Content-Type: application/json' -d "$COMP" "$BASE/v1/completions")
echo "one streamed completion: $K_COMP allocations"
check_true "completion allocations counted ($K_COMP)" test "${K_COMP:-0}" -gt 10
for n in $(seq 1 8 $((K_COMP + 5))); do
  arm "$n" || break
  code=$(curl -sN -o "$TMPD/sse" -w '%{http_code}' -m 30 -H 'Content-Type: application/json' -d "$COMP" "$BASE/v1/completions")
  arm 0 || break
  case $code in
    200)
      # the stream ends: with [DONE] and the whole text, or with an error event
      if grep -q '^data: {"error"' "$TMPD/sse"; then
        check_true "stream N=$n: error event has a message" test -n "$(grep '^data: {"error"' "$TMPD/sse" | head -n1 | sed 's/^data: //' | jq -r '.error.message // empty')"
      else
        check "stream N=$n: text" "$REF_COMP" "$(sse_text "$TMPD/sse")"
      fi
      check "stream N=$n ends with DONE" "data: [DONE]" "$(grep '^data:' "$TMPD/sse" | tail -n1)" ;;
    500|503) check_true "stream N=$n: $code has an error message" test -n "$(jq -r '.error.message // empty' "$TMPD/sse")" ;;
    *) bad "stream N=$n: status $code" ;;
  esac
  curl -sN -H 'Content-Type: application/json' -d "$COMP" "$BASE/v1/completions" >"$TMPD/sse"
  check "stream N=$n: the next stream" "$REF_COMP" "$(sse_text "$TMPD/sse")"
done

check "health after the sweeps" 200 "$(curl -s -o /dev/null -w '%{http_code}' "$BASE/health")"
for _ in $(seq 1 50); do [ "$(metric hearth_kv_blocks_used)" = 0 ] && break; sleep 0.1; done
check "no KV block used after the sweeps" 0 "$(metric hearth_kv_blocks_used)"
check_true "the hook failed allocations" grep -q '^alloc_hook: failing' "$LOG"
stop_server "$S"
finish
