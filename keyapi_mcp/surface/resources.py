"""Free reads of what was already paid for: MCP resources over the ledger and the video cache.

- `keyapi://usage`: the credit usage, the same JSON as `get_credit_usage`'s structured result.
- `keyapi://videos/{video_id}`: one cached video's products and metrics, built as the tool builds them
  (`keyapi_mcp.presentation.build.build_video`). Reading it makes no upstream request and spends no credit;
  a video that is not in the cache is a resource-not-found error (JSON-RPC -32602, SEP-2164) saying how to fetch it.

Each `get_video_products` answer names its cached videos' URIs (`resources` in the structured result and
one line of the text; `resource_link` content too with KEYAPI_RESOURCE_LINKS=1), so a client can attach or
re-read them without another paid call.
"""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, ResourceLink

from keyapi_mcp.core.ids import ID_PATTERN, MAX_VIDEO_IDS, canonical_id
from keyapi_mcp.core.text import short_echo
from keyapi_mcp.presentation.build import build_usage, build_video
from keyapi_mcp.presentation.models import CreditUsage, VideoOut, VideoProductsResult
from keyapi_mcp.presentation.render import VIDEO_URI_TEMPLATE
from keyapi_mcp.surface.caller import current_caller
from keyapi_mcp.surface.state import AppState, LiveState

USAGE_URI = "keyapi://usage"
JSON = "application/json"
VIDEO_URI_PREFIX = VIDEO_URI_TEMPLATE.removesuffix("{video_id}")
# The SDK quotes a failed URI in its error (message and data): longer ones are refused before it sees them.
MAX_URI_CHARS = 256


def video_uri(video_id: str) -> str:
    return VIDEO_URI_TEMPLATE.format(video_id=video_id)


async def read_credit_usage(state: AppState) -> CreditUsage:
    """The credit report of `get_credit_usage` (the tool and the `keyapi://usage` resource share it)."""
    settings = state.settings
    snapshot = await state.service.usage_snapshot(current_caller())
    return build_usage(
        snapshot.usage,
        snapshot.recent,
        cached_videos=snapshot.cached_videos,
        daily_limit=settings.daily_credit_limit,
        max_credits_per_call=settings.max_credits_per_call,
        now=snapshot.now,
        demo=state.demo,
        caller=snapshot.caller,
        caller_usage=snapshot.caller_usage,
        user_daily_limit=settings.user_daily_credit_limit,
        max_credits_for_50=state.service.limits.cap_for(None, MAX_VIDEO_IDS)[0] if state.service.limits.sized else None,
    )


async def read_cached_video(state: AppState, video_id: str) -> VideoOut | None:
    """One cached video as the tool would answer it (detailed), or None when it is not cached. Cache only."""
    data = await state.service.cached_video(video_id)
    return None if data is None else build_video(data, "detailed", state.service.store.now())[0]


def cached_video_uris(result: VideoProductsResult, *, cache_ttl: int) -> list[str]:
    """The URI of each video of the answer whose product list is complete in the cache (none when the cache is
    off): each must lead to a free read that succeeds."""
    if cache_ttl <= 0:
        return []
    pending = set(result.pending_ids)
    return [video_uri(v.video_id) for v in result.videos if v.video_id not in pending]


def video_links(result: VideoProductsResult) -> list[ResourceLink]:
    """A `resource_link` per URI in `result.resources` (KEYAPI_RESOURCE_LINKS=1 only, see docs/clients.md)."""
    videos = {video_uri(v.video_id): v for v in result.videos}
    return [
        ResourceLink(
            uri=uri,
            name=f"video {videos[uri].video_id}",
            description=f"{len(videos[uri].products)} products, units {videos[uri].units_sold}, GMV "
            f"{videos[uri].gmv}: cached, free to read",
            mime_type=JSON,
        )
        for uri in result.resources
    ]


def _bad_video_id(video_id: str) -> str:
    what = f"{len(video_id)} digits" if video_id.isascii() and video_id.isdigit() else repr(short_echo(video_id, 40))
    return (
        f"[invalid_input] The video id in keyapi://videos/<id> ({what}) is not a TikTok video id: use 1 to 25 digits."
    )


def unreadable_uri(uri: str) -> MCPError | None:
    """A bounded invalid-params error for a URI no resource can serve and too long to echo, else None."""
    if uri.startswith(VIDEO_URI_PREFIX) and not ID_PATTERN.fullmatch(video_id := uri.removeprefix(VIDEO_URI_PREFIX)):
        if len(uri) > MAX_URI_CHARS:
            return MCPError(code=INVALID_PARAMS, message=_bad_video_id(video_id), data={"uri": short_echo(uri)})
    elif len(uri) > MAX_URI_CHARS:
        return MCPError(
            code=INVALID_PARAMS,
            message=f"[not_found] No resource has a URI of {len(uri)} characters ({short_echo(uri, 40)!r}). "
            "Read keyapi://usage or keyapi://videos/<id> (resources/list, resources/templates/list).",
            data={"uri": short_echo(uri)},
        )
    return None


def _not_cached(video_id: str, state: AppState) -> ResourceNotFoundError:
    ttl = state.settings.cache_ttl_seconds
    why = (
        "the cache is off (KEYAPI_CACHE_TTL_SECONDS=0)"
        if ttl <= 0
        else f"it was not fetched in the last {ttl} s (KEYAPI_CACHE_TTL_SECONDS)"
    )
    return ResourceNotFoundError(
        f"[not_cached] Video {video_id} is not in keyapi-mcp's cache: {why}. Reading a resource never fetches. "
        f'Call get_video_products(video_ids=["{video_id}"]) (paid, see get_credit_usage), then read '
        f"{video_uri(video_id)} again for free."
    )


def register_resources(server: MCPServer[Any], live: LiveState) -> None:
    """Add `keyapi://usage` and the `keyapi://videos/{video_id}` template to `server`.

    A static resource gets no request context in the SDK, so `keyapi://usage` reads the state of the running
    server through `live` (filled by the lifespan); the template gets it from its context.
    """

    @server.resource(
        USAGE_URI,
        name="credit_usage",
        title="KeyAPI credit usage (free)",
        description="Credits spent today (UTC), the daily limit and what remains, cached videos, the last 10 "
        "upstream requests: the same JSON as get_credit_usage. Reading it is free.",
        mime_type=JSON,
    )
    async def credit_usage() -> str:
        state = live.get()
        if state is None:  # only between the server's construction and its start
            raise ResourceError("[unavailable] keyapi-mcp is starting; read keyapi://usage again in a moment.")
        return (await read_credit_usage(state)).model_dump_json()

    @server.resource(
        VIDEO_URI_TEMPLATE,
        name="cached_video",
        title="Cached TikTok video products (free)",
        description="One video's products (units, GMV, average price), views, engagement and details, from "
        "keyapi-mcp's cache of earlier get_video_products answers. Free: never calls KeyAPI. A video not in "
        "the cache is a not-found error.",
        mime_type=JSON,
    )
    async def cached_video(video_id: str, ctx: Context) -> str:  # bare: the SDK resolves the hint at runtime
        state: AppState = ctx.request_context.lifespan_context
        if not ID_PATTERN.fullmatch(video_id):
            raise ResourceNotFoundError(_bad_video_id(video_id))
        vid = canonical_id(video_id)
        video = await read_cached_video(state, vid)
        if video is None:
            raise _not_cached(vid, state)
        return video.model_dump_json(exclude_unset=True)
