#!/bin/sh
# Claude Code: register keyapi-mcp for your user (all projects). The key is passed to the server's
# environment; read it from your shell rather than typing it into the command history.
# `uvx keyapi-mcp` is the published form (PyPI). Until keyapi-mcp is published, build the wheel in a clone
# (`uv build`) and run it instead:
#   claude mcp add --scope user keyapi -e KEYAPI_API_KEY="$KEYAPI_API_KEY" -- uvx --from /absolute/path/to/dist/keyapi_mcp-0.2.0-py3-none-any.whl keyapi-mcp
claude mcp add --scope user keyapi -e KEYAPI_API_KEY="$KEYAPI_API_KEY" -- uvx keyapi-mcp
