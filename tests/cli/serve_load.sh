#!/usr/bin/env bash
# serve_load.sh - `hearth serve` under concurrency, client disconnects and
# overload (loopback only, bounded counts and times).
source "$(dirname "$0")/../serve/lib.sh"

# freed_within_1s: "yes" once nothing runs or waits and every KV block is
# back in the pool, polling /metrics for at most a second
freed_within_1s() {
  local t0
  t0=$(date +%s%N)
  while :; do
    if [ "$(metric hearth_running_sequences)" = 0 ] && [ "$(metric hearth_queue_depth)" = 0 ] &&
       [ "$(metric hearth_kv_blocks_used)" = 0 ]; then echo yes; return; fi
    [ $(( $(date +%s%N) - t0 )) -gt 1000000000 ] && return
    sleep 0.05
  done
}

# --- 64 concurrent streams, each equal to its single-request greedy output
start_server conc -m "$MODEL" -c 512 --max-running 64
S=$PID
N=64
for i in $(seq 0 $((N - 1))); do
  post /v1/completions "{\"prompt\":\"Once upon a time there was a $i\",\"max_tokens\":40,\"temperature\":0,\"ignore_eos\":true}" >/dev/null
  jqb '.choices[0].text' >"$TMPD/single.$i"
done
for i in $(seq 0 $((N - 1))); do
  curl -sN -H 'Content-Type: application/json' --max-time 60 -d "{\"prompt\":\"Once upon a time there was a $i\",\"max_tokens\":40,\"temperature\":0,\"ignore_eos\":true,\"stream\":true}" \
    "$BASE/v1/completions" >"$TMPD/conc.$i" &
done
wait_clients
same=0
for i in $(seq 0 $((N - 1))); do
  if [ "$(sse_text "$TMPD/conc.$i")" = "$(cat "$TMPD/single.$i")" ] && grep -q '^data: \[DONE\]' "$TMPD/conc.$i"; then
    same=$((same + 1))
  else
    echo "stream $i differs: [$(sse_text "$TMPD/conc.$i")] vs [$(cat "$TMPD/single.$i")]" >&2
  fi
done
check "64 concurrent streams equal to single greedy" $N $same
# the same through chat, non-streamed, concurrently
for i in $(seq 0 15); do
  curl -s -H 'Content-Type: application/json' --max-time 60 -d "{\"messages\":[{\"role\":\"user\",\"content\":\"story $i\"}],\"max_tokens\":20,\"temperature\":0}" \
    "$BASE/v1/chat/completions" >"$TMPD/cc.$i" &
done
wait_clients
okc=0
for i in $(seq 0 15); do
  [ "$(jq -r '.choices[0].message.content' "$TMPD/cc.$i")" = "$(post /v1/chat/completions "{\"messages\":[{\"role\":\"user\",\"content\":\"story $i\"}],\"max_tokens\":20,\"temperature\":0}" >/dev/null; jqb '.choices[0].message.content')" ] && okc=$((okc + 1))
done
check "16 concurrent chats equal to single" 16 $okc
stop_server $S

# --- 32 clients drop mid-stream: within a second every KV block is back
start_server drop -m "$MODEL" -c 2048 --max-running 32
S=$PID
before=$(metric hearth_http_client_disconnects_total)
for i in $(seq 0 31); do
  curl -sN -H 'Content-Type: application/json' --max-time 60 -d "{\"prompt\":\"Once upon a time $i\",\"max_tokens\":2000,\"ignore_eos\":true,\"stream\":true}" \
    "$BASE/v1/completions" >"$TMPD/drop.$i" &
done
# wait until every stream has produced something, then drop them all
for _ in $(seq 1 100); do
  n=0
  for i in $(seq 0 31); do [ -s "$TMPD/drop.$i" ] && n=$((n + 1)); done
  [ $n -eq 32 ] && break
  sleep 0.05
done
check "32 streams running" 32 "$(metric hearth_running_sequences)"
kill $(jobs -p | grep -v "^$S\$") 2>/dev/null
wait_clients
check "KV blocks back within 1 s of the drop" yes "$(freed_within_1s)"
check "free = total" "$(metric hearth_kv_blocks_total)" "$(metric hearth_kv_blocks_free)"
check "32 disconnects counted" 32 "$(( $(metric hearth_http_client_disconnects_total) - before ))"
check "serving after the drop" 200 "$(post /v1/completions '{"prompt":"Once","max_tokens":4}')"

# --- 8 clients of non-streamed requests give up, 2 running and 6 queued:
# nothing is sent to them until the answer, so the server must notice the
# closed sockets itself (queued requests get no events at all)
stop_server $S
start_server ndrop -m "$MODEL" -c 2048 --max-running 2 --max-queue 16
S=$PID
before=$(metric hearth_http_client_disconnects_total)
for i in $(seq 0 7); do
  curl -s -H 'Content-Type: application/json' --max-time 60 -d "{\"prompt\":\"Once upon a time $i\",\"max_tokens\":2000,\"ignore_eos\":true}" \
    "$BASE/v1/completions" >/dev/null &
done
for _ in $(seq 1 100); do
  [ "$(metric hearth_running_sequences)" = 2 ] && [ "$(metric hearth_queue_depth)" = 6 ] && break
  sleep 0.02
done
check "2 non-streamed running" 2 "$(metric hearth_running_sequences)"
check "6 non-streamed queued" 6 "$(metric hearth_queue_depth)"
kill $(jobs -p | grep -v "^$S\$") 2>/dev/null
wait_clients
check "non-streamed: queue empty and KV blocks back within 1 s of the drop" yes "$(freed_within_1s)"
check "8 non-streamed disconnects counted" 8 "$(( $(metric hearth_http_client_disconnects_total) - before ))"
stop_server $S

# --- overload: more requests than --max-running + queue get 429 + Retry-After.
# A request leaves the queue only when it is admitted, so requests sent all at
# once may arrive before the first admission (then only 2 are queued and
# served, the rest refused): 2 are sent and admitted first, then 2 that wait,
# then the other 8.
start_server over -m "$MODEL" -c 2048 --max-running 2 --max-queue 2
S=$PID
over_req() {
  curl -s -D "$TMPD/oh.$1" -o "$TMPD/ob.$1" --max-time 60 -H 'Content-Type: application/json' \
    -d "{\"prompt\":\"Once upon a time $1\",\"max_tokens\":2000,\"ignore_eos\":true}" "$BASE/v1/completions" &
}
wait_state() { # running queued
  for _ in $(seq 1 250); do
    [ "$(metric hearth_running_sequences)" = "$1" ] && [ "$(metric hearth_queue_depth)" = "$2" ] && return
    sleep 0.02
  done
}
over_req 0; over_req 1; wait_state 2 0
over_req 2; over_req 3; wait_state 2 2
check "2 running and 2 queued before the overload" "2 2" "$(metric hearth_running_sequences) $(metric hearth_queue_depth)"
for i in $(seq 4 11); do over_req "$i"; done
wait_clients
n429=0 n200=0 nother=0 retry=0
for i in $(seq 0 11); do
  code=$(head -n1 "$TMPD/oh.$i" | awk '{print $2}')
  case $code in
  429) n429=$((n429 + 1))
       grep -qi '^retry-after: [0-9]' "$TMPD/oh.$i" && retry=$((retry + 1))
       [ "$(jq -r .error.type "$TMPD/ob.$i")" = rate_limit_error ] || nother=$((nother + 1)) ;;
  200) n200=$((n200 + 1))
       [ "$(jq -r '.usage.completion_tokens' "$TMPD/ob.$i")" = 2000 ] || nother=$((nother + 1)) ;;
  *) nother=$((nother + 1)) ;;
  esac
done
check_true "some 429s ($n429)" test $n429 -ge 1
check "every 429 has Retry-After" $n429 $retry
check_true "at least max-running+queue served ($n200)" test $n200 -ge 4
check "nothing else broke" 0 $nother
check "serving after overload" 200 "$(post /v1/completions '{"prompt":"Once","max_tokens":4}')"
stop_server $S

# --- SIGTERM in the middle of streams: they end, the server exits 0
start_server term -m "$MODEL" -c 2048
S=$PID
for i in $(seq 0 3); do
  curl -sN -H 'Content-Type: application/json' --max-time 30 -d '{"prompt":"Once","max_tokens":2000,"ignore_eos":true,"stream":true}' "$BASE/v1/completions" >"$TMPD/term.$i" &
done
# every stream must have started (its first chunk arrived) before SIGTERM
for _ in $(seq 1 400); do
  n=0
  for i in $(seq 0 3); do [ -s "$TMPD/term.$i" ] && n=$((n + 1)); done
  [ $n = 4 ] && break
  sleep 0.05
done
stop_server $S
wait $(jobs -p) 2>/dev/null
ended=0
for i in $(seq 0 3); do grep -q '^data: \[DONE\]' "$TMPD/term.$i" && ended=$((ended + 1)); done
check "streams ended with [DONE] on SIGTERM" 4 $ended

finish
