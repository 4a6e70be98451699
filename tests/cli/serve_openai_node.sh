#!/usr/bin/env bash
# serve_openai_node.sh - the official openai npm client (v6) against
# `hearth serve`. Installs openai@6 into a folder under the build tree
# (outside src). When node or npm is missing or the install fails: a failure
# under CI (CI=true), where this, the only real-client test, must run; a
# skip (77) elsewhere.
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
start_server node -m "$MODEL" -c 512 --api-key test-key
S=$PID
OPENAI_MODULE_DIR=$NODEDIR/node_modules timeout 120 node "$(dirname "$0")/../node/openai_client.mjs" "$BASE" test-key
rc=$?
check "node client" 0 $rc
stop_server $S
finish
