#!/usr/bin/env bash
# serve_arch.sh - `hearth serve` on the gemma3 and gpt-oss fixtures with
# their own chat templates (--chat-template; the fixtures carry the
# stories260K tokenizer and no template), driven by curl and by the official
# openai npm client (v6): HTTP 200, a non-empty completion of exactly
# max_tokens tokens, usage.prompt_tokens equal to the token count of the
# template's render as `hearth template` + `hearth tokenize` produce it (not
# the server's own number), streamed text equal to the non-streamed text;
# then, with --kv-mem of one context, four concurrent chats are preempted
# and each still answers what it answers alone.
# First, `hearth template` must reproduce the fixtures' reference renders of
# both templates, so the prompts served are the families' real formats.
# Without node/npm (or when the install fails): a failure under CI
# (CI=true), a skip (77) elsewhere.
source "$(dirname "$0")/../serve/lib.sh"
command -v node >/dev/null && command -v npm >/dev/null || missing_prereq "node/npm not installed"
NODEDIR=${HEARTH_TMP:-/tmp}/node-openai
mkdir -p "$NODEDIR"
if [ ! -d "$NODEDIR/node_modules/openai" ]; then
  if ! (cd "$NODEDIR" && { [ -f package.json ] || echo '{"private":true}' >package.json; } &&
        timeout 300 npm install --no-audit --no-fund --silent openai@6 >"$TMPD/npm.log" 2>&1); then
    tail -n 5 "$TMPD/npm.log"
    missing_prereq "npm install openai@6 failed"
  fi
fi
TPL=$FIX/templates
CASES=$TPL/cases.json
MAXT=24

# hearth template reproduces the reference render of case NAME (clock fixed
# as the references were made)
ref_render() {
  local name=$1
  jq -e --arg n "$name" '.cases[] | select(.name == $n) | .context' "$CASES" >"$TMPD/ref.ctx.json" ||
    { bad "$name: no such case in cases.json"; return; }
  jq -j --arg n "$name" '.cases[] | select(.name == $n) | .expected' "$CASES" >"$TMPD/ref.want"
  local tfile; tfile=$TPL/$(jq -r --arg n "$name" '.cases[] | select(.name == $n) | .template' "$CASES")
  "$BIN" template --template "$tfile" --context "$TMPD/ref.ctx.json" --now 2025-07-10T12:00:00 >"$TMPD/ref.got"
  check "$name: template render status" 0 $?
  check_true "$name: render equals the reference" cmp -s "$TMPD/ref.want" "$TMPD/ref.got"
}

# serve_one NAME MODEL TEMPLATE: serves MODEL with TEMPLATE and checks one chat
serve_one() {
  local name=$1 model=$2 tmpl=$3
  [ -f "$model" ] || { bad "$name: missing fixture $model"; return; }
  # the messages the clients send, and the template's render of them with
  # the model's BOS/EOS text, as the server renders them
  cat >"$TMPD/$name.msgs.json" <<'JSON'
[{"role": "system", "content": "You are a storyteller. Keep it short."},
 {"role": "user", "content": "Tell me a story about a little dog who found a red ball in the park."}]
JSON
  local bos eos
  bos=$("$BIN" detokenize -m "$model" --special "$("$BIN" tokenize -m "$model" --add-special "" | awk '{print $1}')")
  eos=$("$BIN" detokenize -m "$model" --special 2)
  jq -n --slurpfile m "$TMPD/$name.msgs.json" --arg b "$bos" --arg e "$eos" \
    '{messages: $m[0], add_generation_prompt: true, bos_token: $b, eos_token: $e}' >"$TMPD/$name.ctx.json"
  "$BIN" template --template "$tmpl" --context "$TMPD/$name.ctx.json" >"$TMPD/$name.render"
  check "$name: render status" 0 $?
  local ids n first bos_id
  ids=$("$BIN" tokenize -m "$model" --parse-special --file "$TMPD/$name.render")
  n=$(wc -w <<<"$ids")
  first=$(awk '{print $1}' <<<"$ids")
  # the server adds BOS when the model asks for it and the render lacks it
  bos_id=$("$BIN" tokenize -m "$model" --add-special "" | awk '{print $1}')
  if [ -n "$bos_id" ] && [ "$first" != "$bos_id" ]; then n=$((n + 1)); fi
  check_true "$name: the render is tokenized into more than 20 tokens ($n)" test "$n" -gt 20

  start_server "$name" -m "$model" -c 512 --chat-template "$tmpl"
  local S=$PID
  grep -q "ready:.*chat template file" "$LOG" ||
    bad "$name: the server does not use the template file: $(grep ready: "$LOG")"
  local req
  req=$(jq -c -n --slurpfile m "$TMPD/$name.msgs.json" --argjson t $MAXT \
        '{messages: $m[0], max_tokens: $t, temperature: 0, ignore_eos: true}')
  check "$name: curl status" 200 "$(post /v1/chat/completions "$req")"
  check "$name: curl prompt_tokens" "$n" "$(jqb .usage.prompt_tokens)"
  check "$name: curl completion_tokens" $MAXT "$(jqb .usage.completion_tokens)"
  check "$name: curl finish_reason" length "$(jqb '.choices[0].finish_reason')"
  local text; text=$(jqb '.choices[0].message.content')
  check_true "$name: curl completion is not empty" test -n "$text"
  # streamed over curl: the same text
  curl -sN -H 'Content-Type: application/json' \
    --data-binary "$(jq -c '. + {stream: true}' <<<"$req")" "$BASE/v1/chat/completions" >"$TMPD/$name.sse"
  check "$name: curl streamed text" "$text" "$(sse_text "$TMPD/$name.sse")"
  OPENAI_MODULE_DIR=$NODEDIR/node_modules timeout 120 \
    node "$(dirname "$0")/../node/openai_arch.mjs" "$BASE" "$TMPD/$name.msgs.json" "$n" $MAXT
  check "$name: openai client" 0 $?

  # --kv-mem of one context: four requests (the template's text shared,
  # continuations past the sliding windows) must be preempted and still
  # answer what each answers alone
  local i block ctx_blocks
  for i in 0 1 2 3; do
    jq -c -n --arg u "Story $i: a $(sed -n "$((i + 1))p" <<<$'cat\nbird\nfrog\nbear') who lost a hat." \
      '{messages: [{role: "user", content: $u}], max_tokens: 100, temperature: 0, ignore_eos: true}' >"$TMPD/$name.kv$i"
    post /v1/chat/completions "@$TMPD/$name.kv$i" >/dev/null
    jqb '.choices[0].message.content' >"$TMPD/$name.alone$i"
    check "$name: request $i alone, completion tokens" 100 "$(jqb .usage.completion_tokens)"
  done
  block=$(metric hearth_kv_block_bytes)
  ctx_blocks=$(( $(metric hearth_kv_blocks_total) / 16 )) # default pool: context x --max-running 16
  stop_server $S
  start_server "$name-kv" -m "$model" -c 512 --chat-template "$tmpl" --kv-mem $((block * ctx_blocks))
  S=$PID
  for i in 0 1 2 3; do
    curl -s -H 'Content-Type: application/json' --data-binary "@$TMPD/$name.kv$i" "$BASE/v1/chat/completions" |
      jq -r '.choices[0].message.content' >"$TMPD/$name.kvout$i" &
  done
  wait_clients
  check_true "$name: a one-context pool preempts ($(metric hearth_preemptions_total))" \
    test "$(metric hearth_preemptions_total)" -ge 1
  for i in 0 1 2 3; do
    check_true "$name: request $i preempted answers what it answers alone" \
      cmp -s "$TMPD/$name.alone$i" "$TMPD/$name.kvout$i"
  done
  check "$name: every KV block back" 0 "$(metric hearth_kv_blocks_used)"
  stop_server $S
}

ref_render google-gemma-3-it/system
ref_render openai-gpt-oss-120b/system
serve_one gemma3 "$FIX/models/arch/gemma3-F32.gguf" "$TPL/google-gemma-3-it.jinja"
serve_one gpt-oss "$FIX/models/arch/gpt-oss-F32.gguf" "$TPL/openai-gpt-oss-120b.jinja"
# TODO(harmony, not enabled): gpt-oss's reasoning in reasoning_content -
# see the disabled check at the end of tests/node/openai_arch.mjs.
finish
