#!/usr/bin/env bash
# serve_hardening.sh - connection-level defences of `hearth serve`
# (docs/SERVER.md "Connections and browsers"): per-address and global
# connection limits answered 503, idle connections closed, JSON-only POSTs,
# the Host check on loopback, Origin refused without --cors, CORS preflight,
# half-closed clients still answered, conflicting Content-Length refused.
source "$(dirname "$0")/../serve/lib.sh"
RAW=$(dirname "$0")/../serve/rawhttp.py
command -v python3 >/dev/null || { echo "FAIL: python3 is needed for the raw-socket clients"; exit 1; }
# raw NAME...: runs rawhttp.py against $PORT, results into $TMPD/raw (name value)
raw() { python3 "$RAW" "${BASE##*:}" "$@" >"$TMPD/raw" 2>"$TMPD/raw.err" || { cat "$TMPD/raw.err" >&2; bad "rawhttp $*"; }; }
val() { awk -v n="$1" '$1 == n { print $2 }' "$TMPD/raw"; }
J='Content-Type: application/json'
# code ARGS...: status code of a curl request (body to $TMPD/body, headers to $TMPD/hdr)
code() { curl -s -o "$TMPD/body" -D "$TMPD/hdr" -w '%{http_code}' "$@"; }
hdr() { tr -d '\r' <"$TMPD/hdr" | awk -v n="$(echo "$1" | tr A-Z a-z)" 'BEGIN{FS=": "} tolower($1) == n { print $2 }'; }

# --- finding 7: connection limits (per address, then in all) and the idle timeout
start_server lim -m "$MODEL" -c 2048 --max-conns 16 --max-conns-per-ip 4 --idle-timeout 3
S=$PID
raw limits 4 3
check "4 idle connections stay open before the idle timeout" True "$(val held_open_early)"
check "5th connection from one address: 503" 503 "$(val over_ip_status)"
check "... with Connection: close" close "$(val over_ip_connection)"
check "... and a JSON error code" too_many_connections "$(val over_ip_code)"
check "another address is still served (16 more refused ones from the first held open)" 200 "$(val other_ip_status)"
check "an over-limit connection that sends nothing is closed" True "$(val over_idle_closed)"
check "... sooner than the idle timeout" True "$(val over_idle_closed_fast)"
check "idle keep-alive connections closed after --idle-timeout" True "$(val held_closed)"
check "the address is served again once they are gone" 200 "$(val after_idle_status)"
check "refusals counted in /metrics" 1 "$(metric hearth_http_connections_refused_total | awk '{print ($1 >= 1)}')"
stop_server $S

start_server cap -m "$MODEL" -c 2048 --max-conns 6 --max-conns-per-ip 0
S=$PID
raw global 6
check "past --max-conns (from 3 addresses): 503" 503 "$(val over_all_status)"
check "... naming the global limit" True "$(val over_all_message)"
check "served again once they closed" 200 "$(val after_close_status)"
stop_server $S

# --- finding 8: browsers. A default loopback server, no key.
start_server web -m "$MODEL" -c 2048
S=$PID
P=${BASE##*:}
D='{"prompt":"Once","max_tokens":2,"temperature":0}'
check "text/plain POST: 415" 415 "$(code -H 'Content-Type: text/plain' --data-binary "$D" "$BASE/v1/completions")"
check "form POST (curl -d): 415" 415 "$(code -d "$D" "$BASE/v1/completions")"
check "no Content-Type: 415" 415 "$(code -H 'Content-Type:' --data-binary "$D" "$BASE/v1/completions")"
check "415 on /tokenize too" 415 "$(code -H 'Content-Type: text/plain' --data-binary '{"content":"a"}' "$BASE/tokenize")"
check "application/json; charset=utf-8: 200" 200 "$(code -H 'Content-Type: application/json; charset=utf-8' --data-binary "$D" "$BASE/v1/completions")"
check "Application/JSON: 200" 200 "$(code -H 'Content-Type: Application/JSON' --data-binary "$D" "$BASE/v1/completions")"
check "application/jsonx: 415" 415 "$(code -H 'Content-Type: application/jsonx' --data-binary "$D" "$BASE/v1/completions")"
check "foreign Host (DNS rebinding): 421" 421 "$(code -H 'Host: evil.example' "$BASE/v1/models")"
check "foreign Host with our port: 421" 421 "$(code -H "Host: evil.example:$P" -H "$J" --data-binary "$D" "$BASE/v1/completions")"
check "localhost on another port: 421" 421 "$(code -H "Host: localhost:$((P == 65535 ? 1 : P + 1))" "$BASE/v1/models")"
check "Host localhost:port: 200" 200 "$(code -H "Host: localhost:$P" "$BASE/v1/models")"
check "Host [::1]:port: 200" 200 "$(code -H "Host: [::1]:$P" "$BASE/v1/models")"
check "Host localhost: 200" 200 "$(code -H "Host: LOCALHOST" "$BASE/health")"
check "foreign Origin POST: 403" 403 "$(code -H 'Origin: http://evil.example' -H "$J" --data-binary "$D" "$BASE/v1/completions")"
check "... code" cross_origin_forbidden "$(jqb .error.code)"
check "foreign Origin GET: 403" 403 "$(code -H 'Origin: http://evil.example' "$BASE/v1/models")"
check "no CORS header without --cors" "" "$(hdr Access-Control-Allow-Origin)"
check "preflight without --cors: 403" 403 "$(code -X OPTIONS -H 'Origin: http://evil.example' -H 'Access-Control-Request-Method: POST' "$BASE/v1/completions")"
check "the server's own origin: 200" 200 "$(code -H "Origin: http://127.0.0.1:$P" -H "$J" --data-binary "$D" "$BASE/v1/completions")"
stop_server $S

start_server cors -m "$MODEL" -c 2048 --cors http://app.example --cors https://b.example --allow-host hearth.lan
S=$PID
P=${BASE##*:}
check "preflight from a --cors origin: 204" 204 "$(code -X OPTIONS -H 'Origin: http://app.example' -H 'Access-Control-Request-Method: POST' -H 'Access-Control-Request-Headers: authorization, content-type' "$BASE/v1/chat/completions")"
check "... Allow-Origin" http://app.example "$(hdr Access-Control-Allow-Origin)"
check "... Allow-Headers" "Authorization, Content-Type" "$(hdr Access-Control-Allow-Headers)"
check "... Allow-Methods" "GET, POST, OPTIONS" "$(hdr Access-Control-Allow-Methods)"
check "POST from a --cors origin: 200" 200 "$(code -H 'Origin: https://b.example' -H "$J" --data-binary "$D" "$BASE/v1/completions")"
check "... Allow-Origin echoed" https://b.example "$(hdr Access-Control-Allow-Origin)"
check "... Vary: Origin" Origin "$(hdr Vary)"
check "streamed, from a --cors origin: 200" 200 "$(code -N -H 'Origin: http://app.example' -H "$J" --data-binary '{"prompt":"Once","max_tokens":2,"stream":true}' "$BASE/v1/completions")"
check "... Allow-Origin on the stream" http://app.example "$(hdr Access-Control-Allow-Origin)"
check "errors carry Allow-Origin too (404)" http://app.example "$(code -H 'Origin: http://app.example' "$BASE/nope" >/dev/null; hdr Access-Control-Allow-Origin)"
check "another origin still 403" 403 "$(code -H 'Origin: http://evil.example' "$BASE/v1/models")"
check "--allow-host name: 200" 200 "$(code -H "Host: hearth.lan:$P" "$BASE/v1/models")"
check "other names still 421" 421 "$(code -H "Host: hearth.lan.evil.example:$P" "$BASE/v1/models")"
stop_server $S

start_server star -m "$MODEL" -c 2048 --cors '*' --allow-host '*'
S=$PID
check "--cors '*': any origin, Allow-Origin *" "200 *" "$(code -H 'Origin: http://x.example' "$BASE/v1/models") $(hdr Access-Control-Allow-Origin)"
check "--allow-host '*': no Host check" 200 "$(code -H 'Host: anything.example' "$BASE/v1/models")"
stop_server $S

# --- finding 10: half-close, conflicting Content-Length
start_server half -m "$MODEL" -c 2048
S=$PID
raw halfclose 1000
check "half-closed client gets its answer" 200 "$(val half_status)"
check "... all of it" 2000 "$(val half_tokens)"
check "... after an interim 102 (the FIN was seen mid-generation)" True "$(val half_interim_102)"
check "... and is not counted as a disconnect" 0 "$(metric hearth_http_client_disconnects_total)"
raw dupcl
check "conflicting Content-Length: 400" 400 "$(val dupcl_conflict_status)"
check "... and the connection closed" close "$(val dupcl_conflict_connection)"
check "identical duplicate Content-Length: 200" 200 "$(val dupcl_same_status)"
stop_server $S
finish
