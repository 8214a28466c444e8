"""Smoke test of the golden-questions bench (`python -m bench --only golden`) and of how it scores a text."""

from __future__ import annotations

from decimal import Decimal

import pytest

from bench import golden, report


@pytest.mark.anyio
async def test_every_golden_figure_is_printed_at_the_minimum_credits_and_a_small_share_of_tokens() -> None:
    result = await golden.run()

    missing = {q["question"]: q["missing"] for q in result["per_question"] if q["missing"]}
    assert missing == {}
    assert result["questions"] >= 12
    assert result["figures_printed"] == result["figures_expected"] > 100
    assert all(result["bars"].values()), result["bars"]
    assert result["credits"]["keyapi"] == result["credits"]["minimum"] < result["credits"]["wrapper"]
    assert "golden questions" in report.table({"golden": result})


def test_expected_figures_come_from_the_raw_rows_with_strings_and_zero_views_among_them() -> None:
    data, creators = golden.catalogue()
    raw = golden.Raw(data)
    rows = [r for rows in data.values() for r in rows]

    assert any(isinstance(r["total_video_sale_gmv_amt"], str) for r in rows)
    assert any(r["total_views_cnt"] == 0 for r in rows)
    assert sum(len(ids) for ids in creators.values()) == len(data)
    shared = [p for p, v in raw.products(list(data)).items() if len(v["videos"]) >= 3]
    assert len(shared) >= 5  # products repeat across videos: totals across videos mean something
    vid = next(v for v in data if len(data[v]) >= 2)
    assert raw.gmv([vid]) == sum(Decimal(str(r["total_video_sale_gmv_amt"])) for r in data[vid])


def test_a_figure_counts_only_on_its_line_rounded_to_its_decimals() -> None:
    text = "\n".join(
        [
            "2 videos; units 120; GMV 3000.5",
            "- 1731000000000007777 | 80 | 2000.25 | 66.66",
            "  7450000000000000000 80 100% 2000.25 66.67%; 7450000000000104729 40 33.33% 1000.25 33.33%",
            "- 1731000000000015554 | 40 | 1000.25 | 33.33",
            "B vs A: units -12 (-9.72%); GMV +1000.5 (+17.6%)",
        ]
    )
    exact = Decimal(20000) / 3  # 6666.666… rounds to 6666.67 either way

    assert golden.found(golden.Figure("units", 120, near=("units",)), [text])
    assert golden.found(golden.Figure("GMV", Decimal("3000.50"), 2, near=("GMV",)), [text])
    assert not golden.found(golden.Figure("GMV", Decimal("3000.51"), 2, near=("GMV",)), [text])
    assert not golden.found(golden.Figure("units on the GMV part", 120, near=("GMV",)), [text])
    assert not golden.found(golden.Figure("not this block", 40, under="1731000000000007777", near=("units",)), [text])
    assert golden.found(
        golden.Figure("share", Decimal(100) / 3, 2, under="1731000000000007777", near=("7450000000000104729",)),
        [text],
    )
    assert not golden.found(golden.Figure("a ratio", exact, 2), [text])
    assert golden.found(golden.Figure("signed", Decimal("-12"), near=("B vs A", "units"), signed=True), [text])
    assert not golden.found(golden.Figure("sign missing", Decimal("12"), near=("B vs A", "units"), signed=True), [text])


def test_an_order_is_read_from_the_lines_that_lead_with_an_id() -> None:
    text = "head 7450000000000000000\n- 1731000000000015554 | 40\n- 1731000000000007777 | 80\n7450000000000000000 | 1"
    universe = frozenset({"1731000000000007777", "1731000000000015554"})

    assert golden.found(golden.Order("by units", ("1731000000000015554", "1731000000000007777"), universe), [text])
    assert not golden.found(golden.Order("by GMV", ("1731000000000007777",), universe), [text])
    assert golden.found(golden.Words("label", ("head", "7450000000000000000")), [text])
