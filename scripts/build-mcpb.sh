#!/usr/bin/env bash
# Build the MCP Bundle (Claude Desktop one-click install): dist/keyapi-mcp-<version>.mcpb, or into the
# directory given as the first argument. Uses the official CLI (@anthropic-ai/mcpb, pinned in
# scripts/mcpb/package-lock.json): `mcpb validate` on the manifest, then `mcpb pack`.
#
# The bundle is of `server.type: "uv"`: it carries the package source and pyproject.toml, not a virtual
# environment, and the host installs Python and the dependencies (pydantic's compiled core among them)
# with uv for its own platform. Bash 3 compatible (macOS's /bin/bash).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
OUT="${1:-$ROOT/dist}"
TOOLS="$ROOT/.mcpb-tools"

VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -n 1)"
MANIFEST_VERSION="$(sed -n 's/^  "version": "\(.*\)",$/\1/p' mcpb/manifest.json | head -n 1)"
if [ -z "$VERSION" ] || [ "$VERSION" != "$MANIFEST_VERSION" ]; then
  echo "build-mcpb: mcpb/manifest.json has version '$MANIFEST_VERSION' but pyproject.toml has '$VERSION'; make them equal" >&2
  exit 1
fi

if ! command -v npm >/dev/null 2>&1; then
  echo "build-mcpb: npm is required to install the pinned MCP Bundle CLI (any Node >= 18 with npm)" >&2
  exit 1
fi
# The pinned Node 22 is an optional dependency: npm installs it on Linux x64 and skips it elsewhere.
# shellcheck source=scripts/npm-pinned.sh
. scripts/npm-pinned.sh
npm_pinned mcpb "$TOOLS" "$TOOLS/node_modules/@anthropic-ai/mcpb"
if [ -x "$TOOLS/node_modules/.bin/node" ]; then
  NODE="$TOOLS/node_modules/.bin/node"
else
  NODE="$(command -v node)"
  echo "build-mcpb: the pinned Node 22 is for Linux x64 only; using $NODE ($("$NODE" --version))" >&2
fi
MCPB="$TOOLS/node_modules/@anthropic-ai/mcpb/dist/cli/cli.js"

# Stage exactly what the bundle holds: the manifest, its icon, the launcher, and what uv needs to build
# and install the package (pyproject.toml, README.md and LICENSE, which it names, and keyapi_mcp/).
STAGE="$(mktemp -d)"
trap 'rm -rf "$STAGE"' EXIT
cp mcpb/manifest.json mcpb/icon.png pyproject.toml README.md LICENSE "$STAGE/"
mkdir -p "$STAGE/server"
cp mcpb/server/main.py "$STAGE/server/"
# The package as the wheel holds it: every module of every wing, and the MCP Apps view and icon
# (keyapi_mcp/surface/ui/, served by keyapi_mcp/surface/app.py); never caches.
(cd keyapi_mcp && find . -type f \( -name '*.py' -o -path './surface/ui/*' -o -name py.typed \) -not -path '*/__pycache__/*' -print) |
  while IFS= read -r file; do
    mkdir -p "$STAGE/keyapi_mcp/$(dirname "$file")"
    cp "keyapi_mcp/$file" "$STAGE/keyapi_mcp/$file"
  done

"$NODE" "$MCPB" validate "$STAGE/manifest.json"
mkdir -p "$OUT"
BUNDLE="$OUT/keyapi-mcp-$VERSION.mcpb"
rm -f "$BUNDLE"
"$NODE" "$MCPB" pack "$STAGE" "$BUNDLE"
echo "build-mcpb: wrote $BUNDLE"
