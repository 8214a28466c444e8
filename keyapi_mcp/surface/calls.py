"""The call wrapper: the one place tool failures become what the model reads (`[code]` text, the only text
mcp 2.x lets reach the model), and where each call takes its slot."""

from __future__ import annotations

import logging
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from pydantic import ValidationError

from keyapi_mcp.core.text import short_echo
from keyapi_mcp.errors import KeyAPIError, UnknownTool
from keyapi_mcp.metrics import NO_METRICS, Metrics
from keyapi_mcp.surface.prompts import PROMPTS_HINT, invalid_argument
from keyapi_mcp.surface.resources import unreadable_uri
from keyapi_mcp.surface.slots import CallSlots
from keyapi_mcp.surface.state import AppState

log = logging.getLogger(__name__)

INTERNAL_ERROR_TEXT = (
    "[upstream_error] keyapi-mcp hit an unexpected internal error (details are in the server log). Pages "
    "fetched before it are cached; retry the same call, or call get_credit_usage to see what was spent."
)


def _validation_text(tool: str, exc: ValidationError) -> str:
    problems = []
    for err in exc.errors(include_input=False, include_url=False)[:5]:
        # Field names and validator messages can carry what the client sent: quoted bounded, never whole.
        loc = short_echo(".".join(str(p) for p in err.get("loc", ())), 60) or "arguments"
        problems.append(f"{loc}: {short_echo(str(err.get('msg', 'invalid')), 200)}")
    return (
        f"[invalid_input] Invalid arguments for {tool}: "
        + "; ".join(problems)
        + ". Fix the arguments as the tool's input schema describes and call again; nothing was charged."
    )


class KeyAPIMCPServer(MCPServer[AppState]):
    """The one place tool failures become what the model reads.

    Tools raise the domain errors of `keyapi_mcp.errors`; here each becomes a `ToolError` whose text starts
    with its `[code]` (without the SDK's "Error executing tool X:" prefix), argument-schema failures become
    `[invalid_input]` naming the fields, and anything unexpected is logged with its traceback and reported
    without internals. Calls are capped by `call_slots` (KEYAPI_MCP_MAX_CONCURRENT_CALLS).
    """

    call_slots: CallSlots | None = None
    calls_in_flight: int = 0  # tool calls running now (stdin_drain holds end of input until it is 0)
    metrics: Metrics = NO_METRICS  # served at /metrics by the HTTP transport when enabled (KEYAPI_MCP_METRICS)

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        self.calls_in_flight += 1
        try:
            return await self._call_tool(name, arguments, context)
        finally:
            self.calls_in_flight -= 1

    async def _call_tool(self, name: str, arguments: dict[str, Any], context: Any) -> Any:
        try:
            if name not in {tool.name for tool in await self.list_tools()}:
                raise UnknownTool(f"There is no tool named {short_echo(name)!r}.")
            if self.call_slots is None:
                return await super().call_tool(name, arguments, context)
            async with self.call_slots.hold():
                return await super().call_tool(name, arguments, context)
        except KeyAPIError as exc:  # raised before the tool runs (unknown tool, server busy)
            raise ToolError(exc.render()) from None
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(cause, ValidationError):
                raise ToolError(_validation_text(name, cause)) from cause
            if isinstance(cause, KeyAPIError):
                raise ToolError(cause.render()) from None
            if isinstance(exc, UnexpectedToolError):
                log.error("tool %s failed unexpectedly", name, exc_info=cause)
                raise ToolError(INTERNAL_ERROR_TEXT) from None
            raise

    async def get_prompt(self, name: str, arguments: dict[str, Any] | None = None, context: Any = None) -> Any:
        """The SDK's prompt rendering, with an unknown prompt or argument, or a missing one, answered as invalid
        params (the SDK would answer a generic rendering error, or echo the name unbounded)."""
        prompt = next((p for p in await self.list_prompts() if p.name == name), None)
        if prompt is None:
            raise invalid_argument(
                name, f"[invalid_input] There is no prompt named {short_echo(name)!r}. {PROMPTS_HINT}"
            )
        known = {a.name for a in prompt.arguments or []}
        unknown = sorted(set(arguments or {}) - known)
        if unknown:
            raise invalid_argument(
                name,
                f"[invalid_input] {name} has no argument {short_echo(unknown[0])!r}; its arguments are "
                f"{', '.join(sorted(known))}. Get it again with those.",
            )
        missing = [a.name for a in prompt.arguments or [] if a.required and a.name not in (arguments or {})]
        if missing:
            raise invalid_argument(
                name, f"[invalid_input] {name} needs the argument(s) {', '.join(missing)}. Pass them and get it again."
            )
        return await super().get_prompt(name, arguments, context)

    async def read_resource(self, uri: Any, context: Any = None) -> Any:
        """The SDK's resource read, after refusing a URI too long or malformed to echo (the SDK repeats it)."""
        refusal = unreadable_uri(str(uri))
        if refusal is not None:
            raise refusal
        return await super().read_resource(uri, context)
