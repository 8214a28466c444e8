"""What only the Redis store does: locks shared across replicas, failing closed, recovering, hiding the password.

The shared ledger/cache behaviour is in test_store_contract.py (run against both stores). Everything here
talks to a real redis-server on 127.0.0.1 (tests/redis_proc.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeUpstreamServer
from helpers import THREE_ROWS, TOOL, TWELVE_ROWS, assert_tool_error, connect, free_port, make_settings, parsed
from redis_proc import RedisProcess, redis_server_binary

from keyapi_mcp.config import Settings
from keyapi_mcp.core.domain import Attempt
from keyapi_mcp.errors import StateStoreError
from keyapi_mcp.server import open_store
from keyapi_mcp.state.redis_store import RedisStore, redact_url

pytestmark = pytest.mark.anyio

PASSWORD = "hunter2-Redis-Secret"


@asynccontextmanager
async def two_replicas(url: str, **options: Any) -> AsyncIterator[tuple[RedisStore, RedisStore]]:
    """Two stores on one Redis, as two replicas open them; both are closed at the end."""
    first, second = RedisStore.from_url(url, **options), RedisStore.from_url(url, **options)
    try:
        yield first, second
    finally:
        await first.close()
        await second.close()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A private redis-server (with an append-only file) that a test may stop and start again."""
    server = RedisProcess(redis_server_binary(), tmp_path / "own-redis", persistent=True)
    with server:
        yield server


# -- configuration ------------------------------------------------------------------------------


def test_a_redis_state_url_selects_the_redis_store_and_its_description_hides_the_password(tmp_path: Path):
    for url in (f"redis://:{PASSWORD}@127.0.0.1:6390/2", f"rediss://user:{PASSWORD}@cache.example:6390/0"):
        store = open_store(Settings(_env_file=None, state_url=url))
        assert isinstance(store, RedisStore)
        assert PASSWORD not in store.description
        assert "***@" in store.description
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


# -- single-flight locks ------------------------------------------------------------------------


async def test_an_id_claimed_by_one_replica_cannot_be_claimed_by_another_until_released(redis_url: str):
    async with two_replicas(redis_url) as (first, second):
        assert await first.claim(["111", "222"]) == {"111", "222"}
        assert await second.claim(["222", "333"]) == {"333"}

        await second.release(["222"])  # not its lock: releasing must not free it
        assert await second.claim(["222"]) == set()

        await first.release(["111", "222"])
        assert await second.claim(["111", "222"]) == {"111", "222"}


async def test_a_lock_left_by_a_crashed_replica_expires_by_itself(redis_url: str):
    async with two_replicas(redis_url, lock_ttl=1.0) as (crashed, survivor):
        assert await crashed.claim(["111"]) == {"111"}
        assert await survivor.claim(["111"]) == set()
        await crashed.close()  # the replica dies holding the lock: nothing renews it any more

        await survivor.wait_released(["111"])  # returns once the lock has expired

        assert await survivor.claim(["111"]) == {"111"}


async def test_a_live_holder_keeps_its_lock_beyond_one_lock_lifetime_until_it_releases(redis_url: str):
    async with two_replicas(redis_url, lock_ttl=1.0) as (holder, other):
        assert await holder.claim(["111", "222"]) == {"111", "222"}
        await asyncio.sleep(3.2)  # more than three lock lifetimes: a long walk in progress

        assert await other.claim(["111", "222"]) == set()

        await holder.release(["111", "222"])
        assert await other.claim(["111", "222"]) == {"111", "222"}


async def test_waiting_for_another_replica_ends_when_it_releases_its_lock(redis_url: str):
    async with two_replicas(redis_url, lock_ttl=30) as (holder, waiter):
        assert await holder.claim(["111"]) == {"111"}
        waiting = asyncio.create_task(waiter.wait_released(["111"]))
        await asyncio.sleep(0.1)
        assert not waiting.done()

        await holder.release(["111"])

        await asyncio.wait_for(waiting, timeout=5)  # long before the 30 s lock would expire


async def test_overlapping_calls_on_two_replicas_pay_once(redis_url: str, fake_upstream: FakeUpstreamServer):
    fake_upstream.fake.latency = 0.2  # keep the first walk in flight while the other replica asks
    settings = make_settings(fake_upstream.url, state_url=redis_url)
    # Two servers, each opening its own store from KEYAPI_STATE_URL: two replicas, as two processes would.
    async with connect(settings) as a, connect(settings) as b:
        ids = {"video_ids": [TWELVE_ROWS, THREE_ROWS]}
        results = await asyncio.gather(a.call_tool(TOOL, ids), b.call_tool(TOOL, ids))

    answers = [parsed(r) for r in results]
    assert fake_upstream.fake.charged == 2  # 15 rows: the two pages of one walk
    assert sorted(answer.credits.spent for answer in answers) == [0, 2]
    rows = [sorted((v.video_id, len(v.products)) for v in answer.videos) for answer in answers]
    assert rows[0] == rows[1] == [(THREE_ROWS, 3), (TWELVE_ROWS, 12)]


# -- failing closed and recovering --------------------------------------------------------------


async def test_every_method_fails_closed_naming_the_store_when_redis_is_unreachable(
    caplog: pytest.LogCaptureFixture,
):
    caplog.set_level(logging.DEBUG)
    url = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"  # nothing listens there
    store = RedisStore.from_url(url, socket_timeout=1.0)
    calls: list[Any] = [
        store.reserve(ids_count=1, page=1, daily_limit=10),
        store.settle(_reservation(), Attempt(1, 1, 200, "ok", "yes")),
        store.usage_today(),
        store.recent(10),
        store.add_saved(1),
        store.get_videos(["111"], 100),
        store.put_videos({"111": []}, store.now()),
        store.get_page("111", 1, 100),
        store.put_page("111", 1, [], store.now()),
        store.cached_video_count(100),
        store.prune(100),
        store.claim(["111"]),
        store.wait_released(["111"]),
    ]
    try:
        for call in calls:
            with pytest.raises(StateStoreError) as info:
                await call
            text = info.value.render()
            assert text.startswith("[budget_exceeded]")
            assert "Redis state store redis://***@127.0.0.1:" in text
            assert "No upstream request" not in text  # only the caller knows what was sent (test_faults)
            assert PASSWORD not in text
        await store.release(["111"])  # best effort: never raises
    finally:
        await store.close()
    assert caplog.records, "the outage is logged"
    assert all(PASSWORD not in record.getMessage() for record in caplog.records)


def _reservation() -> Any:
    from keyapi_mcp.core.domain import Reservation

    return Reservation(id="gone", day="2026-03-10")


async def test_a_store_recovers_by_itself_when_redis_comes_back_and_keeps_the_ledger(own_redis: RedisProcess):
    store = RedisStore.from_url(own_redis.url, socket_timeout=1.0)
    try:
        first = await store.reserve(ids_count=1, page=1, daily_limit=10)
        await store.settle(first, Attempt(1, 1, 200, "ok", "yes"))

        own_redis.stop()
        with pytest.raises(StateStoreError):
            await store.reserve(ids_count=1, page=1, daily_limit=10)
        own_redis.start()

        again = await store.reserve(ids_count=1, page=1, daily_limit=10)
        await store.settle(again, Attempt(1, 1, 200, "ok", "yes"))
        assert (await store.usage_today()).spent == 2
        assert [e.charged for e in await store.recent(5)] == ["yes", "yes"]
    finally:
        await store.close()


async def test_the_server_refuses_paid_calls_while_redis_is_down_and_serves_again_when_it_returns(
    own_redis: RedisProcess, fake_upstream: FakeUpstreamServer
):
    async with connect(make_settings(fake_upstream.url, state_url=own_redis.url)) as client:
        parsed(await client.call_tool(TOOL, {"video_ids": [THREE_ROWS]}))  # served while Redis is up
        requests_before = len(fake_upstream.fake.requests)

        own_redis.stop()
        refused = await client.call_tool(TOOL, {"video_ids": [TWELVE_ROWS]})
        usage_refused = await client.call_tool("get_credit_usage", {})
        assert "Redis state store redis://127.0.0.1:" in assert_tool_error(refused, "budget_exceeded")
        assert_tool_error(usage_refused, "budget_exceeded")
        assert len(fake_upstream.fake.requests) == requests_before  # no request without a reservation

        own_redis.start()
        served = await client.call_tool(TOOL, {"video_ids": [TWELVE_ROWS]})
        usage = await client.call_tool("get_credit_usage", {})

    assert parsed(served).credits.spent == 2
    assert usage.structured_content["spent_today"] == 3  # type: ignore[index]
    assert fake_upstream.fake.charged == 3
