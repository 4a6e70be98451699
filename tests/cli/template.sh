#!/usr/bin/env bash
# template.sh - `hearth template`: renders with --template/--context, --now
# fixes strftime_now, errors are one line on stderr with exit status 1, bad
# usage exits 2.
set -u
BIN=${HEARTH_BIN:?HEARTH_BIN not set}
FIX=${HEARTH_FIXTURES:-${HEARTH_FIXTURES_DEFAULT:?}}
TMP=$(mktemp -d "${HEARTH_TMP:-/tmp}/tmpl.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
fails=0
check() { # name, want, got
    if [ "$2" != "$3" ]; then
        echo "FAIL $1"; echo "  want: $2"; echo "  got:  $3"; fails=$((fails + 1))
    fi
}

cat > "$TMP/ctx.json" <<'JSON'
{"messages": [{"role": "user", "content": "Hi \u00e9"}, {"role": "assistant", "content": "Hello"}],
 "add_generation_prompt": true, "bos_token": "<s>", "eos_token": "</s>"}
JSON
printf '%s' '{{ bos_token }}{% for m in messages %}[{{ m.role }}] {{ m.content }}{{ eos_token if m.role == "assistant" }}
{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}' > "$TMP/t.jinja"
got=$("$BIN" template --template "$TMP/t.jinja" --context "$TMP/ctx.json"); rc=$?
check "render status" 0 "$rc"
check "render" "$(printf '<s>[user] Hi \xc3\xa9\n[assistant] Hello</s>\n[assistant]')" "$got"

# a real template from the fixtures, with the clock fixed
got=$("$BIN" template --template "$FIX/templates/meta-llama-Llama-3.2-3B-Instruct.jinja" --context "$TMP/ctx.json" \
      --now 2025-07-10T12:00:00 | head -5)
check "llama date" "$(printf '<s><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 10 Jul 2025\n')" "$got"

# raise_exception: exit 1, one line naming the message
printf '%s' "{{ raise_exception('Conversation roles must alternate') }}" > "$TMP/r.jinja"
err=$("$BIN" template --template "$TMP/r.jinja" --context "$TMP/ctx.json" 2>&1 >/dev/null); rc=$?
check "raise status" 1 "$rc"
check "raise lines" 1 "$(printf '%s\n' "$err" | wc -l | tr -d ' ')"
case "$err" in *"Conversation roles must alternate"*) ;; *) echo "FAIL raise message: $err"; fails=$((fails + 1)) ;; esac

# syntax error: exit 1 with the line number
printf 'ok\n{%% if x %%}' > "$TMP/s.jinja"
err=$("$BIN" template --template "$TMP/s.jinja" --context "$TMP/ctx.json" 2>&1 >/dev/null); rc=$?
check "syntax status" 1 "$rc"
case "$err" in *"line 2"*) ;; *) echo "FAIL syntax message: $err"; fails=$((fails + 1)) ;; esac

# bad context, missing file, bad usage
echo '[1, 2]' > "$TMP/bad.json"
"$BIN" template --template "$TMP/t.jinja" --context "$TMP/bad.json" >/dev/null 2>&1; check "array context" 1 $?
"$BIN" template --template "$TMP/nope.jinja" --context "$TMP/ctx.json" >/dev/null 2>&1; check "missing file" 1 $?
"$BIN" template --context "$TMP/ctx.json" >/dev/null 2>&1; check "usage" 2 $?
"$BIN" template -m "$TMP/nope.gguf" --context "$TMP/ctx.json" >/dev/null 2>&1; check "missing model" 1 $?

[ "$fails" -eq 0 ] && echo "template.sh: all passed"
exit "$fails"
