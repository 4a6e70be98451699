#!/usr/bin/env bash
# serve_api.sh - `hearth serve` endpoints, shapes and every error path, with curl.
source "$(dirname "$0")/../serve/lib.sh"

start_server main -m "$MODEL" -c 512
S=$PID

# --- health, models, metrics
check "health" 200 "$(curl -s -o /dev/null -w '%{http_code}' "$BASE/health")"
curl -s "$BASE/v1/models" >"$TMPD/body"
check "models object" list "$(jqb .object)"
check "models id" stories260K "$(jqb '.data[0].id')"
check "models context" 512 "$(jqb '.data[0].context_length')"
check "models hearth arch" llama "$(jqb '.data[0].hearth.architecture')"
check "model by id" 200 "$(curl -s -o /dev/null -w '%{http_code}' "$BASE/v1/models/stories260K")"
check "model by id 404" 404 "$(curl -s -o /dev/null -w '%{http_code}' "$BASE/v1/models/nope")"
check_true "metrics text" bash -c "curl -s $BASE/metrics | grep -q '^hearth_kv_blocks_free '"

# --- chat, non-streamed and streamed (greedy: same text)
CHAT='{"model":"stories260K","messages":[{"role":"user","content":"Tell me a story"}],"max_tokens":24,"temperature":0}'
check "chat status" 200 "$(post /v1/chat/completions "$CHAT")"
check "chat object" chat.completion "$(jqb .object)"
check "chat role" assistant "$(jqb '.choices[0].message.role')"
check "chat finish" length "$(jqb '.choices[0].finish_reason')"
check "chat usage" 24 "$(jqb .usage.completion_tokens)"
check "chat cached field" number "$(jqb '.usage.prompt_tokens_details.cached_tokens | type')"
check "chat total" "$(jqb '.usage.prompt_tokens + .usage.completion_tokens')" "$(jqb .usage.total_tokens)"
check_true "chat id" bash -c "jq -r .id $TMPD/body | grep -q '^chatcmpl-'"
TEXT=$(jqb '.choices[0].message.content')
check_true "chat text not empty" test -n "$TEXT"
STREAM='{"messages":[{"role":"user","content":"Tell me a story"}],"max_tokens":24,"temperature":0,"stream":true,"stream_options":{"include_usage":true}}'
curl -sN -H 'Content-Type: application/json' -d "$STREAM" "$BASE/v1/chat/completions" >"$TMPD/sse"
check "stream text = non-stream text" "$TEXT" "$(sse_text "$TMPD/sse")"
check "stream ends with DONE" "data: [DONE]" "$(grep '^data:' "$TMPD/sse" | tail -n1)"
check "stream first delta role" assistant "$(grep '^data: {' "$TMPD/sse" | head -n1 | sed 's/^data: //' | jq -r '.choices[0].delta.role')"
check "stream chunk object" chat.completion.chunk "$(grep '^data: {' "$TMPD/sse" | head -n1 | sed 's/^data: //' | jq -r .object)"
check "stream usage chunk has no choices" 0 "$(grep '^data: {' "$TMPD/sse" | tail -n1 | sed 's/^data: //' | jq '.choices | length')"
check "stream usage" 24 "$(grep '^data: {' "$TMPD/sse" | tail -n1 | sed 's/^data: //' | jq '.usage.completion_tokens')"
check "stream finish" length "$(grep '^data: {' "$TMPD/sse" | sed 's/^data: //' | jq -r '.choices[]?.finish_reason // empty')"
check_true "stream lines are SSE" bash -c "! grep -v -e '^data: ' -e '^$' -e '^: keep-alive' $TMPD/sse | grep -q ."

# text parts and the fallback template: same prompt as a plain string
check "chat text parts" 200 "$(post /v1/chat/completions '{"messages":[{"role":"user","content":[{"type":"text","text":"Tell me a story"}]}],"max_tokens":24,"temperature":0}')"
check "text parts = string content" "$TEXT" "$(jqb '.choices[0].message.content')"

# --- completions: string, list of strings with n, token ids
check "cmpl status" 200 "$(post /v1/completions '{"prompt":"Once upon a time","max_tokens":16,"temperature":0}')"
check "cmpl object" text_completion "$(jqb .object)"
CTEXT=$(jqb '.choices[0].text')
check "cmpl list+n" 200 "$(post /v1/completions '{"prompt":["Once upon a time","The cat"],"max_tokens":8,"n":2,"temperature":0}')"
check "cmpl list+n choices" "0 1 2 3" "$(jqb '[.choices[].index] | map(tostring) | join(" ")')"
check "cmpl n greedy equal" "$(jqb '.choices[0].text')" "$(jqb '.choices[1].text')"
check "cmpl usage prompts" 1 "$(jqb '.usage.prompt_tokens > 4 | if . then 1 else 0 end')"
IDS=$(curl -s -H 'Content-Type: application/json' -d '{"content":"Once upon a time","add_special":true}' "$BASE/tokenize" | jq -c .tokens)
check "cmpl token ids" 200 "$(post /v1/completions "{\"prompt\":$IDS,\"max_tokens\":16,\"temperature\":0}")"
check "token ids = text prompt" "$CTEXT" "$(jqb '.choices[0].text')"
curl -sN -H 'Content-Type: application/json' -d '{"prompt":"Once upon a time","max_tokens":16,"temperature":0,"stream":true}' "$BASE/v1/completions" >"$TMPD/sse"
check "cmpl stream text" "$CTEXT" "$(sse_text "$TMPD/sse")"
check "cmpl stream has no usage key" null "$(grep '^data: {' "$TMPD/sse" | head -n1 | sed 's/^data: //' | jq -r '.usage')"
check "chat n=3" 3 "$(post /v1/chat/completions '{"messages":[{"role":"user","content":"hi"}],"max_tokens":4,"n":3}' >/dev/null; jqb '.choices | length')"

# --- stop strings
check "stop" 200 "$(post /v1/completions '{"prompt":"Once upon a time","max_tokens":60,"temperature":0,"stop":["."]}')"
check "stop finish" stop "$(jqb '.choices[0].finish_reason')"
check_true "stop string not in text" bash -c "! jq -r '.choices[0].text' $TMPD/body | grep -qF ."
check "stop list" 200 "$(post /v1/completions '{"prompt":"Once upon a time","max_tokens":60,"temperature":0,"stop":["girl","xyz"]}')"
check_true "stop list text" bash -c "! jq -r '.choices[0].text' $TMPD/body | grep -q girl"

# --- logprobs
check "chat logprobs" 200 "$(post /v1/chat/completions '{"messages":[{"role":"user","content":"hi"}],"max_tokens":5,"temperature":0,"logprobs":true,"top_logprobs":3}')"
check "chat logprobs count" 5 "$(jqb '.choices[0].logprobs.content | length')"
check "chat top_logprobs" 3 "$(jqb '.choices[0].logprobs.content[0].top_logprobs | length')"
check "chat logprob <= 0" true "$(jqb '.choices[0].logprobs.content | all(.logprob <= 0)')"
check "chat logprob bytes" true "$(jqb '.choices[0].logprobs.content[0].bytes | type == "array"')"
check "cmpl logprobs" 200 "$(post /v1/completions '{"prompt":"Once","max_tokens":4,"temperature":0,"logprobs":2}')"
check "cmpl logprobs tokens" 4 "$(jqb '.choices[0].logprobs.tokens | length')"
check "cmpl logprobs text_offset" 4 "$(jqb '.choices[0].logprobs.text_offset | length')"
check "cmpl logprobs tokens join" "$(jqb '.choices[0].text')" "$(jqb '.choices[0].logprobs.tokens | join("")')"
check "cmpl continues with a space" true "$(jqb '.choices[0].text | startswith(" ")')"

# --- other fields accepted
check "sampling fields" 200 "$(post /v1/chat/completions '{"messages":[{"role":"system","content":"s"},{"role":"user","content":"hi"}],"max_completion_tokens":4,"temperature":0.7,"top_p":0.9,"top_k":20,"min_p":0.05,"presence_penalty":0.5,"frequency_penalty":0.5,"repetition_penalty":1.1,"seed":42,"user":"u1","logit_bias":{"13":-100},"ignore_eos":true,"metadata":{"x":1},"store":false,"some_future_field":[1,2]}')"
check "ignore_eos gives max tokens" 4 "$(jqb .usage.completion_tokens)"
check "seeded sampling repeats" "$(post /v1/completions '{"prompt":"Once","max_tokens":12,"temperature":1,"seed":7}' >/dev/null; jqb '.choices[0].text')" \
  "$(post /v1/completions '{"prompt":"Once","max_tokens":12,"temperature":1,"seed":7}' >/dev/null; jqb '.choices[0].text')"
check "response_format text" 200 "$(post /v1/chat/completions '{"messages":[{"role":"user","content":"hi"}],"max_tokens":2,"response_format":{"type":"text"}}')"
check "tool_calls history" 200 "$(post /v1/chat/completions '{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},{"role":"tool","tool_call_id":"c1","content":"42"}],"max_tokens":2}')"

# --- tokenize / detokenize
check "tokenize" 200 "$(post /tokenize '{"content":"Hello world","with_pieces":true}')"
check "tokenize pieces" "Hello world" "$(jqb '[.tokens[].piece] | join("") | ltrimstr(" ")')"
check "detokenize" 200 "$(post /detokenize "{\"tokens\":$(curl -s -H 'Content-Type: application/json' -d '{"content":"Hello world"}' "$BASE/tokenize" | jq -c .tokens)}")"
check "detokenize text" "Hello world" "$(jqb .content)"

# --- errors: each a 4xx with an OpenAI error body
err() { # name status param-or-empty body [path]
  local code; code=$(post "${5:-/v1/chat/completions}" "$4")
  check "$1 status" "$2" "$code"
  check "$1 error shape" true "$(jq '(.error.message | type == "string") and (.error | has("type") and has("param") and has("code"))' "$TMPD/body" 2>/dev/null)"
  [ -z "$3" ] || check "$1 param" "$3" "$(jqb .error.param)"
}
M='"messages":[{"role":"user","content":"hi"}]'
err "malformed json" 400 "" '{"messages": ['
err "not an object" 400 "" '[1,2]'
err "wrong type temperature" 400 temperature "{$M,\"temperature\":\"hot\"}"
err "wrong type messages" 400 messages '{"messages":"hi"}'
err "missing messages" 400 messages '{"max_tokens":3}'
err "empty messages" 400 messages '{"messages":[]}'
err "bad role" 400 "" '{"messages":[{"role":"wizard","content":"hi"}]}'
err "image part" 400 "" '{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}'
err "negative max_tokens" 400 max_tokens "{$M,\"max_tokens\":-5}"
err "zero max_tokens" 400 max_tokens "{$M,\"max_tokens\":0}"
err "n too large" 400 n "{$M,\"n\":1000}"
err "top_logprobs without logprobs" 400 top_logprobs "{$M,\"top_logprobs\":2}"
err "stream_options without stream" 400 stream_options "{$M,\"stream_options\":{\"include_usage\":true}}"
err "unknown model" 404 model "{$M,\"model\":\"gpt-4o\"}"
check "unknown model code" model_not_found "$(jqb .error.code)"
err "context overflow" 400 max_tokens "{$M,\"max_tokens\":100000}"
check "context overflow code" context_length_exceeded "$(jqb .error.code)"
check_true "context overflow numbers" bash -c "jq -r .error.message $TMPD/body | grep -q 512"
err "tools refused" 400 tools "{$M,\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}]}"
err "json_schema refused" 400 response_format "{$M,\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{}}}"
err "bad logit_bias" 400 logit_bias "{$M,\"logit_bias\":{\"999999\":1}}"
err "bad stop type" 400 stop "{$M,\"stop\":[1,2]}"
STOPS=$(jq -nc '[range(10000) | "s\(.)"]')
err "10k stop strings" 400 stop "{$M,\"stop\":$STOPS}"
err "bad arguments json" 400 "" '{"messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{nope"}}]}]}'
err "cmpl missing prompt" 400 prompt '{"max_tokens":3}' /v1/completions
err "cmpl bad token id" 400 prompt '{"prompt":[1,2,99999]}' /v1/completions
err "cmpl mixed prompt" 400 prompt '{"prompt":["a",1]}' /v1/completions
err "cmpl logprobs bool" 400 logprobs '{"prompt":"a","logprobs":true}' /v1/completions
err "cmpl echo" 400 echo '{"prompt":"a","echo":true}' /v1/completions
err "tokenize no content" 400 content '{}' /tokenize
err "detokenize bad id" 400 tokens '{"tokens":[-1]}' /detokenize
printf '{"messages":[{"role":"user","content":"\xff\xfe bad"}]}' >"$TMPD/badutf8"
check "invalid utf-8" 400 "$(curl -s -H 'Content-Type: application/json' -o "$TMPD/body" -w '%{http_code}' --data-binary @"$TMPD/badutf8" "$BASE/v1/chat/completions")"
check_true "invalid utf-8 message" bash -c "jq -r .error.message $TMPD/body | grep -qi 'utf'"
head -c 9000000 /dev/zero | tr '\0' 'a' >"$TMPD/huge"
check "huge body 413" 413 "$(curl -s -H 'Content-Type: application/json' -o "$TMPD/body" -w '%{http_code}' --data-binary @"$TMPD/huge" "$BASE/v1/chat/completions")"
check "huge body error" invalid_request_error "$(jqb .error.type)"
check "huge chunked body 413" 413 "$(curl -s -H 'Content-Type: application/json' -o "$TMPD/body" -w '%{http_code}' -H 'Transfer-Encoding: chunked' --data-binary @"$TMPD/huge" "$BASE/v1/chat/completions")"
check "unknown path" 404 "$(curl -s -o "$TMPD/body" -w '%{http_code}' "$BASE/v2/nothing")"
check "unknown path error" invalid_request_error "$(jqb .error.type)"
check "wrong method" 405 "$(curl -s -o /dev/null -w '%{http_code}' "$BASE/v1/chat/completions")"
check "still serving after errors" 200 "$(post /v1/completions '{"prompt":"Once","max_tokens":2}')"
check "metrics counts 400s" 1 "$(curl -s "$BASE/metrics" | awk '$1 == "hearth_http_requests_total{code=\"400\"}" { print ($2 > 10) ? 1 : 0 }')"
stop_server $S

# --- auth: keys from flags and a file; /health open, /metrics open unless --metrics-key
printf '# keys\nkey-from-file\n\n' >"$TMPD/keys"
start_server auth -m "$MODEL" -c 256 --api-key k1 --api-key k2 --api-key-file "$TMPD/keys" --metrics-key
A=$PID
check "auth missing" 401 "$(post /v1/completions '{"prompt":"a","max_tokens":1}')"
check "auth error body" invalid_api_key "$(jqb .error.code)"
check "auth wrong" 401 "$(post /v1/completions '{"prompt":"a","max_tokens":1}' -H 'Authorization: Bearer nope')"
check "auth k2" 200 "$(post /v1/completions '{"prompt":"a","max_tokens":1}' -H 'Authorization: Bearer k2')"
check "auth file key" 200 "$(post /v1/completions '{"prompt":"a","max_tokens":1}' -H 'Authorization: Bearer key-from-file')"
check "auth models" 401 "$(curl -s -o /dev/null -w '%{http_code}' "$BASE/v1/models")"
check "auth health open" 200 "$(curl -s -o /dev/null -w '%{http_code}' "$BASE/health")"
check "auth metrics keyed" 401 "$(curl -s -o /dev/null -w '%{http_code}' "$BASE/metrics")"
check "auth metrics with key" 200 "$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer k1' "$BASE/metrics")"
stop_server $A

# --- a chat template from a file: the prompt is the template's rendering
TPL=$FIX/templates/Qwen-Qwen2.5-7B-Instruct.jinja
start_server tmpl -m "$FIX/models/synth/qwen2-Q8_0.gguf" --chat-template "$TPL" --alias qwen
T=$PID
check "template model alias" qwen "$(curl -s "$BASE/v1/models" | jq -r '.data[0].id')"
check "template source" file "$(curl -s "$BASE/v1/models" | jq -r '.data[0].hearth.chat_template')"
check "alias or file name" 200 "$(post /v1/chat/completions '{"model":"qwen2-Q8_0","messages":[{"role":"user","content":"hi"}],"max_tokens":2}')"
check "template chat" 200 "$(post /v1/chat/completions '{"messages":[{"role":"user","content":"hi"}],"max_tokens":2}')"
PT=$(jqb .usage.prompt_tokens)
RENDERED=$'<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n'
EXPECT=$(jq -n --arg c "$RENDERED" '{content:$c,add_special:true,parse_special:true}' | curl -s -H 'Content-Type: application/json' -d @- "$BASE/tokenize" | jq '.tokens | length')
check "template prompt tokens" "$EXPECT" "$PT"
stop_server $T

# --- /health is 503 while loading (a model path that is a slow FIFO)
mkfifo "$TMPD/slow.gguf"
"$BIN" serve --port 0 --quiet -m "$TMPD/slow.gguf" 2>"$TMPD/loading.log" &
L=$!
SERVER_PIDS+=("$L")
for _ in $(seq 1 50); do grep -q listening "$TMPD/loading.log" && break; sleep 0.1; done
LP=$(sed -n 's/.*127\.0\.0\.1:\([0-9]*\).*/\1/p' "$TMPD/loading.log" | head -n1)
check "health while loading" 503 "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$LP/health")"
check "chat while loading" 503 "$(curl -s -H 'Content-Type: application/json' -o /dev/null -w '%{http_code}' -d "{$M}" "http://127.0.0.1:$LP/v1/chat/completions")"
kill -KILL $L 2>/dev/null; wait $L 2>/dev/null

finish
