#!/usr/bin/env bash
# serve_options.sh - each `hearth serve` tuning option changes what it says
# (docs/SERVER.md): --timeout ends a long generation with the documented 503
# / error event, --max-body refuses one byte past the cap and takes the cap,
# --http-threads and -t add their threads and change no answer, --kv-mem
# sizes the pool (preemption under it, answers unchanged), --batch-tokens
# is the prefill chunk per step. --max-conns, --max-conns-per-ip and
# --idle-timeout are in serve_hardening.sh.
source "$(dirname "$0")/../serve/lib.sh"
J='Content-Type: application/json'
threads_of() { ls "/proc/$1/task" | wc -l; }
# texts FILE: greedy continuations of four prompts, one line each
PROMPTS=("Once upon a time" "The little dog" "Lily and Ben went to" "One day, a big")
texts() {
  for p in "${PROMPTS[@]}"; do
    post /v1/completions "{\"prompt\":\"$p\",\"max_tokens\":300,\"temperature\":0,\"ignore_eos\":true}" >/dev/null
    jq -c '.choices[0].text' "$TMPD/body"
  done >"$1"
}
# conc_texts FILE: the same four, sent at once
conc_texts() {
  local i pids=()
  for i in 0 1 2 3; do
    curl -s -o "$TMPD/c.$i" -H "$J" --data-binary \
      "{\"prompt\":\"${PROMPTS[$i]}\",\"max_tokens\":300,\"temperature\":0,\"ignore_eos\":true}" "$BASE/v1/completions" &
    pids+=($!)
  done
  wait "${pids[@]}"
  for i in 0 1 2 3; do jq -c '.choices[0].text' "$TMPD/c.$i"; done >"$1"
}

# --- reference: defaults (-t 1, --http-threads 1)
start_server ref -m "$MODEL" -c 512
S=$PID
texts "$TMPD/ref"
check "reference texts are 4 non-empty lines" 4 "$(grep -c '^"..*"$' "$TMPD/ref")"
T_REF=$(threads_of $S)
stop_server $S

# --- -t 2: one more compute thread, the same greedy text
start_server t2 -m "$MODEL" -c 512 -t 2
S=$PID
check "-t 2 runs one more thread" $((T_REF + 1)) "$(threads_of $S)"
texts "$TMPD/t2"
check "-t 2 gives the same greedy text as -t 1" "$(cat "$TMPD/ref")" "$(cat "$TMPD/t2")"
stop_server $S

# --- --http-threads 4: four event threads instead of one, concurrent requests served
start_server h4 -m "$MODEL" -c 512 --http-threads 4
S=$PID
check "--http-threads 4 runs three more threads" $((T_REF + 3)) "$(threads_of $S)"
conc_texts "$TMPD/h4"
check "--http-threads 4: concurrent requests, the same texts" "$(cat "$TMPD/ref")" "$(cat "$TMPD/h4")"
stop_server $S

# --- --kv-mem: the pool holds exactly one context; four requests that need
# more get preempted, and still answer what they answer alone
start_server kvref -m "$MODEL" -c 512
S=$PID
BLOCK=$(metric hearth_kv_block_bytes)
check_true "block size known ($BLOCK)" test "${BLOCK:-0}" -gt 0
BLOCKS_CTX=$(( $(metric hearth_kv_blocks_total) / 16 )) # default pool: context x --max-running 16
stop_server $S
start_server kv -m "$MODEL" -c 512 --kv-mem $((BLOCK * BLOCKS_CTX))
S=$PID
check "--kv-mem sizes the pool" "$BLOCKS_CTX" "$(metric hearth_kv_blocks_total)"
conc_texts "$TMPD/kv"
check_true "a small pool preempts ($(metric hearth_preemptions_total))" test "$(metric hearth_preemptions_total)" -ge 1
check "preempted requests answer what they answer alone" "$(cat "$TMPD/ref")" "$(cat "$TMPD/kv")"
check "every KV block back" 0 "$(metric hearth_kv_blocks_used)"
stop_server $S
timeout 30 "$BIN" serve -m "$MODEL" -c 512 --port 0 --usage-db none --kv-mem $((BLOCK * BLOCKS_CTX - 1)) \
  2>"$TMPD/kvsmall" &
KP=$!
SERVER_PIDS+=("$KP")
rc=0
wait $KP || rc=$?
check_true "--kv-mem below one context: a non-zero exit, at once ($rc)" test $rc -ne 0 -a $rc -ne 124
check_true "... saying so" grep -q 'less than one context' "$TMPD/kvsmall"

# --- --batch-tokens: a prompt alone is prefilled in chunks of that many tokens
LONG="Once upon a time there was a little girl named Lily who loved to play in the park with her friends every day"
steps_for() { # prints "prompt_tokens steps text" for one max_tokens=1 request
  local s0 s1
  s0=$(metric hearth_scheduler_steps_total)
  post /v1/completions "{\"prompt\":\"$LONG\",\"max_tokens\":1,\"temperature\":0}" >/dev/null
  s1=$(metric hearth_scheduler_steps_total)
  echo "$(jqb .usage.prompt_tokens) $((s1 - s0)) $(jq -c '.choices[0].text' "$TMPD/body")"
}
start_server bt -m "$MODEL" -c 512 --max-running 4 --batch-tokens 16
S=$PID
read -r PT ST TX <<<"$(steps_for)"
check_true "the prompt is longer than two chunks ($PT tokens)" test "${PT:-0}" -gt 32
check "--batch-tokens 16: ceil(prompt / 16) steps" $(( (PT + 15) / 16 )) "$ST"
stop_server $S
start_server bt256 -m "$MODEL" -c 512 --max-running 4 --batch-tokens 256
S=$PID
read -r PT2 ST2 TX2 <<<"$(steps_for)"
check "--batch-tokens 256: one step" 1 "$ST2"
check "the same token either way" "$TX" "$TX2"
stop_server $S

# --- --max-body: the cap itself is accepted, one byte more is 413
start_server mb -m "$MODEL" -c 512 --max-body 1000
S=$PID
B='{"prompt":"Once","max_tokens":2}'
pad() { printf '%s%*s' "$B" $(($1 - ${#B})) ''; }
pad 1000 >"$TMPD/b1000"
pad 1001 >"$TMPD/b1001"
check "body of exactly --max-body bytes: 200" 200 "$(curl -s -o "$TMPD/body" -w '%{http_code}' -H "$J" --data-binary @"$TMPD/b1000" "$BASE/v1/completions")"
check "one byte more: 413" 413 "$(curl -s -o "$TMPD/body" -w '%{http_code}' -H "$J" --data-binary @"$TMPD/b1001" "$BASE/v1/completions")"
check "... chunked: 413" 413 "$(curl -s -o "$TMPD/body" -w '%{http_code}' -H "$J" -H 'Transfer-Encoding: chunked' --data-binary @"$TMPD/b1001" "$BASE/v1/completions")"
check "... chunked at the cap: 200" 200 "$(curl -s -o "$TMPD/body" -w '%{http_code}' -H "$J" -H 'Transfer-Encoding: chunked' --data-binary @"$TMPD/b1000" "$BASE/v1/completions")"
stop_server $S

# --- --timeout: a generation longer than the limit is cancelled
start_server to -m "$MODEL" -c 2048 --timeout 0.5
S=$PID
LONGREQ='{"prompt":"Once","max_tokens":2000,"n":8,"ignore_eos":true}'
t0=$(date +%s.%N)
check "non-streamed past --timeout: 503" 503 "$(post /v1/completions "$LONGREQ")"
t1=$(date +%s.%N)
check_true "... says it was cancelled: $(jqb .error.message)" grep -q 'cancelled (timeout' "$TMPD/body"
check "... not before the timeout ($(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }') s)" 1 "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print (b - a >= 0.5) }')"
curl -sN -H "$J" --data-binary "${LONGREQ%\}},\"stream\":true}" "$BASE/v1/completions" >"$TMPD/sse"
check_true "streamed past --timeout: an error event" grep -q '^data: {"error":.*cancelled (timeout' "$TMPD/sse"
check "... then [DONE]" "data: [DONE]" "$(grep '^data: ' "$TMPD/sse" | tail -n1)"
check "a short request under --timeout: 200" 200 "$(post /v1/completions '{"prompt":"Once","max_tokens":4}')"
stop_server $S
finish
