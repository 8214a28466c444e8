"""Probe the MCP SDK's own stdio transport (`MCPServer.run("stdio")`) for the cases in issue 14 items 9-11.

Run from the repository root with the project's environment:

    .venv/bin/python docs/repro/sdk_stdio_probe.py eof        # stdin closes while a call is in flight
    .venv/bin/python docs/repro/sdk_stdio_probe.py malformed  # non-JSON, batch, wrong jsonrpc, lone surrogate
    .venv/bin/python docs/repro/sdk_stdio_probe.py long 50    # one 50 MB line

It starts a plain MCPServer (one `slow` tool that sleeps) in a child process, writes the lines to its stdin
all at once, closes stdin, and prints which request ids were answered and how, plus the child's peak RSS.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

SERVER = """
import anyio
from mcp.server.mcpserver import MCPServer
mcp = MCPServer("probe")
@mcp.tool()
async def slow(seconds: float = 1.0) -> str:
    \"\"\"Sleep, then answer.\"\"\"
    await anyio.sleep(seconds)
    return f"slept {seconds}"
mcp.run("stdio")
"""
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "probe", "version": "0"}},
}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}


def frame(message: object) -> bytes:
    return message if isinstance(message, bytes) else json.dumps(message).encode()


def main(case: str, megabytes: int = 50) -> None:
    lines: list[object] = [INIT, INITIALIZED]
    if case == "eof":
        lines.append({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "slow", "arguments": {}}})
    elif case == "malformed":
        lines += [
            b"not json",
            b'[{"jsonrpc":"2.0","id":5,"method":"tools/list"}]',
            {"jsonrpc": "1.0", "id": 6, "method": "tools/list"},
            b'{"jsonrpc":"2.0","id":7,"method":"tools/list","params":{"x":"\\ud800"}}',
            {"jsonrpc": "2.0", "id": 8, "method": "tools/list"},
        ]
    elif case == "long":
        pad = b"x" * (megabytes * 1024 * 1024)
        lines.append(b'{"jsonrpc":"2.0","id":9,"method":"tools/list","params":{"pad":"' + pad + b'"}}')
    else:
        raise SystemExit(f"unknown case {case!r}: eof, malformed or long")
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", SERVER],
        input=b"".join(frame(line) + b"\n" for line in lines),
        capture_output=True,
        timeout=120,
        check=False,
    )
    for raw in done.stdout.splitlines():
        message = json.loads(raw)
        kind = "error" if "error" in message else "result"
        print(message.get("id"), kind, json.dumps(message.get("error", ""))[:120])
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024
    print(f"exit {done.returncode} after {time.monotonic() - started:.2f} s; child peak RSS {peak} MB")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "eof", int(sys.argv[2]) if len(sys.argv) > 2 else 50)
