"""Pure functions: fetched rows → condensed result model → compact text for the model.

The text is what most clients show the model, so it carries every fact the question needs (every
video_id and product_id with units and GMV) in as few tokens as possible: one line per video, one per
product, no URLs unless `detailed`, then totals, the credit line and how to continue. Structured
content carries the full typed result, derived metrics included.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal

from keyapi_mcp.analysis import exact, money
from keyapi_mcp.domain import DayUsage, FetchOutcome, LedgerEntry, VideoData, iso, next_midnight
from keyapi_mcp.models import (
    CallerUsage,
    Credits,
    CreditUsage,
    LedgerEntryOut,
    ProductOut,
    Summary,
    TopProduct,
    UpstreamRow,
    VideoOut,
    VideoProductsResult,
    parse_rows,
    split_hashtags,
)
from keyapi_mcp.text import clean_text, quote_untrusted, safe_token

ResponseFormat = Literal["concise", "detailed"]
TOP_PRODUCTS = 5
DEMO_BANNER = "DEMO DATA: bundled sample (1 real documented example + synthetic videos), not live KeyAPI data."


def _ratio(num: float | None, den: float | None, scale: float = 1.0, digits: int = 4) -> float | None:
    if num is None or not den:
        return None
    return round(num * scale / den, digits)


def _iso_from_epoch(value: int | None) -> str | None:
    if value is None or value <= 0 or value > 32_503_680_000:
        return None
    return datetime.fromtimestamp(value, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


_URL_RE = re.compile(r"^https?://[^\s«»]+$", re.IGNORECASE)


def _clean_url(value: str | None) -> str | None:
    """Untrusted URL, rendered undelimited: kept only as one http(s) URL without spaces, so it cannot carry prose."""
    text = clean_text(value, 4096)
    return text if text and _URL_RE.match(text) else None


def _clean_token(value: str | None, limit: int) -> str | None:
    """Untrusted short code (region, ratio), rendered undelimited: kept only as one word, e.g. "US", "540p"."""
    return safe_token(clean_text(value, limit), limit)


def _first(rows: Sequence[UpstreamRow], attr: str) -> object:
    for row in rows:
        value = getattr(row, attr)
        if value is not None:
            return value
    return None


def build_video(data: VideoData, response_format: ResponseFormat) -> tuple[VideoOut, list[str]]:
    """One video's output (products ordered by GMV, derived metrics) from its raw rows."""
    source = "cache" if data.from_cache else "upstream"
    rows, warnings = parse_rows(data.rows)
    views = _first(rows, "total_views_cnt")
    likes = _first(rows, "total_digg_cnt")
    comments = _first(rows, "total_comments_cnt")
    shares = _first(rows, "total_shares_cnt")
    favorites = _first(rows, "total_favorites_cnt")
    engagement = None
    if views:
        engagement = round(sum(int(x or 0) for x in (likes, comments, shares, favorites)) / int(views), 4)  # type: ignore[call-overload]
    products = []
    for row in rows:
        units, gmv = row.total_video_sale_cnt, row.total_video_sale_gmv_amt
        products.append(
            ProductOut(
                product_id=row.product_id or "",
                units_sold=units,
                gmv=gmv,
                avg_price=_ratio(gmv, units, digits=2),
                units_per_1k_views=_ratio(units, views, 1000.0),  # type: ignore[arg-type]
                gmv_per_1k_views=_ratio(gmv, views, 1000.0),  # type: ignore[arg-type]
            )
        )
    products.sort(key=lambda p: (-(p.gmv or 0.0), -(p.units_sold or 0), p.product_id))
    fields: dict[str, object] = dict(
        video_id=data.video_id,
        author_id=_first(rows, "user_id"),
        region=_clean_token(_first(rows, "region"), 16),  # type: ignore[arg-type]
        created_at=_iso_from_epoch(_first(rows, "create_time")),  # type: ignore[arg-type]
        duration_s=_first(rows, "duration"),
        views=views,
        likes=likes,
        comments=comments,
        shares=shares,
        favorites=favorites,
        engagement_rate=engagement,
        units_sold=sum(p.units_sold or 0 for p in products),
        gmv=round(sum(p.gmv or 0.0 for p in products), 2),
        products=products,
        source=source,
        fetched_at=iso(data.fetched_at),
    )
    if response_format == "detailed":
        fields.update(
            description=clean_text(_first(rows, "video_desc")),  # type: ignore[arg-type]
            hashtags=split_hashtags(_first(rows, "hash_tag")),  # type: ignore[arg-type]
            cover_url=_clean_url(_first(rows, "reflow_cover")),  # type: ignore[arg-type]
            play_url=_clean_url(_first(rows, "play_addr")),  # type: ignore[arg-type]
            width=_first(rows, "width"),
            height=_first(rows, "height"),
            ratio=_clean_token(_first(rows, "ratio"), 16),  # type: ignore[arg-type]
            data_size=_first(rows, "data_size"),
        )
    return VideoOut(**fields), warnings  # type: ignore[arg-type]


def build_result(
    outcome: FetchOutcome,
    *,
    daily_limit: int,
    response_format: ResponseFormat = "concise",
    demo: bool = False,
) -> VideoProductsResult:
    videos: list[VideoOut] = []
    warnings: list[str] = []
    for vid in outcome.requested:
        data = outcome.videos.get(vid)
        if data is None or not data.rows:
            continue
        video, row_warnings = build_video(data, response_format)
        warnings.extend(f"video {vid}: {w}" for w in row_warnings)
        if video.products:
            videos.append(video)
    videos.sort(key=lambda v: (-v.gmv, -v.units_sold, v.video_id))
    with_rows = {v.video_id for v in videos}
    # Claimed only for a complete answer: while ids are pending, "no products" is not yet a fact.
    not_found = (
        [v for v in outcome.requested if v in outcome.complete_ids and v not in with_rows] if outcome.complete else []
    )
    all_products = [(v.video_id, p) for v in videos for p in v.products]
    top = sorted(all_products, key=lambda vp: (-(vp[1].gmv or 0.0), vp[1].product_id))[:TOP_PRODUCTS]
    summary = Summary(
        videos=len(videos),
        products=len(all_products),
        distinct_products=len({p.product_id for _, p in all_products}),
        units_sold=sum(v.units_sold for v in videos),
        gmv=round(sum(v.gmv for v in videos), 2),
        top_products=[
            TopProduct(product_id=p.product_id, video_id=vid, units_sold=p.units_sold, gmv=p.gmv) for vid, p in top
        ],
    )
    return VideoProductsResult(
        demo=demo,
        complete=outcome.complete,
        next_page_num=outcome.next_page_num if not outcome.complete else None,
        pending_ids=list(outcome.pending_ids),
        not_found=not_found,
        videos=videos,
        summary=summary,
        credits=credits_block(outcome.spent, outcome.cached_videos, outcome.usage, daily_limit),
        warnings=[*outcome.warnings, *warnings],
    )


def _remaining(daily_limit: int, spent: int) -> int | None:
    """Credits left today; None when there is no daily limit (0)."""
    return max(0, daily_limit - spent) if daily_limit else None


def credits_block(spent: int, cached_videos: int, usage: DayUsage | None, daily_limit: int) -> Credits:
    return Credits(
        spent=spent,
        cached_videos=cached_videos,
        spent_today=usage.spent if usage is not None else None,
        daily_limit=daily_limit or None,
        remaining_today=_remaining(daily_limit, usage.spent) if usage is not None else None,
    )


def build_usage(
    usage: DayUsage,
    recent: Sequence[LedgerEntry],
    *,
    cached_videos: int,
    daily_limit: int,
    max_credits_per_call: int,
    now: float,
    demo: bool = False,
    caller: str = "local",
    caller_usage: DayUsage | None = None,
    user_daily_limit: int = 0,
) -> CreditUsage:
    you = None
    if caller_usage is not None and (user_daily_limit or caller != "local"):
        you = CallerUsage(
            caller=caller,
            spent_today=caller_usage.spent,
            daily_limit=user_daily_limit or None,
            remaining_today=_remaining(user_daily_limit, caller_usage.spent),
            uncertain_today=caller_usage.uncertain,
        )
    return CreditUsage(
        you=you,
        demo=demo,
        spent_today=usage.spent,
        daily_limit=daily_limit or None,
        remaining_today=_remaining(daily_limit, usage.spent),
        max_credits_per_call=max_credits_per_call,
        resets_at=iso(next_midnight(now).timestamp()),
        uncertain_today=usage.uncertain,
        saved_today=usage.saved,
        cached_videos=cached_videos,
        recent=[
            LedgerEntryOut(
                at=iso(e.at),
                page=e.page,
                ids=e.ids_count,
                status=e.http_status,
                outcome=e.outcome,
                # A reservation never settled (process killed mid-request) may have been charged.
                charged="uncertain" if e.charged == "reserved" else e.charged,  # type: ignore[arg-type]
                request_id=e.request_id,
            )
            for e in recent
        ],
    )


# ---------------------------------------------------------------------------------------------
# Text rendering


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _num(value: float | int | None) -> str:
    if value is None:
        return "?"
    if isinstance(value, float):
        return f"{value:.2f}".rstrip("0").rstrip(".") if value != int(value) else str(int(value))
    return str(value)


def _compact(value: int | None) -> str:
    if value is None:
        return "?"
    if value >= 1_000_000:
        return f"{value / 1_000_000:.1f}M"
    if value >= 10_000:
        return f"{value / 1_000:.0f}k"
    return str(value)


@dataclass(frozen=True)
class TextView:
    """How much of a result the text shows: everything by default. `keyapi_mcp.sizing` narrows it to fit a token
    budget; whatever a narrower view leaves out, the text itself says (`_left_out`), with where to get it."""

    top: int | None = None  # products per video (group_by="product": product totals) shown; None = all
    media: bool = True  # detailed: the cover/play URLs, size, ratio and bytes line
    about: bool = True  # detailed: description and hashtags


FULL_VIEW = TextView()
VIDEO_RESOURCE = "keyapi://videos/{video_id}"


def _video_head(v: VideoOut) -> str:
    eng = f"{v.engagement_rate * 100:.1f}" if v.engagement_rate is not None else "?"
    head = f"{v.video_id} | {_compact(v.views)} | {eng} | {v.units_sold} | {_num(v.gmv)}"
    extras = [x for x in (v.region, (v.created_at or "")[:10] or None) if x]
    if v.source == "cache":
        extras.append("cached")
    if extras:
        head += " | " + " ".join(extras)
    return head


def _video_details(v: VideoOut, view: TextView) -> list[str]:
    lines = []
    if view.about and v.description:
        lines.append(f"  desc {quote_untrusted(v.description)}")
    if view.about and v.hashtags:
        lines.append(f"  tags {quote_untrusted(' '.join(v.hashtags))}")
    media = [
        f"{k}={val}"
        for k, val in (
            ("cover", v.cover_url),
            ("play", v.play_url),
            ("size", f"{v.width}x{v.height}" if v.width else None),
            ("ratio", v.ratio),
            ("bytes", v.data_size),
        )
        if val
    ]
    if view.media and media:
        lines.append("  " + " ".join(media))
    return lines


def _head_line(result: VideoProductsResult) -> str:
    s = result.summary
    return (
        f"{_count(s.videos, 'video')}, {_count(s.products, 'product')}; units {s.units_sold}; GMV {_num(s.gmv)} "
        "(currency not stated upstream)"
    )


def _tail_lines(result: VideoProductsResult, left_out: list[str]) -> list[str]:
    lines: list[str] = []
    if result.not_found:
        lines.append("no products: " + ",".join(result.not_found))
    if result.warnings:
        lines.append("warnings: " + "; ".join(result.warnings))
    lines.extend(left_out)
    c = result.credits
    credit = f"credits: spent {c.spent}, {_count(c.cached_videos, 'video')} from cache; "
    if c.spent_today is None:
        credit += "today's total unknown (ledger unreadable)"
    elif c.daily_limit:
        credit += f"today {c.spent_today}/{c.daily_limit} ({c.remaining_today} left)"
    else:
        credit += f"today {c.spent_today} (no daily limit)"
    lines.append(credit)
    if not result.complete:
        ids = result.pending_ids
        args = "video_ids=[" + ", ".join(f'"{i}"' for i in ids) + "]"
        if result.next_page_num and result.next_page_num > 1:
            args += f", page_num={result.next_page_num}"
        lines.append(f"INCOMPLETE: pending {','.join(ids)}. Continue with get_video_products({args}).")
    return lines


def render_text(result: VideoProductsResult, view: TextView = FULL_VIEW) -> str:
    """The text the model reads: per video (group_by="video"), or per product when the result carries totals."""
    if result.product_totals is not None:
        return _render_products(result, view)
    lines: list[str] = []
    if result.demo:
        lines.append(DEMO_BANNER)
    lines.append(_head_line(result))
    if result.videos:
        lines.append("video | views | eng% | units | GMV | region created (cached) ; then product | units | GMV | avg")
    for v in result.videos:
        lines.append(_video_head(v))
        if v.description is not None or v.hashtags:
            lines.extend(_video_details(v, view))
        for p in v.products[: view.top]:
            lines.append(f"- {p.product_id} | {_num(p.units_sold)} | {_num(p.gmv)} | {_num(p.avg_price)}")
    lines.extend(_tail_lines(result, _left_out_of_videos(result, view)))
    return "\n".join(lines)


def _detailed(result: VideoProductsResult) -> bool:
    return any(v.description is not None or v.hashtags is not None for v in result.videos)


def _left_out_details(result: VideoProductsResult, view: TextView) -> list[str]:
    if not _detailed(result):
        return []
    hidden = (("cover/play URLs, size, ratio and bytes", view.media), ("descriptions, hashtags", view.about))
    parts = [what for what, shown in hidden if not shown]
    if not parts:
        return []
    return [
        f"LEFT OUT to fit the output budget: the {' and '.join(parts)} of every video. They are in the structured "
        f"result and, free while cached, in {VIDEO_RESOURCE}."
    ]


def _left_out_of_videos(result: VideoProductsResult, view: TextView) -> list[str]:
    lines = _left_out_details(result, view)
    if view.top is None:
        return lines
    cut = [(v, len(v.products) - view.top) for v in result.videos if len(v.products) > view.top]
    if not cut:
        return lines
    rows = sum(n for _, n in cut)
    units = sum(p.units_sold or 0 for v, _ in cut for p in v.products[view.top :])
    first = cut[0][0].video_id
    lines.append(
        f"LEFT OUT: {_count(rows, 'product row')} beyond the top {view.top} by GMV of {_count(len(cut), 'video')} "
        f"(units {units}; the video lines' totals include them): "
        + ",".join(f"{v.video_id}(+{n})" for v, n in cut)
        + f". Read their full lists free from {VIDEO_RESOURCE} (e.g. keyapi://videos/{first}), or call "
        "get_video_products with fewer video_ids (cached videos cost nothing)."
    )
    return lines


def _render_products(result: VideoProductsResult, view: TextView) -> str:
    """group_by="product": one line per product across every video, then region, day and video totals."""
    totals = result.product_totals or []
    s = result.summary
    lines: list[str] = []
    if result.demo:
        lines.append(DEMO_BANNER)
    lines.append(_head_line(result) + f"; {_count(len(totals), 'distinct product')}")
    if totals:
        lines.append("product | units | GMV | GMV share% | videos | best video | its GMV")
    for t in totals[: view.top]:
        share = _num(t.gmv_share_pct) if t.gmv_share_pct is not None else "?"
        lines.append(
            f"- {t.product_id} | {t.units_sold} | {_num(t.gmv)} | {share} | {t.videos} | {t.best_video_id} | "
            f"{_num(t.best_video_gmv)}"
        )
    if s.by_region:
        lines.append("region | videos | units | GMV")
        lines.extend(f"{g.key} | {g.videos} | {g.units_sold} | {_num(g.gmv)}" for g in s.by_region)
    if s.by_day:
        lines.append("day (created, UTC) | videos | units | GMV")
        lines.extend(f"{g.key} | {g.videos} | {g.units_sold} | {_num(g.gmv)}" for g in s.by_day)
    if result.videos:
        lines.append("video | views | eng% | units | GMV | region created (cached)")
        lines.extend(_video_head(v) for v in result.videos)
    left_out = []
    if view.top is not None and len(totals) > view.top:
        rest = totals[view.top :]
        rest_gmv = sum((exact(t.gmv) for t in rest), Decimal(0))
        left_out.append(
            f"LEFT OUT: {_count(len(rest), 'product')} ranked {view.top + 1}-{len(totals)} by GMV (units "
            f"{sum(t.units_sold for t in rest)}, GMV {_num(money(rest_gmv))}; the totals above include them). "
            "They are in the structured result's product_totals. To list them, call again with a larger top or "
            "fewer video_ids (cached videos cost nothing; the text stays under KEYAPI_MAX_OUTPUT_TOKENS)."
        )
    lines.extend(_tail_lines(result, left_out))
    return "\n".join(lines)


def render_usage(usage: CreditUsage) -> str:
    lines = []
    if usage.demo:
        lines.append("DEMO MODE: this ledger is in memory and no real credits are spent.")
    limit = (
        f"{usage.spent_today}/{usage.daily_limit} ({usage.remaining_today} left)"
        if usage.daily_limit
        else f"{usage.spent_today} (no daily limit)"
    )
    lines.append(
        f"credits today: {limit}; resets {usage.resets_at}; uncertain {usage.uncertain_today}; "
        f"saved by cache {usage.saved_today}"
    )
    if usage.you is not None:
        you = usage.you
        own = (
            f"{you.spent_today}/{you.daily_limit} ({you.remaining_today} left)"
            if you.daily_limit
            else f"{you.spent_today} (no per-user limit)"
        )
        lines.append(f"your credits today ({you.caller}): {own}; uncertain {you.uncertain_today}")
    lines.append(f"max per call {usage.max_credits_per_call}; cached videos {usage.cached_videos}")
    if usage.recent:
        lines.append("recent: at | page | ids | http | outcome | charged")
        for e in usage.recent:
            lines.append(f"{e.at} | {e.page} | {e.ids} | {e.status or '-'} | {e.outcome} | {e.charged}")
    return "\n".join(lines)
