"""The tolerant upstream row, and the typed facts of one video built from its rows: cleaned where they enter.

The upstream is documented loosely (numbers sometimes sent as strings, fields missing), so
`UpstreamRow` converts what it can and turns anything malformed in an optional field into `None`
instead of failing the whole call. Only `video_id` and `product_id` are required: without them a row
cannot be attributed, and `parse_rows` skips it with a warning. Ids (`video_id`, `product_id`, `user_id`)
are documented as numeric and accepted only as digits: they are printed undelimited, so any other text
could pose as our own lines (see `keyapi_mcp.core.text`).

Untrusted text is cleaned by the row model itself; `video_facts` turns one video's rows into `VideoFacts`,
whose attributes presentation reads (never row keys).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict

from keyapi_mcp.core.ids import numeric_id
from keyapi_mcp.core.text import clean_text, safe_token

MAX_HASHTAGS = 30
MAX_ABS_AMOUNT = 1e15


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


LenientInt = Annotated[int | None, BeforeValidator(_lenient_int)]
LenientFloat = Annotated[float | None, BeforeValidator(_lenient_float)]
LenientStr = Annotated[str | None, BeforeValidator(_lenient_str)]
LenientId = Annotated[str | None, BeforeValidator(numeric_id)]

_URL_RE = re.compile(r"^https?://[^\s«»]+$", re.IGNORECASE)


def clean_url(value: Any) -> str | None:
    """Untrusted URL, rendered undelimited: kept only as one http(s) URL without spaces, so it cannot carry prose."""
    text = clean_text(_lenient_str(value), 4096)
    return text if text and _URL_RE.match(text) else None


def clean_code(value: Any) -> str | None:
    """Untrusted short code (region, ratio), rendered undelimited: kept only as one word, e.g. "US", "540p"."""
    return safe_token(clean_text(_lenient_str(value), 16), 16)


# Untrusted text, cleaned as it enters: free text is shown only quoted (`quote_untrusted`), the rest only in shape.
CleanText = Annotated[str | None, BeforeValidator(lambda v: clean_text(_lenient_str(v)))]
CleanUrl = Annotated[str | None, BeforeValidator(clean_url)]
CleanCode = Annotated[str | None, BeforeValidator(clean_code)]


class UpstreamRow(BaseModel):
    """One row of the upstream `data` array: one (video, product) pair with the video's stats."""

    # Built on the first paid answer, not at start (~1.4 ms): a server that only lists tools never parses a row.
    model_config = ConfigDict(extra="ignore", defer_build=True)

    video_id: LenientId = None
    product_id: LenientId = None
    user_id: LenientId = None
    region: CleanCode = None
    create_time: LenientInt = None
    duration: LenientInt = None
    total_views_cnt: LenientInt = None
    total_digg_cnt: LenientInt = None
    total_comments_cnt: LenientInt = None
    total_shares_cnt: LenientInt = None
    total_favorites_cnt: LenientInt = None
    total_video_sale_cnt: LenientInt = None
    total_video_sale_gmv_amt: LenientFloat = None
    video_desc: CleanText = None
    hash_tag: LenientStr = None  # shown only as the tags `split_hashtags` finds
    reflow_cover: CleanUrl = None
    play_addr: CleanUrl = None
    width: LenientInt = None
    height: LenientInt = None
    ratio: CleanCode = None
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


def split_hashtags(value: str | None) -> list[str]:
    """The distinct `#tags` of a `hash_tag` value, cleaned, at most `MAX_HASHTAGS`."""
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


@dataclass(frozen=True)
class VideoFacts:
    """Everything the upstream says about one video, typed and cleaned.

    `video` holds the video's own figures, each taken from the first row that states it (every row repeats
    them; some omit one); `products` are its product rows, in upstream order.
    """

    video: UpstreamRow
    products: tuple[UpstreamRow, ...]
    warnings: tuple[str, ...]


def video_facts(raw_rows: Iterable[Any]) -> VideoFacts:
    """One video's facts from its raw upstream rows (rows that cannot be attributed are skipped and reported)."""
    rows, warnings = parse_rows(raw_rows)
    first = {
        name: next((value for row in rows if (value := getattr(row, name)) is not None), None)
        for name in UpstreamRow.model_fields
    }
    return VideoFacts(UpstreamRow.model_construct(**first), tuple(rows), tuple(warnings))
