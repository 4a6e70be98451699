#!/usr/bin/env bash
# Non-streamed responses are capped (audit finding 2; docs/SERVER.md):
# more than 64 choices (n x prompts) is a 400 before anything runs; a
# request whose logprobs alone must pass the cap (--max-response, default
# 64 MiB) is a 400 at submit; one that grows past it while generating is
# stopped and answered 400 response_too_large, and the server serves on.
. "$(dirname "$0")/../serve/lib.sh"

start_server d -m "$MODEL"
# the audit's request: 16 prompts x n=16, 500 tokens, 20 logprobs (68.6 MB before)
P16=$(printf '"Once",%.0s' $(seq 1 15))'"Once"'
code=$(post /v1/completions "{\"prompt\":[$P16],\"n\":16,\"max_tokens\":500,\"logprobs\":20,\"ignore_eos\":true}")
check "256 choices: refused" 400 "$code"
check "256 choices: the parameter" n "$(jqb .error.param)"
check_true "256 choices: names the limit ($(jqb .error.message))" grep -q "at most 64" "$TMPD/body"
check_true "256 choices: a small body" test "$(wc -c <"$TMPD/body")" -lt 1000
# 64 choices are fine
code=$(post /v1/completions "{\"prompt\":[\"Once\",\"The\",\"A\",\"Tom\"],\"n\":16,\"max_tokens\":2}")
check "64 choices: answered" 200 "$code"
check "64 choices: all there" 64 "$(jqb '.choices | length')"
stop_server "$PID"

start_server c -m "$MODEL" --max-response 1M
# chat logprobs cost at least 52 + 36 x 20 bytes a token: 16 x 400 tokens is over 1 MiB
code=$(post /v1/chat/completions '{"messages":[{"role":"user","content":"hi"}],"n":16,"max_tokens":400,"logprobs":true,"top_logprobs":20}')
check "worst case over the cap: refused at submit" 400 "$code"
check "worst case: code" response_too_large "$(jqb .error.code)"
check "nothing generated for it" 0 "$(metric hearth_generation_tokens_total)"
# completions: 8 x 400 tokens with 20 logprobs need at least 349 KB, in fact
# about 1.7 MB (537 bytes a token here): stopped at the cap while generating
code=$(post /v1/completions '{"prompt":"Once","n":8,"max_tokens":400,"logprobs":20,"ignore_eos":true}')
check "over the cap while generating: refused" 400 "$code"
check "over the cap: code" response_too_large "$(jqb .error.code)"
check_true "over the cap: names the cap ($(jqb .error.message))" grep -q 1048576 "$TMPD/body"
gen=$(metric hearth_generation_tokens_total)
check_true "over the cap: stopped early ($gen of 3200 tokens)" test "${gen%.*}" -lt 3200
# under the cap: the whole answer (4 x 400 tokens, about 0.86 MB)
code=$(post /v1/completions '{"prompt":"Once","n":4,"max_tokens":400,"logprobs":20,"ignore_eos":true}')
check "under the cap: answered" 200 "$code"
check "under the cap: every token has its logprobs" 1600 "$(jqb '[.choices[].logprobs.tokens | length] | add')"
check_true "under the cap: within it" test "$(wc -c <"$TMPD/body")" -le 1048576
# streamed, the cap does not apply (nothing is held)
n=$(curl -sN -H 'Content-Type: application/json' "$BASE/v1/completions" --data-binary \
  '{"prompt":"Once","n":8,"max_tokens":400,"logprobs":20,"ignore_eos":true,"stream":true}' | grep -c '"logprobs":{')
check "streamed: every token sent" 3200 "$n"
check "healthy after" 200 "$(curl -s -o /dev/null -w '%{http_code}' "$BASE/health")"
check "KV blocks all free" "$(metric hearth_kv_blocks_total)" "$(metric hearth_kv_blocks_free)"
stop_server "$PID"
finish
