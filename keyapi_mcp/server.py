"""The MCP surface: `build_server(settings)` and two thin tools.

Each tool is validate → (cache/budget/client via `ProductsService`) → format. Failures a model can act
on are raised as `ToolError` carrying `[code] what happened. what to do.`; in mcp 2.x only that text
reaches the model. Argument-schema failures are rewritten to `[invalid_input]` too (see
`KeyAPIMCPServer.call_tool`), and unknown arguments are rejected rather than silently ignored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.server.mcpserver.tools import Tool
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import ConfigDict, Field, ValidationError

from keyapi_mcp import __version__
from keyapi_mcp.analysis import with_product_totals
from keyapi_mcp.client import PAGE_SIZE, KeyAPIClient, RateLimiter, UpstreamPool
from keyapi_mcp.config import Settings
from keyapi_mcp.errors import KeyAPIError, MissingApiKey
from keyapi_mcp.format import build_result, render_text, render_usage
from keyapi_mcp.limits import CallSlots
from keyapi_mcp.models import (
    MAX_VIDEO_IDS,
    CreditUsage,
    VideoProductsResult,
    normalize_video_ids,
)
from keyapi_mcp.prompts import register_prompts
from keyapi_mcp.resources import read_credit_usage, register_resources, video_links
from keyapi_mcp.schema import compact_schema
from keyapi_mcp.service import ProductsService
from keyapi_mcp.sizing import fit_text
from keyapi_mcp.store import SQLiteStore, Store

if TYPE_CHECKING:  # httpx is imported on the first upstream request (see UpstreamPool)
    import httpx

log = logging.getLogger(__name__)

SERVER_NAME = "keyapi-mcp"
DEMO_API_KEY = "demo-key-not-secret"

INSTRUCTIONS = """\
KeyAPI TikTok video commerce data. Use get_video_products to answer "which products does this TikTok \
video sell, and how well?" for up to 50 videos per call (ids or tiktok.com video URLs). It costs paid \
KeyAPI credits (1 per upstream page of 10 product rows), but repeated or overlapping questions are \
answered from a cache for free, so batch all the videos you need into one call. Use get_credit_usage \
(free) to check the remaining budget before large requests. For totals across videos (each product's units, \
GMV, videos, best video and share; totals by region and day) pass group_by="product": the server computes \
them exactly, so quote them rather than adding up. Long answers are cut to fit an output budget and say what \
was left out. Free reads, no credit: the resources keyapi://usage and keyapi://videos/{video_id} (any video \
already fetched). Prompts: analyze_video_commerce, compare_videos, top_products."""


def _describe_cache(ttl: int) -> str:
    if ttl <= 0:
        return "The cache is off (KEYAPI_CACHE_TTL_SECONDS=0): every call pays for what it fetches."
    span = f"{ttl // 3600} h" if ttl >= 3600 and ttl % 3600 == 0 else f"{round(ttl / 60) or 1} min"
    return f"Videos fetched in the last {span} come from cache at no cost."


def _describe_get_video_products(settings: Settings) -> str:
    limit = f"{settings.daily_credit_limit} credits per UTC day" if settings.daily_credit_limit else "no daily limit"
    return f"""\
Products sold in TikTok videos, with estimated units sold and GMV per product, from KeyAPI's Video \
Products (Analytics) endpoint.

Use it for: which products a video features, how many units each sold and the GMV it drove, and how \
well a video converts (engagement, units and GMV per 1k views). Pass every video you need in one call \
(1-{MAX_VIDEO_IDS} ids; numeric ids or https://www.tiktok.com/@user/video/<id> URLs).

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


GroupByArg = Annotated[
    Literal["video", "product"],
    Field(
        description=(
            "video (default): per video, its products. product: each product's exact totals across the videos "
            "(units, GMV, videos, best video, GMV share) and totals by region and day."
        )
    ),
]
TopArg = Annotated[
    int | None,
    Field(
        ge=1,
        le=1000,
        description=(
            "Show only the top N products per video (group_by=product: the top N products) in the text; the rest "
            "is named, and the structured result keeps everything. Default: all that fit the output budget."
        ),
    ),
]


@dataclass
class AppState:
    settings: Settings
    service: ProductsService
    store: Store
    demo: bool


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


INTERNAL_ERROR_TEXT = (
    "[upstream_error] keyapi-mcp hit an unexpected internal error (details are in the server log). Pages "
    "fetched before it are cached; retry the same call, or call get_credit_usage to see what was spent."
)


class KeyAPIMCPServer(MCPServer[AppState]):
    """The one place tool failures become what the model reads.

    Tools raise the domain errors of `keyapi_mcp.errors`; here each becomes a `ToolError` whose text starts
    with its `[code]` (without the SDK's "Error executing tool X:" prefix), argument-schema failures become
    `[invalid_input]` naming the fields, and anything unexpected is logged with its traceback and reported
    without internals.
    """

    call_slots: CallSlots | None = None  # cap on concurrent tool calls (KEYAPI_MCP_MAX_CONCURRENT_CALLS)

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        try:
            if self.call_slots is None:
                return await super().call_tool(name, arguments, context)
            async with self.call_slots.hold():
                return await super().call_tool(name, arguments, context)
        except KeyAPIError as exc:  # ServerBusy, raised before the tool runs
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


def _published(tool: Tool) -> Tool:
    """Reject unknown arguments (a typo'd `refresh` must not silently serve a stale cache) and publish
    compact schemas (see `keyapi_mcp.schema`)."""
    base = tool.fn_metadata.arg_model
    strict_model = type(
        base.__name__, (base,), {"model_config": ConfigDict(extra="forbid"), "__module__": base.__module__}
    )
    tool.fn_metadata.arg_model = strict_model
    # The SDK has just generated the base model's schema; forbidding extras adds exactly this keyword (generating
    # it again from the subclass would cost a few ms of every start).
    tool.parameters = compact_schema({**tool.parameters, "additionalProperties": False})
    if tool.fn_metadata.output_schema is not None:
        tool.fn_metadata.output_schema = compact_schema(tool.fn_metadata.output_schema)
        # Our tools' structured content is the dump of a model they have just built (so valid by construction);
        # without the model the SDK publishes the schema but skips re-validating that dict on every call.
        tool.fn_metadata.output_model = None
    return tool


def build_server(
    settings: Settings,
    *,
    demo: bool = False,
    transport: httpx.AsyncBaseTransport | None = None,
    store: Store | None = None,
    clock: Callable[[], float] = time.time,
) -> KeyAPIMCPServer:
    """Build the server. `transport`, `store` and `clock` are injection points for tests and benchmarks."""

    live: list[AppState] = []  # the running server's state, for the resources and completions (no request context)

    @asynccontextmanager
    async def lifespan(_: MCPServer[AppState]) -> AsyncIterator[AppState]:
        own_store = store is None
        state_store = store if store is not None else open_store(settings, demo=demo, clock=clock)
        http_transport = transport
        if demo and http_transport is None:
            from keyapi_mcp.fake_upstream import FakeUpstream, demo_dataset, mock_transport

            http_transport = mock_transport(FakeUpstream(demo_dataset()))
        # A TLS context (and the trust store) is made only for an https:// upstream, on its first request.
        async with UpstreamPool(
            # As many upstream connections as tool calls may run at once (KEYAPI_MCP_MAX_CONCURRENT_CALLS).
            connections=max(32, settings.mcp_max_concurrent_calls),
            transport=http_transport,
        ) as http:
            api_key = (
                DEMO_API_KEY if demo else (settings.api_key.get_secret_value() if settings.api_key is not None else "")
            )
            base_url = "https://demo.invalid" if demo else settings.base_url
            client = KeyAPIClient(
                http,
                api_key=api_key,
                base_url=base_url,
                rate_limiter=RateLimiter(settings.max_rps if not demo else 1000.0),
                timeout_seconds=settings.timeout_seconds,
            )
            service = ProductsService(
                state_store,
                client if (demo or settings.has_api_key) else None,
                max_credits_per_call=settings.max_credits_per_call,
                daily_limit=settings.daily_credit_limit,
                cache_ttl=settings.cache_ttl_seconds,
            )
            try:
                await state_store.prune(settings.cache_ttl_seconds)
            except KeyAPIError as exc:
                log.warning("could not prune the cache: %s", exc)
            app_state = AppState(settings=settings, service=service, store=state_store, demo=demo)
            live.append(app_state)
            try:
                yield app_state
            finally:
                live.remove(app_state)
                if own_store:
                    await state_store.close()
                else:  # closed by its owner, maybe never (the CLI's lives until exit): write the statistic now
                    state_store.flush_saved()

    async def get_video_products(
        video_ids: Annotated[
            list[Annotated[str, Field(max_length=4096)]],
            Field(
                min_length=1,
                max_length=500,
                description=(
                    f'1-{MAX_VIDEO_IDS} distinct TikTok videos: numeric video ids ("7521783049722285367"), '
                    "tiktok.com video URLs (https://www.tiktok.com/@user/video/<id>), or comma-joined ids. "
                    "Duplicates are dropped. Short links (vm.tiktok.com) are not accepted."
                ),
            ),
        ],
        ctx: Context[AppState],
        max_credits: Annotated[
            int | None,
            Field(
                ge=0,
                le=100_000,
                description=(
                    "Optional lower credit cap for this call (never raises KEYAPI_MAX_CREDITS_PER_CALL). "
                    "0 = answer from cache only."
                ),
            ),
        ] = None,
        page_num: Annotated[
            int,
            Field(
                ge=1,
                le=100_000,
                description=(
                    "Upstream page to start from. Leave at 1; use the next_page_num of an incomplete answer "
                    "(with its pending ids) to continue it."
                ),
            ),
        ] = 1,
        response_format: Annotated[
            Literal["concise", "detailed"],
            Field(
                description=(
                    "concise (default): numbers only. detailed: adds description, hashtags, cover/video URLs, "
                    "dimensions (more tokens)."
                )
            ),
        ] = "concise",
        refresh: Annotated[
            bool,
            Field(
                description=(
                    "Bypass the cache and re-fetch (costs credits). Only when fresher data than the cached "
                    "fetched_at is needed."
                )
            ),
        ] = False,
        group_by: GroupByArg = "video",
        top: TopArg = None,
    ) -> Annotated[CallToolResult, VideoProductsResult]:
        state = ctx.request_context.lifespan_context
        ids = normalize_video_ids(video_ids)
        if state.service.client is None:
            raise MissingApiKey("KEYAPI_API_KEY is not set, so no KeyAPI request can be made.")

        async def progress(done: int, message: str) -> None:
            try:
                await ctx.report_progress(done, None, message)
            except Exception:  # progress is best effort; never lose a paid page over it
                log.debug("progress notification failed", exc_info=True)

        outcome = await state.service.fetch(
            ids, page_num=page_num, max_credits=max_credits, refresh=refresh, progress=progress
        )
        result = build_result(
            outcome,
            usage=await state.store.usage_today(),
            daily_limit=state.settings.daily_credit_limit,
            response_format=response_format,
            demo=state.demo,
        )
        if group_by == "product":
            result = with_product_totals(result)
        text = fit_text(result, render_text(result), max_tokens=state.settings.max_output_tokens, top=top)
        return CallToolResult(
            content=[
                TextContent(type="text", text=text),
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

    tools = [
        _published(
            Tool.from_function(
                get_video_products,
                name="get_video_products",
                title="TikTok video products & sales (KeyAPI, paid)",
                description=_describe_get_video_products(settings),
                annotations=ToolAnnotations(
                    title="TikTok video products & sales",
                    read_only_hint=True,
                    destructive_hint=False,
                    idempotent_hint=False,
                    open_world_hint=True,
                ),
            )
        ),
        _published(
            Tool.from_function(
                get_credit_usage,
                name="get_credit_usage",
                title="KeyAPI credit usage (free)",
                description=(
                    "Free, no upstream request, works without an API key. Reports credits spent today (UTC), "
                    "the daily limit and what remains, the per-call cap, when the limit resets, credits the "
                    "cache saved, cached videos, and the last 10 upstream requests. Call it before large "
                    "get_video_products requests."
                ),
                annotations=ToolAnnotations(
                    title="KeyAPI credit usage",
                    read_only_hint=True,
                    destructive_hint=False,
                    idempotent_hint=True,
                    open_world_hint=False,
                ),
            )
        ),
    ]
    server = KeyAPIMCPServer(
        SERVER_NAME,
        version=__version__,
        instructions=INSTRUCTIONS,
        tools=tools,
        lifespan=lifespan,
        log_level=settings.log_level,
    )
    server.call_slots = CallSlots(settings.mcp_max_concurrent_calls)
    register_resources(server, lambda: live[-1] if live else None)
    register_prompts(server, lambda: live[-1] if live else None)
    return server
