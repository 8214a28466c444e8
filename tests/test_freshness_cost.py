"""Freshness the model chooses (`max_age_seconds`), the age of each video's data, and the cost on every result
(`_meta["ai.keyapi/cost"]`, the structured credits and the low-balance line), through the SDK's `Client`.

What was really sent is counted on the fake upstream; the clock is injected, so ages are exact.
"""

from __future__ import annotations

from typing import Any

import pytest
from helpers import (
    TEST_API_KEY,
    THREE_ROWS,
    TOOL,
    TWELVE_ROWS,
    Clock,
    assert_tool_error,
    make_settings,
    parsed,
    text_of,
)
from mcp import Client
from mcp_types import ElicitResult

from keyapi_mcp.server import build_server
from keyapi_mcp.state.sqlite_store import SQLiteStore
from keyapi_mcp.surface.consent import COST_META_KEY
from keyapi_mcp.upstream.demo import FakeUpstream, demo_dataset, mock_transport

pytestmark = pytest.mark.anyio


async def _with_server(tmp_path: Any, **settings: Any) -> tuple[Any, FakeUpstream, Clock, SQLiteStore]:
    clock = Clock()
    store = SQLiteStore(tmp_path / "state.sqlite3", clock=clock)
    fake = FakeUpstream(demo_dataset(), api_key=TEST_API_KEY)
    server = build_server(make_settings(**settings), transport=mock_transport(fake), store=store, clock=clock)
    return server, fake, clock, store


async def test_max_age_seconds_takes_cached_data_only_as_old_as_asked_and_each_video_states_its_age(tmp_path):
    server, fake, clock, store = await _with_server(tmp_path)
    try:
        async with Client(server) as client:
            first = parsed(await client.call_tool(TOOL, {"video_ids": [THREE_ROWS]}))
            assert first.videos[0].age_seconds == 0 and first.videos[0].source == "upstream"
            clock.now += 600
            cached = await client.call_tool(TOOL, {"video_ids": [THREE_ROWS], "max_age_seconds": 3600})
            video = parsed(cached).videos[0]
            assert (video.source, video.age_seconds, len(fake.requests)) == ("cache", 600, 1)
            assert "cached 10min old" in text_of(cached)
            # Older than asked: fetched again (1 credit), and the answer is fresh.
            again = parsed(await client.call_tool(TOOL, {"video_ids": [THREE_ROWS], "max_age_seconds": 300}))
            assert (again.videos[0].source, again.videos[0].age_seconds, again.credits.spent) == ("upstream", 0, 1)
            # 0 = fetch now, like refresh.
            now = parsed(await client.call_tool(TOOL, {"video_ids": [THREE_ROWS], "max_age_seconds": 0}))
            assert now.credits.spent == 1 and len(fake.requests) == 3
    finally:
        await store.close()


async def test_max_age_seconds_never_accepts_data_older_than_the_cache_keeps(tmp_path):
    server, fake, clock, store = await _with_server(tmp_path, cache_ttl_seconds=3600)
    try:
        async with Client(server) as client:
            parsed(await client.call_tool(TOOL, {"video_ids": [THREE_ROWS]}))
            clock.now += 3601
            later = parsed(await client.call_tool(TOOL, {"video_ids": [THREE_ROWS], "max_age_seconds": 86_400}))
        assert later.credits.spent == 1 and len(fake.requests) == 2
    finally:
        await store.close()


async def test_every_result_carries_its_cost_in_meta_and_in_the_structured_credits(tmp_path):
    server, fake, _, store = await _with_server(tmp_path, daily_credit_limit=50)
    try:
        async with Client(server) as client:
            paid = await client.call_tool(TOOL, {"video_ids": [TWELVE_ROWS, THREE_ROWS]})
            free = await client.call_tool(TOOL, {"video_ids": [THREE_ROWS]})
    finally:
        await store.close()
    spent = len(fake.requests)
    assert (paid.meta or {})[COST_META_KEY] == {
        "spent": spent,
        "cached_videos": 0,
        "remaining_today": 50 - spent,
        "daily_limit": 50,
    }
    assert (free.meta or {})[COST_META_KEY] == {
        "spent": 0,
        "cached_videos": 1,
        "remaining_today": 50 - spent,
        "daily_limit": 50,
    }
    credits = parsed(free).credits
    assert (credits.spent, credits.cached_videos, credits.remaining_today) == (0, 1, 50 - spent)
    assert credits.low_balance is None and "LOW BALANCE" not in text_of(free)


async def test_the_text_warns_when_a_tenth_or_less_of_todays_budget_is_left(tmp_path):
    server, _, _, store = await _with_server(tmp_path, daily_credit_limit=20, user_daily_credit_limit=0)
    try:
        async with Client(server) as client:
            calm = parsed(await client.call_tool(TOOL, {"video_ids": [THREE_ROWS]}))
            for vid in range(17):  # 17 more single-page videos: 18 of 20 spent
                parsed(await client.call_tool(TOOL, {"video_ids": [str(7_200_000_000_000_000_000 + vid)]}))
            low = await client.call_tool(TOOL, {"video_ids": [TWELVE_ROWS], "max_credits": 1})
    finally:
        await store.close()
    assert calm.credits.low_balance is None
    credits = parsed(low).credits
    assert credits.remaining_today == 1
    assert credits.low_balance is not None and "1 of 20 credits left today" in credits.low_balance
    assert f"LOW BALANCE: {credits.low_balance}" in text_of(low)


async def test_the_text_says_so_when_the_account_runs_out_of_credits_midway(tmp_path):
    server, fake, _, store = await _with_server(tmp_path)
    original = fake.respond

    def respond(query: str, headers: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
        if "page_num=2" in query:  # page 1 is served; page 2 meets an empty account
            return 402, b'{"code": 402, "message": "Insufficient credits", "data": null}', {}
        return original(query, headers)

    fake.respond = respond  # type: ignore[method-assign]
    try:
        async with Client(server) as client:
            result = await client.call_tool(TOOL, {"video_ids": [TWELVE_ROWS]})
    finally:
        await store.close()
    answer = parsed(result)
    assert not answer.complete and answer.credits.spent == 1
    assert answer.credits.low_balance is not None and "HTTP 402" in answer.credits.low_balance
    assert "LOW BALANCE: the KeyAPI account ran out of credits" in text_of(result)


async def test_a_declined_spend_carries_its_cost_too(tmp_path):
    server, fake, _, store = await _with_server(tmp_path, confirm_above_credits=1)

    async def decline(context: Any, params: Any) -> ElicitResult:
        return ElicitResult(action="decline")

    try:
        async with Client(server, elicitation_callback=decline) as client:
            result = await client.call_tool(TOOL, {"video_ids": [TWELVE_ROWS]})
    finally:
        await store.close()
    assert result.is_error and fake.requests == []
    assert (result.meta or {})[COST_META_KEY] == {
        "spent": 0,
        "cached_videos": 0,
        "remaining_today": 100,
        "daily_limit": 100,
    }


async def test_a_refused_call_carries_its_cost_and_remaining_today_is_the_callers_own(tmp_path):
    server, fake, _, store = await _with_server(tmp_path, daily_credit_limit=100, user_daily_credit_limit=2)
    try:
        async with Client(server) as client:
            paid = await client.call_tool(TOOL, {"video_ids": [THREE_ROWS]})
            parsed(await client.call_tool(TOOL, {"video_ids": ["7300000000000000000"]}))
            refused = await client.call_tool(TOOL, {"video_ids": ["7300000000000000001"]})
    finally:
        await store.close()
    # The per-user limit (2) is smaller than what the day has left (99): that is what this caller has.
    assert (paid.meta or {})[COST_META_KEY]["remaining_today"] == 1
    assert_tool_error(refused, "budget_exceeded")
    assert (refused.meta or {})[COST_META_KEY] == {
        "spent": 0,
        "cached_videos": 0,
        "remaining_today": 0,
        "daily_limit": 100,
    }
    assert len(fake.requests) == 2
