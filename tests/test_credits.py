"""Credits through the MCP surface: the daily limit, the cache, continuations, single-flight, reporting.

Every tool call goes through `from mcp import Client`; what was really spent is counted on the fake
upstream (`fake.charged`, `fake.requests`), never taken from the server's own report alone.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from fakes import FakeUpstreamServer, synthetic_dataset
from helpers import (
    RESET_AT,
    T0,
    TEST_API_KEY,
    TOOL,
    Clock,
    assert_tool_error,
    connect,
    make_settings,
    parsed,
    text_of,
)
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp_types import CallToolResult

from keyapi_mcp.core.domain import PAGE_SIZE
from keyapi_mcp.presentation.models import CreditUsage, VideoProductsResult
from keyapi_mcp.state.sqlite_store import SQLiteStore
from keyapi_mcp.upstream.demo import FakeUpstream, mock_transport

pytestmark = pytest.mark.anyio

KEYAPI_MCP = str(Path(sys.executable).parent / "keyapi-mcp")


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def videos_with(*counts: int, first_id: int = 7_500_000_000_000_000_000) -> dict[str, list[dict[str, Any]]]:
    """Synthetic videos with exactly these numbers of product rows, in this order."""
    data: dict[str, list[dict[str, Any]]] = {}
    for i, count in enumerate(counts):
        data |= synthetic_dataset(1, seed=i, min_products=count, max_products=count, first_id=first_id + i * 1000)
    return data


async def fetch(client: Client, ids: Sequence[str], **args: Any) -> VideoProductsResult:
    return parsed(await client.call_tool(TOOL, {"video_ids": list(ids), **args}))


async def usage(client: Client) -> CreditUsage:
    result = await client.call_tool("get_credit_usage", {})
    assert not result.is_error, text_of(result)
    return CreditUsage.model_validate(result.structured_content)


def sent(fake: FakeUpstream, since: int = 0) -> list[tuple[frozenset[str], int]]:
    """(id set, page) of every request the fake received from index `since` on."""
    return [
        (frozenset(r["params"]["video_ids"].split(",")), int(r["params"]["page_num"])) for r in fake.requests[since:]
    ]


def product_ids(result: VideoProductsResult) -> dict[str, set[str]]:
    return {v.video_id: {p.product_id for p in v.products} for v in result.videos}


def expected_products(data: dict[str, list[dict[str, Any]]], ids: Sequence[str]) -> dict[str, set[str]]:
    return {v: {row["product_id"] for row in data[v]} for v in ids if data[v]}


def pages_for(rows: int) -> int:
    """Upstream requests needed for `rows` product rows: pages of 10 until a short page."""
    return rows // PAGE_SIZE + 1


@dataclass
class HoldingUpstream(FakeUpstream):
    """A fake that answers (and charges) each request only once `release` is set."""

    arrived: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def respond(self, query: str, headers: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
        answer = super().respond(query, headers)
        self.arrived.set()
        self.release.wait(timeout=30)
        return answer


@pytest.fixture
def serve() -> Iterator[Any]:
    """Start fake upstream servers on 127.0.0.1 for the test; all are stopped at its end."""
    servers: list[FakeUpstreamServer] = []

    def start(fake: FakeUpstream) -> FakeUpstreamServer:
        server = FakeUpstreamServer(fake).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        if isinstance(server.fake, HoldingUpstream):
            server.fake.release.set()
        server.__exit__(None, None, None)


# -- the daily limit under concurrency ---------------------------------------------------------------


async def test_twenty_parallel_calls_under_a_daily_limit_of_three_charge_three_requests_and_refuse_the_rest(
    serve: Any, tmp_path: Path
):
    data = videos_with(*([3] * 20))
    upstream = serve(FakeUpstream(data, api_key=TEST_API_KEY))
    store = SQLiteStore.in_dir(tmp_path / "state", clock=Clock())
    results: dict[str, CallToolResult] = {}

    async with connect(make_settings(upstream.url, daily_credit_limit=3), store=store) as client:

        async def call(video_id: str) -> None:
            results[video_id] = await client.call_tool(TOOL, {"video_ids": [video_id]})

        async with anyio.create_task_group() as tg:
            for video_id in data:
                tg.start_soon(call, video_id)
        report = await usage(client)

    assert upstream.fake.charged == 3
    answered = [vid for vid, r in results.items() if not r.is_error]
    assert len(answered) == 3
    assert {frozenset([vid]) for vid in answered} == {ids for ids, _ in sent(upstream.fake)}
    refusals = [assert_tool_error(r, "budget_exceeded") for r in results.values() if r.is_error]
    assert len(refusals) == 17
    for text in refusals:
        assert "3 of 3" in text and RESET_AT in text and "KEYAPI_DAILY_CREDIT_LIMIT" in text
    assert (report.spent_today, report.remaining_today) == (3, 0)


SERVER_CALLS = 6


async def test_two_server_processes_on_one_state_dir_never_exceed_their_shared_daily_limit(serve: Any, tmp_path: Path):
    data = videos_with(*([2] * (2 * SERVER_CALLS)))
    upstream = serve(FakeUpstream(data, api_key=TEST_API_KEY))
    env = {
        "KEYAPI_API_KEY": TEST_API_KEY,
        "KEYAPI_BASE_URL": upstream.url,
        "KEYAPI_STATE_DIR": str(tmp_path / "state"),
        "KEYAPI_DAILY_CREDIT_LIMIT": "4",
        "KEYAPI_MAX_RPS": "1000",
    }
    params = StdioServerParameters(command=KEYAPI_MCP, args=[], env=env, cwd=str(tmp_path))
    ids = list(data)
    results: list[CallToolResult] = []

    async with Client(params) as first, Client(params) as second:

        async def call(client: Client, video_id: str) -> None:
            results.append(await client.call_tool(TOOL, {"video_ids": [video_id]}))

        async with anyio.create_task_group() as tg:
            for i, video_id in enumerate(ids):
                tg.start_soon(call, first if i % 2 else second, video_id)
        seen_by = [await usage(first), await usage(second)]

    assert upstream.fake.charged == 4
    assert sum(not r.is_error for r in results) == 4
    assert all(assert_tool_error(r, "budget_exceeded") for r in results if r.is_error)
    assert [u.spent_today for u in seen_by] == [4, 4]


KILLED_WORKER = textwrap.dedent(
    """
    import asyncio, os, sys
    from pathlib import Path
    import httpx
    from keyapi_mcp.upstream.client import KeyAPIClient, RateLimiter
    from keyapi_mcp.core.budget import CallLimits
    from keyapi_mcp.core.service import ProductsService
    from keyapi_mcp.state.sqlite_store import SQLiteStore

    async def main():
        store = SQLiteStore.in_dir(Path(sys.argv[1]))
        async with httpx.AsyncClient(trust_env=False) as http:
            client = KeyAPIClient(
                http, api_key=os.environ["KEYAPI_API_KEY"], base_url=sys.argv[2], rate_limiter=RateLimiter(1000.0)
            )
            service = ProductsService(store, client, CallLimits(per_call=5, daily=1), cache_ttl=3600)
            await service.fetch(sys.argv[3:])

    asyncio.run(main())
    """
)


def kill_worker_mid_request(fake: HoldingUpstream, command: list[str], cwd: Path) -> None:
    """Start the worker, SIGKILL it once the fake holds its request, then let the fake answer nobody."""
    worker = subprocess.Popen(
        command, env={"PATH": os.environ.get("PATH", ""), "KEYAPI_API_KEY": TEST_API_KEY}, cwd=cwd
    )
    try:
        assert fake.arrived.wait(timeout=30), "the worker never reached the upstream"
        worker.send_signal(signal.SIGKILL)
        assert worker.wait(timeout=30) == -signal.SIGKILL
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(timeout=30)
        fake.release.set()


async def test_a_process_killed_while_the_upstream_holds_its_request_leaves_the_credit_counted(
    serve: Any, tmp_path: Path
):
    data = videos_with(3, 4)
    first_id, second_id = data
    fake = HoldingUpstream(data, api_key=TEST_API_KEY)
    upstream = serve(fake)
    state = tmp_path / "state"
    kill_worker_mid_request(fake, [sys.executable, "-c", KILLED_WORKER, str(state), upstream.url, first_id], tmp_path)
    assert fake.charged == 1  # the upstream charged a request whose answer nobody saw

    async with connect(make_settings(upstream.url, daily_credit_limit=1, state_dir=state)) as client:
        report = await usage(client)
        refused = await client.call_tool(TOOL, {"video_ids": [second_id]})

    assert (report.spent_today, report.uncertain_today, report.remaining_today) == (1, 1, 0)
    assert report.recent[0].charged == "uncertain"
    assert_tool_error(refused, "budget_exceeded")
    assert len(fake.requests) == 1


# -- uncertain and refused outcomes -----------------------------------------------------------------


async def test_a_read_timeout_counts_against_the_limit_and_shows_in_uncertain_today(tmp_path: Path):
    def never_answers(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    data = videos_with(3)
    settings = make_settings(daily_credit_limit=1)
    store = SQLiteStore.in_dir(tmp_path / "state", clock=Clock())
    async with connect(settings, transport=httpx.MockTransport(never_answers), store=store) as client:
        timed_out = await client.call_tool(TOOL, {"video_ids": list(data)})
        report = await usage(client)
        after = await client.call_tool(TOOL, {"video_ids": list(data)})

    assert_tool_error(timed_out, "timeout")
    assert (report.spent_today, report.uncertain_today, report.remaining_today) == (1, 1, 0)
    [entry] = report.recent
    assert (entry.outcome, entry.charged, entry.status) == ("timeout", "uncertain", None)
    assert_tool_error(after, "budget_exceeded")


@pytest.mark.parametrize(
    ("script", "code"),
    [
        ([(400, {"code": 400, "message": "bad ids", "data": None}, {})], "upstream_error"),
        ([(401, {"code": 401, "message": "apiKey is invalid", "data": None}, {})], "unauthorized"),
        ([(402, {"code": 402, "message": "no credits", "data": None}, {})], "out_of_credits"),
        ([(429, {"code": 429, "message": "slow down", "data": None}, {"Retry-After": "0"})] * 3, "rate_limited"),
        ([(503, {"code": 503, "message": "down", "data": None}, {})] * 3, "upstream_error"),
        ([(200, {"code": 500, "message": "internal", "data": None}, {})] * 3, "upstream_error"),
    ],
    ids=["400", "401", "402", "429", "503", "envelope-500"],
)
async def test_documented_error_answers_are_not_counted_as_spent(
    script: list[tuple[int, Any, dict[str, str]]], code: str, no_backoff: None, tmp_path: Path
):
    data = videos_with(3)
    fake = FakeUpstream(data, script=list(script))
    store = SQLiteStore.in_dir(tmp_path / "state", clock=Clock())
    async with connect(make_settings(daily_credit_limit=1), transport=mock_transport(fake), store=store) as client:
        failed = await client.call_tool(TOOL, {"video_ids": list(data)})
        report = await usage(client)
        answered = await fetch(client, list(data))  # the only credit of the day is still there

    assert_tool_error(failed, code)
    assert (report.spent_today, report.uncertain_today) == (0, 0)
    assert len(report.recent) == len(script)
    assert {e.charged for e in report.recent} == {"no"}
    assert (answered.credits.spent, answered.credits.spent_today) == (1, 1)


async def test_a_daily_limit_reached_midway_returns_the_rows_already_paid_for_and_continues_next_day(
    tmp_path: Path,
):
    data = videos_with(12, 9, 4)  # 25 rows: pages of 10, 10, 5
    fake = FakeUpstream(data)
    clock = Clock()
    store = SQLiteStore.in_dir(tmp_path / "state", clock=clock)
    settings = make_settings(daily_credit_limit=2, cache_ttl_seconds=86_400)
    async with connect(settings, transport=mock_transport(fake), store=store) as client:
        first = await client.call_tool(TOOL, {"video_ids": list(data)})
        partial = parsed(first)
        clock.now = datetime(2026, 3, 2, 0, 0, 1, tzinfo=UTC).timestamp()
        rest = await fetch(client, partial.pending_ids, page_num=partial.next_page_num)

    assert (partial.complete, partial.next_page_num) == (False, 3)
    assert partial.pending_ids == sorted(data)
    assert sum(len(v.products) for v in partial.videos) == 20
    assert (partial.credits.spent, partial.credits.remaining_today) == (2, 0)
    assert any("budget_exceeded" in w for w in partial.warnings)
    assert "page_num=3" in text_of(first)
    assert rest.complete and rest.credits.spent == 1
    assert product_ids(rest) == expected_products(data, list(data))
    assert [page for _, page in sent(fake)] == [1, 2, 3]


# -- the cache: pay once for each fact ---------------------------------------------------------------


async def test_repeats_subsets_and_reorderings_cost_nothing_and_an_overlap_pays_only_for_its_new_ids(
    tmp_path: Path,
):
    data = videos_with(3, 12, 0, 5)
    a, b, c, d = data
    fake = FakeUpstream(data)
    store = SQLiteStore.in_dir(tmp_path / "state", clock=Clock())
    async with connect(make_settings(), transport=mock_transport(fake), store=store) as client:
        first = await fetch(client, [a, b, c])
        free = [await fetch(client, ids) for ids in ([a, b, c], [c, a], [b], [b, c, a], [c])]
        before_overlap = len(fake.requests)
        overlap = await fetch(client, [c, d, a])

    assert first.credits.spent == pages_for(15) == 2
    assert sent(fake, 0)[:2] == [(frozenset([a, b, c]), 1), (frozenset([a, b, c]), 2)]
    assert [r.credits.spent for r in free] == [0, 0, 0, 0, 0]
    assert [r.credits.cached_videos for r in free] == [3, 2, 1, 3, 1]
    assert product_ids(free[3]) == expected_products(data, [a, b, c])
    assert free[4].not_found == [c]  # a cached empty list is a complete answer too
    assert all(v.source == "cache" for r in free for v in r.videos)
    assert overlap.credits.spent == 1
    assert sent(fake, before_overlap) == [(frozenset([d]), 1)]
    assert product_ids(overlap) == expected_products(data, [a, d])
    assert {v.video_id: v.source for v in overlap.videos} == {a: "cache", d: "upstream"}
    assert fake.charged == 3


async def test_a_restarted_server_on_the_same_state_dir_answers_repeats_free_and_keeps_spent_today(
    tmp_path: Path,
):
    data = videos_with(4, 7)
    fake = FakeUpstream(data)
    settings = make_settings(state_dir=tmp_path / "state", daily_credit_limit=10)
    async with connect(settings, transport=mock_transport(fake)) as client:  # the server opens its own store
        before = await fetch(client, list(data))
    async with connect(settings, transport=mock_transport(fake)) as client:
        after = await fetch(client, list(reversed(data)))
        report = await usage(client)

    assert before.credits.spent == 2
    assert (after.credits.spent, after.credits.cached_videos, after.credits.spent_today) == (0, 2, 2)
    assert product_ids(after) == product_ids(before) == expected_products(data, list(data))
    assert (report.spent_today, report.remaining_today, report.cached_videos) == (2, 8, 2)
    assert [e.page for e in report.recent] == [2, 1]
    assert fake.charged == 2


async def test_cached_videos_expire_after_the_ttl_and_results_say_where_they_came_from_and_when(tmp_path: Path):
    data = videos_with(3)
    fake = FakeUpstream(data)
    clock = Clock()
    store = SQLiteStore.in_dir(tmp_path / "state", clock=clock)
    async with connect(make_settings(cache_ttl_seconds=100), transport=mock_transport(fake), store=store) as client:
        fresh = await fetch(client, list(data))
        clock.now = T0 + 99
        cached = await fetch(client, list(data))
        clock.now = T0 + 100
        expired = await fetch(client, list(data))

    assert [r.credits.spent for r in (fresh, cached, expired)] == [1, 0, 1]
    assert [(r.videos[0].source, r.videos[0].fetched_at) for r in (fresh, cached, expired)] == [
        ("upstream", iso(T0)),
        ("cache", iso(T0)),
        ("upstream", iso(T0 + 100)),
    ]
    assert fake.charged == 2


async def test_a_zero_ttl_disables_the_cache(tmp_path: Path):
    data = videos_with(3, 0)
    fake = FakeUpstream(data)
    store = SQLiteStore.in_dir(tmp_path / "state", clock=Clock())
    async with connect(make_settings(cache_ttl_seconds=0), transport=mock_transport(fake), store=store) as client:
        results = [await fetch(client, list(data)) for _ in range(3)]
        report = await usage(client)

    assert [r.credits.spent for r in results] == [1, 1, 1]
    assert [r.credits.cached_videos for r in results] == [0, 0, 0]
    assert (report.cached_videos, report.saved_today) == (0, 0)
    assert fake.charged == 3


async def test_refresh_bypasses_the_cache_and_refreshes_it(tmp_path: Path):
    data = videos_with(3, 2)
    changed = videos_with(5, 2)  # same ids, the first video now sells other products
    fake = FakeUpstream(dict(data))
    clock = Clock()
    store = SQLiteStore.in_dir(tmp_path / "state", clock=clock)
    async with connect(make_settings(), transport=mock_transport(fake), store=store) as client:
        await fetch(client, list(data))
        fake.data.update(
            {vid: [dict(row, product_id=f"9{i}") for i, row in enumerate(rows)] for vid, rows in changed.items()}
        )
        stale = await fetch(client, list(data))
        clock.now = T0 + 60
        refreshed = await fetch(client, list(data), refresh=True)
        clock.now = T0 + 120
        after = await fetch(client, list(data))

    assert (stale.credits.spent, refreshed.credits.spent, after.credits.spent) == (0, 1, 0)
    assert product_ids(stale) == expected_products(data, list(data))
    assert product_ids(refreshed) == product_ids(after) == expected_products(fake.data, list(data))
    assert product_ids(refreshed) != product_ids(stale)
    assert {v.source for v in refreshed.videos} == {"upstream"}
    assert {v.fetched_at for v in after.videos} == {iso(T0 + 60)}


# -- continuations ----------------------------------------------------------------------------------


async def test_continuing_with_page_num_never_pays_twice_for_a_page(tmp_path: Path):
    data = videos_with(12, 9, 4)  # 25 rows: pages of 10, 10, 5
    fake = FakeUpstream(data)
    store = SQLiteStore.in_dir(tmp_path / "state", clock=Clock())
    async with connect(make_settings(), transport=mock_transport(fake), store=store) as client:
        first = await fetch(client, list(data), max_credits=1)
        repeated = await fetch(client, list(reversed(data)), max_credits=1)  # page 1 again, then page 2
        again = await fetch(client, first.pending_ids, page_num=2, max_credits=1)  # page 2 again, then page 3
        replay = await fetch(client, first.pending_ids, page_num=3, max_credits=1)
        whole = await fetch(client, list(data), max_credits=0)

    assert (first.complete, first.next_page_num, first.pending_ids) == (False, 2, sorted(data))
    assert (repeated.complete, repeated.next_page_num, repeated.credits.spent) == (False, 3, 1)
    assert again.complete and again.credits.spent == 1
    assert product_ids(again) == expected_products(data, list(data))  # pages 1-2 assembled from the cache
    assert (replay.complete, replay.credits.spent, whole.credits.spent) == (True, 0, 0)
    assert product_ids(whole) == expected_products(data, list(data))
    assert sent(fake) == [(frozenset(data), 1), (frozenset(data), 2), (frozenset(data), 3)]


async def test_next_page_num_continues_the_same_reduced_id_set_even_after_the_cache_changed(tmp_path: Path):
    data = videos_with(3, 12, 9)  # b and c: 21 rows, pages of 10, 10, 1
    a, b, c = data
    fake = FakeUpstream(data)
    store = SQLiteStore.in_dir(tmp_path / "state", clock=Clock())
    async with connect(make_settings(), transport=mock_transport(fake), store=store) as client:
        await fetch(client, [a])
        incomplete_raw = await client.call_tool(TOOL, {"video_ids": [a, b, c], "max_credits": 1})
        incomplete = parsed(incomplete_raw)
        await fetch(client, [c])  # the cache changes: c is now complete on its own
        marker = len(fake.requests)
        continued = await fetch(client, incomplete.pending_ids, page_num=incomplete.next_page_num)

    assert sent(fake)[1] == (frozenset([b, c]), 1)  # the cached a was left out of the paid query
    assert (incomplete.pending_ids, incomplete.next_page_num) == ([b, c], 2)
    assert f'"{b}", "{c}"' in text_of(incomplete_raw) and "page_num=2" in text_of(incomplete_raw)
    assert sent(fake, marker) == [(frozenset([b, c]), 2), (frozenset([b, c]), 3)]  # not {b} alone
    assert continued.complete and continued.credits.spent == 2
    assert product_ids(continued) == expected_products(data, [b, c])


# -- single-flight ----------------------------------------------------------------------------------


class CountingStore(SQLiteStore):
    """Lets a test wait until N calls have looked up the cache.

    Each `get_video_products` call makes exactly one look-up, then claims its ids (or starts waiting
    on another call's claim) before it next yields to the event loop.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lookups = 0
        self._waiters: list[tuple[int, anyio.Event]] = []

    async def get_videos(self, video_ids: Sequence[str], max_age: float) -> Any:
        self.lookups += 1
        for count, event in self._waiters:
            if self.lookups >= count:
                event.set()
        return await super().get_videos(video_ids, max_age)

    async def reached(self, count: int) -> None:
        if self.lookups < count:
            event = anyio.Event()
            self._waiters.append((count, event))
            with anyio.fail_after(20):
                await event.wait()


@pytest.mark.parametrize("ttl", [21_600, 0], ids=["cache-on", "cache-off"])
async def test_concurrent_calls_for_the_same_ids_share_one_upstream_walk(serve: Any, tmp_path: Path, ttl: int):
    data = videos_with(12, 3)  # x: two pages on its own
    x, z = data
    fake = HoldingUpstream(data, api_key=TEST_API_KEY)
    upstream = serve(fake)
    store = CountingStore(tmp_path / "state.sqlite3")  # real clock: time passes between fetch and look-up
    calls = [[x], [x], [x, z], [x], [x]]
    results: list[VideoProductsResult] = []

    async with connect(make_settings(upstream.url, cache_ttl_seconds=ttl), store=store) as client:

        async def call(ids: list[str]) -> None:
            results.append(await fetch(client, ids))

        async with anyio.create_task_group() as tg:
            for ids in calls:
                tg.start_soon(call, ids)
            await store.reached(len(calls))  # every call has claimed its ids or is waiting on them
            fake.release.set()

    queries = {ids for ids, _ in sent(fake)}
    assert sum(x in ids for ids in queries) == 1  # x was walked by exactly one call
    assert len(fake.requests) == sum(pages_for(sum(len(data[v]) for v in ids)) for ids in queries)
    assert sum(r.credits.spent for r in results) == fake.charged
    assert all(product_ids(r)[x] == expected_products(data, [x])[x] for r in results)
    assert sorted(r.credits.cached_videos for r in results if r.credits.spent == 0) == [1] * (
        len([r for r in results if r.credits.spent == 0])
    )


async def test_an_incomplete_answer_continues_only_its_own_query_when_another_call_held_some_of_its_ids(
    serve: Any, tmp_path: Path
):
    data = videos_with(25, 9, 6)  # x alone: 3 pages; y and w together: 2 pages
    x, y, w = data
    fake = HoldingUpstream(data, api_key=TEST_API_KEY)
    upstream = serve(fake)
    store = CountingStore(tmp_path / "state.sqlite3")
    results: dict[str, VideoProductsResult] = {}

    async with connect(make_settings(upstream.url), store=store) as client:

        async def call(name: str, ids: list[str]) -> None:
            results[name] = await fetch(client, ids, max_credits=1)

        async with anyio.create_task_group() as tg:
            tg.start_soon(call, "holder", [x])
            await store.reached(1)  # x is claimed by the first call
            tg.start_soon(call, "other", [x, y, w])
            await store.reached(2)
            fake.release.set()
        other = results["other"]
        continued = await fetch(client, other.pending_ids, page_num=other.next_page_num)

    assert (other.complete, other.pending_ids, other.next_page_num) == (False, sorted([y, w]), 2)
    assert any(x in warning for warning in other.warnings)  # named, but not mixed into the continuation
    assert continued.complete and continued.credits.spent == 1
    assert product_ids(continued) == expected_products(data, [y, w])
    assert sent(fake).count((frozenset([y, w]), 1)) == 1


# -- reporting --------------------------------------------------------------------------------------


async def test_get_credit_usage_reports_spent_limit_remaining_reset_uncertain_saved_cached_and_recent(
    tmp_path: Path,
):
    data = videos_with(3, 4)
    singles = videos_with(*([1] * 11), first_id=7_600_000_000_000_000_000)
    fake = FakeUpstream(data | singles)
    store = SQLiteStore.in_dir(tmp_path / "state", clock=Clock())
    settings = make_settings(daily_credit_limit=20, max_credits_per_call=7)
    async with connect(settings, transport=mock_transport(fake), store=store) as client:
        await fetch(client, list(data))
        await fetch(client, list(data))  # saves 1
        await fetch(client, list(data)[:1])  # saves 1
        early = await usage(client)
        for vid in singles:
            await fetch(client, [vid])
        late_raw = await client.call_tool("get_credit_usage", {})
        late = CreditUsage.model_validate(late_raw.structured_content)

    assert (early.spent_today, early.daily_limit, early.remaining_today) == (1, 20, 19)
    assert (early.max_credits_per_call, early.resets_at, early.uncertain_today) == (7, RESET_AT, 0)
    assert (early.saved_today, early.cached_videos) == (2, 2)
    [entry] = early.recent
    assert (entry.at, entry.page, entry.ids, entry.status, entry.outcome, entry.charged) == (
        iso(T0),
        1,
        2,
        200,
        "ok",
        "yes",
    )
    assert entry.request_id
    assert (late.spent_today, late.remaining_today, late.cached_videos) == (12, 8, 13)
    assert len(late.recent) == 10 and all(e.ids == 1 for e in late.recent)
    text = text_of(late_raw)
    assert "12/20" in text and RESET_AT in text


async def test_credits_saved_in_a_session_are_written_when_the_server_stops(tmp_path: Path):
    data = videos_with(3)
    store = SQLiteStore.in_dir(tmp_path / "state", clock=Clock())
    async with connect(make_settings(), transport=mock_transport(FakeUpstream(data)), store=store) as client:
        await fetch(client, list(data))
        await fetch(client, list(data))  # answered from the cache: saves 1, batched in memory

    other_process = SQLiteStore.in_dir(tmp_path / "state", clock=Clock())
    assert (await other_process.usage_today()).saved == 1


async def test_without_a_daily_limit_remaining_today_is_null_everywhere(tmp_path: Path):
    data = videos_with(2)
    store = SQLiteStore.in_dir(tmp_path / "state", clock=Clock())
    async with connect(
        make_settings(daily_credit_limit=0), transport=mock_transport(FakeUpstream(data)), store=store
    ) as client:
        result = await fetch(client, list(data))
        report = await usage(client)

    assert (result.credits.daily_limit, result.credits.remaining_today, result.credits.spent_today) == (None, None, 1)
    assert (report.daily_limit, report.remaining_today, report.spent_today) == (None, None, 1)


async def test_a_multi_page_fetch_sends_one_progress_notification_per_page(tmp_path: Path):
    data = videos_with(12, 9, 4)
    store = SQLiteStore.in_dir(tmp_path / "state", clock=Clock())
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, total, message))

    async with connect(make_settings(), transport=mock_transport(FakeUpstream(data)), store=store) as client:
        result = await client.call_tool(TOOL, {"video_ids": list(data)}, progress_callback=on_progress)

    assert parsed(result).credits.spent == 3
    assert [done for done, _, _ in progress] == [1, 2, 3]
    assert [message for _, _, message in progress] == ["page 1: 10 rows", "page 2: 10 rows", "page 3: 5 rows"]


# -- done when: a scripted session spends the minimum -----------------------------------------------


async def test_a_scripted_session_of_repeats_subsets_overlaps_and_paginated_ids_spends_the_minimum(tmp_path: Path):
    data = synthetic_dataset(30, seed=11)  # 0-12 product rows per video
    ids = list(data)
    rng = random.Random(5)
    script: list[list[str]] = [
        ids[0:3],
        ids[0:3],  # repeat
        [ids[2], ids[0]],  # subset, reordered
        ids[1:5],  # overlap
        ids[5:15],  # ten new videos: several pages
        [ids[3], ids[5], ids[7], ids[15], ids[16]],
        [ids[16], ids[15], ids[3]],
        ids[17:18],
        ids[18:30],
        list(reversed(ids)),  # everything, all known
    ]
    script += [rng.sample(ids, rng.randint(1, 8)) for _ in range(15)]
    assert any(len(data[v]) > PAGE_SIZE for v in ids) and any(not data[v] for v in ids)

    fake = FakeUpstream(data)
    store = SQLiteStore.in_dir(tmp_path / "state", clock=Clock())
    settings = make_settings(max_credits_per_call=50, daily_credit_limit=0)
    known: set[str] = set()
    paid_total = 0
    async with connect(settings, transport=mock_transport(fake), store=store) as client:
        for step, call_ids in enumerate(script):
            new = [v for v in call_ids if v not in known]
            expected = 0 if not new else sum(len(data[v]) for v in new) // PAGE_SIZE + 1
            marker = len(fake.requests)

            result = await fetch(client, call_ids)

            assert result.credits.spent == expected, f"step {step}"
            assert len(fake.requests) - marker == expected, f"step {step}"
            assert {ids for ids, _ in sent(fake, marker)} <= {frozenset(new)}, f"step {step}"
            assert result.complete and result.credits.cached_videos == len(call_ids) - len(new)
            assert product_ids(result) == expected_products(data, call_ids), f"step {step}"
            assert sorted(result.not_found) == sorted(v for v in call_ids if not data[v])
            known.update(new)
            paid_total += expected

    assert known == set(ids)
    assert fake.charged == paid_total
