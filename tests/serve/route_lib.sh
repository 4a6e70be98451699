# route_lib.sh - helpers for the routing tests (sourced after lib.sh).
FAKE=${HEARTH_FAKE_UPSTREAM:-$(dirname "$BIN")/tests/fake_upstream}
[ -x "$FAKE" ] || missing_prereq "fake_upstream not built"

# start_fake NAME [ARGS...]: sets FAKE_PORT
start_fake() {
  local log=$TMPD/fake.$1.log; shift
  "$FAKE" "$@" 2>"$log" &
  SERVER_PIDS+=("$!")
  FAKE_PORT=""
  for _ in $(seq 1 100); do
    FAKE_PORT=$(sed -n 's/.*listening on \([0-9]*\).*/\1/p' "$log")
    [ -n "$FAKE_PORT" ] && break
    sleep 0.05
  done
  [ -n "$FAKE_PORT" ] || { echo "fake_upstream did not start" >&2; exit 1; }
}

# chat ROUTE [extra JSON fields]: non-streamed greedy chat to $BASE; status printed, body in $TMPD/body
chat() {
  post /v1/chat/completions "{\"model\":\"$1\",\"messages\":[{\"role\":\"user\",\"content\":\"Tell me a story\"}],\"max_tokens\":12,\"temperature\":0${2:-}}" "${AUTH[@]}"
}
# chat_stream ROUTE FILE: streamed chat into FILE
chat_stream() {
  curl -sN "${AUTH[@]}" -H 'Content-Type: application/json' "$BASE/v1/chat/completions" --data-binary \
    "{\"model\":\"$1\",\"messages\":[{\"role\":\"user\",\"content\":\"Tell me a story\"}],\"max_tokens\":12,\"temperature\":0,\"stream\":true,\"stream_options\":{\"include_usage\":true}}" >"$2"
}
AUTH=()
