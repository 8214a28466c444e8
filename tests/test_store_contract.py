"""One behaviour suite, two stores: SQLiteStore and RedisStore must keep the ledger and the cache alike.

Every test runs against both (the Redis one on a real redis-server, see tests/redis_proc.py). Several
store objects on one database / one Redis stand for several server processes or replicas.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from helpers import Clock

from keyapi_mcp.core.domain import Attempt, ConsentGrant, DayUsage, Reservation, query_key
from keyapi_mcp.core.ports import Store
from keyapi_mcp.errors import BudgetExceeded, DailyLimitReached, UserLimitReached
from keyapi_mcp.state.redis_store import RedisStore
from keyapi_mcp.state.sqlite_store import SQLiteStore

pytestmark = pytest.mark.anyio

# 2026-03-10 12:00:00 UTC: far from midnight, so only the tests that move the clock cross a day.
NOON = datetime(2026, 3, 10, 12, tzinfo=UTC).timestamp()


StoreFactory = Callable[[Clock], Store]


@pytest.fixture(params=["sqlite", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    if request.param == "redis":
        return "redis", request.getfixturevalue("redis_url")
    return "sqlite", str(tmp_path / "state.sqlite3")


@pytest.fixture
async def make_store(backend: tuple[str, str], anyio_backend: str) -> AsyncIterator[StoreFactory]:
    """Open stores on one shared database (each like another process); close them all afterwards."""
    kind, where = backend
    opened: list[Store] = []

    def make(clock: Clock) -> Store:
        store: Store = SQLiteStore(where, clock=clock) if kind == "sqlite" else RedisStore.from_url(where, clock=clock)
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


def attempt(charged: str, *, status: int | None = 200, outcome: str = "ok", request_id: str | None = "r") -> Attempt:
    return Attempt(ids_count=2, page=1, http_status=status, outcome=outcome, charged=charged, request_id=request_id)  # type: ignore[arg-type]


async def reserve_or_none(store: Store, limit: int) -> Reservation | None:
    try:
        return await store.reserve(ids_count=1, page=1, daily_limit=limit)
    except BudgetExceeded as exc:
        assert exc.code == "budget_exceeded"
        return None


# -- ledger -------------------------------------------------------------------------------------


async def test_concurrent_reservations_from_three_processes_never_exceed_the_daily_limit(make_store: StoreFactory):
    clock = Clock(NOON)
    stores = [make_store(clock) for _ in range(3)]
    results = await asyncio.gather(*(reserve_or_none(stores[i % 3], 5) for i in range(30)))

    granted = [r for r in results if r is not None]
    assert len(granted) == 5
    assert len({r.id for r in granted}) == 5
    usage = await stores[1].usage_today()
    assert usage.spent == 5


async def test_a_refusal_states_spent_limit_and_the_utc_midnight_reset(make_store: StoreFactory):
    store = make_store(Clock(NOON))
    await store.reserve(ids_count=1, page=1, daily_limit=1)

    with pytest.raises(BudgetExceeded) as info:
        await store.reserve(ids_count=1, page=1, daily_limit=1)

    text = info.value.render()
    assert text.startswith("[budget_exceeded]")
    assert "1 of 1" in text
    assert "2026-03-11T00:00:00Z" in text
    assert "KEYAPI_DAILY_CREDIT_LIMIT" in text


async def test_a_daily_limit_of_zero_means_no_limit(make_store: StoreFactory):
    store = make_store(Clock(NOON))
    for _ in range(7):
        await store.reserve(ids_count=1, page=1, daily_limit=0)
    assert (await store.usage_today()).spent == 7


async def test_a_released_reservation_frees_its_credit_for_the_next_request(make_store: StoreFactory):
    store = make_store(Clock(NOON))
    first = await store.reserve(ids_count=2, page=1, daily_limit=2)
    second = await store.reserve(ids_count=2, page=2, daily_limit=2)
    await store.settle(first, attempt("yes"))
    await store.settle(second, attempt("no", status=429, outcome="http_429"))

    assert (await store.usage_today()).spent == 1
    third = await store.reserve(ids_count=2, page=2, daily_limit=2)
    assert third is not None
    assert await reserve_or_none(store, 2) is None


async def test_uncertain_outcomes_and_unsettled_reservations_count_as_spent_and_uncertain(make_store: StoreFactory):
    store = make_store(Clock(NOON))
    charged = await store.reserve(ids_count=1, page=1, daily_limit=10)
    timed_out = await store.reserve(ids_count=1, page=1, daily_limit=10)
    await store.reserve(ids_count=1, page=1, daily_limit=10)  # its process died mid-request: never settled
    refused = await store.reserve(ids_count=1, page=1, daily_limit=10)
    await store.settle(charged, attempt("yes"))
    await store.settle(timed_out, attempt("uncertain", status=None, outcome="read_timeout", request_id=None))
    await store.settle(refused, attempt("no", status=500, outcome="http_500"))

    usage = await store.usage_today()
    assert usage.spent == 3
    assert usage.uncertain == 2


async def test_recent_lists_the_latest_attempts_newest_first_with_their_details(make_store: StoreFactory):
    clock = Clock(NOON)
    store = make_store(clock)
    for page in (1, 2, 3):
        clock.now += 1
        reservation = await store.reserve(ids_count=4, page=page, daily_limit=0)
        await store.settle(
            reservation, Attempt(4, page, 200 if page < 3 else 503, "ok" if page < 3 else "http_503",
                                 "yes" if page < 3 else "no", f"req-{page}" if page < 3 else None)
        )  # fmt: skip
    clock.now += 1
    await store.reserve(ids_count=9, page=4, daily_limit=0)  # still in flight

    entries = await store.recent(3)

    assert [e.page for e in entries] == [4, 3, 2]
    in_flight, failed, ok = entries
    assert (in_flight.charged, in_flight.outcome, in_flight.http_status, in_flight.ids_count) == (
        "reserved", "in_flight", None, 9
    )  # fmt: skip
    assert (failed.charged, failed.http_status, failed.outcome, failed.request_id) == ("no", 503, "http_503", None)
    assert (ok.charged, ok.http_status, ok.request_id, ok.ids_count) == ("yes", 200, "req-2", 4)
    assert in_flight.at == pytest.approx(NOON + 4)
    assert len(await store.recent(10)) == 4


async def test_the_daily_limit_and_usage_reset_at_utc_midnight(make_store: StoreFactory):
    clock = Clock(datetime(2026, 3, 10, 23, 59, 50, tzinfo=UTC).timestamp())
    store = make_store(clock)
    late = await store.reserve(ids_count=1, page=1, daily_limit=1)
    await store.add_saved(3)
    assert await reserve_or_none(store, 1) is None

    clock.now += 20  # 00:00:10 the next day
    assert await store.usage_today() == DayUsage(spent=0, uncertain=0, saved=0)
    await store.settle(late, attempt("yes"))  # settles yesterday's reservation, not today's
    assert (await store.usage_today()).spent == 0
    assert await reserve_or_none(store, 1) is not None
    assert await reserve_or_none(store, 1) is None


async def test_credits_saved_by_the_cache_add_up_per_day(make_store: StoreFactory):
    clock = Clock(NOON)
    store, other = make_store(clock), make_store(clock)
    await store.add_saved(2)
    await store.add_saved(0)
    await other.add_saved(3)

    usage = await store.usage_today()
    assert usage.saved == 5
    assert usage.spent == 0


# -- cache --------------------------------------------------------------------------------------

ROWS_A = [{"video_id": "111", "product_id": "p1", "total_video_sale_cnt": 3, "video_desc": "ünïcode ✨"}]
ROWS_B: list[dict[str, object]] = []  # complete and empty: the video sells nothing


async def test_cached_videos_are_fresh_until_the_ttl_on_the_injected_clock(make_store: StoreFactory):
    clock = Clock(NOON)
    writer, reader = make_store(clock), make_store(clock)
    await writer.put_videos({"111": ROWS_A, "222": ROWS_B}, fetched_at=clock.now)

    clock.now += 50
    got = await reader.get_videos(["222", "111", "333"], max_age=100)
    assert set(got) == {"111", "222"}
    assert got["111"].rows == ROWS_A
    assert got["222"].rows == []
    assert got["111"].fetched_at == pytest.approx(NOON)
    assert await reader.cached_video_count(100) == 2

    clock.now += 60  # 110 s old
    assert await reader.get_videos(["111", "222"], max_age=100) == {}
    assert await reader.cached_video_count(100) == 0
    assert set(await reader.get_videos(["111"], max_age=1000)) == {"111"}
    assert await reader.get_videos(["111"], max_age=0) == {}


async def test_cached_video_ids_are_fresh_ones_newest_first_ties_by_descending_id(make_store: StoreFactory):
    clock = Clock(NOON)
    writer, reader = make_store(clock), make_store(clock)
    await writer.put_videos({"111": ROWS_A}, fetched_at=clock.now)
    clock.now += 10
    await writer.put_videos({"222": ROWS_B, "333": ROWS_A}, fetched_at=clock.now)
    clock.now += 10

    assert await reader.cached_video_ids(100, limit=10) == ["333", "222", "111"]
    assert await reader.cached_video_ids(100, limit=2) == ["333", "222"]
    assert await reader.cached_video_ids(5, limit=10) == []  # 10 s old at the least
    clock.now += 85  # "111" is 105 s old
    assert await reader.cached_video_ids(100, limit=10) == ["333", "222"]
    assert await reader.cached_video_ids(0, limit=10) == []


async def test_an_older_fetch_never_replaces_a_newer_cache_entry(make_store: StoreFactory):
    clock = Clock(NOON)
    store = make_store(clock)
    newer = [{"video_id": "111", "product_id": "new"}]
    await store.put_videos({"111": newer}, fetched_at=clock.now)
    await store.put_videos({"111": ROWS_A}, fetched_at=clock.now - 30)

    got = await store.get_videos(["111"], max_age=100)
    assert got["111"].rows == newer
    assert got["111"].fetched_at == pytest.approx(NOON)

    clock.now += 5
    await store.put_videos({"111": ROWS_A}, fetched_at=clock.now)
    assert (await store.get_videos(["111"], max_age=100))["111"].rows == ROWS_A


async def test_pages_are_cached_per_query_and_page_until_the_ttl(make_store: StoreFactory):
    clock = Clock(NOON)
    store = make_store(clock)
    key = query_key(["222", "111"])
    page_one = [{"video_id": "111", "product_id": f"p{i}"} for i in range(10)]
    await store.put_page(key, 1, page_one, clock.now)
    await store.put_page(key, 2, [{"video_id": "222"}], clock.now)

    clock.now += 10
    hit = await store.get_page(query_key(["111", "222"]), 1, max_age=100)
    assert hit is not None
    assert hit.rows == page_one
    assert hit.fetched_at == pytest.approx(NOON)
    assert (await store.get_page(key, 2, 100)).rows == [{"video_id": "222"}]  # type: ignore[union-attr]
    assert await store.get_page(key, 3, max_age=100) is None
    assert await store.get_page(query_key(["111"]), 1, max_age=100) is None

    clock.now += 100
    assert await store.get_page(key, 1, max_age=100) is None


async def test_prune_drops_expired_cache_entries_and_keeps_fresh_ones(make_store: StoreFactory):
    clock = Clock(NOON)
    store = make_store(clock)
    await store.put_videos({"111": ROWS_A}, fetched_at=clock.now)
    await store.put_page("111", 1, ROWS_A, clock.now)
    clock.now += 100
    await store.put_videos({"222": ROWS_B}, fetched_at=clock.now)
    await store.put_page("222", 1, ROWS_B, clock.now)

    clock.now += 10
    await store.prune(50)

    assert set(await store.get_videos(["111", "222"], max_age=10_000)) == {"222"}
    assert await store.get_page("111", 1, max_age=10_000) is None
    assert await store.get_page("222", 1, max_age=10_000) is not None
    assert await store.cached_video_count(10_000) == 1


async def test_every_store_lets_a_single_process_claim_all_ids_it_asks_for(make_store: StoreFactory):
    store = make_store(Clock(NOON))
    held = await store.claim(["111", "222"])
    assert held == {"111", "222"}
    await store.release(held)
    await store.wait_released(["111", "222"])  # nobody holds them: returns at once
    assert await store.claim(["111"]) == {"111"}


# ---------------------------------------------------------------------------------------------
# Per-user daily limits (KEYAPI_USER_DAILY_CREDIT_LIMIT): one reservation checks both counts


async def reserve_as(store: Store, caller: str, *, limit: int = 5, user_limit: int = 3) -> Reservation:
    return await store.reserve(ids_count=1, page=1, daily_limit=limit, caller=caller, user_limit=user_limit)


async def test_each_caller_has_its_own_daily_limit_inside_the_shared_one_and_refusals_name_the_limit(
    make_store: StoreFactory,
):
    clock = Clock(NOON)
    one, two = make_store(clock), make_store(clock)  # two processes / replicas on one ledger
    for _ in range(3):
        await reserve_as(one, "alice")
    with pytest.raises(UserLimitReached) as mine:
        await reserve_as(two, "alice")
    assert mine.value.code == "budget_exceeded"
    assert "per-user daily credit limit" in mine.value.render()
    assert "3 of your 3" in mine.value.render()
    assert "KEYAPI_USER_DAILY_CREDIT_LIMIT" in mine.value.render()

    for _ in range(2):
        await reserve_as(two, "bob")  # bob still has his own credits: the day has 2 left
    with pytest.raises(DailyLimitReached) as daily:
        await reserve_as(one, "carol")  # carol has spent nothing, but the day's limit is reached
    assert "The daily credit limit is reached: 5 of 5" in daily.value.render()

    assert (await one.usage_for("alice")).spent == 3
    assert (await two.usage_for("bob")).spent == 2
    assert (await one.usage_for("carol")) == DayUsage(spent=0, uncertain=0, saved=0)
    assert (await two.usage_today()).spent == 5


async def test_a_released_reservation_gives_the_credit_back_to_its_caller(make_store: StoreFactory):
    store = make_store(Clock(NOON))
    held = [await reserve_as(store, "alice") for _ in range(3)]
    await store.settle(held[0], attempt("no", status=None, outcome="ConnectError"))
    await store.settle(held[1], attempt("uncertain", status=None, outcome="ReadTimeout"))
    assert await store.usage_for("alice") == DayUsage(spent=2, uncertain=2, saved=0)  # 1 uncertain + 1 reserved
    await reserve_as(store, "alice")  # the released credit is alice's again
    with pytest.raises(UserLimitReached):
        await reserve_as(store, "alice")
    assert (await store.usage_today()).spent == 3


async def test_recent_lists_only_the_callers_own_requests_when_asked_for_one(make_store: StoreFactory):
    clock = Clock(NOON)
    store = make_store(clock)
    for caller in ("alice", "bob", "alice"):
        clock.now += 1
        await store.settle(await reserve_as(store, caller, user_limit=0), attempt("yes"))
    assert len(await store.recent(10)) == 3
    assert [e.at for e in await store.recent(10, caller="alice")] == [NOON + 3, NOON + 1]
    assert len(await store.recent(10, caller="bob")) == 1
    assert await store.recent(10, caller="carol") == []


async def test_concurrent_reservations_of_several_callers_never_exceed_either_limit(make_store: StoreFactory):
    clock = Clock(NOON)
    stores = [make_store(clock) for _ in range(3)]
    callers = ["alice", "bob", "carol"]

    async def one(i: int) -> str | None:
        caller = callers[i % 3]
        try:
            await reserve_as(stores[i % len(stores)], caller, limit=5, user_limit=3)
        except BudgetExceeded:
            return None
        return caller

    granted = [c for c in await asyncio.gather(*(one(i) for i in range(24))) if c is not None]
    assert len(granted) == 5
    assert max(granted.count(c) for c in callers) <= 3
    assert sum([(await stores[0].usage_for(c)).spent for c in callers]) == 5


# -- consent tokens (keyapi_mcp.core.consent) -----------------------------------------------------


def _grant(**changes: object) -> ConsentGrant:
    values: dict[str, object] = {
        "caller": "alice",
        "ids_key": "1,22",
        "page": 1,
        "credits": 12,
        "expires_at": NOON + 300,
    }
    values.update(changes)
    return ConsentGrant(**values)  # type: ignore[arg-type]


async def test_a_consent_grant_reads_back_as_issued_and_is_used_exactly_once_across_processes(make_store: StoreFactory):
    clock = Clock(NOON)
    stores = [make_store(clock) for _ in range(3)]
    await stores[0].put_consent("digest-1", _grant())
    assert await stores[1].get_consent("digest-1") == _grant()
    wins = await asyncio.gather(*(store.use_consent("digest-1") for store in stores for _ in range(4)))
    assert sorted(wins) == [False] * 11 + [True]
    assert await stores[2].get_consent("digest-1") == _grant(used=True)
    assert not await stores[0].use_consent("digest-1")


async def test_an_unknown_or_expired_consent_grant_is_absent_and_cannot_be_used(make_store: StoreFactory):
    clock = Clock(NOON)
    store = make_store(clock)
    assert await store.get_consent("never-issued") is None
    assert not await store.use_consent("never-issued")
    await store.put_consent("digest-2", _grant(expires_at=NOON + 10))
    clock.now = NOON + 9
    assert await store.get_consent("digest-2") == _grant(expires_at=NOON + 10)
    clock.now = NOON + 10
    assert await store.get_consent("digest-2") is None
    assert not await store.use_consent("digest-2")
