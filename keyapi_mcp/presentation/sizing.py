"""Answers sized to fit: the text stays under KEYAPI_MAX_OUTPUT_TOKENS, and says what it left out.

Clients cap what a tool may return (some at 25k tokens) and every token of an answer is context the
model pays for. The count is estimated here without a tokenizer (none is a run-time dependency): each
piece of text is charged at least what a BPE tokenizer spends on it in the worst case this text meets
(ids and numbers, random-looking URL parts, user text in any script), so the estimate stays above the
real count; bench/README.md ("Output budget") gives the calibration against the bench's tokenizer, and
tests/test_sizing.py checks it.

When the full text does not fit, the view narrows step by step, least useful first: the media line of
detailed answers (long signed URLs), then descriptions and hashtags, then the products per video (or
product totals) down to the top N by GMV. The renderer names whatever a narrower view leaves out and
where to get it (`keyapi_mcp.format`); the structured result always carries everything.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import replace

from keyapi_mcp.presentation.models import VideoProductsResult
from keyapi_mcp.presentation.ranking import LABELS, PRODUCT_IN_VIDEO
from keyapi_mcp.presentation.render import TextView, render_text

# A piece: one run of digits, of ASCII letters or of other characters, or one other ASCII character; each with
# the space before it, which BPE merges into the piece that follows.
_PIECES = re.compile(r" ?(?:[0-9]+|[A-Za-z]+|[^\x00-\x7f]+|[\x00-\x7f])", re.DOTALL)
_WORDLIKE = re.compile(r"[A-Z]?[a-z]+|[A-Z]{1,3}")


def _piece_tokens(piece: str) -> int:
    core = piece[1:] if len(piece) > 1 and piece[0] == " " else piece
    first = core[0]
    if first.isascii():
        if first.isdigit():
            return math.ceil(len(core) / 2.3)
        if first.isalpha():
            # A dictionary word merges into few tokens; random mixed case (URL signatures) into many.
            return math.ceil(len(core) / (4 if _WORDLIKE.fullmatch(core) else 1.4))
        return 1  # punctuation, space, control: at most one token each
    # Other scripts and emoji: at most one token per UTF-8 byte of the compatibility form (a tokenizer may
    # expand a ligature such as U+FDFA into many characters before encoding).
    return len(unicodedata.normalize("NFKC", core).encode())


def estimate_tokens(text: str) -> int:
    """An upper estimate of the tokens a model's tokenizer spends on `text`."""
    return sum(_piece_tokens(piece) for piece in _PIECES.findall(text))


def _views(result: VideoProductsResult, top: int | None) -> list[TextView]:
    """The views to try, widest first. Every one keeps the user's `top` cap (if any)."""
    detailed = result.product_totals is None and any(
        v.description is not None or v.hashtags is not None for v in result.videos
    )
    views = [TextView(top=top)]
    if detailed:
        views += [TextView(top=top, media=False), TextView(top=top, media=False, about=False)]
    if result.product_totals is not None:
        views.append(TextView(top=top, splits=False))  # each video's share of a product: the longest lines
    return views


def _longest(result: VideoProductsResult) -> int:
    if result.product_totals is not None:
        return len(result.product_totals)
    return max((len(v.products) for v in result.videos), default=0)


def fit_text(result: VideoProductsResult, *, max_tokens: int, top: int | None = None) -> str:
    """The text of the widest view of `result` that fits `max_tokens` (0 = no budget).

    The common answer fits whole and is rendered once. If even the narrowest view (no products listed) does
    not fit, that view is returned: it is the shortest complete statement of the answer, and it names
    everything it leaves out.
    """
    full_text = render_text(result)
    if top is None and (max_tokens <= 0 or estimate_tokens(full_text) <= max_tokens):
        return full_text
    views = _views(result, top)
    for view in views:
        text = full_text if view == TextView() else render_text(result, view)
        if max_tokens <= 0 or estimate_tokens(text) <= max_tokens:
            return text
    narrowest = views[-1]
    # Fewer products per video (or product totals): the largest cap that fits, by bisection (the text grows with it).
    low, high = 0, min(_longest(result), top if top is not None else _longest(result))
    best = render_text(result, replace(narrowest, top=0))
    while low < high:
        mid = (low + high + 1) // 2
        text = render_text(result, replace(narrowest, top=mid))
        if estimate_tokens(text) <= max_tokens:
            low, best = mid, text
        else:
            high = mid - 1
    return best


def _shares(counts: list[int], budget: int) -> list[int]:
    """Split `budget` over lists of `counts` entries: each gets an equal share, what a short list leaves goes
    to the longer ones (water-filling), so one huge list cannot crowd the others out."""
    shares = [0] * len(counts)
    left = budget
    pending = sorted(range(len(counts)), key=lambda i: counts[i])
    while pending:
        i = pending.pop(0)
        shares[i] = min(counts[i], left // (len(pending) + 1))
        left -= shares[i]
    return shares


def cap_structured(result: VideoProductsResult, max_products: int, *, cache_ttl: int) -> VideoProductsResult:
    """`result` with its structured lists of products bounded (0 = no bound), saying what it leaves out.

    The videos' product lists together keep at most `max_products` rows, the first of each video's list (by
    GMV, or by `sort_by`), and `product_totals` its first `max_products` products in their order. Every total
    (per video, summary, by region and day) is computed before, over every row, and stays as it is. The
    warning names where the rest is: the cache holds every row fetched, readable per video for free.
    """
    if max_products <= 0:
        return result
    counts = [len(v.products) for v in result.videos]
    totals = result.product_totals
    if sum(counts) <= max_products and (totals is None or len(totals) <= max_products):
        return result
    notes = []
    sort_by = result.sort_by or "gmv"
    by = LABELS[sort_by] if sort_by in PRODUCT_IN_VIDEO else "GMV"  # the order a video's products are in
    videos = result.videos
    if sum(counts) > max_products:
        shares = _shares(counts, max_products)
        videos = [
            v.model_copy(update={"products": v.products[:share]}) if share < len(v.products) else v
            for v, share in zip(result.videos, shares, strict=True)
        ]
        cut = [(v.video_id, share, len(v.products)) for v, share in zip(result.videos, shares, strict=True)]
        cut = [c for c in cut if c[1] < c[2]]
        named = ", ".join(f"video {vid} {kept} of {n}" for vid, kept, n in cut[:5]) + (", …" if len(cut) > 5 else "")
        where = (
            "each video's full list is free to read at keyapi://videos/<video_id>"
            if cache_ttl > 0
            else "the cache is off (KEYAPI_CACHE_TTL_SECONDS=0), so ask for fewer videos to see more rows"
        )
        notes.append(
            f"the structured result lists {sum(shares)} of {sum(counts)} product rows (the first of each video's "
            f"list, by {by}; at most {max_products}, KEYAPI_MAX_STRUCTURED_PRODUCTS): {named}; {where}"
        )
    if totals is not None and len(totals) > max_products:
        notes.append(f"product_totals lists the first {max_products} of {len(totals)} products by {LABELS[sort_by]}")
    notes.append("every unit, GMV and count of the answer is over all rows")
    return result.model_copy(
        update={
            "videos": videos,
            "product_totals": totals[:max_products] if totals is not None else None,
            "warnings": [*result.warnings, "; ".join(notes)],
        }
    )
