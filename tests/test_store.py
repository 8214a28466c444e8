"""The SQLite ledger and cache on their own (no MCP): reservations, limits, persistence, TTL, migrations.

Concurrency across processes uses real worker processes on one state directory: SQLite's locking is
what keeps the daily limit, so only separate processes test it.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import anyio
import httpx
import pytest
from helpers import RESET_AT, T0, TEST_API_KEY, Clock

from keyapi_mcp.core.budget import CallBudget, CallLimits
from keyapi_mcp.core.domain import Attempt, query_key, utc_day
from keyapi_mcp.errors import BudgetExceeded, StateStoreError, StoreOpenError
from keyapi_mcp.state import sqlite_schema
from keyapi_mcp.state.sqlite_schema import MIGRATIONS, apply_migrations
from keyapi_mcp.state.sqlite_store import DB_FILENAME, SQLiteStore
from keyapi_mcp.upstream.client import KeyAPIClient, RateLimiter


def ok(page: int = 1, ids: int = 1) -> Attempt:
    return Attempt(ids, page, 200, "ok", "yes", "req-1")


def rejected(page: int = 1, ids: int = 1, status: int = 500) -> Attempt:
    return Attempt(ids, page, status, f"http_{status}", "no", None)


def uncertain(page: int = 1, ids: int = 1) -> Attempt:
    return Attempt(ids, page, None, "read_timeout", "uncertain", None)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> SQLiteStore:
    return SQLiteStore.in_dir(tmp_path / "state", clock=clock)


# -- ledger and daily limit -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_daily_limit_refuses_the_next_reservation_stating_spent_limit_reset_and_how_to_raise_it(
    store: SQLiteStore,
):
    for page in (1, 2, 3):
        await store.settle(await store.reserve(ids_count=2, page=page, daily_limit=3), ok(page, 2))

    with pytest.raises(BudgetExceeded) as refused:
        await store.reserve(ids_count=2, page=4, daily_limit=3)

    text = refused.value.render()
    assert text.startswith("[budget_exceeded]")
    assert "3 of 3" in text
    assert RESET_AT in text
    assert "KEYAPI_DAILY_CREDIT_LIMIT" in text
    assert (await store.usage_today()).spent == 3
    assert len(await store.recent()) == 3  # the refusal made no ledger row


@pytest.mark.anyio
async def test_a_reservation_settled_as_not_charged_is_released_for_the_next_request(store: SQLiteStore):
    first = await store.reserve(ids_count=1, page=1, daily_limit=1)
    with pytest.raises(BudgetExceeded):  # the open reservation already holds the only credit
        await store.reserve(ids_count=1, page=1, daily_limit=1)

    await store.settle(first, rejected(status=429))
    second = await store.reserve(ids_count=1, page=1, daily_limit=1)
    await store.settle(second, ok())

    usage = await store.usage_today()
    assert (usage.spent, usage.uncertain) == (1, 0)
    assert [e.charged for e in await store.recent()] == ["yes", "no"]


@pytest.mark.anyio
async def test_uncertain_and_unsettled_reservations_count_against_the_limit_and_as_uncertain(store: SQLiteStore):
    await store.settle(await store.reserve(ids_count=1, page=1, daily_limit=4), ok())
    await store.settle(await store.reserve(ids_count=1, page=1, daily_limit=4), uncertain())
    await store.reserve(ids_count=1, page=1, daily_limit=4)  # never settled (a crashed process)
    await store.settle(await store.reserve(ids_count=1, page=1, daily_limit=4), rejected(status=402))

    usage = await store.usage_today()
    assert usage.spent == 3
    assert usage.uncertain == 2
    await store.reserve(ids_count=1, page=1, daily_limit=4)
    with pytest.raises(BudgetExceeded):
        await store.reserve(ids_count=1, page=1, daily_limit=4)


@pytest.mark.anyio
async def test_every_attempt_is_recorded_with_time_ids_page_status_outcome_request_id_and_charge(
    store: SQLiteStore, clock: Clock
):
    await store.settle(await store.reserve(ids_count=7, page=3, daily_limit=0), ok(page=3, ids=7))
    clock.now += 1
    await store.settle(await store.reserve(ids_count=2, page=1, daily_limit=0), rejected(status=503, ids=2))

    newest, oldest = await store.recent()
    assert (oldest.at, oldest.ids_count, oldest.page) == (T0, 7, 3)
    assert (oldest.http_status, oldest.outcome, oldest.charged, oldest.request_id) == (200, "ok", "yes", "req-1")
    assert (newest.at, newest.http_status, newest.outcome, newest.charged) == (T0 + 1, 503, "http_503", "no")


@pytest.mark.anyio
async def test_recent_returns_only_the_last_entries_newest_first(store: SQLiteStore):
    for page in range(1, 13):
        await store.settle(await store.reserve(ids_count=1, page=page, daily_limit=0), ok(page))

    assert [e.page for e in await store.recent(10)] == list(range(12, 2, -1))


@pytest.mark.anyio
async def test_a_zero_daily_limit_never_refuses_but_still_records_every_credit(store: SQLiteStore):
    for _ in range(25):
        await store.settle(await store.reserve(ids_count=1, page=1, daily_limit=0), ok())

    assert (await store.usage_today()).spent == 25


@pytest.mark.anyio
async def test_the_daily_count_starts_again_after_utc_midnight(store: SQLiteStore, clock: Clock):
    await store.settle(await store.reserve(ids_count=1, page=1, daily_limit=1), ok())
    with pytest.raises(BudgetExceeded):
        await store.reserve(ids_count=1, page=1, daily_limit=1)

    clock.now = datetime(2026, 3, 2, 0, 0, 1, tzinfo=UTC).timestamp()
    assert (await store.usage_today()).spent == 0
    await store.settle(await store.reserve(ids_count=1, page=1, daily_limit=1), ok())
    assert (await store.usage_today()).spent == 1


@pytest.mark.anyio
async def test_savings_accumulate_per_utc_day(store: SQLiteStore, clock: Clock):
    await store.add_saved(2)
    await store.add_saved(3)
    await store.add_saved(0)
    assert (await store.usage_today()).saved == 5

    clock.now += 86_400
    assert (await store.usage_today()).saved == 0


@pytest.mark.anyio
async def test_a_ledger_that_cannot_be_written_refuses_the_request_instead_of_spending_blind(
    store: SQLiteStore, tmp_path: Path
):
    other = sqlite3.connect(tmp_path / "state" / DB_FILENAME)
    other.execute("DROP TABLE ledger")
    other.commit()
    other.close()

    with pytest.raises(StateStoreError) as refused:
        await store.reserve(ids_count=1, page=1, daily_limit=10)
    text = refused.value.render()
    assert text.startswith("[budget_exceeded]")
    assert "ledger" in text
    assert "No upstream request" not in text  # the store cannot know; the call's budget says it (test_faults)


@pytest.mark.anyio
async def test_a_call_cancelled_while_waiting_for_the_rate_limiter_releases_its_reservation(store: SQLiteStore):
    waiting = anyio.Event()

    async def sleep_until_cancelled(_seconds: float) -> None:
        waiting.set()
        await anyio.sleep_forever()

    limiter = RateLimiter(0.001, sleep=sleep_until_cancelled)
    await limiter.acquire()  # the next acquire has to wait ~1000 s
    sent: list[httpx.Request] = []
    transport = httpx.MockTransport(lambda request: sent.append(request) or httpx.Response(500))
    async with httpx.AsyncClient(transport=transport) as http:
        client = KeyAPIClient(http, api_key=TEST_API_KEY, base_url="http://127.0.0.1:9", rate_limiter=limiter)
        budget = CallBudget(store, CallLimits(per_call=5, daily=1))
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.fetch_page, ["7400000000000000000"], 1, budget)
            await waiting.wait()
            tg.cancel_scope.cancel()

    assert sent == []
    assert (await store.usage_today()).spent == 0
    assert budget.reserved == 0
    [entry] = await store.recent()
    assert (entry.outcome, entry.charged) == ("cancelled_before_send", "no")


# -- cross-process limit ----------------------------------------------------------------------------

RESERVE_WORKER = textwrap.dedent(
    """
    import asyncio, sys, time
    from pathlib import Path
    from keyapi_mcp.core.domain import Attempt
    from keyapi_mcp.errors import BudgetExceeded
    from keyapi_mcp.state.sqlite_store import SQLiteStore

    state, go, attempts, limit = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])

    async def main():
        store = SQLiteStore.in_dir(state)
        print("ready", flush=True)
        while not go.exists():
            time.sleep(0.002)
        charged = refused = 0
        for _ in range(attempts):
            try:
                reservation = await store.reserve(ids_count=1, page=1, daily_limit=limit)
            except BudgetExceeded:
                refused += 1
                continue
            await store.settle(reservation, Attempt(1, 1, 200, "ok", "yes"))
            charged += 1
        print(charged, refused, flush=True)

    asyncio.run(main())
    """
)


def test_worker_processes_sharing_one_state_dir_never_reserve_more_than_the_daily_limit(tmp_path: Path):
    state, go = tmp_path / "state", tmp_path / "go"
    SQLiteStore.in_dir(state)  # created once; the workers race on reservations, not on creation
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", RESERVE_WORKER, str(state), str(go), "15", "9"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for worker in workers:
        assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
    go.touch()
    results = [tuple(map(int, worker.communicate(timeout=60)[0].split())) for worker in workers]

    assert all(worker.returncode == 0 for worker in workers)
    assert sum(charged for charged, _ in results) == 9  # 60 attempts, never a 10th credit
    assert sum(refused for _, refused in results) == 60 - 9
    db = sqlite3.connect(state / DB_FILENAME)
    assert db.execute("SELECT COUNT(*) FROM ledger WHERE charged = 'yes'").fetchone()[0] == 9


# -- cache ------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_new_store_on_the_same_dir_keeps_the_ledger_and_the_cache(tmp_path: Path, clock: Clock):
    first = SQLiteStore.in_dir(tmp_path / "state", clock=clock)
    await first.settle(await first.reserve(ids_count=2, page=1, daily_limit=10), ok(ids=2))
    await first.put_videos({"11": [{"video_id": "11", "product_id": "1"}], "22": []}, T0)
    await first.put_page(query_key(["22", "11"]), 2, [{"video_id": "11"}], T0)
    await first.add_saved(4)
    await first.close()

    second = SQLiteStore.in_dir(tmp_path / "state", clock=clock)
    usage = await second.usage_today()
    assert (usage.spent, usage.saved) == (1, 4)
    cached = await second.get_videos(["11", "22", "33"], max_age=3600)
    assert {vid: entry.rows for vid, entry in cached.items()} == {
        "11": [{"video_id": "11", "product_id": "1"}],
        "22": [],
    }
    page = await second.get_page(query_key(["11", "22"]), 2, max_age=3600)
    assert page is not None and page.rows == [{"video_id": "11"}]


@pytest.mark.anyio
async def test_cache_entries_expire_after_the_ttl_and_are_pruned(store: SQLiteStore, clock: Clock):
    await store.put_videos({"11": []}, T0)
    await store.put_page("11", 1, [], T0)

    clock.now = T0 + 99
    assert set(await store.get_videos(["11"], max_age=100)) == {"11"}
    assert await store.cached_video_count(100) == 1
    clock.now = T0 + 100
    assert await store.get_videos(["11"], max_age=100) == {}
    assert await store.get_page("11", 1, max_age=100) is None
    assert await store.cached_video_count(100) == 0

    await store.prune(100)
    clock.now = T0  # pruned rows are gone, not merely filtered by age
    assert await store.get_videos(["11"], max_age=100) == {}
    assert await store.get_page("11", 1, max_age=100) is None


@pytest.mark.anyio
async def test_a_zero_ttl_reads_nothing_from_the_cache(store: SQLiteStore):
    await store.put_videos({"11": []}, T0)
    await store.put_page("11", 1, [], T0)

    assert await store.get_videos(["11"], max_age=0) == {}
    assert await store.get_page("11", 1, max_age=0) is None
    assert await store.cached_video_count(0) == 0


@pytest.mark.anyio
async def test_the_page_cache_key_is_the_id_set_whatever_the_order_or_duplicates(store: SQLiteStore):
    await store.put_page(query_key(["300", "20", "1"]), 1, [{"n": 1}], T0)

    page = await store.get_page(query_key(["1", "300", "20", "20"]), 1, max_age=60)
    assert page is not None and page.rows == [{"n": 1}]
    assert await store.get_page(query_key(["1", "20"]), 1, max_age=60) is None
    assert await store.get_page(query_key(["1", "20", "300"]), 2, max_age=60) is None


@pytest.mark.anyio
async def test_an_older_fetch_never_overwrites_a_newer_cache_entry(store: SQLiteStore):
    await store.put_videos({"11": [{"v": "new"}]}, T0)
    await store.put_videos({"11": [{"v": "old"}]}, T0 - 50)

    assert (await store.get_videos(["11"], max_age=3600))["11"].rows == [{"v": "new"}]
    await store.put_videos({"11": [{"v": "newer"}]}, T0 + 1)
    assert (await store.get_videos(["11"], max_age=3600))["11"].rows == [{"v": "newer"}]


# -- migrations and opening -------------------------------------------------------------------------


def _tables(path: Path) -> set[str]:
    db = sqlite3.connect(path)
    try:
        return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        db.close()


def _applied(path: Path) -> list[str]:
    db = sqlite3.connect(path)
    try:
        return [row[0] for row in db.execute("SELECT name FROM migrations ORDER BY name")]
    finally:
        db.close()


def test_migrations_on_a_blank_database_create_every_table_once_and_record_their_names(tmp_path: Path):
    path = tmp_path / DB_FILENAME
    SQLiteStore(path)

    assert {"ledger", "videos", "pages", "savings", "migrations"} <= _tables(path)
    assert _applied(path) == [name for name, _ in MIGRATIONS]
    db = sqlite3.connect(path)
    assert apply_migrations(db, T0) == []  # a second run applies nothing
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.anyio
async def test_an_older_database_with_only_the_ledger_migration_is_upgraded_keeping_its_rows(
    tmp_path: Path, clock: Clock
):
    path = tmp_path / DB_FILENAME
    old = sqlite3.connect(path, isolation_level=None)
    old.execute("CREATE TABLE migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
    name, sql = MIGRATIONS[0]
    assert name == "0001_ledger"
    old.executescript(sql)
    old.execute("INSERT INTO migrations VALUES (?, ?)", (name, T0 - 86_400))
    day = "2026-03-01"
    old.executemany(
        "INSERT INTO ledger(at, day, ids_count, page, http_status, outcome, charged, request_id, pid) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (T0 - 60, day, 3, 1, 200, "ok", "yes", "r1", 1),
            (T0 - 50, day, 3, 2, None, "read_timeout", "uncertain", None, 1),
            (T0 - 40, day, 3, 3, 500, "http_500", "no", None, 1),
        ],
    )
    old.close()
    assert "videos" not in _tables(path)

    store = SQLiteStore(path, clock=clock)

    assert _applied(path) == [name for name, _ in MIGRATIONS]
    usage = await store.usage_today()
    assert (usage.spent, usage.uncertain) == (2, 1)
    assert [e.request_id for e in await store.recent()] == [None, None, "r1"]
    await store.put_videos({"11": []}, T0)  # the new tables work
    assert set(await store.get_videos(["11"], max_age=60)) == {"11"}


def test_a_corrupt_database_file_gives_store_open_error_naming_the_file_and_what_to_do(tmp_path: Path):
    state = tmp_path / "state"
    state.mkdir()
    (state / DB_FILENAME).write_bytes(b"this is not an SQLite database\n" * 300)

    with pytest.raises(StoreOpenError) as failed:
        SQLiteStore.in_dir(state)

    message = str(failed.value)
    assert str(state / DB_FILENAME) in message
    assert "not a database" in message
    assert "KEYAPI_STATE_DIR" in message
    assert "\n" not in message


@pytest.mark.anyio
async def test_a_database_with_damaged_pages_fails_the_integrity_check_at_open(tmp_path: Path):
    path = tmp_path / DB_FILENAME
    store = SQLiteStore(path)
    await store.put_videos({str(i): [{"description": "x" * 300}] for i in range(400)}, T0)
    await store.close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    data = bytearray(path.read_bytes())
    page_size = 4096
    for offset in range(2 * page_size, len(data), 3 * page_size):
        data[offset : offset + page_size] = bytes([0xA5]) * page_size
    path.write_bytes(bytes(data))

    with pytest.raises(StoreOpenError, match=r"malformed|integrity"):
        SQLiteStore(path)


def test_a_state_dir_that_is_a_file_gives_store_open_error(tmp_path: Path):
    blocker = tmp_path / "state"
    blocker.write_text("not a directory")

    with pytest.raises(StoreOpenError, match="KEYAPI_STATE_DIR"):
        SQLiteStore.in_dir(blocker)


def test_the_cli_exits_with_one_stderr_line_when_the_state_database_is_corrupt(tmp_path: Path):
    state = tmp_path / "state"
    state.mkdir()
    (state / DB_FILENAME).write_bytes(os.urandom(8192))
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "KEYAPI_API_KEY": TEST_API_KEY,
        "KEYAPI_STATE_DIR": str(state),
    }

    done = subprocess.run(
        [str(Path(sys.executable).parent / "keyapi-mcp")],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )

    assert done.returncode != 0
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "state database" in lines[0] and "KEYAPI_STATE_DIR" in lines[0]
    assert TEST_API_KEY not in done.stderr


# -- several processes on one database ------------------------------------------------------------


def _row(vid: str, product: str) -> dict[str, str]:
    return {"video_id": vid, "product_id": product}


@pytest.mark.anyio
async def test_another_process_writing_a_newer_list_is_seen_on_the_next_read(tmp_path: Path, clock: Clock):
    mine, other = SQLiteStore.in_dir(tmp_path, clock=clock), SQLiteStore.in_dir(tmp_path, clock=clock)
    await mine.put_videos({"11": [_row("11", "old")]}, T0)
    assert (await mine.get_videos(["11"], max_age=3600))["11"].rows == [_row("11", "old")]
    await other.put_videos({"11": [_row("11", "new")]}, T0 + 10)
    got = (await mine.get_videos(["11"], max_age=3600))["11"]
    assert (got.rows, got.fetched_at) == ([_row("11", "new")], T0 + 10)


@pytest.mark.anyio
async def test_day_usage_follows_this_and_other_processes_spending(tmp_path: Path, clock: Clock):
    mine, other = SQLiteStore.in_dir(tmp_path, clock=clock), SQLiteStore.in_dir(tmp_path, clock=clock)
    assert (await mine.usage_today()).spent == 0
    first = await mine.reserve(ids_count=1, page=1, daily_limit=10)
    assert (await mine.usage_today()).spent == 1
    await other.settle(await other.reserve(ids_count=1, page=1, daily_limit=10), ok())
    assert (await mine.usage_today()).spent == 2
    await mine.settle(first, rejected())
    assert (await mine.usage_today()).spent == 1


@pytest.mark.anyio
async def test_day_usage_counts_each_outcome_once_and_agrees_with_a_fresh_count(tmp_path: Path, clock: Clock):
    mine = SQLiteStore.in_dir(tmp_path, clock=clock)
    settled = [ok(), rejected(), uncertain()]
    for attempt in settled:
        await mine.settle(await mine.reserve(ids_count=1, page=1, daily_limit=10), attempt)
    pending = await mine.reserve(ids_count=1, page=2, daily_limit=10)  # sent, not answered yet
    usage = await mine.usage_today()
    fresh = await SQLiteStore.in_dir(tmp_path, clock=clock).usage_today()
    assert usage == fresh
    assert (usage.spent, usage.uncertain) == (3, 2)  # yes + uncertain + reserved; uncertain + reserved
    await mine.settle(pending, ok())
    await mine.settle(pending, rejected())  # a second settle of one reservation changes nothing
    assert await mine.usage_today() == await SQLiteStore.in_dir(tmp_path, clock=clock).usage_today()
    assert (await mine.usage_today()).spent == 3


@pytest.mark.anyio
async def test_the_caller_migration_books_an_existing_ledger_to_the_local_caller(tmp_path: Path, monkeypatch):
    path = tmp_path / "state.sqlite3"
    with monkeypatch.context() as patch:  # a database as the release before per-user limits left it
        patch.setattr(sqlite_schema, "MIGRATIONS", MIGRATIONS[:2])
        await SQLiteStore(path, clock=Clock(T0)).close()
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(
            "INSERT INTO ledger(at, day, ids_count, page, outcome, charged) VALUES (?, ?, 1, 1, 'ok', 'yes')",
            (T0, utc_day(T0)),
        )
    conn.close()

    store = SQLiteStore(path, clock=Clock(T0))
    assert _applied(path)[-2:] == ["0003_ledger_caller", "0004_consents"]
    assert (await store.usage_for("local")).spent == 1
    with pytest.raises(BudgetExceeded, match="per-user"):
        await store.reserve(ids_count=1, page=1, daily_limit=10, caller="local", user_limit=1)
    await store.close()
