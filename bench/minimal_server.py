"""The cold-start and memory baseline: a minimal `MCPServer` with one trivial tool, over stdio.

Run as a script (`python bench/minimal_server.py`): it imports nothing from the bench package.
"""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer

server = MCPServer("minimal")


@server.tool(structured_output=False)
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


if __name__ == "__main__":
    server.run("stdio")
