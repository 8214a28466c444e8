"""Video ids as the tool accepts them (numeric ids or tiktok.com video URLs), and the one numeric-id rule:
`ID_PATTERN` decides what the tool accepts, what a row may carry as an id, and what a resource may name."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from keyapi_mcp.errors import InvalidInput

MAX_VIDEO_IDS = 50

# A TikTok video id is a 64-bit snowflake: 15–20 decimal digits in practice. Accept 1–25 so odd but
# numeric ids still reach the upstream, which is the authority on whether they exist.
# [0-9], not \d: \d also matches other scripts' digits ("႐", "༡"), which must never reach the upstream.
ID_DIGITS = "[0-9]{1,25}"
ID_PATTERN = re.compile(ID_DIGITS)
_URL_RE = re.compile(r"^(?:https?://)?(?:(?:www|m|vm|vt)\.)?tiktok\.com/(?P<path>[^?#\s]*)(?:[?#].*)?$", re.IGNORECASE)
_VIDEO_PATH_RE = re.compile(rf"^(?:@[^/]+/)?(?:video|v)/(?P<id>{ID_DIGITS})(?:\.html)?/?$", re.IGNORECASE)

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
    if ID_PATTERN.fullmatch(token):
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


def numeric_id(value: Any) -> str | None:
    """An identifier the upstream documents as numeric (video, product, user), as digits; else None.

    JSON numbers are accepted (an integral float too, as the upstream sometimes sends them); strings only when
    they are 1–25 ASCII digits after trimming spaces. Anything else may be prose and never reaches the model:
    ids are printed undelimited, at the start of lines.
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value) if value >= 0 else None
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and value >= 0 else None
    if isinstance(value, str):
        text = value.strip()
        return text if ID_PATTERN.fullmatch(text) else None
    return None
