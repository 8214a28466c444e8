#!/bin/sh
# Claude Code: register keyapi-mcp for your user (all projects). The key is passed to the server's
# environment; read it from your shell rather than typing it into the command history.
claude mcp add --scope user keyapi -e KEYAPI_API_KEY="$KEYAPI_API_KEY" -- uvx keyapi-mcp
