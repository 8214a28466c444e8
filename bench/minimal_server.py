"""The baseline: a minimal `MCPServer` with one trivial tool.

Over stdio (`python bench/minimal_server.py`) it is the cold-start and memory baseline. Over HTTP
(`--http PORT --delay 0.05`, stateless Streamable HTTP like keyapi-mcp's) its tool waits as long as the
fake upstream does, which shows the MCP SDK's own pace in the concurrency measure.
It imports nothing from the bench package.
"""

from __future__ import annotations

import argparse

import anyio
from mcp.server.mcpserver import MCPServer

server = MCPServer("minimal", log_level="WARNING")  # keyapi-mcp logs at WARNING by default too
DELAY = {"seconds": 0.0}


@server.tool(structured_output=False)
async def echo(text: str) -> str:
    """Return the text unchanged."""
    if DELAY["seconds"]:
        await anyio.sleep(DELAY["seconds"])
    return text


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", type=int, metavar="PORT", help="serve stateless Streamable HTTP on 127.0.0.1")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds the tool waits (as the fake upstream does)")
    args = parser.parse_args()
    DELAY["seconds"] = args.delay
    if args.http is None:
        server.run("stdio")
        return
    import uvicorn

    app = server.streamable_http_app(streamable_http_path="/mcp", stateless_http=True, json_response=False)
    uvicorn.run(app, host="127.0.0.1", port=args.http, log_level="warning")


if __name__ == "__main__":
    main()
