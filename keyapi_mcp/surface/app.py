"""Presentation: the MCP App view of `get_video_products` and the icon the server and its tools show.

The view (`ui://keyapi/products`) is one self-contained HTML file shipped in the package
(`keyapi_mcp/surface/ui/products.html`): hosts that negotiated the MCP Apps extension (`io.modelcontextprotocol/ui`)
render it in a sandboxed iframe and hand it the tool result; it draws a sortable table and a GMV chart
from `structuredContent`. Nothing else changes for other hosts: the tool's `_meta.ui` is an unknown key to
them, and its result is exactly the text and structured content it always was (see `note_view`).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from functools import cache
from importlib.resources import files
from typing import Any

from mcp.server.apps import Apps, ResourceCsp, client_supports_apps
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.extension import ToolBinding
from mcp_types import CallToolResult, Icon, ListToolsResult, TextContent

PRODUCTS_VIEW_URI = "ui://keyapi/products"
# The view's own tool (visibility ["app"]): hosts let the view call it and keep it off the model's tool list.
APP_TOOL = "app_load_products"
APP_TOOL_META = {"ui": {"resourceUri": PRODUCTS_VIEW_URI, "visibility": ["app"]}}

SERVER_TITLE = "KeyAPI TikTok video commerce"

# Appended to the model's text when the host renders the view, so the model summarises instead of spending
# output tokens re-drawing the table the user already sees.
VIEW_NOTE = (
    "The user sees this result as an interactive table and GMV chart (MCP App view): summarise and answer "
    "the question; do not repeat the full table."
)

# The view needs nothing from the network: every CSP domain list is declared empty, so hosts apply their
# strictest policy (no connect, no external scripts, styles, images, fonts or frames).
VIEW_CSP = ResourceCsp(connect_domains=[], resource_domains=[], frame_domains=[], base_uri_domains=[])


@cache
def _asset(name: str) -> bytes:
    return files("keyapi_mcp.surface").joinpath("ui", name).read_bytes()


def view_html() -> str:
    """The view's HTML, read from the package (so it ships in the wheel and works from a zip import)."""
    return _asset("products.html").decode("utf-8")


@cache
def icons() -> list[Icon]:
    """keyapi-mcp's icon as a data URI: hosts show it without fetching anything."""
    svg = base64.b64encode(_asset("icon.svg")).decode("ascii")
    return [Icon(src=f"data:image/svg+xml;base64,{svg}", mime_type="image/svg+xml", sizes=["any"])]


class ProductsView(Apps):
    """The MCP Apps extension with the products view.

    `build_server` registers `get_video_products` itself (published with a strict argument model and compact
    schemas, which `MCPServer.add_tool` would not do), so this extension hands the server only the view
    resource and the capability; `tool_meta` gives that tool the `_meta.ui` the SDK's `Apps.tool` binding
    stamps, checked by `Apps.tools` against the registered resource.
    """

    def __init__(self) -> None:
        super().__init__()
        self.add_html_resource(
            PRODUCTS_VIEW_URI,
            view_html(),
            name="products_view",
            title="TikTok video products & sales (view)",
            description="Interactive table and GMV chart of a get_video_products result.",
            csp=VIEW_CSP,
            prefers_border=True,
        )

    def tool_meta(self, fn: Callable[..., Any]) -> dict[str, Any]:
        """Bind `fn` to the view and return the `_meta` its tool must carry."""
        self.tool(resource_uri=PRODUCTS_VIEW_URI)(fn)
        binding = next(binding for binding in super().tools() if binding.fn is fn)
        return dict(binding.meta or {})

    def tools(self) -> Sequence[ToolBinding]:
        return ()


# Appended to a [confirmation_required] answer when the host renders the view, which offers the same quote with
# a Spend button: one token serves one spend, so the model should not repeat a call the user already confirmed.
QUOTE_NOTE = (
    "The user also sees this quote in the MCP App view with a Spend button; if they spend there, the view shows "
    "the data and this call need not be repeated."
)


def note_quote(result: CallToolResult, ctx: Any) -> CallToolResult:
    """A quote for this client: unchanged unless the client renders MCP Apps (then the view can confirm it)."""
    first = result.content[0] if result.content else None
    if not client_supports_apps(ctx) or "confirmation" not in (result.structured_content or {}):
        return result
    if not isinstance(first, TextContent):
        return result
    text = TextContent(type="text", text=f"{first.text}\n{QUOTE_NOTE}")
    return result.model_copy(update={"content": [text, *result.content[1:]]})


def note_view(text: str, ctx: Any) -> str:
    """The tool's text for this client: unchanged unless the client renders MCP Apps."""
    return f"{text}\n{VIEW_NOTE}" if client_supports_apps(ctx) else text


class AppOnlyTools:
    """Server middleware: `tools/list` shows app-only tools (visibility ["app"]) only to MCP Apps hosts.

    A host that renders the view keeps such a tool off the model's list itself (the MCP Apps spec); a client
    without the extension would hand it to the model as one more tool, a duplicate of get_video_products.
    """

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        result = await call_next(ctx)
        if ctx.method != "tools/list" or client_supports_apps(ctx):
            return result
        if isinstance(result, ListToolsResult):
            return result.model_copy(update={"tools": [t for t in result.tools if not _app_only(t.meta)]})
        if isinstance(result, dict) and isinstance(result.get("tools"), list):  # the wire form
            return {**result, "tools": [t for t in result["tools"] if not _app_only(t.get("_meta"))]}
        return result


def _app_only(meta: Any) -> bool:
    ui = meta.get("ui") if isinstance(meta, dict) else None
    visibility = ui.get("visibility") if isinstance(ui, dict) else None
    return isinstance(visibility, list) and "model" not in visibility
