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
.venv/bin/ruff check keyapi_mcp tests bench
.venv/bin/ruff format --check keyapi_mcp tests bench
.venv/bin/python -m pytest "$@"
