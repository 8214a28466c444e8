"""Upstream pages the documentation does not promise: far more rows than a page holds, a product listed twice.

The upstream is a real HTTP server on 127.0.0.1 (`FakeUpstreamServer`) whose first answer is scripted; the
client is the SDK's `Client`. What the server decided (docs/troubleshooting.md, "Odd upstream pages"):

- a structured result lists at most KEYAPI_MAX_STRUCTURED_PRODUCTS product rows, the highest GMV of each
  video, says what it left out, and keeps every total over all rows; the cache keeps every row, free to read;
- a product listed twice in one video counts once, by its first listing, in the text, the structured result
  and every total.
"""

from __future__ import annotations

import json
import random
import uuid
from typing import Any

import pytest
from fakes import FakeUpstreamServer
from helpers import TEST_API_KEY, TOOL, connect, make_settings, parsed, text_of

from keyapi_mcp.presentation.models import VideoOut
from keyapi_mcp.upstream.demo import FakeUpstream, make_row

pytestmark = pytest.mark.anyio

VID = "7100000000000000001"
OTHER = "7100000000000000002"
ROWS = 10_000


def page(rows: list[dict[str, Any]]) -> tuple[int, dict[str, Any], dict[str, str]]:
    return 200, {"code": 0, "message": "success", "data": rows, "requestId": str(uuid.uuid4())}, {}


def rows_of(video_id: str, count: int, seed: int = 1) -> list[dict[str, Any]]:
    """`count` rows of distinct products (distinct from another seed's too)."""
    rng = random.Random(seed)
    stats = {"video_id": video_id, "total_views_cnt": 100_000, "region": "US", "create_time": 1_735_000_000}
    return [make_row(video_id, str(seed * 10**9 + n), rng, video_stats=stats) for n in range(count)]


async def test_a_ten_thousand_row_page_gives_a_bounded_structured_result_that_says_what_it_left_out():
    big = rows_of(VID, ROWS)
    small = rows_of(OTHER, 3, seed=2)
    fake = FakeUpstream({}, api_key=TEST_API_KEY, script=[page(big + small)])
    with FakeUpstreamServer(fake) as upstream:
        async with connect(make_settings(upstream.url)) as client:
            answer = await client.call_tool(TOOL, {"video_ids": [VID, OTHER]})
            cached = await client.read_resource(f"keyapi://videos/{VID}")
            grouped = await client.call_tool(TOOL, {"video_ids": [VID, OTHER], "group_by": "product"})
    size = len(json.dumps(answer.structured_content))
    result = parsed(answer)
    listed = {v.video_id: len(v.products) for v in result.videos}
    assert sum(listed.values()) == 1000 and listed[OTHER] == 3  # one huge list does not crowd out the others
    assert size < 1_000_000, size
    # Every figure still counts every row: the video's units and the summary's counts.
    assert result.summary.products == ROWS + 3
    units = {r["product_id"]: r["total_video_sale_cnt"] for r in big}
    video = next(v for v in result.videos if v.video_id == VID)
    assert video.units_sold == sum(units.values())
    gmvs = [p.gmv or 0 for p in video.products]
    assert gmvs == sorted(gmvs, reverse=True) and min(gmvs) >= sorted(r["total_video_sale_gmv_amt"] for r in big)[-997]
    [note] = [w for w in result.warnings if "KEYAPI_MAX_STRUCTURED_PRODUCTS" in w]
    assert f"1000 of {ROWS + 3} product rows" in note and f"video {VID} 997 of {ROWS}" in note
    assert "keyapi://videos/" in note and note in text_of(answer)  # the model reads it too
    # The cache kept every row: the free read has them all.
    assert len(VideoOut.model_validate_json(cached.contents[0].text).products) == ROWS  # type: ignore[union-attr]
    totals = parsed(grouped).product_totals
    assert totals is not None and len(totals) == 1000
    assert parsed(grouped).credits.spent == 0  # from the cache
    assert any("product_totals lists the first 1000 of 10003" in w for w in parsed(grouped).warnings), parsed(
        grouped
    ).warnings


async def test_a_product_listed_twice_in_one_video_counts_once_by_its_first_listing_everywhere():
    rows = rows_of(VID, 3)
    first = rows[1]
    again = {**first, "total_video_sale_cnt": 5, "total_video_sale_gmv_amt": 99.0}  # same product, other figures
    fake = FakeUpstream({}, api_key=TEST_API_KEY, script=[page([*rows, again])])
    with FakeUpstreamServer(fake) as upstream:
        async with connect(make_settings(upstream.url)) as client:
            answer = await client.call_tool(TOOL, {"video_ids": [VID]})
            grouped = await client.call_tool(TOOL, {"video_ids": [VID], "group_by": "product"})
    result = parsed(answer)
    [video] = result.videos
    ids = [p.product_id for p in video.products]
    assert sorted(ids) == sorted(r["product_id"] for r in rows)  # listed once
    kept = next(p for p in video.products if p.product_id == first["product_id"])
    assert (kept.units_sold, kept.gmv) == (first["total_video_sale_cnt"], first["total_video_sale_gmv_amt"])
    assert video.units_sold == sum(r["total_video_sale_cnt"] for r in rows)
    assert result.summary.products == result.summary.distinct_products == 3
    assert any("repeated listing" in w for w in result.warnings)
    assert text_of(answer).count(first["product_id"]) == 1
    totals = {t.product_id: t for t in parsed(grouped).product_totals or []}
    assert totals[first["product_id"]].units_sold == first["total_video_sale_cnt"]
    assert sum(t.units_sold for t in totals.values()) == video.units_sold
