"""Cross-video product totals (group_by="product") equal the sums computed straight from the upstream rows.

The oracle reads the raw row dicts (not the condensed models) and sums GMV as decimals, rounding to the cent
once; Hypothesis draws catalogues where products recur across videos, values are missing or sent as strings.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import jsonschema
import pytest
from helpers import TOOL, connect, make_settings, parsed, text_of
from hypothesis import given, settings
from hypothesis import strategies as st

from keyapi_mcp.core.domain import DayUsage, FetchOutcome, VideoData
from keyapi_mcp.presentation.build import build_result
from keyapi_mcp.presentation.models import VideoProductsResult
from keyapi_mcp.presentation.render import render_text
from keyapi_mcp.presentation.totals import day_totals, product_totals, region_totals, with_product_totals
from keyapi_mcp.upstream.demo import FakeUpstream, demo_dataset, mock_transport

PRODUCTS = [f"17294222289221437{n:02d}" for n in range(8)]  # a small pool, so products recur across videos
REGIONS = ["US", "GB", "ID", None]
DAY = 86_400
T_2025 = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp())

amounts = st.one_of(
    st.none(),
    st.decimals(min_value=0, max_value=10**7, places=2).map(float),
    st.decimals(min_value=0, max_value=10**5, places=3).map(str),  # as a string, more decimals than cents
    st.integers(min_value=0, max_value=10**6),
)
units = st.one_of(st.none(), st.integers(min_value=0, max_value=10**6), st.integers(0, 10**6).map(str))


@st.composite
def catalogues(draw: st.DrawFn) -> dict[str, list[dict[str, Any]]]:
    n_videos = draw(st.integers(min_value=1, max_value=12))
    data: dict[str, list[dict[str, Any]]] = {}
    for i in range(n_videos):
        vid = str(7_500_000_000_000_000_000 + i)
        region = draw(st.sampled_from(REGIONS))
        created = draw(st.one_of(st.none(), st.integers(0, 20).map(lambda d: T_2025 + d * DAY + 3600)))
        rows = []
        for product in draw(st.lists(st.sampled_from(PRODUCTS), max_size=6)):  # repeats: a product listed twice
            rows.append(
                {
                    "video_id": vid,
                    "product_id": product,
                    "region": region,
                    "create_time": created,
                    "total_views_cnt": 1000,
                    "total_video_sale_cnt": draw(units),
                    "total_video_sale_gmv_amt": draw(amounts),
                }
            )
        data[vid] = rows
    return data


def result_of(data: dict[str, list[dict[str, Any]]]) -> VideoProductsResult:
    outcome = FetchOutcome(
        requested=list(data),
        videos={vid: VideoData(vid, rows, float(T_2025), from_cache=False) for vid, rows in data.items()},
        complete_ids=set(data),
    )
    outcome.usage = DayUsage(spent=0, uncertain=0, saved=0)
    return build_result(outcome, daily_limit=100)


def cents(total: Decimal) -> Decimal:
    return total.quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)


def dec(value: Any) -> Decimal:
    return Decimal(str(value)) if value is not None else Decimal(0)


def first_listings(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rule for a product listed twice in one video: its first listing counts, once."""
    firsts: dict[str, dict[str, Any]] = {}
    for row in rows:
        firsts.setdefault(row["product_id"], row)
    return list(firsts.values())


def oracle(data: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per product, straight from the raw rows: units, GMV, videos and per-video GMV."""
    out: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"units": 0, "gmv": Decimal(0), "per_video": defaultdict(Decimal), "per_video_units": defaultdict(int)}
    )
    for vid, rows in data.items():
        for row in first_listings(rows):
            entry = out[row["product_id"]]
            u = int(row["total_video_sale_cnt"] or 0)
            g = dec(row["total_video_sale_gmv_amt"])
            entry["units"] += u
            entry["gmv"] += g
            entry["per_video"][vid] += g
            entry["per_video_units"][vid] += u
    return out


def group_oracle(data: dict[str, list[dict[str, Any]]], key: Any) -> dict[str, tuple[int, int, Decimal]]:
    groups: dict[str, list[Any]] = defaultdict(lambda: [set(), 0, Decimal(0)])
    for vid, rows in data.items():
        if not rows:
            continue  # a video without products is not in the answer's videos
        group = groups[key(rows[0])]
        group[0].add(vid)
        for row in first_listings(rows):
            group[1] += int(row["total_video_sale_cnt"] or 0)
            group[2] += dec(row["total_video_sale_gmv_amt"])
    return {k: (len(v[0]), v[1], cents(v[2])) for k, v in groups.items()}


@settings(max_examples=200, deadline=None)
@given(catalogues())
def test_product_totals_equal_the_sums_of_the_upstream_rows_for_every_product(data: dict[str, list[dict[str, Any]]]):
    result = result_of(data)
    totals = product_totals(result.videos)
    expected = oracle(data)
    assert {t.product_id for t in totals} == set(expected)
    grand = sum((e["gmv"] for e in expected.values()), Decimal(0))
    for t in totals:
        e = expected[t.product_id]
        assert t.units_sold == e["units"]
        assert Decimal(repr(t.gmv)) == cents(e["gmv"])
        assert t.videos == len(e["per_video"])
        best = max(e["per_video"], key=lambda v: (cents(e["per_video"][v]), e["per_video_units"][v], -int(v)))
        assert t.best_video_id == best
        assert Decimal(repr(t.best_video_gmv)) == cents(e["per_video"][best])
        if grand:
            assert t.gmv_share_pct == float(cents(e["gmv"] * 100 / grand))
        else:
            assert t.gmv_share_pct is None
    # Sorted by GMV, then product id; the shares add up to 100 (each rounded to the cent).
    assert [(-dec(t.gmv), t.product_id) for t in totals] == sorted((-dec(t.gmv), t.product_id) for t in totals)
    if grand:
        assert abs(sum(t.gmv_share_pct or 0 for t in totals) - 100) <= 0.005 * len(totals)

    region = {g.key: (g.videos, g.units_sold, dec(g.gmv)) for g in region_totals(result.videos)}
    assert region == group_oracle(data, lambda row: row["region"] or "unknown")
    day = {g.key: (g.videos, g.units_sold, dec(g.gmv)) for g in day_totals(result.videos)}
    expected_days = group_oracle(
        data,
        lambda row: (
            datetime.fromtimestamp(row["create_time"], UTC).date().isoformat() if row["create_time"] else "unknown"
        ),
    )
    assert day == expected_days
    assert list(day) == sorted(day, key=lambda k: (k == "unknown", k))  # chronological, unknown last


@settings(max_examples=50, deadline=None)
@given(catalogues())
def test_the_product_text_lists_every_product_total_exactly(data: dict[str, list[dict[str, Any]]]):
    result = with_product_totals(result_of(data))
    text = render_text(result)
    lines = [line for line in text.splitlines() if line.startswith("- ")]
    assert len(lines) == len(result.product_totals or [])
    for line, total in zip(lines, result.product_totals or [], strict=True):
        product, units, gmv, _share, _avg, videos, best, _best_gmv = line[2:].split(" | ")
        assert (product, int(units), Decimal(gmv), int(videos), best) == (
            total.product_id,
            total.units_sold,
            dec(total.gmv),
            total.videos,
            total.best_video_id,
        )


def test_a_product_sold_in_two_videos_sums_both_and_names_the_better_one():
    P1, P2 = "1729000000000000001", "1729000000000000002"
    rows = {
        "7500000000000000001": [
            {
                "video_id": "7500000000000000001",
                "product_id": P1,
                "total_video_sale_cnt": 3,
                "total_video_sale_gmv_amt": 0.1,
            },
            {
                "video_id": "7500000000000000001",
                "product_id": P2,
                "total_video_sale_cnt": 1,
                "total_video_sale_gmv_amt": 0.2,
            },
        ],
        "7500000000000000002": [
            {
                "video_id": "7500000000000000002",
                "product_id": P1,
                "total_video_sale_cnt": 4,
                "total_video_sale_gmv_amt": 0.2,
            },
        ],
    }
    totals = {t.product_id: t for t in product_totals(result_of(rows).videos)}
    # 0.1 + 0.2 is 0.30000000000000004 in floats; the total is exactly 0.3.
    assert totals[P1].gmv == 0.3 and repr(totals[P1].gmv) == "0.3"
    assert (totals[P1].units_sold, totals[P1].videos, totals[P1].best_video_id) == (7, 2, "7500000000000000002")
    assert totals[P1].gmv_share_pct == 60.0 and totals[P2].gmv_share_pct == 40.0
    # A tie on GMV and units goes to the lower video id.
    assert totals[P2].best_video_id == "7500000000000000001"


@pytest.mark.anyio
async def test_group_by_product_through_the_client_matches_the_schema_and_the_fake_upstreams_rows():
    data = demo_dataset()
    async with connect(make_settings(), transport=mock_transport(FakeUpstream(data))) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        answer = await client.call_tool(TOOL, {"video_ids": list(data), "group_by": "product"})
        by_video = await client.call_tool(TOOL, {"video_ids": list(data)})
    jsonschema.validate(answer.structured_content, tools[TOOL].output_schema)
    result = parsed(answer)
    assert result.product_totals is not None and result.summary.by_region and result.summary.by_day
    expected = oracle(data)
    assert {t.product_id: (t.units_sold, dec(t.gmv)) for t in result.product_totals} == {
        p: (e["units"], cents(e["gmv"])) for p, e in expected.items()
    }
    text = text_of(answer)
    assert "product | units | GMV | % of all GMV | avg price | videos | best video | its GMV" in text
    assert all(f"- {p} | " in text for p in expected)
    # group_by="video" (the default) carries none of it.
    plain = by_video.structured_content or {}
    assert "product_totals" not in plain and "by_region" not in plain["summary"]
