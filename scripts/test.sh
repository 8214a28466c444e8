#!/usr/bin/env bash
# Install keyapi-mcp with its test dependencies into .venv and run the whole test suite.
# This is the README's test command, and what CI (.ci/run) runs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test]"
# Debian packages the tests run for real, installed when missing: redis-server (the Redis store's tests start
# their own on 127.0.0.1) and chromium (the MCP App view's tests drive it with Playwright, which is pointed at
# /usr/bin/chromium and never downloads a browser of its own).
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ "${#missing[@]}" -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
.venv/bin/ruff check keyapi_mcp tests bench
.venv/bin/ruff format --check keyapi_mcp tests bench
# MCP conformance suite against --transport http (needs npm; SKIP_CONFORMANCE=1 skips it offline).
if [ "${SKIP_CONFORMANCE:-0}" != "1" ]; then
  bash scripts/conformance.sh
fi
# Last, so its summary line closes the run.
.venv/bin/python -m pytest "$@"
