"""Data shapes: video id normalisation, the tolerant upstream row, and the condensed output models.

The upstream is documented loosely (numbers sometimes sent as strings, fields missing), so
`UpstreamRow` converts what it can and turns anything malformed in an optional field into `None`
instead of failing the whole call. Only `video_id` and `product_id` are required: without them a row
cannot be attributed, and `parse_rows` skips it with a warning. Ids (`video_id`, `product_id`, `user_id`)
are documented as numeric and accepted only as digits: they are printed undelimited, so any other text
could pose as our own lines (see `keyapi_mcp.text`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from keyapi_mcp.errors import InvalidInput
from keyapi_mcp.text import clean_text, numeric_id

MAX_VIDEO_IDS = 50
MAX_HASHTAGS = 30
MAX_ABS_AMOUNT = 1e15

# A TikTok video id is a 64-bit snowflake: 15–20 decimal digits in practice. Accept 1–25 so odd but
# numeric ids still reach the upstream, which is the authority on whether they exist.
# [0-9], not \d: \d also matches other scripts' digits ("႐", "༡"), which must never reach the upstream.
_ID_RE = re.compile(r"^[0-9]{1,25}$")
_URL_RE = re.compile(r"^(?:https?://)?(?:(?:www|m|vm|vt)\.)?tiktok\.com/(?P<path>[^?#\s]*)(?:[?#].*)?$", re.IGNORECASE)
_VIDEO_PATH_RE = re.compile(r"^(?:@[^/]+/)?(?:video|v)/(?P<id>[0-9]{1,25})(?:\.html)?/?$", re.IGNORECASE)

ID_HINT = (
    'Pass numeric TikTok video ids (e.g. "7521783049722285367") or full video URLs '
    "(https://www.tiktok.com/@user/video/<id>)."
)
SHORT_LINK_HINT = (
    "Ask the user for the full video URL (https://www.tiktok.com/@user/video/<id>) or the numeric video id, "
    "then call again."
)


def _short(item: str, limit: int = 80) -> str:
    item = "".join(ch if ch.isprintable() else "?" for ch in item)
    return item if len(item) <= limit else item[: limit - 1] + "…"


def canonical_id(digits: str) -> str:
    """One spelling per id: without leading zeros, as the upstream writes them."""
    return digits.lstrip("0") or "0"


def _parse_one(token: str) -> str:
    token = token.strip()
    if _ID_RE.match(token):
        return canonical_id(token)
    match = _URL_RE.match(token)
    if match:
        host_part = token.lower().split("//", 1)[-1]
        if host_part.startswith(("vm.", "vt.")):
            raise InvalidInput(
                f"Item {_short(token)!r} is a TikTok short link, which this server cannot resolve.",
                hint=SHORT_LINK_HINT,
            )
        path = match.group("path")
        video = _VIDEO_PATH_RE.match(path)
        if video:
            return canonical_id(video.group("id"))
        raise InvalidInput(f"Item {_short(token)!r} is a tiktok.com URL but not a video URL.", hint=ID_HINT)
    raise InvalidInput(f"Item {_short(token)!r} is not a TikTok video id or video URL.", hint=ID_HINT)


def normalize_video_ids(items: Sequence[str]) -> list[str]:
    """Turn the tool's `video_ids` items into distinct numeric ids, order kept.

    Each item may be an id, a tiktok.com video URL, or several of those joined by commas. Raises
    `InvalidInput` naming the first bad item; no request may be made for a partially valid list,
    because the model asked for all of them and a silent drop would look like "not found".
    """
    ids: list[str] = []
    seen: set[str] = set()
    for item in items:
        if not isinstance(item, str):
            raise InvalidInput(f"Item {item!r} is not a string.", hint=ID_HINT)
        tokens = [t for t in item.split(",") if t.strip()]
        if not tokens:
            raise InvalidInput(f"Item {_short(item)!r} is empty.", hint=ID_HINT)
        for token in tokens:
            vid = _parse_one(token)
            if vid not in seen:
                seen.add(vid)
                ids.append(vid)
    if not ids:
        raise InvalidInput("video_ids is empty.", hint=ID_HINT)
    if len(ids) > MAX_VIDEO_IDS:
        raise InvalidInput(
            f"{len(ids)} distinct video ids were given; at most {MAX_VIDEO_IDS} fit in one call.",
            hint=f"Split the list into calls of up to {MAX_VIDEO_IDS} ids.",
        )
    return ids


# ---------------------------------------------------------------------------------------------
# Tolerant upstream row


def _lenient_int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) else None
    if isinstance(value, str):
        text = value.strip().replace(",", "")
        if not text or len(text) > 40:
            return None
        if text.lstrip("+-").isdigit():  # exact: a float round trip corrupts integers above 2**53
            return int(text)
        try:
            number = float(text)
        except ValueError:
            return None
        return int(number) if math.isfinite(number) else None
    return None


def _lenient_float(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        text = value.strip().replace(",", "")
        if not text or len(text) > 40:
            return None
        try:
            number = float(text)
        except ValueError:
            return None
    else:
        return None
    # A sanity bound: sums of absurd values must stay finite (no real GMV is near 1e15).
    return number if math.isfinite(number) and abs(number) < MAX_ABS_AMOUNT else None


def _lenient_str(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    return None


def lenient_id(value: Any) -> str | None:
    """A video/product/user id as digits, or None: the upstream documents them as numeric strings, and any
    other text could be prose aimed at the model (ids are printed undelimited, at the start of lines)."""
    return numeric_id(value)


LenientInt = Annotated[int | None, BeforeValidator(_lenient_int)]
LenientFloat = Annotated[float | None, BeforeValidator(_lenient_float)]
LenientStr = Annotated[str | None, BeforeValidator(_lenient_str)]
LenientId = Annotated[str | None, BeforeValidator(lenient_id)]


class UpstreamRow(BaseModel):
    """One row of the upstream `data` array: one (video, product) pair with the video's stats."""

    # Built on the first paid answer, not at start (~1.4 ms): a server that only lists tools never parses a row.
    model_config = ConfigDict(extra="ignore", defer_build=True)

    video_id: LenientId = None
    product_id: LenientId = None
    user_id: LenientId = None
    region: LenientStr = None
    create_time: LenientInt = None
    duration: LenientInt = None
    total_views_cnt: LenientInt = None
    total_digg_cnt: LenientInt = None
    total_comments_cnt: LenientInt = None
    total_shares_cnt: LenientInt = None
    total_favorites_cnt: LenientInt = None
    total_video_sale_cnt: LenientInt = None
    total_video_sale_gmv_amt: LenientFloat = None
    video_desc: LenientStr = None
    hash_tag: LenientStr = None
    reflow_cover: LenientStr = None
    play_addr: LenientStr = None
    width: LenientInt = None
    height: LenientInt = None
    ratio: LenientStr = None
    data_size: LenientInt = None


def parse_rows(raw_rows: Iterable[Any]) -> tuple[list[UpstreamRow], list[str]]:
    """Parse raw upstream rows; skip (and report) rows that cannot be attributed to a video/product."""
    rows: list[UpstreamRow] = []
    warnings: list[str] = []
    skipped = 0
    authors_dropped = 0
    for raw in raw_rows:
        if not isinstance(raw, dict):
            skipped += 1
            continue
        row = UpstreamRow.model_validate(raw)
        if row.video_id is None or row.product_id is None:
            skipped += 1
            continue
        if row.user_id is None and raw.get("user_id") not in (None, ""):
            authors_dropped += 1
        rows.append(row)
    if skipped:
        warnings.append(f"skipped {skipped} upstream row(s) without a numeric video_id/product_id")
    if authors_dropped:
        warnings.append(f"dropped {authors_dropped} non-numeric upstream user_id value(s)")
    return rows, warnings


# ---------------------------------------------------------------------------------------------
# Untrusted text


def split_hashtags(value: str | None) -> list[str]:
    text = clean_text(value, limit=2000) or ""
    tags: list[str] = []
    for token in re.split(r"[\s,]+", text):
        token = token.strip()
        if token.startswith("#") and len(token) > 1:
            tag = token[:100]
            if tag not in tags:
                tags.append(tag)
        if len(tags) >= MAX_HASHTAGS:
            break
    return tags


# ---------------------------------------------------------------------------------------------
# Output models (the tool's outputSchema)


class ProductOut(BaseModel):
    product_id: str
    units_sold: int | None = Field(description="Estimated units sold through this video (total_video_sale_cnt).")
    gmv: float | None = Field(
        description="Estimated GMV through this video (total_video_sale_gmv_amt). Currency not stated upstream."
    )
    avg_price: float | None = Field(description="gmv / units_sold; null when 0 units.")
    units_per_1k_views: float | None
    gmv_per_1k_views: float | None


class VideoOut(BaseModel):
    video_id: str
    author_id: str | None
    region: str | None
    created_at: str | None = Field(description="ISO 8601 UTC, from create_time.")
    duration_s: int | None
    views: int | None
    likes: int | None
    comments: int | None
    shares: int | None
    favorites: int | None
    engagement_rate: float | None = Field(description="(likes+comments+shares+favorites)/views; null when 0 views.")
    units_sold: int = Field(description="Sum over this video's products.")
    gmv: float = Field(description="Sum over this video's products.")
    products: list[ProductOut]
    source: Literal["upstream", "cache"] = Field(description="Where this video's data came from in this call.")
    fetched_at: str = Field(description="When the upstream data was fetched (ISO 8601 UTC).")
    # Detailed only (absent from concise results):
    description: str | None = None
    hashtags: list[str] | None = None
    cover_url: str | None = None
    play_url: str | None = None
    width: int | None = None
    height: int | None = None
    ratio: str | None = None
    data_size: int | None = None


class TopProduct(BaseModel):
    product_id: str
    video_id: str
    units_sold: int | None
    gmv: float | None


class GroupTotal(BaseModel):
    """Totals of the videos sharing one region or one UTC creation day (group_by="product" only)."""

    key: str = Field(description='The region code or the UTC day (YYYY-MM-DD); "unknown" when not stated.')
    videos: int
    units_sold: int
    gmv: float = Field(description="Exact to the cent: summed in cents from the product rows.")


class ProductTotal(BaseModel):
    """One product across every video of the answer (group_by="product")."""

    product_id: str
    units_sold: int = Field(description="Sum over the videos selling it (missing values count as 0).")
    gmv: float = Field(description="Sum over the videos selling it, exact to the cent (summed in cents).")
    videos: int = Field(description="Number of videos selling it.")
    best_video_id: str = Field(description="The video with the most GMV for it (ties: more units, then lower id).")
    best_video_gmv: float
    gmv_share_pct: float | None = Field(description="Its share of the answer's total GMV in %; null when that is 0.")


class Summary(BaseModel):
    videos: int
    products: int = Field(description="Number of (video, product) rows.")
    distinct_products: int
    units_sold: int
    gmv: float
    top_products: list[TopProduct]
    # group_by="product" only (absent otherwise):
    by_region: list[GroupTotal] | None = None
    by_day: list[GroupTotal] | None = None


class Credits(BaseModel):
    spent: int = Field(description="Credits charged by this call (uncertain outcomes included).")
    cached_videos: int = Field(description="Videos answered from cache at no cost.")
    spent_today: int | None = Field(description="Null when the ledger could not be read (see warnings).")
    daily_limit: int | None = Field(description="Null when there is no daily limit.")
    remaining_today: int | None


class VideoProductsResult(BaseModel):
    demo: bool
    complete: bool = Field(description="False when a limit or error stopped the page walk early.")
    next_page_num: int | None = Field(description="Call again with this page_num and pending_ids to continue.")
    pending_ids: list[str] = Field(description="Ids whose product list is not complete yet.")
    not_found: list[str] = Field(description="Requested ids with no product rows (only when complete).")
    videos: list[VideoOut]
    summary: Summary
    credits: Credits
    warnings: list[str]
    # group_by="product" only (absent otherwise): every product's totals, by GMV.
    product_totals: list[ProductTotal] | None = None


class LedgerEntryOut(BaseModel):
    at: str
    page: int | None
    ids: int
    status: int | None
    outcome: str
    charged: Literal["yes", "no", "uncertain"]
    request_id: str | None


class CallerUsage(BaseModel):
    """The calling user's own figures today (never another user's)."""

    caller: str = Field(description="Who the credits are booked for: the token's user or client, static, or local.")
    spent_today: int
    daily_limit: int | None = Field(description="KEYAPI_USER_DAILY_CREDIT_LIMIT; null = no per-user limit.")
    remaining_today: int | None
    uncertain_today: int


class CreditUsage(BaseModel):
    demo: bool
    spent_today: int
    daily_limit: int | None
    remaining_today: int | None
    max_credits_per_call: int
    resets_at: str
    uncertain_today: int = Field(description="Credits counted as spent because the outcome was not seen.")
    saved_today: int = Field(description="Credits the cache saved today.")
    cached_videos: int
    recent: list[LedgerEntryOut] = Field(description="The caller's own last upstream requests, newest first.")
    you: CallerUsage | None = Field(
        default=None, description="The caller's own figures; present with a per-user limit or an identified caller."
    )
