#!/usr/bin/env bash
# Request bodies are parsed, rendered and tokenized off the HTTP event
# thread (audit finding 6): while three 7.4 MB bodies are being parsed,
# /health is answered at once (before the big requests finish), and a
# prompt certain to overflow the context by its byte length alone is
# refused without tokenizing it.
. "$(dirname "$0")/../serve/lib.sh"

start_server p -m "$MODEL"
# a small prompt and 3.7 million ignored array elements: seconds to parse
{ printf '{"prompt":"Once","max_tokens":1,"pad":['; yes '1,' | head -n 3700000 | tr -d '\n'; printf '1]}'; } >"$TMPD/pad.json"
# /tokenize of 3.7 MB of text: the tokenizer's work, also off the event thread
{ printf '{"content":"'; yes 'Once upon a time there was a dog. ' | head -n 110000 | tr -d '\n'; printf '"}'; } >"$TMPD/tok.json"
# 7.4 MB of prompt text: far more tokens than the context holds
{ printf '{"prompt":"'; yes 'Once upon a time there was a dog. ' | head -n 220000 | tr -d '\n'; printf '","max_tokens":1}'; } >"$TMPD/big.json"
now() { date +%s.%N; }
big() { # FILE OUT [PATH]: the status and the time it finished
  local code
  code=$(curl -s -o "$2.body" -w '%{http_code}' -H 'Content-Type: application/json' --data-binary @"$1" "$BASE${3:-/v1/completions}")
  echo "$code $(now)" >"$2"
}
CL=()
for i in 1 2 3; do big "$TMPD/pad.json" "$TMPD/pad.$i" & CL+=("$!"); done
big "$TMPD/tok.json" "$TMPD/tok" /tokenize & CL+=("$!")
sleep 0.3
h_code=$(curl -s -o /dev/null -w '%{http_code}' "$BASE/health"); h_done=$(now)
wait "${CL[@]}"
check "health answered" 200 "$h_code"
for i in 1 2 3; do
  read -r code t <"$TMPD/pad.$i"
  check "big body $i answered" 200 "$code"
  check_true "health answered before big body $i finished" awk -v h="$h_done" -v b="$t" 'BEGIN { exit !(h < b) }'
done
read -r code t <"$TMPD/tok"
check "big /tokenize answered" 200 "$code"
check_true "health answered before the big /tokenize finished" awk -v h="$h_done" -v b="$t" 'BEGIN { exit !(h < b) }'
check_true "big /tokenize: the tokens" test "$(jq '.tokens | length' "$TMPD/tok.body")" -gt 500000

# the byte-length bound: a 400 naming the bytes, before tokenizing
before=$(metric hearth_prompt_tokens_total)
code=$(curl -s -o "$TMPD/body" -w '%{http_code}' -H 'Content-Type: application/json' --data-binary @"$TMPD/big.json" "$BASE/v1/completions")
check "prompt past the context: refused" 400 "$code"
check "prompt past the context: code" context_length_exceeded "$(jqb .error.code)"
check_true "refused by its byte length ($(jqb .error.message | head -c 200))" grep -q "bytes, so at least" "$TMPD/body"
check "nothing reached the engine for it" "$before" "$(metric hearth_prompt_tokens_total)"
# a prompt under the bound is tokenized and answered as before
code=$(post /v1/completions '{"prompt":"Once upon a time","max_tokens":3,"temperature":0}')
check "small prompt answered" 200 "$code"
stop_server "$PID"
finish
