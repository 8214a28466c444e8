#!/usr/bin/env bash
# The MCP Inspector's schema-portability check (its CLI, `--method tools/list --strict`) on `keyapi-mcp --demo`
# over stdio, with the Inspector and its Node 22 pinned in scripts/inspector/package-lock.json (installed into
# .conformance/inspector/, reinstalled only when the lock file changes). Called by scripts/test.sh.
#
# Fails on any finding in an input schema (what agent frameworks convert into their provider's function
# format; tests/test_portability.py holds the same rules in Python) and on any error. Output-schema warnings
# (nullable fields written as type lists) are expected: keyapi_mcp/surface/schema.py says why they stay.
# Like scripts/conformance.sh: Linux x86-64 only (the pinned Node), bash 3.2 compatible.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
DIR="$ROOT/.conformance/inspector"

if [ "$(uname -s)" != "Linux" ] || [ "$(uname -m)" != "x86_64" ]; then
  echo "schema portability: SKIPPED: the pinned Node runs on Linux x86-64 only, not on $(uname -s) $(uname -m)." >&2
  exit 0
fi
# shellcheck source=scripts/npm-pinned.sh
. scripts/npm-pinned.sh
npm_pinned inspector "$DIR" "$DIR/node_modules/.bin/node"

# A clean environment for the server: no KEYAPI_* of the caller's, its state in a directory of its own.
report="$DIR/report.txt"
env -i PATH="$PATH" HOME="$DIR" KEYAPI_STATE_DIR="$DIR/state" \
  "$DIR/node_modules/.bin/node" "$DIR/node_modules/@modelcontextprotocol/inspector/clients/cli/build/index.js" \
  --cli "$ROOT/.venv/bin/keyapi-mcp" --demo --method tools/list --strict >/dev/null 2>"$report" || {
  echo "schema portability: the Inspector reported errors:" >&2
  cat "$report" >&2
  exit 1
}
inputs="$(grep -E '^ *Path: ' "$report" | grep -vE '^ *Path: outputSchema' || true)"
if [ -n "$inputs" ]; then
  echo "schema portability: findings in an input schema (see $report):" >&2
  echo "$inputs" >&2
  exit 1
fi
echo "schema portability: input schemas clean; $(grep -cE '^ *Path: outputSchema' "$report" || true) output-schema" \
  "warnings (type lists, kept on purpose) — Inspector $(sed -n 's/.*"version": "\(.*\)".*/\1/p' \
  "$DIR/node_modules/@modelcontextprotocol/inspector/package.json" | head -1)"
