"""Groups of videos compared (compare_video_groups): their union fetched once, then per group its totals,
per-video averages and top products, the differences between each pair of groups, and the products they share.

Pure functions over the union's result (`presentation.build.build_result`): no I/O, no MCP.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from keyapi_mcp.presentation.models import GroupComparisonResult, GroupDifference, VideoProductsResult
from keyapi_mcp.presentation.ranking import differences, group_stats, group_tally, shared_products
from keyapi_mcp.presentation.render import DEMO_BANNER, credit_line, number, partial_line, plural

Group = tuple[str, Sequence[str]]


def build_comparison(
    result: VideoProductsResult,
    complete_ids: set[str],
    groups: Sequence[Group],
    *,
    top: int,
    by: Literal["gmv", "units"] = "gmv",
) -> GroupComparisonResult:
    """The comparison of `groups` from `result`, the answer for their union (fetched as one set).

    A video asked in two groups counts in both. Averages divide by a group's videos whose rows are in the
    answer (complete ones, with or without products, and partly fetched ones), so an incomplete answer's
    averages are those of what was fetched, and the text says it is partial.
    """
    videos = {v.video_id: v for v in result.videos}
    pending = set(result.pending_ids)
    counted = {vid for _, ids in groups for vid in ids if vid in videos or (vid in complete_ids and vid not in pending)}
    tallies = [group_tally(name, ids, videos, counted) for name, ids in groups]
    member: dict[str, int] = {}
    for _, ids in groups:
        for vid in ids:
            member[vid] = member.get(vid, 0) + 1
    return GroupComparisonResult(
        demo=result.demo,
        complete=result.complete,
        next_page_num=result.next_page_num,
        pending_ids=result.pending_ids,
        not_found=result.not_found,
        videos=len(member),
        groups=[group_stats(t, top=top, by=by) for t in tallies],
        # every pair, the later group against the earlier one (with 2 groups: the second against the first)
        differences=[
            d for i, base in enumerate(tallies) for other in tallies[i + 1 :] for d in differences(base, other)
        ],
        shared_products=shared_products(videos, {name: ids for name, ids in groups}),
        overlap=[vid for vid, n in member.items() if n > 1],
        credits=result.credits,
        warnings=result.warnings,
        sort_by=by,
        partial_rows=sum(len(videos[v].products) for v in pending if v in videos),
    )


def _signed(value: float | int | None) -> str:
    if value is None:
        return "?"
    text = number(value)
    return text if text.startswith("-") else "+" + text


def _difference(d: GroupDifference) -> str:
    pct = f" ({_signed(d.pct)}%)" if d.pct is not None else ""
    return f"{d.measure} {_signed(d.difference)}{pct}"


def render_comparison(c: GroupComparisonResult) -> str:
    """The text the model reads: one line per group, one per comparison with the first, top products, shared."""
    lines: list[str] = []
    if c.demo:
        lines.append(DEMO_BANNER)
    if not c.complete:
        lines.append(partial_line(c.pending_ids, c.videos, c.partial_rows))
    tag = "" if c.complete else " (PARTIAL)"
    lines.append(
        f"{plural(len(c.groups), 'group')} compared over {plural(c.videos, 'video')}, fetched as one set "
        "(GMV currency not stated upstream)"
    )
    lines.append(
        f"group | videos (with products) | units | GMV | GMV/video | units/video | GMV/1k views | units/1k views{tag}"
    )
    for g in c.groups:
        lines.append(
            f"{g.name} | {g.videos} ({g.videos_with_products}) | {g.units_sold} | {number(g.gmv)} | "
            f"{number(g.gmv_per_video)} | {number(g.units_per_video)} | {number(g.gmv_per_1k_views)} | "
            f"{number(g.units_per_1k_views)}"
        )
    pairs: dict[str, list[GroupDifference]] = {}
    for d in c.differences:
        pairs.setdefault(f"{d.group} vs {d.baseline}", []).append(d)
    for pair, diffs in pairs.items():
        lines.append(f"{pair}: " + "; ".join(_difference(d) for d in diffs))
    label = "GMV" if c.sort_by == "gmv" else "units"
    lines.append(f"each group's top products by {label}: product units GMV videos{tag}")
    for g in c.groups:
        items = "; ".join(f"{p.product_id} {p.units_sold} {number(p.gmv)} {p.videos}" for p in g.top_products)
        lines.append(f"{g.name} top: {items or 'none'}")
    shared = "both groups" if len(c.groups) == 2 else "2+ groups"
    lines.append(f"sold by {shared} ({len(c.shared_products)}): " + (",".join(c.shared_products) or "none"))
    if c.overlap:
        lines.append("in more than one group (counted in each): " + ",".join(c.overlap))
    if c.not_found:
        lines.append(f"no products ({len(c.not_found)}): " + ",".join(c.not_found))
    if c.warnings:
        lines.append("warnings: " + "; ".join(c.warnings))
    lines.append(credit_line(c.credits))
    if not c.complete:
        ids = ", ".join(f'"{i}"' for i in c.pending_ids)
        page = f", page_num={c.next_page_num}" if c.next_page_num and c.next_page_num > 1 else ""
        lines.append(
            f"INCOMPLETE: pending {','.join(c.pending_ids)}. Continue with get_video_products(video_ids=[{ids}]"
            f"{page}), then call compare_video_groups again with the same groups (cached videos cost nothing)."
        )
    return "\n".join(lines)
