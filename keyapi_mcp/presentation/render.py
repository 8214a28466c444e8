"""Pure functions: a result model → the compact text the model reads.

The text carries every fact the question needs (every video_id and product_id with units and GMV) in as few
tokens as possible: one line per video, one per product, no URLs unless `detailed`, then totals, the credit
line and how to continue. Untrusted text is shown only inside `«…»` (`quote_untrusted`).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from keyapi_mcp.core.text import quote_untrusted, safe_token
from keyapi_mcp.presentation.models import CreditUsage, VideoOut, VideoProductsResult
from keyapi_mcp.presentation.totals import exact, money

MAX_CALLER_SHOWN = 200  # surface.caller keeps keys shorter; a longer one is quoted, not trusted
DEMO_BANNER = "DEMO DATA: bundled sample (1 real documented example + synthetic videos), not live KeyAPI data."


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
    """How much of a result the text shows: everything by default. `keyapi_mcp.presentation.sizing` narrows it to
    fit a token budget; whatever a narrower view leaves out, the text itself says (`_left_out`), with where to
    get it."""

    top: int | None = None  # products per video (group_by="product": product totals) shown; None = all
    media: bool = True  # detailed: the cover/play URLs, size, ratio and bytes line
    about: bool = True  # detailed: description and hashtags


FULL_VIEW = TextView()
VIDEO_URI_TEMPLATE = "keyapi://videos/{video_id}"  # the free re-read of a cached video (surface.resources)


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
        f"result and, free while cached, in {VIDEO_URI_TEMPLATE}."
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
        + f". Read their full lists free from {VIDEO_URI_TEMPLATE} (e.g. keyapi://videos/{first}), or call "
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
        # An identity comes from the token's issuer; anything but a plain token is shown as quoted data.
        who = safe_token(you.caller, MAX_CALLER_SHOWN) or quote_untrusted(you.caller)
        lines.append(f"your credits today ({who}): {own}; uncertain {you.uncertain_today}")
    lines.append(f"max per call {usage.max_credits_per_call}; cached videos {usage.cached_videos}")
    if usage.recent:
        lines.append("recent: at | page | ids | http | outcome | charged")
        for e in usage.recent:
            lines.append(f"{e.at} | {e.page} | {e.ids} | {e.status or '-'} | {e.outcome} | {e.charged}")
    return "\n".join(lines)
