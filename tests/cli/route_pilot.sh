#!/usr/bin/env bash
# The parallel pilot: a route with a shadow (sample 1) answers from the
# primary; every request gets a scored pair (exact, F1, JSON, judge with
# positions swapped); a full shadow queue drops and counts instead of
# waiting; pairs land in the usage database when the store supports them.
. "$(dirname "$0")/../serve/lib.sh"
. "$(dirname "$0")/../serve/route_lib.sh"
command -v sqlite3 >/dev/null || missing_prereq "sqlite3 not installed"

start_server a -m "$MODEL" --alias up-model
A=$BASE
start_fake ok
F=http://127.0.0.1:$FAKE_PORT
start_fake judge --text "T"
J=http://127.0.0.1:$FAKE_PORT
cat >"$TMPD/cfg.json" <<JSON
{"backends": [
  {"name": "a", "base_url": "$A/v1", "models": {"up-model": {"input": 1, "output": 2}}},
  {"name": "fok", "base_url": "$F/ok/v1"},
  {"name": "fjson", "base_url": "$F/json/v1"},
  {"name": "fhang", "base_url": "$F/hang/v1", "first_byte_timeout_s": 30},
  {"name": "judge", "base_url": "$J/ok/v1", "models": {"judge-model": {"input": 0, "output": 0}}}
 ],
 "shadow_queue": 2,
 "routes": [
  {"name": "same", "targets": [{"backend": "a", "model": "up-model"}], "shadow": {"backend": "local", "sample": 1},
   "judge": {"route": "judge-model", "sample": 1}},
  {"name": "diff", "targets": [{"backend": "a", "model": "up-model"}], "shadow": {"backend": "fok", "model": "m", "sample": 1}},
  {"name": "json", "targets": [{"backend": "fjson", "model": "m"}], "shadow": {"backend": "fjson", "model": "m2"}},
  {"name": "slowshadow", "targets": [{"backend": "fok", "model": "m"}], "shadow": {"backend": "fhang", "model": "m"}}
 ]}
JSON
DB=$TMPD/b.db
start_server b -m "$MODEL" --config "$TMPD/cfg.json" --usage-db "$DB"

m() { curl -s "$BASE/metrics" | awk -v n="$1" '$1 == n { print $2 }'; }
# Each request waits for its pair to be scored before the next is sent: the
# shadow queue holds 2, and on a loaded machine a local shadow plus its judge
# call can outlast the next two primaries, which would (correctly) drop one.
wait_pairs() {
  for _ in $(seq 1 300); do
    [ "$(m hearth_pilot_pairs_total)" = "$1" ] && [ "$(m hearth_pilot_shadows_in_flight)" = 0 ] && return
    sleep 0.1
  done
}
n=0
# the same model on both sides, greedy: identical answers, judge says tie
for i in 1 2 3; do code=$(chat same); check "same $i" 200 "$code"; n=$((n + 1)); wait_pairs $n; done
for i in 1 2; do code=$(chat diff); check "diff $i" 200 "$code"; n=$((n + 1)); wait_pairs $n; done
code=$(chat json); check "json" 200 "$code"
wait_pairs 6
check "pairs scored" 6 "$(m hearth_pilot_pairs_total)"
check "judged" 3 "$(m hearth_pilot_judged_total)"
check "judge: tie = shadow as good" 1 "$(m hearth_pilot_score_judge_mean)"
check "json agreement" 1 "$(m hearth_pilot_score_json_mean)"
# 3 identical pairs (exact 1, F1 1), 2 different ones (exact 0), 1 identical JSON pair
check "exact mean" 0.66666666666666663 "$(m hearth_pilot_score_exact_mean)"

# a shadow that hangs: the primary is not delayed; past the queue, drops
t0=$(date +%s.%N)
for i in 1 2 3 4 5; do code=$(chat slowshadow); check "slow shadow primary $i" 200 "$code"; done
dt=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
check_true "5 primaries in under 2 s with hanging shadows (took $dt)" awk -v d="$dt" 'BEGIN { exit !(d < 2) }'
check "shadows dropped past the queue (2)" 3 "$(m hearth_pilot_shadows_dropped_total)"
check "shadows in flight" 2 "$(m hearth_pilot_shadows_in_flight)"
stop_server "$PID"

# pairs in the database (the pilot_pairs table of the usage log, schema 3)
check "pair table" pilot_pairs "$(sqlite3 "$DB" "select name from sqlite_master where type='table' and name='pilot_pairs'")"
check "pairs stored" "diff|2 json|1 same|3" \
  "$(sqlite3 "$DB" "select route, count(*) from pilot_pairs where route<>'slowshadow' group by route order by route" | tr '\n' ' ' | sed 's/ $//')"
# the two hanging shadows still in flight at SIGTERM: stored unanswered (status 0)
check "cut shadows stored" "2|0" "$(sqlite3 "$DB" "select count(*), max(shadow_status) from pilot_pairs where route='slowshadow'")"
check "identical pairs: exact 1, F1 1, judge 1" 3 \
  "$(sqlite3 "$DB" "select count(*) from pilot_pairs where route='same' and score_exact=1 and score_f1=1 and score_judge=1")"
check "identical pairs: who answered" "a|up-model|local|stories260K" \
  "$(sqlite3 "$DB" "select distinct primary_backend, primary_model, shadow_backend, shadow_model from pilot_pairs where route='same'")"
check "different pairs: exact 0, no judge" 2 \
  "$(sqlite3 "$DB" "select count(*) from pilot_pairs where route='diff' and score_exact=0 and score_f1<1 and score_judge is null")"
check "different pairs: who answered" "a|up-model|fok|m" \
  "$(sqlite3 "$DB" "select distinct primary_backend, primary_model, shadow_backend, shadow_model from pilot_pairs where route='diff'")"
check "json pair" "1.0|fjson|m|fjson|m2|200|200" \
  "$(sqlite3 "$DB" "select score_json, primary_backend, primary_model, shadow_backend, shadow_model, primary_status, shadow_status from pilot_pairs where route='json'")"
check "no JSON score for non-JSON pairs" 0 \
  "$(sqlite3 "$DB" "select count(*) from pilot_pairs where route<>'json' and score_json is not null")"
check "pair texts and latencies" 0 \
  "$(sqlite3 "$DB" "select count(*) from pilot_pairs where route in ('same','diff') and (primary_text='' or shadow_text='' or primary_ttft_ms is null or shadow_total_ms is null or shadow_status<>200)")"
finish
