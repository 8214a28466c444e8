"""Pure functions: one call's fetched videos → the result model (structured content), with the derived figures
the model should quote rather than compute (engagement, per-1k-view ratios, average price, sums)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from keyapi_mcp.core.domain import LOCAL_CALLER, DayUsage, FetchOutcome, LedgerEntry, VideoData, iso, next_midnight
from keyapi_mcp.core.rows import UpstreamRow, split_hashtags, video_facts
from keyapi_mcp.presentation.models import (
    CallerUsage,
    Credits,
    CreditUsage,
    LedgerEntryOut,
    ProductOut,
    Summary,
    TopProduct,
    VideoOut,
    VideoProductsResult,
)
from keyapi_mcp.presentation.ranking import SortBy, rank_videos
from keyapi_mcp.presentation.totals import exact, hundredths, money, ratio, share_pct

ResponseFormat = Literal["concise", "detailed"]
TOP_PRODUCTS = 5
LOW_BALANCE_SHARE = 10  # a budget is running out when at most a tenth of it is left
OUT_OF_CREDITS_HINT = "top up at https://keyapi.ai/app/dashboard; cached videos stay free"


def _ratio(num: float | None, den: float | None, scale: float = 1.0, digits: int = 4) -> float | None:
    if num is None or not den:
        return None
    return round(num * scale / den, digits)


def _iso_from_epoch(value: int | None) -> str | None:
    if value is None or value <= 0 or value > 32_503_680_000:
        return None
    return datetime.fromtimestamp(value, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _details(video: UpstreamRow) -> dict[str, Any]:
    """The detailed-only fields: absent (unset) from concise results, so their schema stays small."""
    return {
        "description": video.video_desc,
        "hashtags": split_hashtags(video.hash_tag),
        "cover_url": video.reflow_cover,
        "play_url": video.play_addr,
        "width": video.width,
        "height": video.height,
        "ratio": video.ratio,
        "data_size": video.data_size,
    }


def build_video(
    data: VideoData, response_format: ResponseFormat, now: float | None = None
) -> tuple[VideoOut, list[str]]:
    """One video's output (products ordered by GMV, derived metrics) from its raw rows; `now` adds its age."""
    facts = video_facts(data.rows)
    v = facts.video
    views = v.total_views_cnt
    engagement = None
    if views:
        reactions = (v.total_digg_cnt, v.total_comments_cnt, v.total_shares_cnt, v.total_favorites_cnt)
        engagement = round(sum(x or 0 for x in reactions) / views, 4)
    # A row is a product's totals in this video, so a product listed again (pages that shifted between
    # requests, a faulty upstream) is the same fact twice: its first listing is kept, the rest dropped, so the
    # list, the video's totals, the summary and the totals across videos all count it once.
    firsts: dict[str, UpstreamRow] = {}
    for row in facts.products:
        firsts.setdefault(row.product_id or "", row)
    warnings = list(facts.warnings)
    if len(firsts) < len(facts.products):
        warnings.append(
            f"{len(facts.products) - len(firsts)} repeated listing(s) of a product dropped: each product's first "
            "listing is kept and counted once"
        )
    products = [
        ProductOut(
            product_id=p.product_id or "",
            units_sold=p.total_video_sale_cnt,
            gmv=p.total_video_sale_gmv_amt,
            avg_price=_ratio(p.total_video_sale_gmv_amt, p.total_video_sale_cnt, digits=2),
            units_per_1k_views=_ratio(p.total_video_sale_cnt, views, 1000.0),
            gmv_per_1k_views=_ratio(p.total_video_sale_gmv_amt, views, 1000.0),
        )
        for p in firsts.values()
    ]
    products.sort(key=lambda p: (-(p.gmv or 0.0), -(p.units_sold or 0), p.product_id))
    units_total = sum(p.units_sold or 0 for p in products)
    gmv_total = sum((exact(p.gmv) for p in products if p.gmv is not None), Decimal(0))
    video = VideoOut(
        video_id=data.video_id,
        author_id=v.user_id,
        region=v.region,
        created_at=_iso_from_epoch(v.create_time),
        duration_s=v.duration,
        views=views,
        likes=v.total_digg_cnt,
        comments=v.total_comments_cnt,
        shares=v.total_shares_cnt,
        favorites=v.total_favorites_cnt,
        engagement_rate=engagement,
        units_sold=units_total,
        gmv=money(gmv_total),
        gmv_per_1k_views=hundredths(ratio(gmv_total, views, 1000)),
        units_per_1k_views=hundredths(ratio(units_total, views, 1000)),
        avg_price=hundredths(ratio(gmv_total, units_total)),
        products=products,
        source="cache" if data.from_cache else "upstream",
        fetched_at=iso(data.fetched_at),
        **({"age_seconds": max(0, round(now - data.fetched_at))} if now is not None else {}),
        **(_details(v) if response_format == "detailed" else {}),
    )
    return video, warnings


def build_result(
    outcome: FetchOutcome,
    *,
    daily_limit: int,
    response_format: ResponseFormat = "concise",
    demo: bool = False,
    sort_by: SortBy = "gmv",
    user_limit: int = 0,
) -> VideoProductsResult:
    videos: list[VideoOut] = []
    warnings: list[str] = []
    for vid in outcome.requested:
        data = outcome.videos.get(vid)
        if data is None or not data.rows:
            continue
        video, row_warnings = build_video(data, response_format, outcome.answered_at or None)
        warnings.extend(f"video {vid}: {w}" for w in row_warnings)
        if video.products:
            videos.append(video)
    videos.sort(key=lambda v: (-v.gmv, -v.units_sold, v.video_id))
    if sort_by != "gmv":
        videos = rank_videos(videos, sort_by)
    with_rows = {v.video_id for v in videos}
    # Claimed only for a complete answer: while ids are pending, "no products" is not yet a fact.
    not_found = (
        [v for v in outcome.requested if v in outcome.complete_ids and v not in with_rows] if outcome.complete else []
    )
    all_products = [(v.video_id, p) for v in videos for p in v.products]
    top = sorted(all_products, key=lambda vp: (-(vp[1].gmv or 0.0), vp[1].product_id))[:TOP_PRODUCTS]
    gmv_total = sum((exact(v.gmv) for v in videos), Decimal(0))
    videos = [v.model_copy(update={"gmv_share_pct": share_pct(exact(v.gmv), gmv_total)}) for v in videos]
    summary = Summary(
        videos=len(videos),
        products=len(all_products),
        distinct_products=len({p.product_id for _, p in all_products}),
        units_sold=sum(v.units_sold for v in videos),
        gmv=money(gmv_total),
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
        credits=_with_low_balance(
            credits_block(outcome.spent, outcome.cached_videos, outcome.usage, daily_limit), outcome, user_limit
        ),
        warnings=[*outcome.warnings, *warnings],
        videos_asked=len(outcome.requested),
        sort_by=sort_by,
    )


def _running_out(left: int, limit: int) -> bool:
    return left * LOW_BALANCE_SHARE <= limit


def remaining_for_caller(outcome: FetchOutcome, daily_limit: int, user_limit: int) -> int | None:
    """What the caller may still spend today: the smaller of the daily and per-user remainders; None = no limit."""
    left = []
    if daily_limit and outcome.usage is not None:
        left.append(daily_limit - outcome.usage.spent)
    if user_limit and outcome.caller_usage is not None:
        left.append(user_limit - outcome.caller_usage.spent)
    return max(0, min(left)) if left else None


def low_balance(outcome: FetchOutcome, daily_limit: int, user_limit: int) -> str | None:
    """The low-balance line: the KeyAPI account answered 402 during the call, or a tenth or less of today's
    daily or per-user budget is left. None when neither."""
    notes: list[str] = []
    if outcome.account_exhausted:
        notes.append(f"the KeyAPI account ran out of credits during this call (HTTP 402): {OUT_OF_CREDITS_HINT}")
    reset = iso(next_midnight(outcome.answered_at).timestamp()) if outcome.answered_at else "UTC midnight"
    if daily_limit and outcome.usage is not None:
        left = max(0, daily_limit - outcome.usage.spent)
        if _running_out(left, daily_limit):
            notes.append(f"{left} of {daily_limit} credits left today (KEYAPI_DAILY_CREDIT_LIMIT; resets {reset})")
    if user_limit and outcome.caller_usage is not None:
        left = max(0, user_limit - outcome.caller_usage.spent)
        if _running_out(left, user_limit):
            notes.append(f"{left} of your {user_limit} credits left today (resets {reset})")
    return "; ".join(notes) or None


def _with_low_balance(credits: Credits, outcome: FetchOutcome, user_limit: int) -> Credits:
    note = low_balance(outcome, credits.daily_limit or 0, user_limit)
    return credits if note is None else credits.model_copy(update={"low_balance": note})


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
    caller: str = LOCAL_CALLER,
    caller_usage: DayUsage | None = None,
    user_daily_limit: int = 0,
    max_credits_for_50: int | None = None,
) -> CreditUsage:
    you = None
    if caller_usage is not None and (user_daily_limit or caller != LOCAL_CALLER):
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
        max_credits_for_50_videos=max_credits_for_50,
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
                charged="uncertain" if e.charged == "reserved" else e.charged,
                request_id=e.request_id,
            )
            for e in recent
        ],
    )
