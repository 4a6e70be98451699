#!/usr/bin/env bash
# Usage metering of `hearth serve`: N streamed and non-streamed requests
# give N rows with the token counts the responses reported; errors are
# rows too; keys are stored hashed; kill -9 under load loses at most the
# last batch window (rows of responses finished > 0.5 s before the kill are
# all on disk).
. "$(dirname "$0")/../serve/lib.sh"
command -v sqlite3 >/dev/null || missing_prereq "sqlite3 not installed"

DB=$TMPD/metering.db
start_server metering -m "$MODEL" --usage-db "$DB" --api-key sekrit-key-1
AUTH=(-H "Authorization: Bearer sekrit-key-1")
declare -A want
for i in 1 2 3 4 5; do
  code=$(post /v1/completions "{\"prompt\":\"Once upon a time $i\",\"max_tokens\":$((4 + i)),\"temperature\":0}" "${AUTH[@]}")
  check "non-stream $i status" 200 "$code"
  id=$(jq -r .id "$TMPD/body")
  want[$id]="$(jq -r '"\(.usage.prompt_tokens) \(.usage.completion_tokens) 0"' "$TMPD/body")"
done
for i in 1 2 3 4 5; do
  curl -sN "${AUTH[@]}" -H 'Content-Type: application/json' "$BASE/v1/chat/completions" --data-binary \
    "{\"messages\":[{\"role\":\"user\",\"content\":\"story $i\"}],\"max_tokens\":$((3 + i)),\"temperature\":0,\"stream\":true,\"stream_options\":{\"include_usage\":true}}" \
    >"$TMPD/sse"
  last=$(grep '^data: {' "$TMPD/sse" | tail -n 1 | cut -c7-)
  id=$(jq -r .id <<<"$last")
  want[$id]="$(jq -r '"\(.usage.prompt_tokens) \(.usage.completion_tokens) 1"' <<<"$last")"
done
code=$(post /v1/completions '{"prompt":"x","max_tokens":-3}' "${AUTH[@]}")
check "bad request status" 400 "$code"
stop_server "$PID"

check "rows" 11 "$(sqlite3 "$DB" 'select count(*) from usage')"
for id in "${!want[@]}"; do
  got=$(sqlite3 -separator ' ' "$DB" "select prompt_tokens, completion_tokens, stream from usage where request_id = '$id'")
  check "row of $id" "${want[$id]}" "$got"
done
check "error row" "400|0|0" "$(sqlite3 "$DB" 'select status, prompt_tokens, completion_tokens from usage where status <> 200')"
check "key stored hashed" 11 "$(sqlite3 "$DB" "select count(*) from usage where key_id like 'xxh64:%' and key_id not like '%sekrit%'")"
check "finish reasons" "length" "$(sqlite3 "$DB" "select distinct finish_reason from usage where status = 200")"
check "model and backend" "stories260K|local" "$(sqlite3 "$DB" 'select distinct model, backend from usage')"

# kill -9 under load
DB2=$TMPD/crash.db
start_server crash -m "$MODEL" --usage-db "$DB2"
: >"$TMPD/done"
(
  for i in $(seq 1 400); do
    c=$(curl -s -o "$TMPD/b.$i" -w '%{http_code}' -H 'Content-Type: application/json' \
      --data-binary "{\"prompt\":\"Once $i\",\"max_tokens\":3,\"temperature\":0}" "$BASE/v1/completions") || break
    [ "$c" = 200 ] || break
    echo "$(date +%s.%N) $(jq -r .id "$TMPD/b.$i")" >>"$TMPD/done"
  done
) &
LOADER=$!
# let a good number of responses finish (bounded), then kill mid-load: the
# first 12 finished at least 1 s before the kill, past the 0.5 s window
for _ in $(seq 1 600); do
  [ "$(wc -l <"$TMPD/done")" -ge 12 ] && break
  sleep 0.2
done
sleep 1
kill -KILL "$PID"
t_kill=$(date +%s.%N)
wait "$LOADER" 2>/dev/null
n_done=$(wc -l <"$TMPD/done")
check_true "requests finished before the kill (got $n_done)" test "$n_done" -gt 5
missing=0
old=0
while read -r t id; do
  if awk -v a="$t" -v b="$t_kill" 'BEGIN { exit !(b - a > 0.5) }'; then
    old=$((old + 1))
    [ "$(sqlite3 "$DB2" "select count(*) from usage where request_id = '$id'")" = 1 ] || missing=$((missing + 1))
  fi
done <"$TMPD/done"
check_true "responses older than the batch window: at least 12 (got $old)" test "$old" -ge 12
check "rows lost older than the batch window (of $old)" 0 "$missing"
check "database intact after kill -9" ok "$(sqlite3 "$DB2" 'pragma integrity_check')"
echo "metering: $(sqlite3 "$DB2" 'select count(*) from usage') of $n_done responses on disk after kill -9"

echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
