"""Guided prompts (slash commands in most clients) and argument completion from the video cache.

Each prompt returns one short user message naming the tool calls to make (batched, budget checked first
with the free get_credit_usage) and what to report, so a question about many videos costs one paid call and
the model quotes the server's exact totals instead of adding numbers up itself.

A bad argument (an id that is not one, a short link, `n="ten"`) is the client's to fix, so it answers
JSON-RPC invalid params (-32602) with the `[invalid_input]` text, raised as the SDK's `MCPError` (which its
prompt rendering passes through unchanged), and is logged as one line: any other exception would reach the
client as a generic "Error rendering prompt" and the server log as a traceback.
"""

from __future__ import annotations

import logging
import re
from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPError
from mcp_types import (
    INVALID_PARAMS,
    Completion,
    CompletionArgument,
    CompletionContext,
    PromptReference,
    ResourceTemplateReference,
)
from pydantic import Field

from keyapi_mcp.core.ids import MAX_VIDEO_IDS, normalize_video_ids
from keyapi_mcp.core.text import short_echo
from keyapi_mcp.errors import KeyAPIError
from keyapi_mcp.presentation.render import VIDEO_URI_TEMPLATE
from keyapi_mcp.surface.state import LiveState

log = logging.getLogger(__name__)

MAX_TOP = 100
MAX_COMPLETIONS = 100  # the protocol's cap on values per completion answer
# Longer typed text gets no completion: each value offered repeats what is typed before its last item.
MAX_COMPLETION_INPUT = MAX_VIDEO_IDS * 30
PROMPTS_HINT = "The prompts are analyze_video_commerce, compare_videos and top_products (prompts/list)."
_SPLIT = re.compile(r"[\s,]+")

# Prompt -> its arguments that hold video ids (completed from the cache).
VIDEO_ID_ARGUMENTS = {
    "analyze_video_commerce": ("video_ids",),
    "compare_videos": ("video_ids_a", "video_ids_b"),
    "top_products": ("video_ids",),
}

BUDGET_STEP = (
    "Call get_credit_usage (free) first: get_video_products costs 1 credit per 10 product rows, and videos "
    "fetched earlier are free from the cache."
)
QUOTE_RULE = "Quote the tool's numbers (GMV currency is not stated upstream); do not add numbers up yourself."


# Every argument described (prompts/list shows it to the user filling the prompt in; tests/test_portability.py).
_IDS = "TikTok video ids or video URLs, separated by commas or spaces"
VideoIdsArgument = Annotated[str, Field(description=f"{_IDS} (up to {MAX_VIDEO_IDS}).")]
GroupA = Annotated[str, Field(description=f"The first group's {_IDS} (e.g. one creator's videos).")]
GroupB = Annotated[str, Field(description=f"The second group's {_IDS}, compared with the first.")]
TopN = Annotated[str, Field(description=f"How many products to list: a whole number from 1 to {MAX_TOP} (default 10).")]


def invalid_argument(prompt: str, text: str) -> MCPError:
    """The invalid-params error for a prompt argument, logged as one line (the client sees `text`)."""
    log.info("prompt %s refused: %s", short_echo(prompt), text)
    return MCPError(code=INVALID_PARAMS, message=text)


def _ids(value: str, argument: str, prompt: str) -> list[str]:
    """The prompt argument's ids (comma or space separated ids or video URLs), checked as the tool checks them."""
    try:
        return normalize_video_ids([t for t in _SPLIT.split(value) if t])
    except KeyAPIError as exc:
        text = exc.render().removeprefix("[invalid_input] ")
        raise invalid_argument(prompt, f"[invalid_input] {argument}: {text}") from None


def _top(value: str) -> int:
    """`n` of top_products: prompt arguments are strings on the wire, so the number is read here."""
    text = value.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 3 and 1 <= int(text) <= MAX_TOP):
        raise invalid_argument(
            "top_products",
            f"[invalid_input] n: {short_echo(value)!r} is not a whole number from 1 to {MAX_TOP}. "
            f'Pass n as digits, e.g. "10", and get the prompt again.',
        )
    return int(text)


def _list(ids: list[str]) -> str:
    return "[" + ", ".join(f'"{i}"' for i in ids) + "]"


def analyze_video_commerce(video_ids: VideoIdsArgument) -> str:
    """Which products these TikTok videos sell, how well, and which videos convert best."""
    ids = _ids(video_ids, "video_ids", "analyze_video_commerce")
    return (
        f"Analyze the TikTok commerce of {len(ids)} video(s).\n"
        f"1. {BUDGET_STEP}\n"
        f"2. Call get_video_products once with all of them: video_ids={_list(ids)}. If the answer says "
        "PARTIAL or LEFT OUT, follow its instructions.\n"
        f"3. For which videos convert best, call get_video_products(video_ids={_list(ids)}, "
        'sort_by="gmv_per_1k_views") (free: cached); the first video line is the best.\n'
        "4. Report per video: views, engagement, units sold, GMV and its best products; then which videos "
        "convert best (GMV and units per 1k views, as printed) and which sell nothing. " + QUOTE_RULE
    )


def compare_videos(video_ids_a: GroupA, video_ids_b: GroupB) -> str:
    """Compare two groups of TikTok videos (e.g. two creators) by units, GMV and products."""
    a = _ids(video_ids_a, "video_ids_a", "compare_videos")
    b = _ids(video_ids_b, "video_ids_b", "compare_videos")
    groups = f'[{{"name": "A", "video_ids": {_list(a)}}}, {{"name": "B", "video_ids": {_list(b)}}}]'
    return (
        f"Compare two groups of TikTok videos: A ({len(a)}) and B ({len(b)}).\n"
        f"1. {BUDGET_STEP}\n"
        f"2. Call compare_video_groups(groups={groups}) once: it fetches both groups as one set.\n"
        "3. Report for each group: videos, units, GMV, GMV and units per video, GMV per 1k views and its top "
        "products; then B's differences from A (absolute and %) and the products both groups sell, as the answer "
        "prints them. If it says PARTIAL, follow its last line first. " + QUOTE_RULE
    )


def top_products(video_ids: VideoIdsArgument, n: TopN = "10") -> str:
    """The best-selling products across a set of TikTok videos, with exact totals computed by the server."""
    top = _top(n)
    ids = _ids(video_ids, "video_ids", "top_products")
    return (
        f"Find the top {top} products across {len(ids)} TikTok video(s).\n"
        f"1. {BUDGET_STEP}\n"
        f'2. Call get_video_products(video_ids={_list(ids)}, group_by="product", top={top}). For the top by '
        'units instead of GMV, add sort_by="units" (or avg_price, gmv_per_1k_views).\n'
        f"3. Report the top {top} as a table: product, units, GMV, % of all GMV, number of videos, best video; "
        "then the totals by region and by day. The server computed these sums exactly. " + QUOTE_RULE
    )


def register_prompts(server: MCPServer[Any], live: LiveState) -> None:
    """Add the three prompts and completion of their video-id arguments (and of keyapi://videos/{video_id})."""
    server.prompt(title="Analyze video commerce")(analyze_video_commerce)
    server.prompt(title="Compare two groups of videos")(compare_videos)
    server.prompt(title="Top products across videos")(top_products)

    @server.completion()
    async def complete(
        ref: PromptReference | ResourceTemplateReference,
        argument: CompletionArgument,
        context: CompletionContext | None,
    ) -> Completion | None:
        if isinstance(ref, PromptReference):
            if argument.name not in VIDEO_ID_ARGUMENTS.get(ref.name, ()):
                return None
            as_list = True
        elif ref.uri == VIDEO_URI_TEMPLATE and argument.name == "video_id":
            as_list = False
        else:
            return None
        state = live.get()
        if state is None:
            return Completion(values=[], total=0, has_more=False)
        cached = await state.service.cached_video_ids(limit=10 * MAX_COMPLETIONS)
        return complete_ids(argument.value, cached, as_list=as_list)


def complete_ids(value: str, cached: list[str], *, as_list: bool) -> Completion:
    """Cached ids extending what is typed; in a list argument, the last item, after the ids already typed."""
    if len(value) > MAX_COMPLETION_INPUT:
        return Completion(values=[], total=0, has_more=False)
    head, _, partial = value.rpartition(",") if as_list else ("", "", value)
    typed = {t for t in _SPLIT.split(head) if t}
    prefix = head + "," if head else ""
    partial = partial.strip()
    matches = [vid for vid in cached if vid.startswith(partial) and vid not in typed]
    if as_list and len(typed) >= MAX_VIDEO_IDS:
        matches = []
    values = [prefix + vid for vid in matches[:MAX_COMPLETIONS]]
    return Completion(values=values, total=len(matches), has_more=len(matches) > MAX_COMPLETIONS)
