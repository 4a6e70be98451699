#!/usr/bin/env bash
# Fleet budgets and PostgreSQL going away (issue 12 items 2 and 5), on a
# throwaway cluster of this test's own (scripts/pg_scratch.sh), since it
# stops and restarts the server:
#   - two `hearth serve` replicas on one PostgreSQL usage database share one
#     budget ledger (table hearth_budget): 40 concurrent clients split over
#     both, offering several times the limit, never get more than the key's
#     tokens per day; the ledger equals the stored usage;
#   - the database stopped mid-run: keys with a budget are refused 503
#     (fail closed), keys without one are served; their usage rows are
#     buffered (hearth_usage_rows_buffered) and written after the database
#     is started again; budgeted keys are served again.
# Needs the PostgreSQL server binaries (apt-get install postgresql): without
# them skipped, except under CI=true, where it fails.
. "$(dirname "$0")/../serve/lib.sh"
. "$(dirname "$0")/../serve/route_lib.sh"
SRC=${HEARTH_SRC:-$(cd "$(dirname "$0")/../.." && pwd)}
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -z "$PGBIN" ] || ! command -v psql >/dev/null; then
  echo "PostgreSQL server binaries or psql missing: skipped"
  [ "${CI:-}" = true ] && exit 1
  exit 77
fi
PGD=$(mktemp -d /tmp/hearth-fleet.XXXXXX)
chmod 755 "$PGD"
PGPORT=${HEARTH_FLEET_PG_PORT:-55440}
URL=$("$SRC/scripts/pg_scratch.sh" start "$PGD/c" "$PGPORT") || { echo "cannot start PostgreSQL" >&2; exit 1; }
trap '"$SRC/scripts/pg_scratch.sh" stop "$PGD/c"; rm -rf "$PGD"; cleanup' EXIT
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
pg_halt() { as_pg "$PGBIN/pg_ctl" -D "$PGD/c/data" -m fast -w stop >/dev/null; }
pg_resume() {
  as_pg "$PGBIN/pg_ctl" -D "$PGD/c/data" -l "$PGD/c/data/server.log" -w -t 60 \
    -o "-k $PGD/c/sock -p $PGPORT -c listen_addresses='' -c fsync=off -c max_connections=200" start >/dev/null
}
q() { psql "$URL" -qAt -F '|' -c "$1"; }
wait_metric() { # NAME VALUE, polled (bounded, 20 s)
  local v=""
  for _ in $(seq 1 200); do
    v=$(metric "$1")
    [ "$v" = "$2" ] && return 0
    sleep 0.1
  done
  echo "  $1 stayed at [$v], wanted [$2]" >&2
  return 1
}

start_fake ok
F=http://127.0.0.1:$FAKE_PORT
export FLEET_LIMITED=limited-key FLEET_ROOMY=roomy-key
LIMIT=2000
cat >"$TMPD/cfg.json" <<JSON
{"backends": [{"name": "fok", "base_url": "$F/ok/v1", "models": {"fake-ok": {"input": 1, "output": 1}}}],
 "budgets": [{"key_env": "FLEET_LIMITED", "tokens_per_day": $LIMIT},
             {"key_env": "FLEET_ROOMY", "tokens_per_day": 100000000}]}
JSON
KEYS=(--api-key limited-key --api-key roomy-key --api-key free-key)
start_server a -m "$MODEL" --config "$TMPD/cfg.json" --usage-db "$URL" "${KEYS[@]}"
PID_A=$PID BASE_A=$BASE LOG_A=$LOG
start_server b -m "$MODEL" --config "$TMPD/cfg.json" --usage-db "$URL" "${KEYS[@]}"
PID_B=$PID BASE_B=$BASE

req() { # BASE KEY [BODYFILE] -> status
  curl -s -o "${3:-/dev/null}" -w '%{http_code}\n' -H "Authorization: Bearer $2" -H 'Content-Type: application/json' \
    --data-binary '{"model":"fake-ok","messages":[{"role":"user","content":"hello"}],"max_tokens":20}' \
    "$1/v1/chat/completions"
}
: >"$TMPD/codes"
CL=()
for c in $(seq 1 40); do
  if [ $((c % 2)) -eq 0 ]; then B=$BASE_A R=a; else B=$BASE_B R=b; fi
  ( for _ in $(seq 1 6); do echo "$R $(req "$B" limited-key)"; done >>"$TMPD/codes" ) &
  CL+=("$!")
done
wait "${CL[@]}"
n200=$(grep -c ' 200$' "$TMPD/codes")
n429=$(grep -c ' 429$' "$TMPD/codes")
check "fleet: every request answered 200 or 429" 240 "$((n200 + n429))"
check_true "fleet: some refused (200: $n200, 429: $n429)" test "$n429" -gt 0
stop_server "$PID_B"
BASE=$BASE_A
check_true "fleet: usage of replica a stored" wait_metric hearth_usage_rows_buffered 0

kid=$(q "select key_id from usage where status = 429 limit 1")
used=$(q "select sum(prompt_tokens + completion_tokens) from usage where status = 200 and key_id = '$kid'")
per=$(q "select max(prompt_tokens + completion_tokens) from usage where status = 200 and key_id = '$kid'")
echo "fleet budget: $n200 answered, $n429 refused over two replicas; $used of $LIMIT tokens used ($per per request)"
check_true "fleet: both replicas served the key" test "$(grep -c '^a 200$' "$TMPD/codes")" -gt 0 -a "$(grep -c '^b 200$' "$TMPD/codes")" -gt 0
check "fleet: every request is a row" 240 "$(q "select count(*) from usage where key_id = '$kid'")"
check_true "fleet: tokens within the limit ($used <= $LIMIT)" test "$used" -le "$LIMIT"
# not vacuous: the clients offered several times the limit, and the fleet used most of it
check_true "fleet: offered load above twice the limit (240 x $per)" test $((240 * per)) -gt $((2 * LIMIT))
check_true "fleet: most of the budget used ($used)" test "$used" -gt $((LIMIT / 2))
check "fleet: the ledger equals the stored usage" "$used" \
  "$(q "select tokens from hearth_budget where key_id = '$kid' and period like 'd%'")"

# ---- the database stopped under the running replica ----
rows0=$(q 'select count(*) from usage')
pg_halt
check "db down: budgeted key fails closed" 503 "$(req "$BASE_A" roomy-key "$TMPD/r503")"
check "db down: 503 code" "budget_unavailable" "$(jq -r .error.code "$TMPD/r503")"
for i in 1 2 3; do check "db down: key without a budget served $i" 200 "$(req "$BASE_A" free-key)"; done
check_true "db down: usage log down" wait_metric hearth_usage_db_up 0
check "db down: ledger down" 0 "$(metric hearth_budget_ledger_up)"
check "db down: rows buffered" 4 "$(metric hearth_usage_rows_buffered)"
check "db down: nothing dropped" 0 "$(metric hearth_usage_rows_dropped_total)"
check "db down: 503s counted" 1 "$(metric hearth_budget_unavailable_total)"
pg_resume
check_true "db back: backlog written" wait_metric hearth_usage_rows_buffered 0
check "db back: usage log up" 1 "$(metric hearth_usage_db_up)"
sleep 1.1 # the ledger reconnects at most once a second
check "db back: budgeted key served" 200 "$(req "$BASE_A" roomy-key)"
check "db back: ledger up" 1 "$(metric hearth_budget_ledger_up)"
check "db back: limited key still refused" 429 "$(req "$BASE_A" limited-key)"
check_true "db back: episode logged once each" test "$(grep -c 'usage log: cannot write' "$LOG_A")" = 1 -a \
  "$(grep -c 'usage log: writing again' "$LOG_A")" = 1
stop_server "$PID_A"
check "db back: every request of the outage stored" $((rows0 + 4 + 2)) "$(q 'select count(*) from usage')"
check "db back: the 503 is a row" 1 "$(q 'select count(*) from usage where status = 503')"

# a replica cannot start with budgets when the ledger is unreachable
pg_halt
out=$("$BIN" serve -m "$MODEL" --port 0 --config "$TMPD/cfg.json" --usage-db "$URL" 2>&1)
rc=$?
check_true "unreachable at start: refused (rc $rc)" test "$rc" -ne 0
check "unreachable at start: one line" 1 "$(printf '%s\n' "$out" | wc -l)"
finish
