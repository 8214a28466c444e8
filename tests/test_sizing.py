"""Answers sized to fit: the text stays under KEYAPI_MAX_OUTPUT_TOKENS counted with the bench's tokenizer, and
names exactly what it left out; the structured result keeps everything.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from fakes import synthetic_dataset
from helpers import TOOL, connect, make_settings, parsed, text_of

from bench.tokens import count_tokens
from keyapi_mcp.config import load_settings
from keyapi_mcp.core.domain import DayUsage, FetchOutcome, VideoData
from keyapi_mcp.errors import ConfigError
from keyapi_mcp.presentation.build import build_result
from keyapi_mcp.presentation.render import TextView, render_text
from keyapi_mcp.presentation.sizing import estimate_tokens, fit_text
from keyapi_mcp.presentation.totals import with_product_totals
from keyapi_mcp.upstream.demo import FakeUpstream
from keyapi_mcp.upstream.demo import mock_transport as fake_transport

pytestmark = pytest.mark.anyio

LEFT_OUT_RE = re.compile(
    r"^LEFT OUT: (\d+) product rows? beyond the top (\d+) by GMV of (\d+) videos? .*?: (\S+)\. ", re.M
)


def result_of(data: dict[str, list[dict[str, Any]]], fmt: str = "concise") -> Any:
    outcome = FetchOutcome(
        requested=list(data),
        videos={vid: VideoData(vid, rows, 1.75e9, from_cache=False) for vid, rows in data.items()},
        complete_ids=set(data),
    )
    outcome.usage = DayUsage(0, 0, 0)
    return build_result(outcome, daily_limit=100, response_format=fmt)  # type: ignore[arg-type]


def settings_for(**overrides: Any) -> Any:
    return make_settings(max_credits_per_call=1000, daily_credit_limit=0, **overrides)


def test_the_estimate_is_above_the_bench_tokenizers_count_for_every_kind_of_answer_text():
    """The calibration that bench/README.md's "Output budget" reports, as a test (synthetic data as the bench's)."""
    ratios = []
    for seed in range(3):
        for n in (1, 10, 50):
            data = synthetic_dataset(n, seed=seed, min_products=0, max_products=12)
            for fmt in ("concise", "detailed"):
                result = result_of(data, fmt)
                views = [TextView(), TextView(media=False), TextView(top=1, media=False, about=False)]
                texts = [render_text(result, view) for view in views] + [render_text(with_product_totals(result))]
                for text in texts:
                    ratios.append(estimate_tokens(text) / count_tokens(text))
    assert min(ratios) >= 1.0  # never under: the budget holds
    assert max(ratios) <= 1.5  # and not so far over that answers are cut for nothing


def test_an_answer_that_fits_is_returned_unchanged_and_a_zero_budget_never_cuts():
    result = result_of(synthetic_dataset(50, seed=3, min_products=10, max_products=12))
    full = render_text(result)
    assert fit_text(result, max_tokens=0) == full
    assert fit_text(result, max_tokens=estimate_tokens(full)) == full
    assert fit_text(result, max_tokens=estimate_tokens(full) - 1) != full


async def test_a_50_video_detailed_answer_fits_the_budget_and_names_what_it_left_out():
    data = synthetic_dataset(50, seed=5, min_products=8, max_products=12)
    async with connect(settings_for(), transport=fake_transport(FakeUpstream(data))) as client:
        answer = await client.call_tool(TOOL, {"video_ids": list(data), "response_format": "detailed"})
    text = text_of(answer)
    assert count_tokens(text) <= 8000
    result = parsed(answer)
    # The structured result keeps everything.
    assert sum(len(v.products) for v in result.videos) == sum(len(rows) for rows in data.values())
    assert all(v.play_url and v.description for v in result.videos)
    # The text: every video, the detail it dropped named, and exactly which product rows of which videos.
    assert all(vid in text for vid in data)
    assert "LEFT OUT to fit the output budget: the cover/play URLs, size, ratio and bytes" in text
    assert "play=" not in text
    listed = {v.video_id: sum(1 for p in v.products if f"\n- {p.product_id} | " in text) for v in result.videos}
    match = LEFT_OUT_RE.search(text)
    assert match is not None, text[-1500:]
    rows, top, videos, cut = int(match[1]), int(match[2]), int(match[3]), match[4]
    omitted = {
        v.video_id: len(v.products) - listed[v.video_id] for v in result.videos if len(v.products) > listed[v.video_id]
    }
    assert cut == ",".join(f"{vid}(+{n})" for vid, n in omitted.items())
    assert (rows, videos) == (sum(omitted.values()), len(omitted))
    assert all(listed[v.video_id] == min(top, len(v.products)) for v in result.videos)
    assert "keyapi://videos/" in text
    assert len(parsed(answer).resources) == 50  # each video re-readable for free


async def test_top_shows_that_many_products_per_video_and_says_which_videos_have_more():
    data = synthetic_dataset(6, seed=2, min_products=1, max_products=6)
    async with connect(settings_for(), transport=fake_transport(FakeUpstream(data))) as client:
        answer = await client.call_tool(TOOL, {"video_ids": list(data), "top": 2})
    text = text_of(answer)
    result = parsed(answer)
    for video in result.videos:
        shown = [p for p in video.products if f"\n- {p.product_id} | " in text]
        assert shown == video.products[:2]
    more = [v for v in result.videos if len(v.products) > 2]
    match = LEFT_OUT_RE.search(text)
    assert match is not None
    assert match[4] == ",".join(f"{v.video_id}(+{len(v.products) - 2})" for v in more)


async def test_group_by_product_with_top_lists_the_top_products_and_the_sum_of_the_rest():
    data = synthetic_dataset(5, seed=4, min_products=3, max_products=6)
    async with connect(settings_for(), transport=fake_transport(FakeUpstream(data))) as client:
        answer = await client.call_tool(TOOL, {"video_ids": list(data), "group_by": "product", "top": 3})
    result = parsed(answer)
    totals = result.product_totals or []
    text = text_of(answer)
    assert [line.split(" | ")[0][2:] for line in text.splitlines() if line.startswith("- ")] == [
        t.product_id for t in totals[:3]
    ]
    rest = totals[3:]
    assert (
        f"LEFT OUT: {len(rest)} products ranked 4-{len(totals)} by GMV (units {sum(t.units_sold for t in rest)}" in text
    )


async def test_a_small_budget_cuts_a_concise_answer_to_fit():
    data = synthetic_dataset(20, seed=8, min_products=10, max_products=12)
    async with connect(settings_for(max_output_tokens=2000), transport=fake_transport(FakeUpstream(data))) as client:
        answer = await client.call_tool(TOOL, {"video_ids": list(data)})
    text = text_of(answer)
    assert count_tokens(text) <= 2000
    assert LEFT_OUT_RE.search(text) is not None


def test_the_budget_setting_is_zero_or_at_least_the_floor():
    assert load_settings(_env_file=None).max_output_tokens == 8000
    assert load_settings(_env_file=None, max_output_tokens=0).max_output_tokens == 0
    with pytest.raises(ConfigError, match="KEYAPI_MAX_OUTPUT_TOKENS"):
        load_settings(_env_file=None, max_output_tokens=100)
