"""Answers a conversation needs, stated by the server: rankings by any measure, per-video ratios, shares that
say what of what, groups compared in one walk, and partial totals labelled as partial (issue 23).

Tool behaviour goes through the SDK's in-memory `Client` against the fake upstream on 127.0.0.1; the
expected figures are computed here from the raw demo rows. The ranking and comparison functions are also
tested directly.
"""

from __future__ import annotations

import json
import re
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import pytest
from fakes import FakeUpstreamServer, synthetic_dataset
from helpers import (
    NO_PRODUCTS,
    RESELLS,
    THREE_ROWS,
    TOOL,
    TWELVE_ROWS,
    ZERO_VIEWS,
    assert_tool_error,
    connect,
    make_settings,
    parsed,
    text_of,
)

from keyapi_mcp.core.budget import sized_cap
from keyapi_mcp.presentation.models import GroupComparisonResult, ProductOut, VideoOut
from keyapi_mcp.presentation.ranking import SORT_BY, differences, group_tally, rank_videos, ranked, video_measure
from keyapi_mcp.presentation.totals import exact, product_totals
from keyapi_mcp.upstream.demo import DOCUMENTED_VIDEO_ID, FakeUpstream, demo_dataset

COMPARE = "compare_video_groups"
DEMO = demo_dataset()
ALL = [DOCUMENTED_VIDEO_ID, THREE_ROWS, TWELVE_ROWS, ZERO_VIEWS, NO_PRODUCTS, RESELLS]
CENT = Decimal("0.01")


def d(value: Any) -> Decimal:
    return Decimal(str(value))


def two(value: Decimal) -> str:
    """As the text prints a 2-decimal figure: trailing zeros dropped."""
    text = str(value.quantize(CENT, rounding=ROUND_HALF_EVEN))
    return text.rstrip("0").rstrip(".") if "." in text else text


def raw_products(ids: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for vid in ids:
        for r in DEMO[vid]:
            p = out.setdefault(r["product_id"], {"units": 0, "gmv": Decimal(0), "videos": {}})
            p["units"] += int(r["total_video_sale_cnt"])
            p["gmv"] += d(r["total_video_sale_gmv_amt"])
            p["videos"][vid] = (int(r["total_video_sale_cnt"]), d(r["total_video_sale_gmv_amt"]))
    return out


def leading_ids(text: str, prefix: str = "- ") -> list[str]:
    return [m.group(1) for line in text.splitlines() if (m := re.match(rf"^{re.escape(prefix)}(\d+) \|", line))]


def video_lines(text: str) -> dict[str, str]:
    return {line.split(" | ")[0]: line for line in text.splitlines() if re.match(r"^\d{6,} \| ", line)}


# -- through the SDK client --------------------------------------------------------------------------------

pytestmark = pytest.mark.anyio


async def test_top_follows_sort_by_units_across_videos_ties_by_id(fake_upstream: FakeUpstreamServer) -> None:
    async with connect(make_settings(fake_upstream.url)) as client:
        answer = await client.call_tool(TOOL, {"video_ids": ALL, "group_by": "product", "sort_by": "units", "top": 3})
    products = raw_products(ALL)
    expected = sorted(products, key=lambda p: (-products[p]["units"], p))[:3]
    text = text_of(answer)

    assert leading_ids(text) == expected
    assert "ranked by units" in text and "ranked 4-" in text and "by units" in text.splitlines()[-2]
    assert [t.product_id for t in parsed(answer).product_totals or []][:3] == expected
    for pid in expected:
        assert f"- {pid} | {products[pid]['units']} | {two(products[pid]['gmv'])} |" in text


async def test_videos_rank_by_gmv_per_1k_views_and_the_text_prints_each_ratio(
    fake_upstream: FakeUpstreamServer,
) -> None:
    async with connect(make_settings(fake_upstream.url)) as client:
        answer = await client.call_tool(TOOL, {"video_ids": ALL, "sort_by": "gmv_per_1k_views"})
    text = text_of(answer)
    rates = {}
    for vid in ALL:
        rows = DEMO[vid]
        if rows and rows[0]["total_views_cnt"]:
            gmv = sum((d(r["total_video_sale_gmv_amt"]) for r in rows), Decimal(0))
            rates[vid] = gmv * 1000 / d(rows[0]["total_views_cnt"])
    order = sorted(rates, key=lambda v: (-rates[v], v))
    lines = video_lines(text)

    assert list(lines) == [*order, ZERO_VIEWS]  # no views, no ratio: last
    for vid, rate in rates.items():
        assert lines[vid].split(" | ")[6] == two(rate)
    assert lines[ZERO_VIEWS].split(" | ")[6:8] == ["?", "?"]
    assert "GMV/1k views | units/1k views" in text and "ranked by GMV/1k views" in text


async def test_a_product_sold_in_several_videos_states_each_videos_share_of_it(
    fake_upstream: FakeUpstreamServer,
) -> None:
    async with connect(make_settings(fake_upstream.url)) as client:
        answer = await client.call_tool(TOOL, {"video_ids": ALL, "group_by": "product"})
    text = text_of(answer)
    products = raw_products(ALL)
    total = sum((p["gmv"] for p in products.values()), Decimal(0))
    shared = [pid for pid, p in products.items() if len(p["videos"]) > 1]

    assert "% of all GMV" in text and "% of THIS product's units" in text and "% of THIS product's GMV" in text
    assert shared
    lines = text.splitlines()
    for pid in shared:
        head = next(i for i, line in enumerate(lines) if line.startswith(f"- {pid} |"))
        assert lines[head].split(" | ")[3] == two(products[pid]["gmv"] * 100 / total)
        split = lines[head + 1]
        for vid, (units, gmv) in products[pid]["videos"].items():
            assert (
                f"{vid} {units} ({two(Decimal(units) * 100 / products[pid]['units'])}%) {two(gmv)} "
                f"({two(gmv * 100 / products[pid]['gmv'])}%)" in split
            )
    one = parsed(answer).product_totals or []
    for t in one:
        assert sum(s.units_sold for s in t.by_video or []) == t.units_sold


async def test_groups_are_fetched_as_one_set_and_compared_with_exact_differences(
    fake_upstream: FakeUpstreamServer,
) -> None:
    a, b = [THREE_ROWS, DOCUMENTED_VIDEO_ID, NO_PRODUCTS], [TWELVE_ROWS, RESELLS]
    groups = [{"name": "creator A", "video_ids": a}, {"name": "creator B", "video_ids": b}]
    async with connect(make_settings(fake_upstream.url)) as client:
        answer = await client.call_tool(COMPARE, {"groups": groups})
        again = await client.call_tool(COMPARE, {"groups": groups, "sort_by": "units", "top": 1})
    rows = sum(len(DEMO[v]) for v in a + b)
    result = GroupComparisonResult.model_validate(answer.structured_content)
    text = text_of(answer)

    assert fake_upstream.fake.charged == rows // 10 + 1  # the union's pages, not each group's
    assert {r["params"]["video_ids"] for r in fake_upstream.fake.requests} == {",".join(sorted(a + b))}
    units = {name: sum(raw_products(ids)[p]["units"] for p in raw_products(ids)) for name, ids in (("A", a), ("B", b))}
    gmv = {name: sum(p["gmv"] for p in raw_products(ids).values()) for name, ids in (("A", a), ("B", b))}
    per_video = {"A": gmv["A"] / 3, "B": gmv["B"] / 2}  # A's video without products counts: it sold 0
    assert f"creator A | 3 (2) | {units['A']} | {two(gmv['A'])} | {two(per_video['A'])} |" in text
    assert f"creator B | 2 (2) | {units['B']} | {two(gmv['B'])} | {two(per_video['B'])} |" in text
    diff = next(line for line in text.splitlines() if line.startswith("creator B vs creator A:"))
    gmv_diff = gmv["B"] - gmv["A"]
    assert f"GMV +{two(gmv_diff)} (+{two(gmv_diff * 100 / gmv['A'])}%)" in diff
    assert f"units +{units['B'] - units['A']} " in diff
    pv = per_video["B"] - per_video["A"]
    assert f"GMV/video +{two(pv)} (+{two(pv * 100 / per_video['A'])}%)" in diff
    shared = sorted(set(raw_products(a)) & set(raw_products(b)))
    assert result.shared_products == shared and f"sold by both groups ({len(shared)}): {','.join(shared)}" in text
    assert [g.name for g in result.groups] == ["creator A", "creator B"] and result.complete
    best_b = max(raw_products(b).items(), key=lambda item: (item[1]["units"], item[0]))[0]
    assert f"creator B top: {best_b} " in text_of(again)
    assert again.structured_content and again.structured_content["credits"]["spent"] == 0  # cached


async def test_each_video_line_states_its_share_of_all_gmv_and_the_head_the_average_per_video(
    fake_upstream: FakeUpstreamServer,
) -> None:
    async with connect(make_settings(fake_upstream.url)) as client:
        answer = await client.call_tool(TOOL, {"video_ids": ALL, "top": 1})
    gmv = {v: sum((d(r["total_video_sale_gmv_amt"]) for r in DEMO[v]), Decimal(0)) for v in ALL if DEMO[v]}
    total = sum(gmv.values(), Decimal(0))
    lines = video_lines(text_of(answer))

    assert "| GMV | % of all GMV |" in text_of(answer)
    asked, units = len(ALL), sum(r["total_video_sale_cnt"] for v in ALL for r in DEMO[v])
    assert (
        f"; avg per video asked ({asked}, {asked - len(gmv)} without products): units "
        f"{two(Decimal(units) / asked)}, GMV {two(total / asked)}" in text_of(answer)
    )
    assert {vid: line.split(" | ")[5] for vid, line in lines.items()} == {
        v: two(g * 100 / total) for v, g in gmv.items()
    }


async def test_three_groups_are_compared_pair_by_pair(fake_upstream: FakeUpstreamServer) -> None:
    groups = [
        {"name": "A", "video_ids": [THREE_ROWS]},
        {"name": "B", "video_ids": [TWELVE_ROWS]},
        {"name": "C", "video_ids": [RESELLS, THREE_ROWS]},
    ]
    async with connect(make_settings(fake_upstream.url)) as client:
        answer = await client.call_tool(COMPARE, {"groups": groups})
    text = text_of(answer)
    gmv = {g["name"]: sum(p["gmv"] for p in raw_products(g["video_ids"]).values()) for g in groups}  # type: ignore[arg-type]

    pairs = [line.split(":")[0] for line in text.splitlines() if " vs " in line.split(":")[0]]
    assert pairs == ["B vs A", "C vs A", "C vs B"]
    c_vs_b = next(line for line in text.splitlines() if line.startswith("C vs B:"))
    diff = gmv["C"] - gmv["B"]
    assert (
        f"; GMV {'+' if diff >= 0 else ''}{two(diff)} ({'+' if diff >= 0 else ''}{two(diff * 100 / gmv['B'])}%)"
        in c_vs_b
    )
    assert f"in more than one group (counted in each): {THREE_ROWS}" in text
    assert "sold by 2+ groups" in text


async def test_groups_with_one_name_or_over_50_videos_are_refused_before_any_request(
    fake_upstream: FakeUpstreamServer,
) -> None:
    many = [str(7_400_000_000_000_000_000 + i) for i in range(51)]
    async with connect(make_settings(fake_upstream.url)) as client:
        same = await client.call_tool(
            COMPARE, {"groups": [{"name": "A", "video_ids": [THREE_ROWS]}, {"name": "a", "video_ids": [RESELLS]}]}
        )
        big = await client.call_tool(
            COMPARE, {"groups": [{"name": "A", "video_ids": many[:30]}, {"name": "B", "video_ids": many[30:]}]}
        )
        one = await client.call_tool(COMPARE, {"groups": [{"name": "A", "video_ids": [THREE_ROWS]}]})
        bad_name = await client.call_tool(
            COMPARE, {"groups": [{"name": "A\n[x]", "video_ids": [THREE_ROWS]}, {"name": "B", "video_ids": [RESELLS]}]}
        )
    assert "same name" in assert_tool_error(same, "invalid_input")
    assert "51 distinct videos" in assert_tool_error(big, "invalid_input")
    assert_tool_error(one, "invalid_input")
    assert_tool_error(bad_name, "invalid_input")
    assert fake_upstream.fake.requests == []


async def test_a_partial_answer_says_what_its_totals_cover_and_what_is_pending(
    fake_upstream: FakeUpstreamServer,
) -> None:
    ids = [TWELVE_ROWS, THREE_ROWS]
    async with connect(make_settings(fake_upstream.url)) as client:
        per_video = await client.call_tool(TOOL, {"video_ids": ids, "max_credits": 1})
        per_product = await client.call_tool(TOOL, {"video_ids": ids, "max_credits": 0, "group_by": "product"})
        compared = await client.call_tool(
            COMPARE,
            {
                "groups": [{"name": "A", "video_ids": [TWELVE_ROWS]}, {"name": "B", "video_ids": [THREE_ROWS]}],
                "max_credits": 0,
            },
        )
    first = text_of(per_video).splitlines()
    assert first[0] == (
        "PARTIAL: every total below covers 0 of 2 videos asked in full and 10 product rows of the 2 pending; "
        "2 pending, so the totals will change (continue as the last line says)."
    )
    assert first[-1].startswith("INCOMPLETE: pending ")
    assert all(line.endswith(" PARTIAL") for line in video_lines(text_of(per_video)).values())
    text = text_of(per_product)
    assert text.startswith("PARTIAL: ")
    assert "its GMV (PARTIAL)" in text and "region | videos | units | GMV | % of all GMV (PARTIAL)" in text
    assert text_of(compared).startswith("PARTIAL: ") and "units/1k views (PARTIAL)" in text_of(compared)
    assert "then call compare_video_groups again" in text_of(compared)


async def test_the_default_cap_grows_with_the_ids_asked_and_a_configured_cap_stays_fixed() -> None:
    data = synthetic_dataset(20, seed=5, min_products=4, max_products=4)  # 80 rows: 9 pages
    ids = list(data)
    with FakeUpstreamServer(FakeUpstream(data)) as upstream:
        async with connect(make_settings(upstream.url)) as client:
            sized = await client.call_tool(TOOL, {"video_ids": ids})
            tools = {t.name: t for t in (await client.list_tools()).tools}
            usage = await client.call_tool("get_credit_usage", {})
        spent_sized = upstream.fake.charged
        async with connect(make_settings(upstream.url, max_credits_per_call=5)) as client:
            fixed = await client.call_tool(TOOL, {"video_ids": ids, "refresh": True})
        spent_fixed = upstream.fake.charged - spent_sized

    assert sized_cap(20, 5) == 7 and sized_cap(50, 5) == 16 and sized_cap(3, 5) == 5
    assert spent_sized == 7 and not parsed(sized).complete
    assert spent_fixed == 5 and "KEYAPI_MAX_CREDITS_PER_CALL=5" in text_of(fixed)
    assert "or 1 + 3 per 10 videos asked when more (16 for 50" in (tools[TOOL].description or "")
    assert len(tools[TOOL].description or "") <= 1024
    assert "max per call 5 (1 + 3 per 10 videos asked when more: 16 for 50)" in text_of(usage)


async def test_the_compare_prompt_names_a_call_that_validates(fake_upstream: FakeUpstreamServer) -> None:
    async with connect(make_settings(fake_upstream.url)) as client:
        prompt = await client.get_prompt("compare_videos", {"video_ids_a": THREE_ROWS, "video_ids_b": RESELLS})
        text = prompt.messages[0].content.text  # type: ignore[union-attr]
        groups = json.loads(re.search(r"compare_video_groups\(groups=(\[.*?\])\) once", text).group(1))  # type: ignore[union-attr]
        answer = await client.call_tool(COMPARE, {"groups": groups})
    assert not answer.is_error and "B vs A:" in text_of(answer)


async def test_a_measure_the_lines_do_not_show_gets_its_own_column(fake_upstream: FakeUpstreamServer) -> None:
    async with connect(make_settings(fake_upstream.url)) as client:
        by_views = await client.call_tool(TOOL, {"video_ids": ALL, "sort_by": "views", "top": 1})
        by_price = await client.call_tool(TOOL, {"video_ids": ALL, "sort_by": "avg_price", "top": 1})
        by_rate = await client.call_tool(
            TOOL, {"video_ids": ALL, "group_by": "product", "sort_by": "gmv_per_1k_views", "top": 2}
        )
    views = video_lines(text_of(by_views))
    assert [line.split(" | ")[1] for line in views.values()] == [
        str(DEMO[v][0]["total_views_cnt"]) for v in views
    ]  # exact counts, highest first
    assert list(views) == sorted(views, key=lambda v: (-DEMO[v][0]["total_views_cnt"], v))
    price = video_lines(text_of(by_price))
    for vid, line in price.items():
        units = sum(r["total_video_sale_cnt"] for r in DEMO[vid])
        gmv = sum((d(r["total_video_sale_gmv_amt"]) for r in DEMO[vid]), Decimal(0))
        assert line.split(" | ")[8] == two(gmv / units)
    text = text_of(by_rate)
    assert "| its GMV | GMV/1k views; ranked by GMV/1k views" in text
    rates = [t.gmv_per_1k_views for t in parsed(by_rate).product_totals or []]
    known = [r for r in rates if r is not None]
    assert rates == [*sorted(known, reverse=True), *[None] * (len(rates) - len(known))]  # no views: last


async def test_a_tight_output_budget_drops_each_videos_share_first_and_says_so() -> None:
    data = synthetic_dataset(50, seed=4, min_products=2, max_products=4)
    pids = [r["product_id"] for rows in data.values() for r in rows][:8]
    for i, rows in enumerate(data.values()):  # 8 products, each sold through many of the 50 videos
        for k, row in enumerate(rows):
            row["product_id"] = pids[(i + k) % len(pids)]
    with FakeUpstreamServer(FakeUpstream(data)) as upstream:
        async with connect(make_settings(upstream.url, max_output_tokens=5000)) as client:
            answer = await client.call_tool(TOOL, {"video_ids": list(data), "group_by": "product"})
    text = text_of(answer)
    assert "LEFT OUT to fit the output budget: each video's share of the products sold in several videos" in text
    assert len(leading_ids(text)) == 8  # every product still listed
    assert all((t.by_video or []) for t in parsed(answer).product_totals or [])  # the structured result keeps them


# -- pure: ranking and comparison ---------------------------------------------------------------------------


def _video(vid: str, views: int | None, products: list[tuple[str, int, float]], likes: int = 0) -> VideoOut:
    gmv = sum((exact(g) for _, _, g in products), Decimal(0))
    units = sum(u for _, u, _ in products)
    return VideoOut(
        video_id=vid,
        author_id=None,
        region="US",
        created_at=None,
        duration_s=None,
        views=views,
        likes=likes,
        comments=0,
        shares=0,
        favorites=0,
        engagement_rate=None,
        units_sold=units,
        gmv=float(gmv),
        products=[
            ProductOut(
                product_id=p, units_sold=u, gmv=g, avg_price=None, units_per_1k_views=None, gmv_per_1k_views=None
            )
            for p, u, g in products
        ],
        source="upstream",
        fetched_at="2026-01-01T00:00:00Z",
    )


def test_ties_break_by_id_and_a_missing_value_ranks_last() -> None:
    items = {"3": Decimal(1), "1": Decimal(1), "2": None, "0": Decimal(5)}
    assert ranked(items, items.get, str) == ["0", "1", "3", "2"]


def test_every_measure_orders_videos_and_products_follow_it_where_it_is_theirs() -> None:
    v1 = _video("11", 1000, [("7", 10, 100.0), ("8", 1, 150.0)], likes=900)
    v2 = _video("22", 100_000, [("7", 500, 400.0)], likes=10)
    v3 = _video("33", 0, [("9", 2, 20.0)])
    expected = {
        "gmv": ["22", "11", "33"],
        "units": ["22", "11", "33"],
        "views": ["22", "11", "33"],
        "gmv_per_1k_views": ["11", "22", "33"],
        "units_per_1k_views": ["11", "22", "33"],
        "engagement": ["11", "22", "33"],
        "avg_price": ["11", "33", "22"],
    }
    assert set(expected) == set(SORT_BY)
    for by, order in expected.items():
        ranked_videos = rank_videos([v1, v2, v3], by)  # type: ignore[arg-type]
        assert [v.video_id for v in ranked_videos] == order, by
        first = next(v for v in ranked_videos if v.video_id == "11")
        assert [p.product_id for p in first.products] == (
            ["7", "8"] if by in ("units", "units_per_1k_views") else ["8", "7"]
        ), by
    assert video_measure(v3, "gmv_per_1k_views") is None


def test_shares_within_a_product_and_of_all_gmv_are_different_figures() -> None:
    v1 = _video("11", 1000, [("7", 30, 300.0), ("8", 10, 100.0)])
    v2 = _video("22", 1000, [("7", 10, 600.0)])
    totals = {t.product_id: t for t in product_totals([v1, v2])}

    assert totals["7"].gmv_share_pct == 90.0  # 900 of the set's 1000
    assert [(s.video_id, s.units_share_pct, s.gmv_share_pct) for s in totals["7"].by_video or []] == [
        ("22", 25.0, 66.67),  # the best video first: most of THIS product's GMV, fewer of its units
        ("11", 75.0, 33.33),
    ]
    assert totals["7"].best_video_id == "22" and totals["7"].avg_price == 22.5
    assert [t.product_id for t in product_totals([v1, v2], "units")] == ["7", "8"]


def test_differences_come_from_exact_values_not_from_the_rounded_averages() -> None:
    # A: 100.005 per video (printed 100.0 or 100.01), B: 100.015: the exact difference is 0.01.
    a = [_video("1", 10, [("7", 1, 100.01)]), _video("2", 10, [("7", 1, 100.0)])]
    b = [_video("3", 10, [("7", 1, 100.02)]), _video("4", 10, [("7", 1, 100.01)])]
    videos = {v.video_id: v for v in a + b}
    ta = group_tally("A", ["1", "2"], videos, set(videos))
    tb = group_tally("B", ["3", "4"], videos, set(videos))
    diffs = {x.measure: x for x in differences(ta, tb)}

    assert diffs["GMV/video"].difference == 0.01 and diffs["GMV"].difference == 0.02
    assert diffs["units"].difference == 0 and diffs["units"].pct == 0.0
    assert diffs["GMV"].pct == float((Decimal("0.02") * 100 / Decimal("200.01")).quantize(CENT))
