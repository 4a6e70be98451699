#!/usr/bin/env bash
# Usage metering of `hearth serve` into PostgreSQL (--usage-db postgresql://...):
# the checks of serve_metering.sh against the server named by
# $HEARTH_TEST_PG, in a fresh schema, queried with psql; then `hearth cost`
# and `hearth pilot report` read the same log. Skipped (77) without
# HEARTH_TEST_PG or psql.
. "$(dirname "$0")/../serve/lib.sh"
[ -n "${HEARTH_TEST_PG:-}" ] || missing_prereq "HEARTH_TEST_PG not set"
command -v psql >/dev/null || missing_prereq "psql not installed"

SCHEMA=hrm_$$_$RANDOM
case "$HEARTH_TEST_PG" in *\?*) sep='&' ;; *) sep='?' ;; esac
URL="$HEARTH_TEST_PG${sep}options=-csearch_path%3D$SCHEMA"
psql "$HEARTH_TEST_PG" -qAt -c "CREATE SCHEMA $SCHEMA" >/dev/null
drop_schema() { psql "$HEARTH_TEST_PG" -qAt -c "DROP SCHEMA IF EXISTS $SCHEMA CASCADE" >/dev/null 2>&1; }
trap 'drop_schema; cleanup' EXIT
q() { psql "$URL" -qAt -F '|' -c "$1"; }

start_server metering -m "$MODEL" --usage-db "$URL" --api-key sekrit-key-1
AUTH=(-H "Authorization: Bearer sekrit-key-1")
declare -A want
for i in 1 2 3 4 5; do
  code=$(post /v1/completions "{\"prompt\":\"Once upon a time $i\",\"max_tokens\":$((4 + i)),\"temperature\":0}" "${AUTH[@]}")
  check "non-stream $i status" 200 "$code"
  id=$(jq -r .id "$TMPD/body")
  want[$id]="$(jq -r '"\(.usage.prompt_tokens)|\(.usage.completion_tokens)|0"' "$TMPD/body")"
done
for i in 1 2 3 4 5; do
  curl -sN "${AUTH[@]}" -H 'Content-Type: application/json' "$BASE/v1/chat/completions" --data-binary \
    "{\"messages\":[{\"role\":\"user\",\"content\":\"story $i\"}],\"max_tokens\":$((3 + i)),\"temperature\":0,\"stream\":true,\"stream_options\":{\"include_usage\":true}}" \
    >"$TMPD/sse"
  last=$(grep '^data: {' "$TMPD/sse" | tail -n 1 | cut -c7-)
  id=$(jq -r .id <<<"$last")
  want[$id]="$(jq -r '"\(.usage.prompt_tokens)|\(.usage.completion_tokens)|1"' <<<"$last")"
done
code=$(post /v1/completions '{"prompt":"x","max_tokens":-3}' "${AUTH[@]}")
check "bad request status" 400 "$code"
stop_server "$PID"

check "schema version" 3 "$(q "select value from hearth_meta where key = 'schema_version'")"
check "rows" 11 "$(q 'select count(*) from usage')"
for id in "${!want[@]}"; do
  check "row of $id" "${want[$id]}" "$(q "select prompt_tokens, completion_tokens, stream from usage where request_id = '$id'")"
done
check "error row" "400|0|0" "$(q 'select status, prompt_tokens, completion_tokens from usage where status <> 200')"
check "key stored hashed" 11 "$(q "select count(*) from usage where key_id like 'xxh64:%' and key_id not like '%sekrit%'")"
check "finish reasons" "length" "$(q "select distinct finish_reason from usage where status = 200")"
check "model and backend" "stories260K|local" "$(q 'select distinct model, backend from usage')"
check "not estimated" 0 "$(q 'select count(*) from usage where estimated <> 0')"

# the reports read the same log through the URL
check "cost reads postgres" 10 "$("$BIN" cost --usage-db "$URL" --json | jq -r .requests)"
check_true "pilot report reads postgres" bash -c "'$BIN' pilot report --usage-db '$URL' | grep -q 'no pilot pairs'"

# a second replica logging into the same database at the same time
start_server a -m "$MODEL" --usage-db "$URL"
PID_A=$PID BASE_A=$BASE
start_server b -m "$MODEL" --usage-db "$URL"
PID_B=$PID BASE_B=$BASE
for i in 1 2 3; do
  BASE=$BASE_A post /v1/completions "{\"prompt\":\"a $i\",\"max_tokens\":2}" >/dev/null
  BASE=$BASE_B post /v1/completions "{\"prompt\":\"b $i\",\"max_tokens\":2}" >/dev/null
done
stop_server "$PID_A"
stop_server "$PID_B"
check "two replicas, one log" 17 "$(q 'select count(*) from usage')"

# kill -9 under load
q 'truncate usage' >/dev/null
start_server crash -m "$MODEL" --usage-db "$URL"
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
# let a good number of responses finish (bounded), then kill mid-load
for _ in $(seq 1 600); do
  [ "$(wc -l <"$TMPD/done")" -ge 12 ] && break
  sleep 0.2
done
sleep 0.3
kill -KILL "$PID"
t_kill=$(date +%s.%N)
wait "$LOADER" 2>/dev/null
n_done=$(wc -l <"$TMPD/done")
check_true "requests finished before the kill (got $n_done)" test "$n_done" -gt 5
q 'select request_id from usage' | sort >"$TMPD/ids"
missing=0
old=0
while read -r t id; do
  if awk -v a="$t" -v b="$t_kill" 'BEGIN { exit !(b - a > 0.5) }'; then
    old=$((old + 1))
    grep -qx "$id" "$TMPD/ids" || missing=$((missing + 1))
  fi
done <"$TMPD/done"
check "rows lost older than the batch window (of $old)" 0 "$missing"
echo "metering (postgres): $(wc -l <"$TMPD/ids") of $n_done responses in the database after kill -9"

# a database that cannot be reached at start is a one-line error
out=$("$BIN" serve -m "$MODEL" --port 0 --usage-db "postgresql://u:pw@127.0.0.1:1/x?connect_timeout=2" 2>&1)
rc=$?
check_true "unreachable database refused (rc $rc)" test "$rc" -ne 0
check_true "error names the problem: $out" bash -c "grep -q 'cannot connect' <<<'$out'"
check "one line" 1 "$(printf '%s\n' "$out" | wc -l)"

finish
