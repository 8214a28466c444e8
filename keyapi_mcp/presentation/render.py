"""Pure functions: a result model → the compact text the model reads.

The text carries every fact the question needs (every video_id and product_id with units and GMV) in as few
tokens as possible: one line per video, one per product, no URLs unless `detailed`, then totals, the credit
line and how to continue. Untrusted text is shown only inside `«…»` (`quote_untrusted`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

from keyapi_mcp.core.text import quote_untrusted, safe_token
from keyapi_mcp.presentation.models import (
    Credits,
    CreditUsage,
    GroupTotal,
    ProductTotal,
    VideoOut,
    VideoProductsResult,
)
from keyapi_mcp.presentation.ranking import LABELS, PRODUCT_IN_VIDEO
from keyapi_mcp.presentation.totals import exact, interactions, money, ratio

MAX_CALLER_SHOWN = 200  # surface.caller keeps keys shorter; a longer one is quoted, not trusted
TENTH = Decimal("0.1")
CENT = Decimal("0.01")
DEMO_BANNER = "DEMO DATA: bundled sample (1 real documented example + synthetic videos), not live KeyAPI data."


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def number(value: float | int | None) -> str:
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
    """How much of a result the text shows: everything by default. `keyapi_mcp.presentation.sizing` narrows it to
    fit a token budget; whatever a narrower view leaves out, the text itself says (`_left_out`), with where to
    get it."""

    top: int | None = None  # products per video (group_by="product": product totals) shown; None = all
    media: bool = True  # detailed: the cover/play URLs, size, ratio and bytes line
    about: bool = True  # detailed: description and hashtags
    splits: bool = True  # group_by="product": each video's share of a product sold in several videos


FULL_VIEW = TextView()
VIDEO_URI_TEMPLATE = "keyapi://videos/{video_id}"  # the free re-read of a cached video (surface.resources)


def _age(seconds: int) -> str:
    """A data age, short: 40s, 12min, 3.5h, 2d."""
    if seconds < 90:
        return f"{seconds}s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)}min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f}h".replace(".0h", "h")
    return f"{round(seconds / 86400)}d"


def _eng(v: VideoOut) -> str:
    """Engagement in %, from the exact counts (not the rounded rate: one rounding only)."""
    rate = ratio(interactions(v) * 100, v.views)
    return "?" if rate is None else str(rate.quantize(TENTH, rounding=ROUND_HALF_EVEN))


def _video_head(v: VideoOut, by: str = "gmv", pending: frozenset[str] = frozenset()) -> str:
    views = number(v.views) if by == "views" else _compact(v.views)
    head = (
        f"{v.video_id} | {views} | {_eng(v)} | {v.units_sold} | {number(v.gmv)} | {number(v.gmv_share_pct)} | "
        f"{number(v.gmv_per_1k_views)} | {number(v.units_per_1k_views)}"
    )
    if by == "avg_price":
        head += f" | {number(v.avg_price)}"
    extras = [x for x in (v.region, (v.created_at or "")[:10] or None) if x]
    if v.source == "cache":
        extras.append("cached" if v.age_seconds is None else f"cached {_age(v.age_seconds)} old")
    if v.video_id in pending:
        extras.append("PARTIAL")  # its rows so far: the rest comes with the continuation
    if extras:
        head += " | " + " ".join(extras)
    return head


def _video_header(by: str, complete: bool = True) -> str:
    extra = " | avg price" if by == "avg_price" else ""
    marks = "cached" if complete else "cached, PARTIAL"
    return (
        f"video | views | eng% | units | GMV | % of all GMV | GMV/1k views | units/1k views{extra} | "
        f"region created ({marks})"
    )


def _ranked_by(result: VideoProductsResult) -> str:
    by = result.sort_by or "gmv"
    return LABELS.get(by, by)


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
    head = (
        f"{plural(s.videos, 'video')}, {plural(s.products, 'product')}; units {s.units_sold}; GMV {number(s.gmv)} "
        "(currency not stated upstream)"
    )
    asked = result.videos_asked
    if result.complete and asked:  # an average over a partial set would change: none is printed then
        gmv = money(exact(s.gmv) / asked)
        units = number(float((Decimal(s.units_sold) / asked).quantize(CENT, rounding=ROUND_HALF_EVEN)))
        head += (
            f"; avg per video asked ({asked}, {asked - s.videos} without products): units {units}, GMV {number(gmv)}"
        )
    return head


def partial_line(pending_ids: Sequence[str], asked: int | None, partial_rows: int) -> str:
    """What the totals of an incomplete answer cover, and what is pending (printed before any total)."""
    pending = len(pending_ids)
    full = f"{asked - pending} of {asked} videos asked" if asked is not None else "the videos fetched"
    return (
        f"PARTIAL: every total below covers {full} in full and {plural(partial_rows, 'product row')} of the "
        f"{pending} pending; {pending} pending, so the totals will change (continue as the last line says)."
    )


def _partial(result: VideoProductsResult) -> list[str]:
    if result.complete:
        return []
    pending = set(result.pending_ids)
    rows = sum(len(v.products) for v in result.videos if v.video_id in pending)
    return [partial_line(result.pending_ids, result.videos_asked, rows)]


def _tag(result: VideoProductsResult) -> str:
    """Appended to each totals header of an incomplete answer."""
    return "" if result.complete else " (PARTIAL)"


def credit_line(c: Credits) -> str:
    credit = f"credits: spent {c.spent}, {plural(c.cached_videos, 'video')} from cache; "
    if c.spent_today is None:
        return credit + "today's total unknown (ledger unreadable)"
    if c.daily_limit:
        return credit + f"today {c.spent_today}/{c.daily_limit} ({c.remaining_today} left)"
    return credit + f"today {c.spent_today} (no daily limit)"


def _tail_lines(result: VideoProductsResult, left_out: list[str]) -> list[str]:
    lines: list[str] = []
    if result.not_found:
        lines.append(f"no products ({len(result.not_found)}): " + ",".join(result.not_found))
    if result.warnings:
        lines.append("warnings: " + "; ".join(result.warnings))
    lines.extend(left_out)
    if result.resources and not left_out:  # a left-out line already says where the full lists are
        lines.append(_reread_line(result))
    lines.append(credit_line(result.credits))
    if result.credits.low_balance:
        lines.append(f"LOW BALANCE: {result.credits.low_balance}")
    if not result.complete:
        ids = result.pending_ids
        args = "video_ids=[" + ", ".join(f'"{i}"' for i in ids) + "]"
        if result.next_page_num and result.next_page_num > 1:
            args += f", page_num={result.next_page_num}"
        lines.append(f"INCOMPLETE: pending {','.join(ids)}. Continue with get_video_products({args}).")
    return lines


def _reread_line(result: VideoProductsResult) -> str:
    """Where the cached videos can be read again at no cost (the resource URIs, as one line of text)."""
    if len(result.resources) == 1:
        return f"re-read free while cached: {result.resources[0]}"
    which = "each video above" if len(result.resources) == len(result.videos) else f"{len(result.resources)} videos"
    return f"re-read free while cached: {VIDEO_URI_TEMPLATE} for {which}"


def render_text(result: VideoProductsResult, view: TextView = FULL_VIEW) -> str:
    """The text the model reads: per video (group_by="video"), or per product when the result carries totals."""
    if result.product_totals is not None:
        return _render_products(result, view)
    lines: list[str] = []
    if result.demo:
        lines.append(DEMO_BANNER)
    lines.extend(_partial(result))
    lines.append(_head_line(result))
    by = result.sort_by or "gmv"
    pending = frozenset(result.pending_ids)
    if result.videos:
        order = f"; ranked by {_ranked_by(result)}" if by != "gmv" else ""
        lines.append(_video_header(by, result.complete) + " ; then product | units | GMV | avg" + order)
    for v in result.videos:
        lines.append(_video_head(v, by, pending))
        if v.description is not None or v.hashtags:
            lines.extend(_video_details(v, view))
        for p in v.products[: view.top]:
            lines.append(f"- {p.product_id} | {number(p.units_sold)} | {number(p.gmv)} | {number(p.avg_price)}")
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
        f"result and, free while cached, in {VIDEO_URI_TEMPLATE}."
    ]


def _product_rank(result: VideoProductsResult) -> str:
    """What a video's products are ranked by: the measure, or GMV for the video-level ones."""
    by = result.sort_by or "gmv"
    return LABELS[by] if by in PRODUCT_IN_VIDEO else "GMV"


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
        f"LEFT OUT: {plural(rows, 'product row')} beyond the top {view.top} by {_product_rank(result)} of "
        f"{plural(len(cut), 'video')} "
        f"(units {units}; the video lines' totals include them): "
        + ",".join(f"{v.video_id}(+{n})" for v, n in cut)
        + f". Read their full lists free from {VIDEO_URI_TEMPLATE} (e.g. keyapi://videos/{first}), or call "
        "get_video_products with fewer video_ids (cached videos cost nothing)."
    )
    return lines


_TOTAL_EXTRA = {  # group_by="product": the column the measure adds when it is not one of the fixed ones
    "views": lambda t: number(t.views),
    "gmv_per_1k_views": lambda t: number(t.gmv_per_1k_views),
    "units_per_1k_views": lambda t: number(t.units_per_1k_views),
    "engagement": lambda t: number(float(exact(t.engagement_rate) * 100)) if t.engagement_rate is not None else "?",
}


def _group_line(g: GroupTotal) -> str:
    return f"{g.key} | {g.videos} | {g.units_sold} | {number(g.gmv)} | {number(g.gmv_share_pct)}"


def _split_line(t: ProductTotal) -> str:
    return "  " + "; ".join(
        f"{p.video_id} {p.units_sold} ({number(p.units_share_pct)}%) {number(p.gmv)} ({number(p.gmv_share_pct)}%)"
        for p in t.by_video or []
    )


def _render_products(result: VideoProductsResult, view: TextView) -> str:
    """group_by="product": one line per product across every video (each video's part of it below a product
    sold in several), then region, day and video totals."""
    totals = result.product_totals or []
    s = result.summary
    by = result.sort_by or "gmv"
    extra = _TOTAL_EXTRA.get(by)
    tag = _tag(result)
    lines: list[str] = []
    if result.demo:
        lines.append(DEMO_BANNER)
    lines.extend(_partial(result))
    lines.append(_head_line(result) + f"; {plural(len(totals), 'distinct product')}")
    shown = totals[: view.top]
    if totals:
        column = f" | {LABELS[by]}" if extra else ""
        order = f"; ranked by {LABELS[by]}" if by != "gmv" else ""
        lines.append(
            f"product | units | GMV | % of all GMV | avg price | videos | best video | its GMV{column}{tag}{order}"
        )
        if view.splits and any(t.videos > 1 for t in shown):
            lines.append(
                "  (under a product in 2+ videos, each video: units (% of THIS product's units) GMV "
                "(% of THIS product's GMV))"
            )
    for t in shown:
        line = (
            f"- {t.product_id} | {t.units_sold} | {number(t.gmv)} | {number(t.gmv_share_pct)} | "
            f"{number(t.avg_price)} | {t.videos} | {t.best_video_id} | {number(t.best_video_gmv)}"
        )
        lines.append(line + (f" | {extra(t)}" if extra else ""))
        if view.splits and t.videos > 1:
            lines.append(_split_line(t))
    if s.by_region:
        lines.append(f"region | videos | units | GMV | % of all GMV{tag}")
        lines.extend(_group_line(g) for g in s.by_region)
    if s.by_day:
        lines.append(f"day (created, UTC) | videos | units | GMV | % of all GMV{tag}")
        lines.extend(_group_line(g) for g in s.by_day)
    if result.videos:
        order = f"; ranked by {LABELS[by]}" if by != "gmv" else ""
        lines.append(_video_header(by, result.complete) + order)
        pending = frozenset(result.pending_ids)
        lines.extend(_video_head(v, by, pending) for v in result.videos)
    left_out = []
    if not view.splits and any(t.videos > 1 for t in shown):
        left_out.append(
            "LEFT OUT to fit the output budget: each video's share of the products sold in several videos. "
            "It is in the structured result's product_totals[].by_video."
        )
    if view.top is not None and len(totals) > view.top:
        rest = totals[view.top :]
        rest_gmv = sum((exact(t.gmv) for t in rest), Decimal(0))
        left_out.append(
            f"LEFT OUT: {plural(len(rest), 'product')} ranked {view.top + 1}-{len(totals)} by {LABELS[by]} (units "
            f"{sum(t.units_sold for t in rest)}, GMV {number(money(rest_gmv))}; the totals above include them). "
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
        # An identity comes from the token's issuer; anything but a plain token is shown as quoted data.
        who = safe_token(you.caller, MAX_CALLER_SHOWN) or quote_untrusted(you.caller)
        lines.append(f"your credits today ({who}): {own}; uncertain {you.uncertain_today}")
    cap = f"max per call {usage.max_credits_per_call}"
    if usage.max_credits_for_50_videos is not None:
        cap += f" (1 + 3 per 10 videos asked when more: {usage.max_credits_for_50_videos} for 50)"
    lines.append(f"{cap}; cached videos {usage.cached_videos}")
    if usage.recent:
        lines.append("recent: at | page | ids | http | outcome | charged")
        for e in usage.recent:
            lines.append(f"{e.at} | {e.page} | {e.ids} | {e.status or '-'} | {e.outcome} | {e.charged}")
    return "\n".join(lines)
