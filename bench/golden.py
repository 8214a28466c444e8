"""Golden questions: does the text state every figure a conversation needs, so the model computes nothing?

A catalogue of 34 videos by four creators (and 6 more, asked late), where every product is sold through
several videos, and 17 questions an analyst asks of it in one conversation (totals, rankings by units, GMV,
price, engagement and per-1k-view ratios, a product's split across videos, groups compared, regions, videos
that sold nothing, an answer cut short by a credit cap, a later repeat). For each question:

- the calls keyapi-mcp needs (the tools and arguments a model following the server's instructions makes);
- the figures the answer must state, each computed here from the RAW upstream rows with `Decimal`,
  independently of the server's code, and scored as "printed literally": a number on the right line (or
  the right `;`-separated part of it), equal to the exact value rounded to the stated decimals;
- credits (counted by the fake upstream) and text tokens, against the raw-envelope wrapper
  (`bench.naive_server`), which has no cache and pages through the question's videos once.

The session is run in order on one server with a user's default settings (per-call cap, daily limit,
output budget), so repeats and overlaps are answered from the cache as they would be in a conversation.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from typing import Any

from mcp import Client

from bench.common import BENCH_API_KEY, Dataset, fake_upstream, pages_for
from bench.inproc import default_server
from bench.naive_server import build_naive_server
from bench.tokens import count_tokens, naive_pages

TEXT_TOKEN_LIMIT = 25_000  # what some clients accept from one tool result
SHARE_OF_RAW_BAR = 0.12

# -- the catalogue ----------------------------------------------------------------------------------------

CREATORS = ("A", "B", "C", "D")
VIDEOS_PER_CREATOR = {"A": 10, "B": 10, "C": 8, "D": 6}
PRODUCT_PRICES = {  # a catalogue of 14 products, most of them sold by several creators
    str(1_731_000_000_000_000_000 + 7_777 * i): price
    for i, price in enumerate(
        (12.99, 8.5, 24.0, 39.9, 5.25, 64.99, 15.0, 19.99, 29.95, 9.99, 44.5, 3.99, 89.0, 17.49), start=1
    )
}
REGIONS = ("US", "GB", "ID")
_SIG = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def catalogue(seed: int = 23) -> tuple[Dataset, dict[str, list[str]]]:
    """The rows as the upstream sends them (documented fields and types), and each creator's video ids.

    Deterministic for a seed. Every creator has videos without products; one video has 0 views (its
    per-view ratios and engagement are undefined); a few GMV amounts come as strings, as the upstream
    sometimes sends numbers.
    """
    rng = random.Random(seed)
    data: Dataset = {}
    by_creator: dict[str, list[str]] = {}
    products = list(PRODUCT_PRICES)
    n = 0
    for creator in CREATORS:
        user_id = str(7_100_000_000_000_000_000 + ord(creator))
        ids = by_creator.setdefault(creator, [])
        for k in range(VIDEOS_PER_CREATOR[creator]):
            vid = str(7_450_000_000_000_000_000 + 104_729 * n)
            n += 1
            ids.append(vid)
            views = (
                0
                if (creator, k) == ("B", 3)
                else rng.choice([rng.randint(2_000, 90_000), rng.randint(90_000, 9_000_000)])
            )
            stats = {
                "create_time": str(rng.randint(1_704_067_200, 1_764_000_000)),
                "data_size": str(rng.randint(1_000_000, 40_000_000)),
                "duration": rng.randint(8, 300),
                "hash_tag": "#haul #deal ",
                "height": "1024",
                "ratio": "540p",
                "region": rng.choice(REGIONS),
                "total_comments_cnt": rng.randint(0, max(1, views // 400)),
                "total_digg_cnt": rng.randint(0, max(1, views // 15)),
                "total_favorites_cnt": rng.randint(0, max(1, views // 150)),
                "total_shares_cnt": rng.randint(0, max(1, views // 900)),
                "total_views_cnt": views,
                "user_id": user_id,
                "video_desc": f"creator {creator} haul #{k} 🛒✨ #haul #deal ",
                "video_id": vid,
                "width": "576",
            }
            count = 0 if k == 0 else rng.choice((0, 1, 1, 2, 2, 3, 3, 4, 4, 6))
            rows = []
            for pid in rng.sample(products, count):
                units = rng.randint(1, 4_000)
                price = Decimal(str(PRODUCT_PRICES[pid])) * Decimal(rng.choice((90, 95, 100, 100, 105))) / 100
                gmv = (units * price).quantize(Decimal("0.01"))
                sig = "".join(rng.choice(_SIG) for _ in range(160))
                row = dict(stats)
                row.update(
                    product_id=pid,
                    total_video_sale_cnt=units,
                    total_video_sale_gmv_amt=str(gmv) if rng.random() < 0.15 else float(gmv),
                    play_addr=f"https://v19.tiktokcdn-us.com/{rng.getrandbits(128):032x}/video/tos/useast5/"
                    f"{sig[:40]}/?a=1233&bti={sig[40:90]}&br=1558&ft={sig[90:130]}&rc={sig[130:]}&btag=e00090000",
                    reflow_cover=f"https://echosell-images.tos-ap-southeast-1.volces.com/video-cover/{vid}.jpeg",
                )
                rows.append(row)
            data[vid] = rows
    return data, by_creator


# -- expected figures, from the raw rows only ----------------------------------------------------------


def _d(value: Any) -> Decimal:
    return Decimal(str(value))


@dataclass
class Raw:
    """Sums over raw upstream rows, written for this bench (no keyapi_mcp code)."""

    data: Dataset

    def rows(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        return [row for vid in dict.fromkeys(ids) for row in self.data[vid]]

    def units(self, ids: Sequence[str]) -> int:
        return sum(int(r["total_video_sale_cnt"]) for r in self.rows(ids))

    def gmv(self, ids: Sequence[str]) -> Decimal:
        return sum((_d(r["total_video_sale_gmv_amt"]) for r in self.rows(ids)), Decimal(0))

    def views(self, vid: str) -> int:
        return int(self.data[vid][0]["total_views_cnt"])

    def engagement_pct(self, vid: str) -> Decimal:
        r = self.data[vid][0]
        acts = sum(
            int(r[k]) for k in ("total_digg_cnt", "total_comments_cnt", "total_shares_cnt", "total_favorites_cnt")
        )
        return Decimal(acts) * 100 / Decimal(self.views(vid))

    def with_products(self, ids: Sequence[str]) -> list[str]:
        return [v for v in dict.fromkeys(ids) if self.data[v]]

    def per_1k(self, vid: str, measure: str) -> Decimal:
        value = self.gmv([vid]) if measure == "gmv" else Decimal(self.units([vid]))
        return value * 1000 / Decimal(self.views(vid))

    def products(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for r in self.rows(ids):
            p = out.setdefault(r["product_id"], {"units": 0, "gmv": Decimal(0), "videos": {}})
            p["units"] += int(r["total_video_sale_cnt"])
            p["gmv"] += _d(r["total_video_sale_gmv_amt"])
            p["videos"][r["video_id"]] = (int(r["total_video_sale_cnt"]), _d(r["total_video_sale_gmv_amt"]))
        return out

    def regions(self, ids: Sequence[str]) -> dict[str, tuple[int, Decimal]]:
        out: dict[str, tuple[int, Decimal]] = {}
        for vid in self.with_products(ids):
            region = self.data[vid][0]["region"]
            units, gmv = out.get(region, (0, Decimal(0)))
            out[region] = (units + self.units([vid]), gmv + self.gmv([vid]))
        return out


def ranked(items: dict[str, Decimal | int], n: int) -> list[str]:
    """The top n keys by value, highest first, ties by key (as the issue asks: ties broken by id)."""
    return sorted(items, key=lambda k: (-items[k], k))[:n]


# -- figures and how they are found in a text -------------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    """One number the answer must print: in a `;`-part of a line holding every `near` word (the whole line every
    `line` word), within the block of the line that starts with `under` (that line and the indented lines after
    it), if given."""

    what: str
    value: Decimal | int
    decimals: int = 0
    near: tuple[str, ...] = ()
    under: str | None = None
    line: tuple[str, ...] = ()  # words the whole line must hold (e.g. which comparison it is)
    step: int = -1  # which call's text (default: the question's last)
    signed: bool = False  # a difference: printed with its sign

    def spellings(self) -> set[Decimal]:
        q = Decimal(1).scaleb(-self.decimals)
        return {Decimal(self.value).quantize(q, rounding=r) for r in (ROUND_HALF_EVEN, ROUND_HALF_UP)}


@dataclass(frozen=True)
class Order:
    """Ids that must lead the lines of a ranking in this order (lines starting with an id of `universe`)."""

    what: str
    ids: tuple[str, ...]
    universe: frozenset[str]
    step: int = -1


@dataclass(frozen=True)
class Words:
    """A label that must be printed (e.g. that totals are partial), on one line with every word."""

    what: str
    words: tuple[str, ...]
    step: int = 0


Check = Figure | Order | Words
_NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?![\w])")
_LEAD_ID = re.compile(r"^\s*(?:[-#]\s*)?(?:\d+\.\s+)?(\d{6,})\b")


def _blocks(text: str, under: str | None) -> list[str]:
    lines = text.splitlines()
    if under is None:
        return lines
    out: list[str] = []
    for i, line in enumerate(lines):
        m = _LEAD_ID.match(line)
        if m and m.group(1) == under:
            out.append(line)
            for follow in lines[i + 1 :]:
                if not follow.startswith("  "):
                    break
                out.append(follow)
    return out


def _numbers(part: str, decimals: int, signed: bool) -> set[Decimal]:
    found = set()
    for token in _NUMBER.findall(part.replace(",", " , ")):
        digits = token.lstrip("+-").partition(".")[2]
        if len(digits) > decimals or (signed and token[0] not in "+-" and Decimal(token) != 0):
            continue
        found.add(Decimal(token))
    return found


def found(check: Check, texts: Sequence[str]) -> bool:
    text = texts[check.step]
    if isinstance(check, Words):
        return any(all(w in line for w in check.words) for line in text.splitlines())
    if isinstance(check, Order):
        leading = [m.group(1) for line in text.splitlines() if (m := _LEAD_ID.match(line))]
        leading = [i for i in dict.fromkeys(leading) if i in check.universe]
        return tuple(leading[: len(check.ids)]) == check.ids
    wanted = check.spellings()
    for line in _blocks(text, check.under):
        if not all(re.search(rf"(?<!\w){re.escape(w)}(?!\w)", line) for w in check.line):
            continue
        for part in line.split(";"):
            near = all(re.search(rf"(?<!\w){re.escape(w)}(?!\w)", part) for w in check.near)
            if near and wanted & _numbers(part, check.decimals, check.signed):
                return True
    return False


# -- the questions ------------------------------------------------------------------------------------------


@dataclass
class Question:
    ask: str
    calls: list[tuple[str, dict[str, Any]]]
    checks: list[Check]
    continue_from: bool = False  # the second call is the one the first answer's text names
    ids: list[str] = field(default_factory=list)  # the videos the question is about (the wrapper pages them)


def _money(what: str, value: Decimal, **kw: Any) -> Figure:
    return Figure(what, value, 2, **kw)


def _pct_change(new: Decimal, base: Decimal) -> Decimal:
    return (new - base) * 100 / base


def questions(data: Dataset, creators: dict[str, list[str]]) -> list[Question]:
    raw = Raw(data)
    a, b, c, d = (creators[k] for k in CREATORS)
    ab = a + b
    every = a + b + c + d
    qs: list[Question] = []
    all_products = frozenset(PRODUCT_PRICES)
    all_videos = frozenset(data)

    # 1. totals of a 20-video set
    qs.append(
        Question(
            f"How much did these {len(ab)} videos sell in total, and on average per video?",
            [("get_video_products", {"video_ids": ab})],
            [
                Figure("total units", raw.units(ab), near=("units",)),
                _money("total GMV", raw.gmv(ab), near=("GMV",)),
                Figure("videos with products", len(raw.with_products(ab)), near=("videos",)),
                _money("average GMV per video asked", raw.gmv(ab) / len(ab), near=("avg", "GMV")),
                Figure("average units per video asked", Decimal(raw.units(ab)) / len(ab), 2, near=("avg", "units")),
            ],
        )
    )
    # 2. top 3 products by units
    prods = raw.products(ab)
    top_units = ranked({p: v["units"] for p, v in prods.items()}, 3)
    qs.append(
        Question(
            "Which 3 products sold the most units across them?",
            [("get_video_products", {"video_ids": ab, "group_by": "product", "sort_by": "units", "top": 3})],
            [Order("top 3 by units", tuple(top_units), all_products)]
            + [Figure(f"units of #{i + 1}", prods[p]["units"], under=p) for i, p in enumerate(top_units)],
        )
    )
    # 3. the best product by GMV and its share of all GMV
    top_gmv = ranked({p: v["gmv"] for p, v in prods.items()}, 1)[0]
    qs.append(
        Question(
            "Which product brought the most GMV, and what share of all their GMV is that?",
            [("get_video_products", {"video_ids": ab, "group_by": "product", "top": 1})],
            [
                Order("best product by GMV", (top_gmv,), all_products),
                _money("its GMV", prods[top_gmv]["gmv"], under=top_gmv),
                Figure("its % of all GMV", prods[top_gmv]["gmv"] * 100 / raw.gmv(ab), 2, under=top_gmv),
            ],
        )
    )
    # 3b. the best video and its share of the set's GMV
    video_gmv = {v: raw.gmv([v]) for v in raw.with_products(ab)}
    best_vid = ranked(video_gmv, 1)[0]
    qs.append(
        Question(
            "Which single video brought the most GMV, and what share of all their GMV is that?",
            [("get_video_products", {"video_ids": ab, "top": 1})],
            [
                Order("best video by GMV", (best_vid,), all_videos),
                _money("its GMV", video_gmv[best_vid], under=best_vid),
                Figure("its % of all GMV", video_gmv[best_vid] * 100 / raw.gmv(ab), 2, under=best_vid),
            ],
        )
    )
    # 4. conversion: GMV per 1k views, per video
    viewed = [v for v in raw.with_products(ab) if raw.views(v)]
    by_gmv_rate = ranked({v: raw.per_1k(v, "gmv") for v in viewed}, 3)
    qs.append(
        Question(
            "Which videos turn views into GMV best (GMV per 1,000 views)? The top 3.",
            [("get_video_products", {"video_ids": ab, "sort_by": "gmv_per_1k_views", "top": 1})],
            [Order("top 3 by GMV/1k views", tuple(by_gmv_rate), all_videos)]
            + [
                Figure(f"GMV/1k views of #{i + 1}", raw.per_1k(v, "gmv"), 2, under=v) for i, v in enumerate(by_gmv_rate)
            ],
        )
    )
    # 5. units per 1k views
    best_units_rate = ranked({v: raw.per_1k(v, "units") for v in viewed}, 1)[0]
    qs.append(
        Question(
            "And which one sells the most units per 1,000 views?",
            [("get_video_products", {"video_ids": ab, "sort_by": "units_per_1k_views", "top": 1})],
            [
                Order("best by units/1k views", (best_units_rate,), all_videos),
                Figure("its units/1k views", raw.per_1k(best_units_rate, "units"), 2, under=best_units_rate),
            ],
        )
    )
    # 6. one product across its videos: the best video, each video's share of ITS units and GMV
    spread = max(prods, key=lambda p: (len(prods[p]["videos"]), p))
    pv = prods[spread]["videos"]
    best_video = ranked({v: g for v, (_, g) in pv.items()}, 1)[0]
    checks6: list[Check] = [Figure("videos selling it", len(pv), under=spread)]
    for vid, (units, gmv) in pv.items():
        checks6.append(
            Figure(
                f"{vid}: % of its units", Decimal(units) * 100 / prods[spread]["units"], 2, under=spread, near=(vid,)
            )
        )
        checks6.append(Figure(f"{vid}: % of its GMV", gmv * 100 / prods[spread]["gmv"], 2, under=spread, near=(vid,)))
    checks6.append(Words("best video named on its line", (spread, best_video), step=-1))
    qs.append(
        Question(
            f"Product {spread} is in many of these videos: which video sold it best, and what share of that "
            "product's units and GMV did each video take?",
            [("get_video_products", {"video_ids": ab, "group_by": "product"})],
            checks6,
        )
    )
    # 7-8. groups compared (creator A vs B: cached; then C, new, vs A: only C is paid for)
    for names in (("A", "B"), ("A", "C")):
        groups = [(name, creators[name]) for name in names]
        checks: list[Check] = []
        stats = {}
        for name, ids in groups:
            units, gmv = raw.units(ids), raw.gmv(ids)
            views = sum(raw.views(v) for v in raw.with_products(ids))
            stats[name] = (Decimal(units), gmv, gmv / len(ids))
            gp = raw.products(ids)
            best = ranked({p: v["gmv"] for p, v in gp.items()}, 1)[0]
            checks += [
                Figure(f"{name} units", units, near=(name,)),
                _money(f"{name} GMV", gmv, near=(name,)),
                _money(f"{name} GMV per video", gmv / len(ids), near=(name,)),
                Figure(f"{name} units per video", Decimal(units) / len(ids), 2, near=(name,)),
                Figure(f"{name} GMV per 1k views", gmv * 1000 / views, 2, near=(name,)),
                _money(f"{name}'s best product's GMV", gp[best]["gmv"], near=(name, "top", best)),
            ]
        base, other = stats[names[0]], stats[names[1]]
        vs = f"{names[1]} vs {names[0]}"
        for label, i, decimals in (("units", 0, 0), ("GMV", 1, 2), ("GMV/video", 2, 2)):
            checks.append(
                Figure(
                    f"{vs}: {label} difference", other[i] - base[i], decimals, line=(vs,), near=(label,), signed=True
                )
            )
            checks.append(
                Figure(
                    f"{vs}: {label} % difference",
                    _pct_change(other[i], base[i]),
                    2,
                    line=(vs,),
                    near=(label,),
                    signed=True,
                )
            )
        both = sorted(set(raw.products(groups[0][1])) & set(raw.products(groups[1][1])))
        checks += [Words(f"sold by both: {p}", ("both", p), step=-1) for p in both]
        qs.append(
            Question(
                f"Compare creator {names[0]}'s videos with creator {names[1]}'s: units, GMV, per video, the "
                "differences, each one's best product and the products both sell.",
                [("compare_video_groups", {"groups": [{"name": n, "video_ids": ids} for n, ids in groups]})],
                checks,
                ids=[v for _, ids in groups for v in ids],
            )
        )
    # 8b. three groups: every pair compared (all cached by now)
    trio = [(name, creators[name]) for name in ("A", "B", "C")]
    stats3 = {name: (Decimal(raw.units(ids)), raw.gmv(ids)) for name, ids in trio}
    checks3: list[Check] = []
    for later, earlier in (("B", "A"), ("C", "A"), ("C", "B")):
        vs = f"{later} vs {earlier}"
        for label, i, decimals in (("units", 0, 0), ("GMV", 1, 2)):
            new, base = stats3[later][i], stats3[earlier][i]
            checks3.append(
                Figure(f"{vs}: {label} difference", new - base, decimals, line=(vs,), near=(label,), signed=True)
            )
            checks3.append(
                Figure(f"{vs}: {label} % difference", _pct_change(new, base), 2, line=(vs,), near=(label,), signed=True)
            )
    qs.append(
        Question(
            "And creators A, B and C side by side: how far apart is each pair in units and GMV?",
            [("compare_video_groups", {"groups": [{"name": n, "video_ids": ids} for n, ids in trio]})],
            checks3,
            ids=[v for _, ids in trio for v in ids],
        )
    )
    # 9. GMV by region over everything fetched so far plus creator D (new)
    regions = raw.regions(every)
    qs.append(
        Question(
            f"Over all {len(every)} videos, how do GMV and units split by region, and what share of GMV is each?",
            [("get_video_products", {"video_ids": every, "group_by": "product", "top": 1})],
            [_money(f"{r} GMV", g, near=(r,)) for r, (_, g) in regions.items()]
            + [Figure(f"{r} units", u, near=(r,)) for r, (u, _) in regions.items()]
            + [Figure(f"{r} % of all GMV", g * 100 / raw.gmv(every), 2, near=(r,)) for r, (_, g) in regions.items()],
        )
    )
    # 10. average selling price across videos (GMV / units per product)
    pe = raw.products(every)
    price = {p: v["gmv"] / v["units"] for p, v in pe.items()}
    top_price = ranked(price, 2)
    qs.append(
        Question(
            "Which 2 products have the highest average selling price across all of them?",
            [("get_video_products", {"video_ids": every, "group_by": "product", "sort_by": "avg_price", "top": 2})],
            [Order("top 2 by average price", tuple(top_price), all_products)]
            + [Figure(f"avg price of #{i + 1}", price[p], 2, under=p) for i, p in enumerate(top_price)],
        )
    )
    # 11. engagement
    eng = {v: raw.engagement_pct(v) for v in raw.with_products(every) if raw.views(v)}
    best_eng = ranked(eng, 1)[0]
    qs.append(
        Question(
            "Which video has the highest engagement rate?",
            [("get_video_products", {"video_ids": every, "sort_by": "engagement", "top": 1})],
            [
                Order("best engagement", (best_eng,), all_videos),
                Figure("its engagement %", eng[best_eng], 1, under=best_eng),
            ],
        )
    )
    # 12. videos that sold nothing
    nothing = [v for v in every if not data[v]]
    qs.append(
        Question(
            "Which of them sold nothing?",
            [("get_video_products", {"video_ids": every, "top": 1})],
            [Figure("how many sold nothing", len(nothing), near=("no products",))]
            + [Words(f"{v} listed", ("no products", v)) for v in nothing],
        )
    )
    # 13. one product across all videos
    pid = max(pe, key=lambda p: (len(pe[p]["videos"]), p))
    qs.append(
        Question(
            f"How many units of {pid} were sold across all of them, and in how many videos?",
            [("get_video_products", {"video_ids": every, "group_by": "product"})],
            [Figure("units", pe[pid]["units"], under=pid), Figure("videos", len(pe[pid]["videos"]), under=pid)],
        )
    )
    # 14. an answer cut short by a 1-credit cap, then continued as its text says
    fresh = _fresh_set(data, every)
    qs.append(
        Question(
            f"(credit cap 1) How much did these {len(fresh)} new videos sell?",
            [("get_video_products", {"video_ids": fresh, "max_credits": 1}), ("get_video_products", {})],
            [
                Words("first answer says its totals are partial", ("PARTIAL",), step=0),
                Figure("and how many videos are pending", len(fresh), near=("pending",), step=0),
                Figure("total units once complete", raw.units(fresh), near=("units",)),
                _money("total GMV once complete", raw.gmv(fresh), near=("GMV",)),
            ],
            continue_from=True,
        )
    )
    # 15. later, the first 20 and the new 6 together: all cached, free
    superset = ab + fresh
    qs.append(
        Question(
            f"Later: those first {len(ab)} and the {len(fresh)} new ones together, units and GMV?",
            [("get_video_products", {"video_ids": superset, "top": 1})],
            [
                Figure("total units", raw.units(superset), near=("units",)),
                _money("total GMV", raw.gmv(superset), near=("GMV",)),
            ],
        )
    )
    for q in qs:
        if not q.ids:
            q.ids = list(dict.fromkeys(i for _, args in q.calls for i in args.get("video_ids", [])))
    return qs


FRESH_SEED = 99


def _fresh_set(data: Dataset, taken: Sequence[str]) -> list[str]:
    """Videos not asked about before, added to the catalogue: 6 videos with more than one page of rows."""
    rng = random.Random(FRESH_SEED)
    products = list(PRODUCT_PRICES)
    ids = []
    for k in range(6):
        vid = str(7_460_000_000_000_000_000 + 7_919 * k)
        template = dict(data[next(v for v in taken if data[v])][0])
        rows = []
        for pid in rng.sample(products, 3):
            units = rng.randint(1, 3_000)
            row = dict(template, video_id=vid, product_id=pid, total_video_sale_cnt=units)
            row["total_video_sale_gmv_amt"] = float(
                (units * Decimal(str(PRODUCT_PRICES[pid]))).quantize(Decimal("0.01"))
            )
            rows.append(row)
        data[vid] = rows
        ids.append(vid)
    return ids


# -- the run ------------------------------------------------------------------------------------------------


_CONTINUE = re.compile(r"Continue with get_video_products\(video_ids=(\[[^\]]*\])(?:, page_num=(\d+))?\)")


def continuation(text: str) -> dict[str, Any]:
    """The arguments of the call an incomplete answer's text names, as a model reads them."""
    m = _CONTINUE.search(text)
    if m is None:
        raise AssertionError(f"the answer names no continuation: {text[-300:]}")
    return {"video_ids": json.loads(m.group(1)), **({"page_num": int(m.group(2))} if m.group(2) else {})}


async def _ask(client: Client, q: Question) -> tuple[list[str], list[dict[str, Any]]]:
    texts: list[str] = []
    structured: list[dict[str, Any]] = []
    for tool, args in q.calls:
        if q.continue_from and not args and texts:
            args = continuation(texts[-1])
        result = await client.call_tool(tool, args)
        text = "\n".join(c.text for c in result.content if getattr(c, "type", "") == "text")  # type: ignore[union-attr]
        texts.append(text)  # an error's text too: it states none of the figures
        structured.append(result.structured_content or {})
    return texts, structured


def minimum_credits(data: Dataset, asked: Sequence[Sequence[str]]) -> list[int]:
    known: set[str] = set()
    out = []
    for ids in asked:
        new = [v for v in dict.fromkeys(ids) if v not in known]
        out.append(pages_for(sum(len(data[v]) for v in new)) if new else 0)
        known.update(ids)
    return out


async def run(*, seed: int = 23, server: Callable[[str], Any] | None = None) -> dict[str, Any]:
    data, creators = catalogue(seed)
    qs = questions(data, creators)
    minimum = minimum_credits(data, [q.ids for q in qs])
    per_question: list[dict[str, Any]] = []
    with fake_upstream(data) as upstream:
        fake = upstream.fake
        async with Client((server or default_server)(upstream.url)) as keyapi:
            for q in qs:
                before = fake.charged
                texts, _ = await _ask(keyapi, q)
                spent = fake.charged - before
                per_question.append(
                    {
                        "question": q.ask,
                        "calls": [tool for tool, _ in q.calls],
                        "videos": len(q.ids),
                        "credits": spent,
                        "text_tokens": sum(count_tokens(t) for t in texts),
                        "largest_text_tokens": max(count_tokens(t) for t in texts),
                        "figures": len(q.checks),
                        "missing": [c.what for c in q.checks if not found(c, texts)],
                        "texts": texts,
                    }
                )
        async with Client(build_naive_server(upstream.url, BENCH_API_KEY)) as naive:
            for q, row in zip(qs, per_question, strict=True):
                before = fake.charged
                pages = await naive_pages(naive, q.ids)
                assert all(json.loads(p)["code"] == 0 for p in pages)
                row["wrapper_calls"] = len(pages)
                row["wrapper_credits"] = fake.charged - before
                row["wrapper_tokens"] = sum(count_tokens(p) for p in pages)
    for row, m in zip(per_question, minimum, strict=True):
        row["minimum_credits"] = m
    figures = sum(r["figures"] for r in per_question)
    missing = sum(len(r["missing"]) for r in per_question)
    text_tokens = sum(r["text_tokens"] for r in per_question)
    wrapper_tokens = sum(r["wrapper_tokens"] for r in per_question)
    credits = sum(r["credits"] for r in per_question)
    share = text_tokens / wrapper_tokens
    return {
        "questions": len(per_question),
        "videos": len(data),
        "rows": sum(len(r) for r in data.values()),
        "figures_expected": figures,
        "figures_printed": figures - missing,
        "questions_fully_answered": sum(1 for r in per_question if not r["missing"]),
        "credits": {
            "keyapi": credits,
            "minimum": sum(minimum),
            "wrapper": sum(r["wrapper_credits"] for r in per_question),
        },
        "tokens": {"keyapi_text": text_tokens, "wrapper": wrapper_tokens},
        "text_share_of_wrapper": round(share, 4),
        "per_question": [{k: v for k, v in r.items() if k != "texts"} for r in per_question],
        "sample": {r["question"]: r["texts"][-1] for r in per_question if r["calls"][0] == "compare_video_groups"},
        "bars": {
            "every golden figure printed literally": missing == 0,
            "text ≤ 12% of the raw-envelope wrapper's tokens": share <= SHARE_OF_RAW_BAR,
            "credits ≤ the wrapper's on every question": all(
                r["credits"] <= r["wrapper_credits"] for r in per_question
            ),
            "credits = the minimum over the set": credits == sum(minimum),
            "every answer under 25,000 tokens": all(r["largest_text_tokens"] < TEXT_TOKEN_LIMIT for r in per_question),
        },
    }
