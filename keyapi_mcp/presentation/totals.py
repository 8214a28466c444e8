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

from keyapi_mcp.presentation.models import GroupTotal, ProductTotal, VideoOut, VideoProductsResult

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
    best: tuple[Decimal, int, str] | None = None  # (gmv, units, video_id) of the best video so far

    def add(self, video_id: str, units: int, gmv: Decimal) -> None:
        self.units += units
        self.gmv += gmv
        self.videos.add(video_id)


def _video_product_sums(video: VideoOut) -> dict[str, tuple[int, Decimal]]:
    """Per product of one video: (units, GMV). `build.build_video` lists each product once (its first
    listing); rows of a product a caller lists twice are added up, never dropped silently."""
    sums: dict[str, tuple[int, Decimal]] = {}
    for product in video.products:
        units, gmv = sums.get(product.product_id, (0, Decimal(0)))
        sums[product.product_id] = (units + (product.units_sold or 0), gmv + exact(product.gmv))
    return sums


def _better(candidate: tuple[Decimal, int, str], best: tuple[Decimal, int, str] | None) -> bool:
    if best is None:
        return True
    gmv, units, vid = candidate
    return (gmv, units) > best[:2] or ((gmv, units) == best[:2] and vid < best[2])


def product_totals(videos: Sequence[VideoOut]) -> list[ProductTotal]:
    """Every product across `videos`, by total GMV (then product id), with its best video and GMV share."""
    tallies: dict[str, _Tally] = {}
    for video in videos:
        for product_id, (units, gmv) in _video_product_sums(video).items():
            tally = tallies.setdefault(product_id, _Tally())
            tally.add(video.video_id, units, gmv)
            candidate = (to_cent(gmv), units, video.video_id)  # ranked as shown: to the cent
            if _better(candidate, tally.best):
                tally.best = candidate
    total = sum((t.gmv for t in tallies.values()), Decimal(0))
    ordered = sorted(tallies.items(), key=lambda item: (-to_cent(item[1].gmv), item[0]))  # ranked as shown
    out = []
    for product_id, tally in ordered:
        assert tally.best is not None  # every tally was created for a product row
        out.append(
            ProductTotal(
                product_id=product_id,
                units_sold=tally.units,
                gmv=money(tally.gmv),
                videos=len(tally.videos),
                best_video_id=tally.best[2],
                best_video_gmv=money(tally.best[0]),
                gmv_share_pct=share_pct(tally.gmv, total),
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
    return [
        GroupTotal(key=k, videos=len(t.videos), units_sold=t.units, gmv=money(t.gmv))
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


def with_product_totals(result: VideoProductsResult) -> VideoProductsResult:
    """The result with `product_totals` and the summary's `by_region` / `by_day` filled in."""
    summary = result.summary.model_copy(
        update={"by_region": region_totals(result.videos), "by_day": day_totals(result.videos)}
    )
    return result.model_copy(update={"summary": summary, "product_totals": product_totals(result.videos)})
