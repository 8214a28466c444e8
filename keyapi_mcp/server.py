"""The MCP surface: `build_server(settings)` registers the two tools, the resources, the prompts and the
MCP Apps view over one `ProductsService`.

Each tool is: validate arguments (the SDK, strictly) → `ProductsService` (cache, budget, upstream) →
`format`/`analysis`/`sizing` (result model and compact text). Failures a model can act on are raised as
domain errors and become `ToolError` text `[code] what happened. what to do.` in
`KeyAPIMCPServer.call_tool` — in mcp 2.x only that text reaches the model.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from mcp.server.auth.provider import TokenVerifier
from mcp.server.auth.settings import AuthSettings
from mcp.server.caching import CacheHint
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.server.mcpserver.tools import Tool
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import ConfigDict, Field, ValidationError

from keyapi_mcp import __version__
from keyapi_mcp.analysis import with_product_totals
from keyapi_mcp.app import SERVER_TITLE, ProductsView, icons, note_view
from keyapi_mcp.auth import auth_kwargs
from keyapi_mcp.caller import current_caller
from keyapi_mcp.client import KeyAPIClient, RateLimiter
from keyapi_mcp.concurrency import CallSlots
from keyapi_mcp.config import Settings
from keyapi_mcp.domain import PAGE_SIZE, Store
from keyapi_mcp.errors import KeyAPIError, UnknownTool
from keyapi_mcp.format import build_result, render_text, render_usage
from keyapi_mcp.metrics import NO_METRICS, Metrics, MetricsMiddleware, PrometheusMetrics
from keyapi_mcp.models import MAX_VIDEO_IDS, CreditUsage, VideoProductsResult, normalize_video_ids
from keyapi_mcp.prompts import register_prompts
from keyapi_mcp.resources import read_credit_usage, register_resources, video_links
from keyapi_mcp.schema import compact_schema
from keyapi_mcp.service import ProductsService
from keyapi_mcp.sizing import fit_text
from keyapi_mcp.sqlite_store import SQLiteStore

if TYPE_CHECKING:  # imported on the first paid request (see keyapi_mcp.client)
    import httpx

log = logging.getLogger(__name__)

SERVER_NAME = "keyapi-mcp"
DEMO_API_KEY = "demo-key-not-secret"
DEMO_BASE_URL = "https://demo.invalid"
UPSTREAM_CONNECTIONS = 20

INSTRUCTIONS = f"""\
KeyAPI TikTok video commerce data. Use get_video_products to answer "which products does this TikTok \
video sell, and how well?" for up to {MAX_VIDEO_IDS} videos per call (ids or tiktok.com video URLs). It costs \
paid KeyAPI credits (1 per upstream page of {PAGE_SIZE} product rows), but repeated or overlapping questions \
are answered from a cache for free, so batch all the videos you need into one call. Use get_credit_usage \
(free) to check the remaining budget before large requests. For totals across videos (each product's units, \
GMV, videos, best video and share; totals by region and day) pass group_by="product": the server computes \
them exactly, so quote them rather than adding up. Long answers are cut to fit an output budget and say what \
was left out. Free reads, no credit: the resources keyapi://usage and keyapi://videos/{{video_id}} (any video \
already fetched). Prompts: analyze_video_commerce, compare_videos, top_products."""

# The lists never change while the process runs (tool descriptions follow the settings, read at start) and are
# the same for every caller: clients may reuse them for 5 minutes and share them across authorization contexts.
LIST_CACHE_HINTS = {
    "tools/list": CacheHint(ttl_ms=300_000, scope="public"),
    "prompts/list": CacheHint(ttl_ms=300_000, scope="public"),
    "resources/list": CacheHint(ttl_ms=300_000, scope="public"),
    "resources/templates/list": CacheHint(ttl_ms=300_000, scope="public"),
}

INTERNAL_ERROR_TEXT = (
    "[upstream_error] keyapi-mcp hit an unexpected internal error (details are in the server log). Pages "
    "fetched before it are cached; retry the same call, or call get_credit_usage to see what was spent."
)


@dataclass
class AppState:
    settings: Settings
    service: ProductsService
    demo: bool


# -- the tools -----------------------------------------------------------------------------------------

VideoIds = Annotated[
    list[Annotated[str, Field(max_length=4096)]],
    Field(
        min_length=1,
        max_length=MAX_VIDEO_IDS,
        description=(
            f'1-{MAX_VIDEO_IDS} distinct TikTok videos: numeric video ids ("7521783049722285367"), tiktok.com '
            "video URLs (https://www.tiktok.com/@user/video/<id>), or comma-joined ids. Duplicates are dropped. "
            "Short links (vm.tiktok.com) are not accepted."
        ),
    ),
]
MaxCredits = Annotated[
    int | None,
    Field(
        ge=0,
        le=100_000,
        description="Optional lower credit cap for this call (never raises KEYAPI_MAX_CREDITS_PER_CALL). "
        "0 = answer from cache only.",
    ),
]
PageNum = Annotated[
    int,
    Field(
        ge=1,
        le=100_000,
        description="Upstream page to start from. Leave at 1; use the next_page_num of an incomplete answer "
        "(with its pending ids) to continue it.",
    ),
]
ResponseFormat = Annotated[
    Literal["concise", "detailed"],
    Field(
        description="concise (default): numbers only. detailed: adds description, hashtags, cover/video URLs, "
        "dimensions (more tokens)."
    ),
]
GroupBy = Annotated[
    Literal["video", "product"],
    Field(
        description="video (default): per video, its products. product: each product's exact totals across the "
        "videos (units, GMV, videos, best video, GMV share) and totals by region and day."
    ),
]
Top = Annotated[
    int | None,
    Field(
        ge=1,
        le=1000,
        description="Show only the top N products per video (group_by=product: the top N products) in the text; "
        "the rest is named, and the structured result keeps everything. Default: all that fit the output budget.",
    ),
]
Refresh = Annotated[
    bool,
    Field(
        description="Bypass the cache and re-fetch (costs credits). Only when fresher data than the cached "
        "fetched_at is needed."
    ),
]


async def get_video_products(
    video_ids: VideoIds,
    ctx: Context[AppState],
    max_credits: MaxCredits = None,
    page_num: PageNum = 1,
    response_format: ResponseFormat = "concise",
    refresh: Refresh = False,
    group_by: GroupBy = "video",
    top: Top = None,
) -> Annotated[CallToolResult, VideoProductsResult]:
    state = ctx.request_context.lifespan_context

    async def progress(done: int, message: str) -> None:
        try:
            await ctx.report_progress(done, None, message)
        except Exception:  # progress is best effort; never lose a paid page over it
            log.debug("progress notification failed", exc_info=True)

    outcome = await state.service.fetch(
        normalize_video_ids(video_ids),
        page_num=page_num,
        max_credits=max_credits,
        refresh=refresh,
        progress=progress,
        caller=current_caller(),
    )
    result = build_result(
        outcome, daily_limit=state.settings.daily_credit_limit, response_format=response_format, demo=state.demo
    )
    if group_by == "product":
        result = with_product_totals(result)
    text = fit_text(result, render_text(result), max_tokens=state.settings.max_output_tokens, top=top)
    return CallToolResult(
        content=[
            TextContent(type="text", text=note_view(text, ctx)),
            *video_links(result, cache_ttl=state.settings.cache_ttl_seconds),
        ],
        structured_content=result.model_dump(mode="json", exclude_unset=True),
    )


async def get_credit_usage(ctx: Context[AppState]) -> Annotated[CallToolResult, CreditUsage]:
    report = await read_credit_usage(ctx.request_context.lifespan_context)
    return CallToolResult(
        content=[TextContent(type="text", text=render_usage(report))],
        structured_content=report.model_dump(mode="json"),
    )


def _describe_cache(ttl: int) -> str:
    if ttl <= 0:
        return "The cache is off (KEYAPI_CACHE_TTL_SECONDS=0): every call pays for what it fetches."
    span = f"{ttl // 3600} h" if ttl >= 3600 and ttl % 3600 == 0 else f"{round(ttl / 60) or 1} min"
    return f"Videos fetched in the last {span} come from cache at no cost."


def describe_get_video_products(settings: Settings, *, demo: bool = False) -> str:
    limit = f"{settings.daily_credit_limit} credits per UTC day" if settings.daily_credit_limit else "no daily limit"
    if settings.user_daily_credit_limit:
        limit += f" ({settings.user_daily_credit_limit} per user)"
    text = f"""\
Products sold in TikTok videos, with estimated units sold and GMV per product, from KeyAPI's Video \
Products (Analytics) endpoint.

Use it for: which products a video features, how many units each sold and the GMV it drove, and how \
well a video converts (engagement, units and GMV per 1k views). Pass every video you need in one call.

Cost: each upstream page (up to {PAGE_SIZE} product rows across the requested videos) costs 1 paid \
credit. At most {settings.max_credits_per_call} credits per call (KEYAPI_MAX_CREDITS_PER_CALL; lower \
it with max_credits), {limit}. {_describe_cache(settings.cache_ttl_seconds)}

Returns: per video (sorted by GMV) views, engagement rate, units sold and GMV, and its products (by \
GMV) with units, GMV and average price; totals; credits spent; `not_found` ids with no product rows. \
GMV currency is not stated by the upstream. If `complete` is false, call again with the pending ids and \
`next_page_num` as the text says. response_format="detailed" adds description, hashtags, cover and \
video URLs. group_by="product" returns each product's exact totals across the videos instead (plus \
totals by region and day). The text is kept under {settings.max_output_tokens or "no"} tokens \
(KEYAPI_MAX_OUTPUT_TOKENS; `top` caps products per video): what it leaves out is named, and each cached \
video is free to re-read at keyapi://videos/<id>."""
    if demo:
        from keyapi_mcp.fake_upstream import demo_dataset

        ids = ", ".join(vid for vid, rows in demo_dataset().items() if rows)
        text += (
            f"\n\nDEMO MODE: sample data, no credits. Videos with products: {ids}. Any other id answers "
            "'no products', as a real video without products would."
        )
    return text


CREDIT_USAGE_DESCRIPTION = (
    "Free, no upstream request, works without an API key. Reports credits spent today (UTC), the daily "
    "limit and what remains, the per-call cap, when the limit resets, credits the cache saved, cached videos, "
    "and your last 10 upstream requests (with a per-user limit, also your own credits today). Call it before "
    "large get_video_products requests."
)


def _published(tool: Tool) -> Tool:
    """Publish a tool that validates strictly and advertises compact schemas.

    Unknown arguments are rejected (a typo'd `refresh` must not silently serve a stale cache) and types are
    strict (`max_credits: true`, `"1"` or `1.0` is no integer, `refresh: "yes"` no boolean): a coerced value
    could spend a credit the model never meant to. Schemas are compacted (see `keyapi_mcp.schema`).
    """
    base = tool.fn_metadata.arg_model
    tool.fn_metadata.arg_model = type(
        base.__name__, (base,), {"model_config": ConfigDict(extra="forbid", strict=True), "__module__": base.__module__}
    )
    tool.parameters = compact_schema({**tool.parameters, "additionalProperties": False})
    if tool.fn_metadata.output_schema is not None:
        tool.fn_metadata.output_schema = compact_schema(tool.fn_metadata.output_schema)
    return tool


def tools_for(settings: Settings, view: ProductsView, *, demo: bool = False) -> list[Tool]:
    """The two tools, with descriptions that state this server's actual limits."""
    return [
        _published(
            Tool.from_function(
                get_video_products,
                name="get_video_products",
                title="TikTok video products & sales (KeyAPI, paid)",
                description=describe_get_video_products(settings, demo=demo),
                icons=icons(),
                meta=view.tool_meta(get_video_products),
                annotations=ToolAnnotations(
                    read_only_hint=True, destructive_hint=False, idempotent_hint=False, open_world_hint=True
                ),
            )
        ),
        _published(
            Tool.from_function(
                get_credit_usage,
                name="get_credit_usage",
                title="KeyAPI credit usage (free)",
                description=CREDIT_USAGE_DESCRIPTION,
                icons=icons(),
                annotations=ToolAnnotations(
                    read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False
                ),
            )
        ),
    ]


# -- errors --------------------------------------------------------------------------------------------


def _validation_text(tool: str, exc: ValidationError) -> str:
    problems = []
    for err in exc.errors(include_input=False, include_url=False)[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ())) or "arguments"
        problems.append(f"{loc}: {err.get('msg', 'invalid')}")
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
                raise UnknownTool(f"There is no tool named {name!r}.")
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


# -- assembly ------------------------------------------------------------------------------------------


def default_state_dir() -> Path:
    import platformdirs

    return platformdirs.user_cache_path("keyapi-mcp", appauthor=False)


def open_store(settings: Settings, *, demo: bool = False, clock: Callable[[], float] = time.time) -> Store:
    """Open the configured store. Demo mode uses a private in-memory ledger: no real credits exist there."""
    if demo:
        return SQLiteStore(":memory:", clock=clock)
    url = settings.state_url
    if url and url.startswith(("redis://", "rediss://")):
        from keyapi_mcp.redis_store import RedisStore

        return RedisStore.from_url(url, clock=clock, cache_ttl=settings.cache_ttl_seconds)
    if url and url.startswith("sqlite:///"):
        return SQLiteStore(url.removeprefix("sqlite:///") or ":memory:", clock=clock)
    return SQLiteStore.in_dir(settings.state_dir or default_state_dir(), clock=clock)


def upstream_http_client(settings: Settings, transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """The one HTTP client for the upstream, made on the first paid request and closed with the server.

    At most `UPSTREAM_CONNECTIONS`, all kept alive: httpcore's pool examines every connection it holds on each
    request, so a pool sized to the call cap costs more CPU per request than the waits it saves (the HTTP
    throughput figure of bench/README.md); `KEYAPI_MAX_RPS` (5 by default) keeps fewer in use anyway.
    Certificates are loaded only for an https upstream: a plain http:// one (loopback only, see
    `Settings.base_url`) has no TLS to verify, and the CA bundle costs memory.
    """
    import httpx

    return httpx.AsyncClient(
        transport=transport,
        limits=httpx.Limits(max_connections=UPSTREAM_CONNECTIONS, max_keepalive_connections=UPSTREAM_CONNECTIONS),
        verify=settings.base_url.startswith("https://"),
        follow_redirects=False,
    )


def build_server(
    settings: Settings,
    *,
    demo: bool = False,
    transport: httpx.AsyncBaseTransport | None = None,
    store: Store | None = None,
    clock: Callable[[], float] = time.time,
    token_verifier: TokenVerifier | None = None,
    auth: AuthSettings | None = None,
) -> KeyAPIMCPServer:
    """Build the server. `transport`, `store` and `clock` are injection points for tests and benchmarks.

    A `store` passed in belongs to the caller (the CLI opens it early to report a bad state file before
    serving); otherwise the lifespan opens and closes one. `token_verifier` + `auth` (both or neither, as the
    SDK requires) replace the verifier the settings configure (OAuth, `keyapi_mcp.auth`); each verified
    token's identity is the caller its credits are booked for (`keyapi_mcp.caller`).
    """
    metrics: Metrics = PrometheusMetrics() if settings.mcp_metrics else NO_METRICS
    live: list[AppState] = []  # the running server's state, for the resources and completions (no request context)

    @asynccontextmanager
    async def lifespan(_: MCPServer[AppState]) -> AsyncIterator[AppState]:
        state_store = store if store is not None else open_store(settings, demo=demo, clock=clock)
        http_transport = transport
        if demo and http_transport is None:
            from keyapi_mcp.fake_upstream import FakeUpstream, demo_dataset, mock_transport

            http_transport = mock_transport(FakeUpstream(demo_dataset()))
        client = KeyAPIClient(
            functools.partial(upstream_http_client, settings, http_transport),
            api_key=DEMO_API_KEY if demo else (settings.api_key.get_secret_value() if settings.api_key else ""),
            base_url=DEMO_BASE_URL if demo else settings.base_url,
            rate_limiter=RateLimiter(settings.max_rps if not demo else 1000.0),
            timeout_seconds=settings.timeout_seconds,
            observe=metrics.upstream_request,
        )
        service = ProductsService(
            state_store,
            client if (demo or settings.has_api_key) else None,
            max_credits_per_call=settings.max_credits_per_call,
            daily_limit=settings.daily_credit_limit,
            cache_ttl=settings.cache_ttl_seconds,
            user_daily_limit=settings.user_daily_credit_limit,
            metrics=metrics,
        )
        app_state = AppState(settings=settings, service=service, demo=demo)
        try:
            await service.prune()
            live.append(app_state)
            yield app_state
        finally:
            if app_state in live:
                live.remove(app_state)
            await client.aclose()
            if store is None:
                await state_store.close()

    view = ProductsView()  # the MCP Apps view of get_video_products (ui://keyapi/products)
    server = KeyAPIMCPServer(
        SERVER_NAME,
        title=SERVER_TITLE,
        icons=icons(),
        version=__version__,
        instructions=INSTRUCTIONS,
        tools=tools_for(settings, view, demo=demo),
        extensions=[view],
        lifespan=lifespan,
        log_level=settings.log_level,
        cache_hints=LIST_CACHE_HINTS,
        # OAuth resource server on the HTTP transport, when configured (or the verifier a caller passes in)
        **({"token_verifier": token_verifier, "auth": auth} if token_verifier or auth else auth_kwargs(settings)),
    )
    server.call_slots = CallSlots(settings.mcp_max_concurrent_calls)
    register_resources(server, lambda: live[-1] if live else None)
    register_prompts(server, lambda: live[-1] if live else None)
    server.metrics = metrics
    if metrics.enabled:
        server.middleware.append(MetricsMiddleware(metrics))
    return server
