"""A bare JSON-RPC client over a server's stdio pipes: what a tool call costs on the wire.

The latency bars compare a tool call with a direct GET that sends a request and parses the JSON body.
The SDK's `Client` does more than that per call: pydantic models for every message and a `jsonschema`
check of `structuredContent` against the tool's output schema (its cost grows with the result, ~0.5 to
0.9 ms for one video here). That is work of the client library, the same for any server returning the
same result. This client sends the very frames the SDK's `Client` sends (recorded from it: modern protocol,
`server/discover` then `tools/call` with the same `_meta`), reads the response line and parses it: the same
work as the direct GET's request and `json()`, so the difference is the server and the pipes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from mcp import StdioServerParameters
from mcp.client.stdio import get_default_environment
from mcp_types import LATEST_PROTOCOL_VERSION

_META = {
    "io.modelcontextprotocol/protocolVersion": LATEST_PROTOCOL_VERSION,
    "io.modelcontextprotocol/clientInfo": {"name": "keyapi-bench-wire", "version": "0"},
    "io.modelcontextprotocol/clientCapabilities": {},
}


class WireClient:
    """One server process, one request at a time (the latency loop never overlaps calls)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self._next_id = 0

    @classmethod
    @asynccontextmanager
    async def spawn(cls, params: StdioServerParameters) -> AsyncIterator[WireClient]:
        """Start the server as the SDK's stdio client does (same environment merge), discover, yield."""
        process = await asyncio.create_subprocess_exec(
            params.command,
            *params.args,
            env=get_default_environment() | (params.env or {}),
            cwd=params.cwd,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=64 * 1024 * 1024,
            start_new_session=True,
        )
        client = cls(process)
        try:
            await client.request("server/discover", {})
            yield client
        finally:
            if process.stdin is not None:
                process.stdin.close()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """Send one request, return its parsed `result`; raise on a JSON-RPC error."""
        assert self._process.stdin is not None and self._process.stdout is not None
        self._next_id += 1
        frame = {"jsonrpc": "2.0", "id": self._next_id, "method": method, "params": {**params, "_meta": _META}}
        self._process.stdin.write(json.dumps(frame, separators=(",", ":")).encode() + b"\n")
        await self._process.stdin.drain()
        while True:
            line = await self._process.stdout.readline()
            if not line:
                raise RuntimeError(f"server closed stdout during {method}")
            message = json.loads(line)
            if message.get("id") != self._next_id:
                continue  # a notification (e.g. a log message): not the answer
            if "error" in message:
                raise RuntimeError(f"{method} failed: {message['error']}")
            return message["result"]

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        result = await self.request("tools/call", {"name": name, "arguments": arguments})
        if result.get("isError"):
            raise RuntimeError(f"tool call failed: {result.get('content')}")
        return result
