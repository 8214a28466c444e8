"""Rankings by any measure, shares that say what of what, and groups of videos compared: pure, exact.

A model asked "top 3 by units" or "which video converts best" must not sort or divide long columns itself,
so the server orders every list by the measure asked (`sort_by`), prints the ratios, and compares named
groups of videos. Values are computed as `Decimal` from the amounts as the upstream wrote them; ties are
broken by id (ascending), and a missing measure (0 views, 0 units) ranks last. No I/O, no MCP.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal, TypeVar, get_args

from keyapi_mcp.presentation.models import (
    GroupDifference,
    GroupProduct,
    GroupStats,
    ProductOut,
    VideoOut,
)
from keyapi_mcp.presentation.totals import exact, hundredths, interactions, money, ratio, share_pct

SortBy = Literal["gmv", "units", "views", "gmv_per_1k_views", "units_per_1k_views", "engagement", "avg_price"]
SORT_BY: tuple[SortBy, ...] = get_args(SortBy)
LABELS: dict[str, str] = {
    "gmv": "GMV",
    "units": "units",
    "views": "views",
    "gmv_per_1k_views": "GMV/1k views",
    "units_per_1k_views": "units/1k views",
    "engagement": "eng%",
    "avg_price": "avg price",
}
# Measures of a product within one video (views and engagement are the video's, the same for all its products).
PRODUCT_IN_VIDEO: frozenset[str] = frozenset({"gmv", "units", "avg_price", "gmv_per_1k_views", "units_per_1k_views"})

T = TypeVar("T")


def video_measure(v: VideoOut, by: SortBy) -> Decimal | None:
    """One video's value of the measure (exact)."""
    gmv = exact(v.gmv)
    if by == "gmv":
        return gmv
    if by == "units":
        return Decimal(v.units_sold)
    if by == "views":
        return None if v.views is None else Decimal(v.views)
    if by == "gmv_per_1k_views":
        return ratio(gmv, v.views, 1000)
    if by == "units_per_1k_views":
        return ratio(v.units_sold, v.views, 1000)
    if by == "engagement":
        return ratio(interactions(v), v.views, 100) if v.views else None
    return ratio(gmv, v.units_sold)


def product_measure(p: ProductOut, views: int | None, by: SortBy) -> Decimal | None:
    """One product row's value within its video; video-level measures fall back to its GMV."""
    gmv = exact(p.gmv) if p.gmv is not None else None
    if by == "units":
        return None if p.units_sold is None else Decimal(p.units_sold)
    if by == "avg_price":
        return ratio(gmv, p.units_sold)
    if by == "gmv_per_1k_views":
        return ratio(gmv, views, 1000)
    if by == "units_per_1k_views":
        return ratio(p.units_sold, views, 1000)
    return gmv


def ranked(items: Iterable[T], value: Callable[[T], Decimal | None], ident: Callable[[T], str]) -> list[T]:
    """Highest value first, ties by id; items without a value last (by id)."""

    def key(item: T) -> tuple[bool, Decimal, str]:
        v = value(item)
        return (v is None, -(v if v is not None else Decimal(0)), ident(item))

    return sorted(items, key=key)


def rank_videos(videos: Sequence[VideoOut], by: SortBy) -> list[VideoOut]:
    """Videos by the measure, and each video's products by it too (by GMV for the video-level measures)."""
    out = []
    for v in ranked(videos, lambda v: video_measure(v, by), lambda v: v.video_id):
        products = ranked(v.products, lambda p, v=v: product_measure(p, v.views, by), lambda p: p.product_id)
        out.append(v.model_copy(update={"products": products}))
    return out


# -- groups of videos compared ------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupTally:
    """One group's exact sums: what its printed figures and its differences are computed from."""

    name: str
    asked: int
    counted: int  # its videos whose rows are in the answer: the averages' divisor
    with_products: int
    units: int
    gmv: Decimal
    views: int
    products: dict[str, tuple[int, Decimal, int]]  # product -> (units, GMV, videos)

    def measure(self, label: str) -> Decimal | None:
        return {
            "units": Decimal(self.units),
            "GMV": self.gmv,
            "GMV/video": ratio(self.gmv, self.counted),
            "units/video": ratio(self.units, self.counted),
            "GMV/1k views": ratio(self.gmv, self.views, 1000),
        }[label]


COMPARED = ("units", "GMV", "GMV/video", "units/video", "GMV/1k views")


def group_tally(name: str, ids: Sequence[str], videos: dict[str, VideoOut], counted: set[str]) -> GroupTally:
    """Sums over the group's videos in `videos` (those with products); `counted`: videos whose rows are in the
    answer (complete ones, with or without products, and partly fetched ones)."""
    members = [videos[v] for v in ids if v in videos]
    products: dict[str, tuple[int, Decimal, int]] = {}
    for v in members:
        for p in v.products:
            u, g, c = products.get(p.product_id, (0, Decimal(0), 0))
            products[p.product_id] = (u + (p.units_sold or 0), g + exact(p.gmv), c + 1)
    return GroupTally(
        name=name,
        asked=len(ids),
        counted=sum(1 for v in ids if v in counted),
        with_products=len(members),
        units=sum(v.units_sold for v in members),
        gmv=sum((exact(v.gmv) for v in members), Decimal(0)),
        views=sum(v.views or 0 for v in members),
        products=products,
    )


def group_stats(t: GroupTally, *, top: int, by: Literal["gmv", "units"]) -> GroupStats:
    """The group's printed figures (money to the cent, ratios to 2 decimals) and its top products."""
    order = ranked(t.products, lambda pid: Decimal(t.products[pid][0 if by == "units" else 1]), lambda pid: pid)
    per_video = t.measure("GMV/video")
    return GroupStats(
        name=t.name,
        videos=t.asked,
        videos_counted=t.counted,
        videos_with_products=t.with_products,
        units_sold=t.units,
        gmv=money(t.gmv),
        gmv_per_video=money(per_video) if per_video is not None else None,
        units_per_video=hundredths(t.measure("units/video")),
        views=t.views,
        gmv_per_1k_views=hundredths(t.measure("GMV/1k views")),
        units_per_1k_views=hundredths(ratio(t.units, t.views, 1000)),
        products=len(t.products),
        top_products=[
            GroupProduct(product_id=pid, units_sold=u, gmv=money(g), videos=c)
            for pid in order[:top]
            for u, g, c in [t.products[pid]]
        ],
    )


def differences(base: GroupTally, other: GroupTally) -> list[GroupDifference]:
    """`other` minus `base` for each compared figure, from the exact values: absolute (units exact, the rest to
    2 decimals) and in % of `base` (None when `base` is 0 or a value is undefined)."""
    out = []
    for label in COMPARED:
        a, b = base.measure(label), other.measure(label)
        diff = None if a is None or b is None else b - a
        out.append(
            GroupDifference(
                group=other.name,
                baseline=base.name,
                measure=label,
                difference=None if diff is None else (int(diff) if label == "units" else hundredths(diff)),
                pct=None if diff is None or a is None else share_pct(diff, a),
            )
        )
    return out


def shared_products(videos: dict[str, VideoOut], groups: dict[str, Sequence[str]]) -> list[str]:
    """Products sold by at least two of the groups, by id."""
    seen: dict[str, set[str]] = {}
    for name, ids in groups.items():
        for vid in ids:
            v = videos.get(vid)
            for p in v.products if v is not None else ():
                seen.setdefault(p.product_id, set()).add(name)
    return sorted(pid for pid, names in seen.items() if len(names) >= 2)
