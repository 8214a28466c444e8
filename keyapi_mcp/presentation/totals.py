"""Cross-video totals, computed once by the server (group_by="product").

Models add long columns of numbers unreliably, so the answer carries the sums: each product's units,
GMV, number of videos, best video and share of GMV, and the totals per region and per UTC creation
day. Money is summed as `Decimal` built from each amount's shortest decimal spelling (the number the
upstream sent), so no float rounding accumulates over hundreds of rows, and rounded to the cent once,
at the end. Pure functions over the condensed `VideoOut` models: no I/O, no MCP.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal

from keyapi_mcp.presentation.models import GroupTotal, ProductSplit, ProductTotal, VideoOut, VideoProductsResult

CENT = Decimal("0.01")
UNKNOWN = "unknown"


def exact(amount: float | None) -> Decimal:
    """The amount as the decimal number it was written as (`repr` is the shortest round-tripping spelling)."""
    return Decimal(repr(amount)) if amount is not None else Decimal(0)


def to_cent(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, rounding=ROUND_HALF_EVEN)


def money(amount: Decimal) -> float:
    """Rounded to the cent once; the float's shortest spelling is then that 2-decimal number exactly."""
    return float(to_cent(amount))


def share_pct(part: Decimal, total: Decimal) -> float | None:
    return float((part * 100 / total).quantize(CENT, rounding=ROUND_HALF_EVEN)) if total else None


@dataclass
class _Tally:
    units: int = 0
    gmv: Decimal = field(default_factory=Decimal)
    videos: set[str] = field(default_factory=set)
    views: int = 0  # of the videos counted
    acts: int = 0  # their likes, comments, shares and favorites
    splits: list[tuple[str, int, Decimal]] = field(default_factory=list)  # (video, units, GMV) per video

    def add(self, video_id: str, units: int, gmv: Decimal, views: int = 0, acts: int = 0) -> None:
        self.units += units
        self.gmv += gmv
        self.videos.add(video_id)
        self.views += views
        self.acts += acts
        self.splits.append((video_id, units, gmv))


def ratio(num: Decimal | int | None, den: Decimal | int | None, scale: int = 1) -> Decimal | None:
    """num × scale / den, exact; None when the denominator is 0 or unknown."""
    if num is None or not den:
        return None
    return Decimal(num) * scale / Decimal(den)


def hundredths(value: Decimal | None) -> float | None:
    """To 2 decimals once (half to even), as the text prints it."""
    return None if value is None else float(value.quantize(CENT, rounding=ROUND_HALF_EVEN))


def _four(value: Decimal | None) -> float | None:
    return None if value is None else float(value.quantize(Decimal("0.0001"), rounding=ROUND_HALF_EVEN))


def interactions(video: VideoOut) -> int:
    return sum(x or 0 for x in (video.likes, video.comments, video.shares, video.favorites))


def _video_product_sums(video: VideoOut) -> dict[str, tuple[int, Decimal]]:
    """Per product of one video: (units, GMV). `build.build_video` lists each product once (its first
    listing); rows of a product a caller lists twice are added up, never dropped silently."""
    sums: dict[str, tuple[int, Decimal]] = {}
    for product in video.products:
        units, gmv = sums.get(product.product_id, (0, Decimal(0)))
        sums[product.product_id] = (units + (product.units_sold or 0), gmv + exact(product.gmv))
    return sums


def _measure(t: _Tally, by: str) -> Decimal | None:
    """A product's value of the measure across its videos (GMV ranked as shown: to the cent)."""
    if by == "units":
        return Decimal(t.units)
    if by == "views":
        return Decimal(t.views)
    if by == "avg_price":
        return ratio(t.gmv, t.units)
    if by == "gmv_per_1k_views":
        return ratio(t.gmv, t.views, 1000)
    if by == "units_per_1k_views":
        return ratio(t.units, t.views, 1000)
    if by == "engagement":
        return ratio(t.acts, t.views)
    return to_cent(t.gmv)


def _split_order(split: tuple[str, int, Decimal]) -> tuple[Decimal, int, str]:
    video_id, units, gmv = split
    return (-to_cent(gmv), -units, video_id)  # the best video first (ties: more units, then lower id)


def product_totals(videos: Sequence[VideoOut], sort_by: str = "gmv") -> list[ProductTotal]:
    """Every product across `videos`, ranked by `sort_by` (ties by product id; no value last), with its best
    video, its share of all GMV, and each video's share of ITS units and GMV."""
    tallies: dict[str, _Tally] = {}
    for video in videos:
        acts = interactions(video)
        for product_id, (units, gmv) in _video_product_sums(video).items():
            tallies.setdefault(product_id, _Tally()).add(video.video_id, units, gmv, video.views or 0, acts)
    total = sum((t.gmv for t in tallies.values()), Decimal(0))

    def key(item: tuple[str, _Tally]) -> tuple[bool, Decimal, str]:
        value = _measure(item[1], sort_by)
        return (value is None, -(value if value is not None else Decimal(0)), item[0])

    out = []
    for product_id, tally in sorted(tallies.items(), key=key):
        splits = sorted(tally.splits, key=_split_order)
        best_video, _, best_gmv = splits[0]
        out.append(
            ProductTotal(
                product_id=product_id,
                units_sold=tally.units,
                gmv=money(tally.gmv),
                videos=len(tally.videos),
                best_video_id=best_video,
                best_video_gmv=money(best_gmv),
                gmv_share_pct=share_pct(tally.gmv, total),
                avg_price=hundredths(ratio(tally.gmv, tally.units)),
                views=tally.views,
                gmv_per_1k_views=hundredths(ratio(tally.gmv, tally.views, 1000)),
                units_per_1k_views=hundredths(ratio(tally.units, tally.views, 1000)),
                engagement_rate=_four(ratio(tally.acts, tally.views)),
                by_video=[
                    ProductSplit(
                        video_id=vid,
                        units_sold=units,
                        gmv=money(gmv),
                        units_share_pct=share_pct(Decimal(units), Decimal(tally.units)),
                        gmv_share_pct=share_pct(gmv, tally.gmv),
                    )
                    for vid, units, gmv in splits
                ],
            )
        )
    return out


def _group(videos: Iterable[VideoOut], key: Callable[[VideoOut], str]) -> dict[str, _Tally]:
    groups: dict[str, _Tally] = {}
    for video in videos:
        units = sum(p.units_sold or 0 for p in video.products)
        gmv = sum((exact(p.gmv) for p in video.products), Decimal(0))
        groups.setdefault(key(video), _Tally()).add(video.video_id, units, gmv)
    return groups


def _totals(groups: dict[str, _Tally], order: Callable[[tuple[str, _Tally]], object]) -> list[GroupTotal]:
    total = sum((t.gmv for t in groups.values()), Decimal(0))
    return [
        GroupTotal(
            key=k, videos=len(t.videos), units_sold=t.units, gmv=money(t.gmv), gmv_share_pct=share_pct(t.gmv, total)
        )
        for k, t in sorted(groups.items(), key=order)
    ]


def region_totals(videos: Iterable[VideoOut]) -> list[GroupTotal]:
    """Per region, by GMV (then region code)."""
    groups = _group(videos, lambda v: v.region or UNKNOWN)
    return _totals(groups, lambda item: (-to_cent(item[1].gmv), item[0]))


def day_totals(videos: Iterable[VideoOut]) -> list[GroupTotal]:
    """Per UTC day the videos were created, oldest first (videos without a creation time last)."""
    groups = _group(videos, lambda v: (v.created_at or "")[:10] or UNKNOWN)
    return _totals(groups, lambda item: (item[0] == UNKNOWN, item[0]))


def with_product_totals(result: VideoProductsResult, sort_by: str = "gmv") -> VideoProductsResult:
    """The result with `product_totals` (ranked by `sort_by`) and the summary's `by_region` / `by_day` filled in."""
    summary = result.summary.model_copy(
        update={"by_region": region_totals(result.videos), "by_day": day_totals(result.videos)}
    )
    return result.model_copy(update={"summary": summary, "product_totals": product_totals(result.videos, sort_by)})
