"""The two tools as an MCP client sees them: `Client(build_server(...))` in memory, against a fake upstream.

Every assertion is on what reaches the model (schemas, `structuredContent`, the text, `isError` with its
`[code]`) and on what the fake upstream saw (how many requests, with which parameters). Tool functions
are never called directly.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

import jsonschema
import pytest
from fakes import FakeUpstreamServer
from helpers import (
    NO_PRODUCTS,
    OFFLINE_URL,
    TEST_API_KEY,
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

from keyapi_mcp.config import Settings
from keyapi_mcp.core.domain import PAGE_SIZE
from keyapi_mcp.core.ids import MAX_VIDEO_IDS
from keyapi_mcp.presentation.models import CreditUsage
from keyapi_mcp.state.sqlite_store import SQLiteStore
from keyapi_mcp.upstream.client import MAX_ATTEMPTS
from keyapi_mcp.upstream.demo import DOCUMENTED_ROW, DOCUMENTED_VIDEO_ID, FakeUpstream, demo_dataset, mock_transport

pytestmark = pytest.mark.anyio


def video_ids_param(request: dict[str, Any]) -> list[str]:
    return request["params"]["video_ids"].split(",")


# ---------------------------------------------------------------------------------------------
# Listing and schemas


async def test_the_tools_are_listed_with_descriptions_that_state_cost_and_cap(fake_upstream: FakeUpstreamServer):
    settings = make_settings(fake_upstream.url, max_credits_per_call=7)
    async with connect(settings) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    # (the App view's own tool is listed to MCP Apps hosts only)
    assert set(tools) == {"get_video_products", "compare_video_groups", "get_credit_usage"}
    for tool in tools.values():
        assert tool.description and len(tool.description) > 40
    description = tools[TOOL].description or ""
    assert "credit" in description
    assert "7 credits per call" in description  # the configured cap, not a constant
    assert "KEYAPI_MAX_CREDITS_PER_CALL" in description
    assert fake_upstream.fake.requests == []


async def test_input_schema_carries_bounds_descriptions_and_rejects_unknown_fields(fake_upstream: FakeUpstreamServer):
    async with connect(make_settings(fake_upstream.url)) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    schema = tools[TOOL].input_schema
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["video_ids"]
    props = schema["properties"]
    assert set(props) == {
        "video_ids",
        "max_credits",
        "page_num",
        "response_format",
        "refresh",
        "group_by",
        "top",
        "sort_by",
        "max_age_seconds",
        "confirm",
    }
    for name, prop in props.items():
        assert prop.get("description"), f"{name} has no description"
    assert props["video_ids"]["type"] == "array"
    assert props["video_ids"]["minItems"] == 1
    assert props["video_ids"]["items"]["type"] == "string"
    # Optional integers with a default of their own type, no null (tests/test_portability.py says why).
    assert props["max_credits"]["type"] == "integer" and props["max_credits"]["minimum"] == 0
    assert props["max_credits"]["default"] == props["max_credits"]["maximum"]
    assert props["page_num"]["minimum"] == 1
    assert props["page_num"]["default"] == 1
    assert props["response_format"]["enum"] == ["concise", "detailed"]
    assert props["response_format"]["default"] == "concise"
    assert props["refresh"]["type"] == "boolean"
    assert props["refresh"]["default"] is False
    assert props["group_by"]["enum"] == ["video", "product"]
    assert props["group_by"]["default"] == "video"
    assert props["top"]["type"] == "integer" and props["top"]["default"] == 0
    # New integer arguments carry a default instead of a null type (portable across clients).
    assert props["max_age_seconds"]["type"] == "integer" and props["max_age_seconds"]["minimum"] == 0
    assert props["max_age_seconds"]["default"] == 2_592_000
    assert props["confirm"]["type"] == "string" and props["confirm"]["default"] == ""
    usage_schema = tools["get_credit_usage"].input_schema
    assert usage_schema["additionalProperties"] is False
    assert usage_schema.get("properties", {}) == {}


async def test_annotations_mark_both_tools_read_only_and_only_the_paid_one_open_world_and_not_idempotent(
    fake_upstream: FakeUpstreamServer,
):
    async with connect(make_settings(fake_upstream.url)) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    paid = tools[TOOL].annotations
    assert paid is not None
    assert paid.read_only_hint is True
    assert paid.open_world_hint is True
    assert paid.idempotent_hint is False
    assert paid.destructive_hint is False
    free = tools["get_credit_usage"].annotations
    assert free is not None
    assert free.read_only_hint is True
    assert free.open_world_hint is False


async def test_structured_content_conforms_to_the_declared_output_schema(fake_upstream: FakeUpstreamServer):
    async with connect(make_settings(fake_upstream.url)) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        ids = [DOCUMENTED_VIDEO_ID, THREE_ROWS, ZERO_VIEWS, NO_PRODUCTS]
        concise = await client.call_tool(TOOL, {"video_ids": ids})
        detailed = await client.call_tool(TOOL, {"video_ids": ids, "response_format": "detailed"})
        usage = await client.call_tool("get_credit_usage", {})
    output_schema = tools[TOOL].output_schema
    assert output_schema is not None
    assert tools["get_credit_usage"].output_schema is not None
    for result in (concise, detailed):
        jsonschema.validate(result.structured_content, output_schema)
        parsed(result)
    jsonschema.validate(usage.structured_content, tools["get_credit_usage"].output_schema)
    CreditUsage.model_validate(usage.structured_content)
    # Detailed adds fields that concise leaves out (fewer tokens).
    concise_video = concise.structured_content["videos"][0]  # type: ignore[index]
    detailed_video = detailed.structured_content["videos"][0]  # type: ignore[index]
    for extra in ("description", "hashtags", "cover_url", "play_url"):
        assert extra not in concise_video
        assert extra in detailed_video


# ---------------------------------------------------------------------------------------------
# Id normalisation and invalid input


async def test_urls_comma_joined_ids_and_duplicates_are_normalised_into_one_request(
    fake_upstream: FakeUpstreamServer,
):
    video_ids = [
        f"https://www.tiktok.com/@shop/video/{DOCUMENTED_VIDEO_ID}?is_from_webapp=1&sender_device=pc",
        f"www.tiktok.com/@someone/video/{THREE_ROWS}",
        f"https://m.tiktok.com/v/{ZERO_VIEWS}.html",
        f"{THREE_ROWS}, {DOCUMENTED_VIDEO_ID}",
        DOCUMENTED_VIDEO_ID,
    ]
    async with connect(make_settings(fake_upstream.url)) as client:
        result = parsed(await client.call_tool(TOOL, {"video_ids": video_ids}))
    expected = {DOCUMENTED_VIDEO_ID, THREE_ROWS, ZERO_VIEWS}
    requests = fake_upstream.fake.requests
    assert len(requests) == 1
    sent = video_ids_param(requests[0])
    assert sorted(sent) == sorted(expected)  # each id once
    assert {v.video_id for v in result.videos} == expected
    assert result.complete


async def test_fifty_distinct_ids_one_comma_joined_are_accepted_in_one_request(fake_upstream: FakeUpstreamServer):
    ids = [str(7_100_000_000_000_000_000 + i) for i in range(MAX_VIDEO_IDS)]
    async with connect(make_settings(fake_upstream.url)) as client:
        result = parsed(await client.call_tool(TOOL, {"video_ids": [*ids[:-2], f"{ids[-2]},{ids[-1]}", ids[0]]}))
    assert len(fake_upstream.fake.requests) == 1
    assert sorted(video_ids_param(fake_upstream.fake.requests[0])) == sorted(ids)
    assert result.complete
    assert sorted(result.not_found) == sorted(ids)


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"video_ids": ["abc"]}, "abc"),
        ({"video_ids": [DOCUMENTED_VIDEO_ID, "https://vm.tiktok.com/ZMabc123/"]}, "vm.tiktok.com/ZMabc123"),
        ({"video_ids": ["https://www.tiktok.com/@user"]}, "tiktok.com/@user"),
        ({"video_ids": [str(7_200_000_000_000_000_000 + i) for i in range(MAX_VIDEO_IDS + 1)]}, "video"),
        ({"video_ids": []}, "video_ids"),
        ({"video_ids": [DOCUMENTED_VIDEO_ID], "refesh": True}, "refesh"),
        ({"video_ids": [DOCUMENTED_VIDEO_ID], "max_credits": -1}, "max_credits"),
        ({"video_ids": [DOCUMENTED_VIDEO_ID], "page_num": 0}, "page_num"),
        ({"video_ids": [DOCUMENTED_VIDEO_ID], "response_format": "verbose"}, "response_format"),
        ({"video_ids": DOCUMENTED_VIDEO_ID}, "video_ids"),
    ],
    ids=[
        "not-an-id",
        "short-link",
        "profile-url",
        "51-distinct",
        "empty-list",
        "unknown-argument",
        "negative-max-credits",
        "page-num-0",
        "bad-format",
        "string-not-list",
    ],
)
async def test_invalid_input_names_the_problem_and_makes_no_request(
    fake_upstream: FakeUpstreamServer, arguments: dict[str, Any], named: str
):
    async with connect(make_settings(fake_upstream.url)) as client:
        result = await client.call_tool(TOOL, arguments)
        usage = await client.call_tool("get_credit_usage", {})
    text = assert_tool_error(result, "invalid_input")
    assert named in text
    assert fake_upstream.fake.requests == []
    assert usage.structured_content is not None
    assert usage.structured_content["spent_today"] == 0


async def test_fifty_one_distinct_ids_are_refused_with_the_limit_in_the_text(fake_upstream: FakeUpstreamServer):
    ids = [str(7_300_000_000_000_000_000 + i) for i in range(MAX_VIDEO_IDS + 1)]
    async with connect(make_settings(fake_upstream.url)) as client:
        result = await client.call_tool(TOOL, {"video_ids": ids})
    text = assert_tool_error(result, "invalid_input")
    assert str(MAX_VIDEO_IDS + 1) in text and str(MAX_VIDEO_IDS) in text
    assert fake_upstream.fake.requests == []


# ---------------------------------------------------------------------------------------------
# Missing key, demo mode


async def test_without_an_api_key_data_calls_answer_missing_api_key_and_usage_still_works(
    fake_upstream: FakeUpstreamServer,
):
    settings = Settings(_env_file=None, base_url=fake_upstream.url, max_credits_per_call=4)
    async with connect(settings) as client:
        result = await client.call_tool(TOOL, {"video_ids": [DOCUMENTED_VIDEO_ID]})
        usage = await client.call_tool("get_credit_usage", {})
    text = assert_tool_error(result, "missing_api_key")
    assert "KEYAPI_API_KEY" in text
    assert fake_upstream.fake.requests == []
    assert not usage.is_error, text_of(usage)
    report = CreditUsage.model_validate(usage.structured_content)
    assert report.max_credits_per_call == 4
    assert report.spent_today == 0
    assert report.demo is False


async def test_demo_mode_needs_no_key_opens_no_connection_and_says_demo(fake_upstream: FakeUpstreamServer):
    # base_url points at a live fake: any request it saw would prove demo mode used the network.
    settings = Settings(_env_file=None, base_url=fake_upstream.url)
    async with connect(settings, demo=True) as client:
        result = await client.call_tool(TOOL, {"video_ids": [DOCUMENTED_VIDEO_ID]})
        usage = await client.call_tool("get_credit_usage", {})
    out = parsed(result)
    text = text_of(result)
    assert out.demo is True
    assert "demo" in text.splitlines()[0].lower()
    assert fake_upstream.fake.requests == []
    [video] = out.videos
    [product] = video.products
    assert video.video_id == DOCUMENTED_VIDEO_ID
    assert product.product_id == DOCUMENTED_ROW["product_id"] == "1729422228922143703"
    assert product.units_sold == DOCUMENTED_ROW["total_video_sale_cnt"] == 4479
    assert product.gmv == DOCUMENTED_ROW["total_video_sale_gmv_amt"] == 133621.6
    assert video.views == DOCUMENTED_ROW["total_views_cnt"]
    assert "1729422228922143703" in text and "4479" in text and "133621.6" in text
    assert not usage.is_error
    assert usage.structured_content is not None and usage.structured_content["demo"] is True
    assert "demo" in text_of(usage).splitlines()[0].lower()


async def test_demo_mode_walks_pages_and_reports_not_found(fake_upstream: FakeUpstreamServer):
    async with connect(Settings(_env_file=None), demo=True) as client:
        out = parsed(await client.call_tool(TOOL, {"video_ids": [TWELVE_ROWS, NO_PRODUCTS]}))
    assert out.demo and out.complete
    assert [v.video_id for v in out.videos] == [TWELVE_ROWS]
    assert len(out.videos[0].products) == len(demo_dataset()[TWELVE_ROWS])
    assert out.not_found == [NO_PRODUCTS]
    assert out.credits.spent == 2


# ---------------------------------------------------------------------------------------------
# Grouping, derived metrics, text


def _row(video_id: str, product_id: str | None, units: Any, gmv: Any, stats: dict[str, Any]) -> dict[str, Any]:
    row = {**stats, "video_id": video_id, "total_video_sale_cnt": units, "total_video_sale_gmv_amt": gmv}
    if product_id is not None:
        row["product_id"] = product_id
    return row


VID_A, VID_B, VID_C = "7000000000000000001", "7000000000000000002", "7000000000000000003"
STATS_A = {
    "total_views_cnt": 20_000,
    "total_digg_cnt": 1_000,
    "total_comments_cnt": 200,
    "total_shares_cnt": 100,
    "total_favorites_cnt": 700,
    "create_time": "1700000000",
    "user_id": "6900000000000000001",
    "region": "GB",
    "duration": "31",
    "video_desc": "plain text\u202e with a bidi override\x00 and NUL #tag1",
    "hash_tag": "#tag1 #tag2 ",
}
STATS_B = {
    "total_views_cnt": "0",  # numbers sent as strings are converted; 0 views → null ratios
    "total_digg_cnt": "10",
    "create_time": 1_710_000_000,
    "region": "US",
}
GROUPING_DATA = {
    VID_A: [
        _row(VID_A, "111", 40, 1000.0, STATS_A),
        _row(VID_A, "112", "5", "250.5", STATS_A),
        _row(VID_A, "113", 0, 0, STATS_A),
    ],
    VID_B: [
        _row(VID_B, "221", 100, 5000.0, STATS_B),
        _row(VID_B, None, 1, 1.0, STATS_B),  # no product_id: skipped with a warning, never a crash
    ],
    VID_C: [],
}


async def test_rows_are_grouped_by_video_with_derived_metrics_and_ordered_by_gmv():
    fake = FakeUpstream(GROUPING_DATA, api_key=TEST_API_KEY)
    settings = make_settings()
    async with connect(settings, transport=mock_transport(fake)) as client:
        result = await client.call_tool(TOOL, {"video_ids": [VID_A, VID_B, VID_C]})
    out = parsed(result)
    assert len(fake.requests) == 1
    assert out.complete and out.next_page_num is None
    assert [v.video_id for v in out.videos] == [VID_B, VID_A]  # by GMV: 5000 > 1250.5
    assert out.not_found == [VID_C]
    assert any("skipped 1" in w for w in out.warnings)

    b, a = out.videos
    views = STATS_A["total_views_cnt"]
    engaged = sum(STATS_A[f"total_{k}_cnt"] for k in ("digg", "comments", "shares", "favorites"))
    assert a.views == views
    assert a.engagement_rate == pytest.approx(engaged / views, abs=1e-4)
    assert a.author_id == STATS_A["user_id"]
    assert a.region == "GB"
    assert a.duration_s == 31
    assert a.created_at == datetime.fromtimestamp(1_700_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert [p.product_id for p in a.products] == ["111", "112", "113"]  # by GMV
    rows = {r["product_id"]: r for r in GROUPING_DATA[VID_A]}
    for p in a.products:
        units = int(rows[p.product_id]["total_video_sale_cnt"])
        gmv = float(rows[p.product_id]["total_video_sale_gmv_amt"])
        assert p.units_sold == units
        assert p.gmv == pytest.approx(gmv)
        assert p.avg_price == (pytest.approx(gmv / units, abs=0.005) if units else None)
        assert p.units_per_1k_views == pytest.approx(units * 1000 / views, abs=1e-4)
        assert p.gmv_per_1k_views == pytest.approx(gmv * 1000 / views, abs=1e-4)
    assert a.units_sold == sum(p.units_sold or 0 for p in a.products) == 45
    assert a.gmv == pytest.approx(sum(p.gmv or 0 for p in a.products))

    assert b.views == 0
    assert b.engagement_rate is None
    assert b.likes == 10
    [pb] = b.products
    assert pb.units_per_1k_views is None and pb.gmv_per_1k_views is None
    assert pb.avg_price == pytest.approx(50.0)

    assert out.summary.videos == 2
    assert out.summary.products == 4
    assert out.summary.units_sold == a.units_sold + b.units_sold
    assert out.summary.gmv == pytest.approx(a.gmv + b.gmv)
    assert [t.product_id for t in out.summary.top_products][:2] == ["221", "111"]


async def test_detailed_format_strips_control_characters_from_untrusted_text():
    fake = FakeUpstream(GROUPING_DATA, api_key=TEST_API_KEY)
    async with connect(make_settings(), transport=mock_transport(fake)) as client:
        result = await client.call_tool(TOOL, {"video_ids": [VID_A], "response_format": "detailed"})
    [video] = parsed(result).videos
    assert video.description is not None
    assert "plain text" in video.description
    assert "\u202e" not in video.description and "\x00" not in video.description
    assert video.hashtags == ["#tag1", "#tag2"]
    assert "\u202e" not in text_of(result) and "\x00" not in text_of(result)


async def test_the_text_names_every_video_and_product_with_units_and_gmv_and_no_urls(
    fake_upstream: FakeUpstreamServer,
):
    ids = [DOCUMENTED_VIDEO_ID, THREE_ROWS, TWELVE_ROWS, ZERO_VIEWS, NO_PRODUCTS]
    async with connect(make_settings(fake_upstream.url)) as client:
        result = await client.call_tool(TOOL, {"video_ids": ids})
    out = parsed(result)
    text = text_of(result)
    lines = text.splitlines()
    assert len(out.videos) == 4
    for video in out.videos:
        assert any(line.startswith(video.video_id) for line in lines), video.video_id
        for product in video.products:
            [line] = [line for line in lines if product.product_id in line]
            assert str(product.units_sold) in line
    assert NO_PRODUCTS in text
    assert "http" not in text  # no URLs in concise mode
    raw = json.dumps([row for vid in ids for row in demo_dataset()[vid]], ensure_ascii=False)
    assert len(text) < 0.1 * len(raw)  # far smaller than the upstream JSON for the same rows


# ---------------------------------------------------------------------------------------------
# Page walking and the credit cap


async def test_a_video_with_twelve_rows_takes_two_pages_of_ten_with_all_ids_in_each_request(
    fake_upstream: FakeUpstreamServer,
):
    ids = [DOCUMENTED_VIDEO_ID, THREE_ROWS, TWELVE_ROWS]
    async with connect(make_settings(fake_upstream.url)) as client:
        out = parsed(await client.call_tool(TOOL, {"video_ids": ids}))
    requests = fake_upstream.fake.requests
    assert [r["params"]["page_num"] for r in requests] == ["1", "2"]
    assert all(r["params"]["page_size"] == str(PAGE_SIZE) == "10" for r in requests)
    assert all(sorted(video_ids_param(r)) == sorted(ids) for r in requests)
    assert out.complete
    assert out.credits.spent == 2
    data = demo_dataset()
    assert out.summary.products == sum(len(data[v]) for v in ids)
    twelve = next(v for v in out.videos if v.video_id == TWELVE_ROWS)
    assert sorted(p.product_id for p in twelve.products) == sorted(r["product_id"] for r in data[TWELVE_ROWS])


async def test_a_full_last_page_is_followed_by_one_more_request_that_proves_the_end():
    data = {VID_A: [_row(VID_A, str(500 + i), i, float(i), STATS_A) for i in range(PAGE_SIZE)]}
    fake = FakeUpstream(data, api_key=TEST_API_KEY)
    async with connect(make_settings(), transport=mock_transport(fake)) as client:
        out = parsed(await client.call_tool(TOOL, {"video_ids": [VID_A]}))
    assert [r["params"]["page_num"] for r in fake.requests] == ["1", "2"]
    assert out.complete and len(out.videos[0].products) == PAGE_SIZE


async def test_progress_is_reported_for_each_page_of_a_multi_page_fetch(fake_upstream: FakeUpstreamServer):
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with connect(make_settings(fake_upstream.url)) as client:
        result = await client.call_tool(TOOL, {"video_ids": [TWELVE_ROWS]}, progress_callback=on_progress)
    assert parsed(result).complete
    assert len(seen) == len(fake_upstream.fake.requests) == 2
    progress_values = [p for p, _, _ in seen]
    assert progress_values == sorted(progress_values) and len(set(progress_values)) == 2


@pytest.mark.parametrize(
    ("env_cap", "max_credits"),
    [(1, None), (5, 1), (1, 5)],
    ids=["env-cap", "max-credits-lowers", "max-credits-cannot-raise"],
)
async def test_the_credit_cap_stops_the_walk_with_a_continuation_that_completes_it(
    fake_upstream: FakeUpstreamServer, env_cap: int, max_credits: int | None
):
    arguments: dict[str, Any] = {"video_ids": [TWELVE_ROWS]}
    if max_credits is not None:
        arguments["max_credits"] = max_credits
    # Consent off: max_credits never raises the per-call cap (with consent it may: tests/test_consent.py).
    settings = make_settings(fake_upstream.url, max_credits_per_call=env_cap, confirm_above_credits=0)
    async with connect(settings) as client:
        first = await client.call_tool(TOOL, arguments)
        out = parsed(first)
        assert len(fake_upstream.fake.requests) == 1  # cap of 1 credit = 1 request
        assert out.complete is False
        assert out.next_page_num == 2
        assert out.pending_ids == [TWELVE_ROWS]
        assert out.not_found == []  # never claimed on an incomplete answer
        assert out.credits.spent == 1
        assert len(out.videos[0].products) == PAGE_SIZE
        last = text_of(first).splitlines()[-1]
        assert "get_video_products(" in last and TWELVE_ROWS in last and "page_num=2" in last

        second = await client.call_tool(TOOL, {**arguments, "video_ids": out.pending_ids, "page_num": 2})
    done = parsed(second)
    assert [r["params"]["page_num"] for r in fake_upstream.fake.requests] == ["1", "2"]
    assert done.complete and done.next_page_num is None
    assert done.credits.spent == 1
    assert len(done.videos[0].products) == len(demo_dataset()[TWELVE_ROWS])


async def test_max_credits_zero_with_nothing_cached_is_budget_exceeded_without_a_request(
    fake_upstream: FakeUpstreamServer,
):
    async with connect(make_settings(fake_upstream.url)) as client:
        result = await client.call_tool(TOOL, {"video_ids": [DOCUMENTED_VIDEO_ID], "max_credits": 0})
    assert_tool_error(result, "budget_exceeded")
    assert fake_upstream.fake.requests == []


# ---------------------------------------------------------------------------------------------
# Upstream errors reach the model as isError with the code first


ERROR_CASES = [
    pytest.param([(401, {"code": 401, "message": "apiKey is invalid", "data": None}, {})], "unauthorized", 1, id="401"),
    pytest.param([(403, {"code": 403, "message": "forbidden", "data": None}, {})], "unauthorized", 1, id="403"),
    pytest.param([(402, {"code": 402, "message": "no credits", "data": None}, {})], "out_of_credits", 1, id="402"),
    pytest.param(
        [(429, {"code": 429, "message": "slow down", "data": None}, {"Retry-After": "0"})] * MAX_ATTEMPTS,
        "rate_limited",
        MAX_ATTEMPTS,
        id="429-persisting",
    ),
    pytest.param(
        [(503, {"code": 503, "message": "maintenance", "data": None}, {})] * MAX_ATTEMPTS,
        "upstream_error",
        MAX_ATTEMPTS,
        id="5xx",
    ),
    pytest.param(
        [(200, {"code": 10001, "message": "video service busy", "data": None}, {})] * MAX_ATTEMPTS,
        "upstream_error",
        MAX_ATTEMPTS,
        id="non-zero-code-envelope",
    ),
    pytest.param(
        [(200, b"<html><body><h1>502 Bad Gateway</h1></body></html>", {})],
        "upstream_error",
        1,
        id="html-body",
    ),
]


@pytest.mark.usefixtures("no_backoff")
@pytest.mark.parametrize(("script", "code", "attempts"), ERROR_CASES)
async def test_upstream_failures_reach_the_model_as_errors_with_their_code_first(
    fake_upstream: FakeUpstreamServer, script: list[Any], code: str, attempts: int
):
    fake_upstream.fake.script.extend(script)
    async with connect(make_settings(fake_upstream.url)) as client:
        result = await client.call_tool(TOOL, {"video_ids": [DOCUMENTED_VIDEO_ID, THREE_ROWS]})
    text = assert_tool_error(result, code)
    assert len(fake_upstream.fake.requests) == attempts
    assert text.count("[") >= 1 and f"[{code}]" in text
    body = script[0][1]
    if isinstance(body, dict) and code in ("unauthorized", "out_of_credits", "upstream_error"):
        assert body["message"] in text  # the upstream's own message is quoted


async def test_a_transient_5xx_is_retried_and_the_model_sees_only_the_answer(
    fake_upstream: FakeUpstreamServer, no_backoff: None
):
    fake_upstream.fake.script.append((500, {"code": 500, "message": "oops", "data": None}, {}))
    async with connect(make_settings(fake_upstream.url)) as client:
        out = parsed(await client.call_tool(TOOL, {"video_ids": [DOCUMENTED_VIDEO_ID]}))
    assert len(fake_upstream.fake.requests) == 2
    assert out.complete and out.videos[0].video_id == DOCUMENTED_VIDEO_ID
    assert out.credits.spent == 1  # the failed attempt was not charged


async def test_a_slow_upstream_is_reported_as_timeout_without_a_silent_retry():
    fake = FakeUpstream(demo_dataset(), api_key=TEST_API_KEY, latency=0.5)
    with FakeUpstreamServer(fake) as server:
        async with connect(make_settings(server.url, timeout_seconds=0.05)) as client:
            result = await client.call_tool(TOOL, {"video_ids": [DOCUMENTED_VIDEO_ID]})
            usage = await client.call_tool("get_credit_usage", {})
        assert_tool_error(result, "timeout")
        # The request may have been charged: it is counted, and not sent again.
        report = CreditUsage.model_validate(usage.structured_content)
        assert report.spent_today == 1
        assert len(fake.requests) <= 1


# ---------------------------------------------------------------------------------------------
# The API key never reaches the model


async def test_the_api_key_never_appears_in_any_result_even_when_the_upstream_echoes_it(
    fake_upstream: FakeUpstreamServer, no_backoff: None
):
    echo = {"code": 401, "message": f"key {TEST_API_KEY} is invalid", "data": None}
    envelope = {"code": 10001, "message": f"Bearer {TEST_API_KEY} rejected", "data": None}
    fake_upstream.fake.script.extend([(401, echo, {}), *[(200, envelope, {})] * MAX_ATTEMPTS])
    results = []
    async with connect(make_settings(fake_upstream.url)) as client:
        results.append(await client.call_tool(TOOL, {"video_ids": [DOCUMENTED_VIDEO_ID]}))
        results.append(await client.call_tool(TOOL, {"video_ids": [DOCUMENTED_VIDEO_ID]}))
        results.append(await client.call_tool(TOOL, {"video_ids": [THREE_ROWS], "response_format": "detailed"}))
        results.append(await client.call_tool(TOOL, {"video_ids": [THREE_ROWS], "api_key": TEST_API_KEY}))
        results.append(await client.call_tool("get_credit_usage", {}))
        tools = await client.list_tools()
    assert_tool_error(results[0], "unauthorized")
    assert_tool_error(results[1], "upstream_error")
    assert not results[2].is_error
    assert_tool_error(results[3], "invalid_input")
    assert not results[4].is_error
    assert all(r["auth"] == f"Bearer {TEST_API_KEY}" for r in fake_upstream.fake.requests)  # it was used...
    for result in results:  # ...and never shown
        dumped = result.model_dump_json(by_alias=True)
        assert TEST_API_KEY not in dumped
    assert TEST_API_KEY not in tools.model_dump_json()


@pytest.mark.parametrize(
    ("ttl", "said"),
    [(21_600, "in the last 6 h come from cache"), (900, "in the last 15 min"), (0, "The cache is off")],
)
async def test_the_tool_description_states_the_configured_cache_lifetime(ttl: int, said: str):
    async with connect(make_settings(OFFLINE_URL, cache_ttl_seconds=ttl)) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert said in (tools[TOOL].description or "")


class BrokenUsageStore(SQLiteStore):
    """A store whose usage query has a bug: the kind of failure no error class anticipates."""

    async def usage_today(self):  # type: ignore[override]
        raise RuntimeError("internal detail that must not reach the model")


async def test_an_unexpected_failure_is_logged_and_reported_without_internals(caplog: pytest.LogCaptureFixture):
    settings = make_settings(OFFLINE_URL)
    async with connect(settings, demo=True, store=BrokenUsageStore(":memory:")) as client:
        with caplog.at_level(logging.ERROR):
            broken = await client.call_tool(TOOL, {"video_ids": [DOCUMENTED_VIDEO_ID]})
            usage = await client.call_tool("get_credit_usage", {})

    for result in (broken, usage):
        text = assert_tool_error(result, "upstream_error")
        assert "unexpected internal error" in text and "internal detail" not in text
    logged = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(logged) == 2 and all(r.exc_info and "internal detail" in str(r.exc_info[1]) for r in logged)
