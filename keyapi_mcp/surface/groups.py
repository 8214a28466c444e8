"""compare_video_groups: named groups of videos compared in one call.

The groups' videos are fetched as one set (one page walk over their union, so the cost is the union's, not
the sum of the groups'), then `presentation.compare` states each group's totals, per-video averages and top
products, the differences between each pair of groups, and the products several groups sell: the figures a model
would otherwise add up and divide itself.
"""

from __future__ import annotations

from typing import Annotated, Literal

from mcp.server.elicitation import ElicitationResult
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.resolve import Elicit, Resolve
from mcp.server.mcpserver.tools import Tool
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field

from keyapi_mcp.config import Settings
from keyapi_mcp.core.budget import NO_LOWER_CAP, explicit_cap
from keyapi_mcp.core.consent import Quote
from keyapi_mcp.core.ids import MAX_VIDEO_IDS, normalize_video_ids
from keyapi_mcp.errors import InvalidInput, KeyAPIError
from keyapi_mcp.presentation.build import build_result
from keyapi_mcp.presentation.compare import build_comparison, render_comparison
from keyapi_mcp.presentation.models import GroupComparisonResult
from keyapi_mcp.surface.app import icons
from keyapi_mcp.surface.caller import current_caller
from keyapi_mcp.surface.consent import SpendConsent, answer_cost, ask_consent, failed, gate, quote_call
from keyapi_mcp.surface.state import AppState
from keyapi_mcp.surface.tools import (
    MAX_AGE_SECONDS,
    Confirm,
    MaxCredits,
    Refresh,
    VideoIds,
    describe_cost,
    progress_reporter,
    published,
)

TOOL_NAME = "compare_video_groups"
MAX_GROUPS = 5


class VideoGroup(BaseModel):
    """One named group of videos (a creator, a campaign, a week...)."""

    model_config = ConfigDict(extra="forbid")

    # Printed at the start of lines, so only plain characters: no line breaks, brackets or markup.
    name: Annotated[
        str,
        Field(
            min_length=1,
            max_length=40,
            pattern=r"^[A-Za-z0-9][A-Za-z0-9 _.-]*$",
            description='A short label printed in the answer, e.g. "creator A" (letters, digits, space, _ . -).',
        ),
    ]
    video_ids: VideoIds


Groups = Annotated[
    list[VideoGroup],
    Field(
        min_length=2,
        max_length=MAX_GROUPS,
        description=f"2-{MAX_GROUPS} named groups with distinct names; together at most {MAX_VIDEO_IDS} distinct "
        "videos. A video may be in several groups (it counts in each). Differences are stated for every pair, "
        "the later group against the earlier one.",
    ),
]
GroupTop = Annotated[int, Field(ge=1, le=20, description="Top products listed per group (default 3).")]
GroupSortBy = Annotated[
    Literal["gmv", "units"], Field(description="What each group's top products are ranked by (default gmv).")
]


def _named(groups: list[VideoGroup]) -> list[tuple[str, list[str]]]:
    """Each group's name and normalised ids; refused before any request when names repeat or the union is
    larger than one call takes."""
    named = [(g.name.strip(), normalize_video_ids(g.video_ids)) for g in groups]
    if len({name.casefold() for name, _ in named}) < len(named):
        raise InvalidInput("Two groups have the same name.", hint="Give every group its own name and call again.")
    union = {vid for _, ids in named for vid in ids}
    if len(union) > MAX_VIDEO_IDS:
        raise InvalidInput(
            f"The groups hold {len(union)} distinct videos; at most {MAX_VIDEO_IDS} fit in one comparison.",
            hint="Compare fewer or smaller groups.",
        )
    return named


def _union(named: list[tuple[str, list[str]]]) -> list[str]:
    return list(dict.fromkeys(vid for _, ids in named for vid in ids))


async def quote_groups(
    ctx: Context[AppState], groups: list[VideoGroup], max_credits: int, refresh: bool
) -> Quote | None:
    """The comparison's quote: that of the groups' union from its first page, as get_video_products quotes it."""
    return await quote_call(ctx, _union(_named(groups)), 1, max_credits, MAX_AGE_SECONDS, refresh)


async def ask_groups_consent(
    quote: Annotated[Quote | None, Resolve(quote_groups)], ctx: Context[AppState], confirm: str
) -> Elicit[SpendConsent] | str:
    """The same question (or token) as get_video_products, for the union's quote."""
    return await ask_consent(quote, ctx, confirm)


async def compare_video_groups(
    groups: Groups,
    ctx: Context[AppState],
    quote: Annotated[Quote | None, Resolve(quote_groups)],
    consent: Annotated[ElicitationResult[SpendConsent], Resolve(ask_groups_consent)],
    max_credits: MaxCredits = NO_LOWER_CAP,
    top: GroupTop = 3,
    sort_by: GroupSortBy = "gmv",
    refresh: Refresh = False,
    confirm: Confirm = "",
) -> Annotated[CallToolResult, GroupComparisonResult]:
    """Above the consent threshold the user is asked first, exactly as for get_video_products (`gate`)."""
    state = ctx.request_context.lifespan_context
    named = _named(groups)
    given = {
        "groups": [{"name": name, "video_ids": ids} for name, ids in named],
        "max_credits": explicit_cap(max_credits),
        "top": top if top != 3 else None,
        "sort_by": sort_by if sort_by != "gmv" else None,
        "refresh": refresh or None,
    }
    allowance = await gate(state, quote, consent, confirm=confirm, tool=TOOL_NAME, arguments=given)
    if isinstance(allowance, CallToolResult):
        return allowance  # declined, or a token to confirm: nothing was requested
    caller = current_caller()
    try:
        outcome = await state.service.fetch(
            _union(named),
            max_credits=max_credits,
            refresh=refresh,
            consented=allowance.consented,
            progress=progress_reporter(ctx),
            caller=caller,
        )
    except KeyAPIError as exc:
        return await failed(state, exc, caller)
    result = build_result(outcome, daily_limit=state.settings.daily_credit_limit, demo=state.demo)
    comparison = build_comparison(result, outcome.complete_ids, named, top=top, by=sort_by)
    return CallToolResult(
        content=[TextContent(type="text", text=render_comparison(comparison))],
        structured_content=comparison.model_dump(mode="json"),
        meta=answer_cost(state, outcome, result.credits),
    )


def describe_compare_video_groups(settings: Settings) -> str:
    return f"""\
Compare named groups of TikTok videos (creators, campaigns, weeks) by units and GMV, in one call.

Fetches the groups' videos as one set (the cost is that of their union; cached videos are free), then states \
per group: videos, units, GMV, GMV and units per video, GMV and units per 1k views, top products; each \
pair of groups' differences, absolute and in %; the products several groups sell. Quote these \
figures instead of computing them.

Cost: {describe_cost(settings)} An answer marked PARTIAL covers only what was fetched and names the call \
that continues it."""


def compare_tool(settings: Settings) -> Tool:
    return published(
        Tool.from_function(
            compare_video_groups,
            name=TOOL_NAME,
            title="Compare groups of TikTok videos (KeyAPI, paid)",
            description=describe_compare_video_groups(settings),
            icons=icons(),
            annotations=ToolAnnotations(
                read_only_hint=True, destructive_hint=False, idempotent_hint=False, open_world_hint=True
            ),
        )
    )
