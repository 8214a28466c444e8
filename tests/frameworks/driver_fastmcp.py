"""FastMCP 4's client: lists the tools and prompts, calls the tool (FastMCP parses `structuredContent` through the
tool's output schema into `.data`), and calls it wrongly (FastMCP raises `ToolError` with the server's text)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastmcp import Client
from fastmcp.client.transports import StdioTransport
from fastmcp.exceptions import ToolError
from fwcommon import BAD_ID, TOOL, Report, Request, call_arguments


async def run(request: Request, transport: str, report: Report) -> None:
    target: Any = (
        StdioTransport(command=request.command, args=request.args, env=request.env)
        if transport == "stdio"
        else request.http_url
    )
    async with Client(target) as client:
        tools = await client.list_tools()
        report.steps[f"{transport}.tools"] = sorted(t.name for t in tools)
        description = next(t.description or "" for t in tools if t.name == TOOL)

        async def prompts() -> Any:
            return [
                {"name": p.name, "arguments": [a.model_dump(mode="json") for a in p.arguments or []]}
                for p in await client.list_prompts()
            ]

        await report.step(f"{transport}.prompts", prompts)

        async def call() -> Any:
            result = await client.call_tool(TOOL, call_arguments(description))
            return {
                "content": [c.model_dump(mode="json") for c in result.content],
                "data_videos": len(getattr(result.data, "videos", None) or []),
                "is_error": result.is_error,
            }

        await report.step(f"{transport}.call", call)

        async def error() -> Any:
            try:
                await client.call_tool(TOOL, {"video_ids": [BAD_ID]})
            except ToolError as exc:
                return {"raised": type(exc).__name__, "text": str(exc)}
            raise AssertionError("an error result did not raise ToolError")

        await report.step(f"{transport}.error", error)


async def main() -> None:
    request = Request.from_argv()
    report = Report("fastmcp")
    for transport in request.transports:
        await report.step(f"{transport}.session", lambda t=transport: run(request, t, report))
    report.emit()


if __name__ == "__main__":
    asyncio.run(main())
