#!/usr/bin/env bash
# serve_openai_node.sh - the official openai npm client (v6) against
# `hearth serve`. Installs openai@6 into a folder under the build tree
# (outside src); exits 77 (skipped) when node or npm is missing or the
# install fails.
source "$(dirname "$0")/../serve/lib.sh"
command -v node >/dev/null && command -v npm >/dev/null || { echo "skip: node/npm not installed"; exit 77; }
NODEDIR=${HEARTH_TMP:-/tmp}/node-openai
mkdir -p "$NODEDIR"
if [ ! -d "$NODEDIR/node_modules/openai" ]; then
  (cd "$NODEDIR" && [ -f package.json ] || echo '{"private":true}' >package.json
   cd "$NODEDIR" && timeout 300 npm install --no-audit --no-fund --silent openai@6 >"$TMPD/npm.log" 2>&1) ||
    { echo "skip: npm install openai@6 failed"; tail -n 5 "$TMPD/npm.log"; exit 77; }
fi
start_server node -m "$MODEL" -c 512 --api-key test-key
S=$PID
OPENAI_MODULE_DIR=$NODEDIR/node_modules timeout 120 node "$(dirname "$0")/../node/openai_client.mjs" "$BASE" test-key
rc=$?
check "node client" 0 $rc
stop_server $S
finish
