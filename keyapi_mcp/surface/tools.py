"""get_video_products and get_credit_usage: arguments with bounds, descriptions that state this server's actual
limits, the server's instructions, and each tool's way through (arguments → `ProductsService` → presentation).
Failures are domain errors (`surface.calls`). compare_video_groups is in `surface.groups`."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Literal

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.tools import Tool
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BeforeValidator, ConfigDict, Field

from keyapi_mcp.config import Settings
from keyapi_mcp.core.budget import NO_LOWER_CAP, cap_sized_from_ids, explicit_cap, sized_cap
from keyapi_mcp.core.domain import PAGE_SIZE
from keyapi_mcp.core.ids import MAX_VIDEO_IDS, normalize_video_ids
from keyapi_mcp.errors import KeyAPIError
from keyapi_mcp.presentation.build import build_result
from keyapi_mcp.presentation.models import CreditUsage, VideoProductsResult
from keyapi_mcp.presentation.ranking import SortBy
from keyapi_mcp.presentation.render import render_usage
from keyapi_mcp.presentation.sizing import cap_structured, fit_text
from keyapi_mcp.presentation.totals import with_product_totals
from keyapi_mcp.surface.app import APP_TOOL, APP_TOOL_META, ProductsView, icons, note_quote, note_view
from keyapi_mcp.surface.caller import current_caller
from keyapi_mcp.surface.consent import ConsentArg, QuoteArg, answer_cost, failed, gate
from keyapi_mcp.surface.resources import cached_video_uris, read_credit_usage, video_links
from keyapi_mcp.surface.schema import compact_schema
from keyapi_mcp.surface.state import AppState

log = logging.getLogger(__name__)

MAX_AGE_SECONDS = 2_592_000  # 30 days: the default max_age_seconds, i.e. whatever the cache holds

# Under 2 KB (tests/test_portability.py): hosts cut longer instructions.
INSTRUCTIONS = f"""\
KeyAPI TikTok video commerce data. Calls cost paid KeyAPI credits (1 per upstream page of {PAGE_SIZE} product \
rows), but repeated or overlapping questions are answered from a cache for free, so batch all the videos you \
need into one call; get_credit_usage (free) shows the remaining budget. Which call answers what:
- what videos sell and how well, per video: get_video_products (up to {MAX_VIDEO_IDS} ids or tiktok.com video URLs);
- rankings ("top 3 products by units", "which video converts best"): the same with sort_by (units, gmv, views, \
gmv_per_1k_views, units_per_1k_views, engagement, avg_price) and top;
- totals across videos, a product's share of all GMV, each video's share of one product, totals by region and \
day: get_video_products with group_by="product";
- two or more groups of videos (creators, campaigns, weeks): compare_video_groups, one call for all groups.
The server computes every figure exactly: quote them; do not add, subtract, divide or rank yourself. An answer \
marked PARTIAL covers only what was fetched: continue as its last line says. Long answers say what they left \
out. Free reads, no credit: keyapi://usage and keyapi://videos/{{video_id}} (any video already fetched). \
Prompts: analyze_video_commerce, compare_videos, top_products. A call that may spend more than the server's \
consent threshold asks the user first; if the answer is [confirmation_required], ask the user and, if they \
agree, repeat exactly the call it names (with its confirm token)."""

# The lists never change while the process runs (tool descriptions follow the settings, read at start) and are

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


# Every argument has one JSON type and no null (tests/test_portability.py): the agent frameworks convert these
# schemas for their providers, and each nullable form breaks one of them. A type list (`[integer, null]`)
# becomes STRING through the Gemini converters (the model then sends "3"); `anyOf` with null leaves
# smolagents (mcpadapt) with a STRING argument that refuses both null and integers. So an optional argument
# has a default of its own type that means "not set", which frameworks that declare every argument required
# (smolagents, OpenAI strict schemas) let the model send back unchanged.
ALL_PRODUCTS = 0  # top's default: no cap on the products shown


def _integral(value: object) -> object:
    """`3.0` as 3: JSON Schema counts a number with no fraction as an integer, and some providers' converters
    and models send integers that way. Booleans and fractions stay as they are, for strict validation to
    refuse."""
    if type(value) is float and value.is_integer():
        return int(value)
    return value


def _unset_as(default: int) -> BeforeValidator:
    """An integer argument that also takes null as its default (what the schema used to allow, and what some
    clients send for an argument they leave out) and a number with no fraction as that integer."""
    return BeforeValidator(lambda value: default if value is None else _integral(value))


Integral = BeforeValidator(_integral)
MaxCredits = Annotated[
    int,
    Field(
        ge=0,
        le=NO_LOWER_CAP,
        description="Credit cap for this call. 0 = answer from cache only. Default "
        f"{NO_LOWER_CAP}: the server's own cap (KEYAPI_MAX_CREDITS_PER_CALL). Above the consent threshold "
        "(up to KEYAPI_MAX_CREDITS_WITH_CONSENT) the user is asked first.",
    ),
    _unset_as(NO_LOWER_CAP),
]
PageNum = Annotated[
    int,
    Field(
        ge=1,
        le=100_000,
        description="Upstream page to start from. Leave at 1; use the next_page_num of an incomplete answer "
        "(with its pending ids) to continue it.",
    ),
    Integral,
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
    int,
    Field(
        ge=0,
        le=1000,
        description="Show only the top N products per video (group_by=product: the top N products) in the text; "
        "the rest is named, and the structured result keeps everything. 0 (default): all that fit the output "
        "budget.",
    ),
    _unset_as(ALL_PRODUCTS),
]
SortByArg = Annotated[
    SortBy,
    Field(
        description="Rank videos and products by this measure, highest first (ties by id); `top` keeps the first "
        "N by it. gmv (default), units, views, gmv_per_1k_views and units_per_1k_views (conversion), engagement, "
        "avg_price (GMV / units). A video's products follow it (by GMV for views and engagement). The text prints "
        "each video's GMV and units per 1k views, and with group_by=product each product's average price."
    ),
]
# Consent and freshness arguments (keyapi_mcp.surface.consent, issue 24): kept together, after the others.
MaxAge = Annotated[
    int,
    Field(
        ge=0,
        le=MAX_AGE_SECONDS,
        description="Accept cached data up to this many seconds old (never older than the cache keeps, "
        "KEYAPI_CACHE_TTL_SECONDS). 0 = fetch now (costs credits, like refresh). Each video states its age.",
    ),
]
Confirm = Annotated[
    str,
    Field(
        max_length=200,
        description="Only to repeat a call answered [confirmation_required]: its token, after the user agreed.",
    ),
]
Refresh = Annotated[
    bool,
    Field(
        description="Bypass the cache and re-fetch (costs credits). Only when fresher data than the cached "
        "fetched_at is needed."
    ),
]


def progress_reporter(ctx: Context[AppState]) -> Callable[[int, str], Awaitable[None]]:
    """The service's progress callback for this call: MCP progress notifications, best effort."""

    async def progress(done: int, message: str) -> None:
        try:
            await ctx.report_progress(done, None, message)
        except Exception:  # progress is best effort; never lose a paid page over it
            log.debug("progress notification failed", exc_info=True)

    return progress


async def get_video_products(
    video_ids: VideoIds,
    ctx: Context[AppState],
    quote: QuoteArg,
    consent: ConsentArg,
    max_credits: MaxCredits = NO_LOWER_CAP,
    page_num: PageNum = 1,
    response_format: ResponseFormat = "concise",
    refresh: Refresh = False,
    group_by: GroupBy = "video",
    top: Top = ALL_PRODUCTS,
    sort_by: SortByArg = "gmv",
    max_age_seconds: MaxAge = MAX_AGE_SECONDS,
    confirm: Confirm = "",
) -> Annotated[CallToolResult, VideoProductsResult]:
    """`quote` and `consent` come from resolvers run before this body (keyapi_mcp.surface.consent): the call's
    bound, and the user's yes or no where it is above the free cap. Nothing is sent before `gate` allows it."""
    state = ctx.request_context.lifespan_context
    ids = normalize_video_ids(video_ids)
    given = {
        "video_ids": ids,
        "max_credits": explicit_cap(max_credits),
        "page_num": page_num if page_num != 1 else None,
        "response_format": response_format if response_format != "concise" else None,
        "refresh": refresh or None,
        "group_by": group_by if group_by != "video" else None,
        "top": top or None,
        "sort_by": sort_by if sort_by != "gmv" else None,
        "max_age_seconds": max_age_seconds if max_age_seconds != MAX_AGE_SECONDS else None,
    }
    allowance = await gate(
        state,
        quote,
        consent,
        confirm=confirm,
        tool="get_video_products",
        arguments=given,
    )
    if isinstance(allowance, CallToolResult):
        return note_quote(allowance, ctx)  # declined, or a token to confirm: nothing was requested

    caller = current_caller()
    try:
        outcome = await state.service.fetch(
            ids,
            page_num=page_num,
            max_credits=max_credits,
            refresh=refresh,
            max_age=max_age_seconds,
            consented=allowance.consented,
            progress=progress_reporter(ctx),
            caller=caller,
        )
    except KeyAPIError as exc:
        return await failed(state, exc, caller)
    result = build_result(
        outcome,
        daily_limit=state.settings.daily_credit_limit,
        response_format=response_format,
        demo=state.demo,
        sort_by=sort_by,
        user_limit=state.settings.user_daily_credit_limit,
    )
    if group_by == "product":
        result = with_product_totals(result, sort_by)
    settings = state.settings
    result = result.model_copy(update={"resources": cached_video_uris(result, cache_ttl=settings.cache_ttl_seconds)})
    structured = cap_structured(result, settings.max_structured_products, cache_ttl=settings.cache_ttl_seconds)
    if structured is not result:  # the text says so too (it is sized on its own, from every row)
        result = result.model_copy(update={"warnings": structured.warnings})
    text = fit_text(result, max_tokens=settings.max_output_tokens, top=top or None)
    # The text is the whole answer and, by default, the only content item: agent frameworks turn
    # `resource_link`s into file attachments (a keyapi:// URL no provider can fetch), and some keep only the
    # first item. The re-read URIs are in `resources` and one line of the text (docs/clients.md "Results").
    links = video_links(result) if settings.resource_links else []
    return CallToolResult(
        content=[TextContent(type="text", text=note_view(text, ctx)), *links],
        structured_content=structured.model_dump(mode="json", exclude_unset=True),
        meta=answer_cost(state, outcome, result.credits),
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


def describe_cap(settings: Settings) -> str:
    cap = settings.max_credits_per_call
    if not cap_sized_from_ids(settings):
        return f"At most {cap} credits per call (KEYAPI_MAX_CREDITS_PER_CALL; max_credits lowers it)"
    return (
        f"At most {cap} credits per call, or 1 + 3 per 10 videos asked when more "
        f"({sized_cap(MAX_VIDEO_IDS, cap)} for {MAX_VIDEO_IDS}; max_credits lowers it)"
    )


def describe_cost(settings: Settings) -> str:
    """What a call costs and the limits on it, as the paid tools' descriptions state them."""
    limit = f"{settings.daily_credit_limit} credits per UTC day" if settings.daily_credit_limit else "no daily limit"
    if settings.user_daily_credit_limit:
        limit += f" ({settings.user_daily_credit_limit} per user)"
    return (
        f"1 paid credit per upstream page of {PAGE_SIZE} product rows. {describe_cap(settings)}; {limit}. "
        + _describe_cache(settings.cache_ttl_seconds)
    )


def describe_get_video_products(settings: Settings, *, demo_ids: Sequence[str] = ()) -> str:
    """The description, with this server's limits; `demo_ids` (demo mode) names the sample videos. At most
    1,024 characters (some frameworks refuse longer ones): the detail is in the argument descriptions."""
    text = f"""\
Products sold in TikTok videos with estimated units sold and GMV (KeyAPI Video Products Analytics; \
currency not stated upstream).

Use it for what videos sell and how well, and rankings by any measure (sort_by; top keeps the first N). \
group_by="product": each product's exact totals, share of all GMV, each video's share of it, totals by region \
and day. Groups of videos: use compare_video_groups. Quote the printed figures instead of computing.

Cost: {describe_cost(settings)}

A PARTIAL answer covers only what was fetched; continue with the call its last line names. The text stays \
under {settings.max_output_tokens or "no"} tokens; what it leaves out is named."""
    if demo_ids:
        text += f"\n\nDEMO: sample data, no credits. Videos with products: {', '.join(demo_ids)}."
    return text


CREDIT_USAGE_DESCRIPTION = (
    "Free, no upstream request, works without an API key. Reports credits spent today (UTC), the daily "
    "limit and what remains, the per-call cap, when the limit resets, credits the cache saved, cached videos, "
    "and your last 10 upstream requests (with a per-user limit, also your own credits today). Call it before "
    "large get_video_products requests."
)


def published(tool: Tool) -> Tool:
    """Publish a tool that validates strictly and advertises compact schemas.

    Unknown arguments are rejected (a typo'd `refresh` must not silently serve a stale cache) and types are
    strict (`max_credits: true`, `"1"` or `1.5` is no integer, `refresh: "yes"` no boolean): a coerced value
    could spend a credit the model never meant to. The one exception is a number with no fraction where an
    integer is expected (`3.0`, see `_integral`). Schemas are compacted (see `keyapi_mcp.surface.schema`).
    """
    base = tool.fn_metadata.arg_model
    tool.fn_metadata.arg_model = type(
        base.__name__, (base,), {"model_config": ConfigDict(extra="forbid", strict=True), "__module__": base.__module__}
    )
    tool.parameters = compact_schema({**tool.parameters, "additionalProperties": False})
    if tool.fn_metadata.output_schema is not None:
        tool.fn_metadata.output_schema = compact_schema(tool.fn_metadata.output_schema)
    return tool


APP_TOOL_DESCRIPTION = (
    "For keyapi-mcp's App view only (MCP Apps hosts keep it off the model's tool list): loads the next page of "
    "a result or refreshes videos, with get_video_products' arguments, cost and consent. Models: call "
    "get_video_products."
)


def tools_for(settings: Settings, view: ProductsView, *, demo_ids: Sequence[str] = ()) -> list[Tool]:
    """The tools, with descriptions that state this server's actual limits; the last is the App view's own."""
    return [
        published(
            Tool.from_function(
                get_video_products,
                name="get_video_products",
                title="TikTok video products & sales (KeyAPI, paid)",
                description=describe_get_video_products(settings, demo_ids=demo_ids),
                icons=icons(),
                meta=view.tool_meta(get_video_products),
                annotations=ToolAnnotations(
                    read_only_hint=True, destructive_hint=False, idempotent_hint=False, open_world_hint=True
                ),
            )
        ),
        published(
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
        published(
            Tool.from_function(
                get_video_products,
                name=APP_TOOL,
                title="Load more products (App view)",
                description=APP_TOOL_DESCRIPTION,
                icons=icons(),
                meta=APP_TOOL_META,
                annotations=ToolAnnotations(
                    read_only_hint=True, destructive_hint=False, idempotent_hint=False, open_world_hint=True
                ),
            )
        ),
    ]
