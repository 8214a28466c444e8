"""A second process holding the SQLite write lock: the server keeps answering while a paid call waits.

The server is the real `python -m keyapi_mcp --transport http` process on 127.0.0.1 with a fake upstream;
the lock is held by another process in `BEGIN IMMEDIATE` (a long transaction, a backup, a stuck server).
"""

from __future__ import annotations

import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from fakes import FakeUpstreamServer
from helpers import TEST_API_KEY, THREE_ROWS, TOOL, TWELVE_ROWS, assert_tool_error, http_server_process, parsed
from test_http import connect

from keyapi_mcp.errors import StateStoreError
from keyapi_mcp.state.sqlite_store import BUSY_TIMEOUT_MS, DB_FILENAME, SQLiteStore
from keyapi_mcp.upstream.demo import FakeUpstream, demo_dataset

pytestmark = pytest.mark.anyio

# Holds the database's write lock until its stdin closes.
LOCKER = (
    "import sqlite3, sys\n"
    "conn = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
    "conn.execute('BEGIN IMMEDIATE')\n"
    "print('locked', flush=True)\n"
    "sys.stdin.read()\n"
    "conn.execute('ROLLBACK')\n"
)
FAST = 0.5  # seconds: far below the busy timeout a blocked event loop would take
SAMPLES = 20


def hold_write_lock(database: Path) -> subprocess.Popen[bytes]:
    locker = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(database)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert locker.stdout is not None and locker.stdout.readline() == b"locked\n"
    return locker


async def timed(call: Any) -> tuple[Any, float]:
    started = time.monotonic()
    result = await call
    return result, time.monotonic() - started


async def test_while_another_process_holds_the_write_lock_health_free_reads_and_cached_calls_answer(
    tmp_path: Path, base_env: dict[str, str], no_secret_leaks: list[str]
):
    fake = FakeUpstream(demo_dataset(), api_key=TEST_API_KEY)
    with FakeUpstreamServer(fake) as upstream:
        env = {**base_env, "KEYAPI_API_KEY": TEST_API_KEY, "KEYAPI_BASE_URL": upstream.url, "KEYAPI_MAX_RPS": "100"}
        with http_server_process(tmp_path, env, no_secret_leaks) as (_, base):
            async with connect(base, None) as client, connect(base, None) as payer:
                assert parsed(await client.call_tool(TOOL, {"video_ids": [THREE_ROWS]})).credits.spent == 1
                locker = hold_write_lock(tmp_path / "state" / DB_FILENAME)
                paid: dict[str, Any] = {}
                try:
                    async with anyio.create_task_group() as tasks, httpx.AsyncClient(base_url=base) as http:

                        async def pay() -> None:
                            paid["result"], paid["seconds"] = await timed(
                                payer.call_tool(TOOL, {"video_ids": [TWELVE_ROWS]})
                            )

                        tasks.start_soon(pay)
                        await anyio.sleep(0.3)  # the paid call is now waiting for the write lock
                        health = []
                        for _ in range(SAMPLES):
                            response, seconds = await timed(http.get("/healthz"))
                            assert response.status_code == 200
                            health.append(seconds)
                        usage, usage_s = await timed(client.call_tool("get_credit_usage", {}))
                        cached, cached_s = await timed(client.call_tool(TOOL, {"video_ids": [THREE_ROWS]}))
                        read, read_s = await timed(client.read_resource(f"keyapi://videos/{THREE_ROWS}"))
                        assert "result" not in paid, "the paid call went through a locked database"
                        locker.stdin.close()  # type: ignore[union-attr]  # the lock goes: the paid call goes on
                finally:
                    if locker.poll() is None:
                        locker.stdin.close()  # type: ignore[union-attr]
                    locker.wait(10)
                after = (await client.call_tool("get_credit_usage", {})).structured_content

    assert max(health) < FAST, f"/healthz median {statistics.median(health):.3f}s, max {max(health):.3f}s"
    assert usage_s < FAST and not usage.is_error and usage.structured_content["spent_today"] == 1  # type: ignore[index]
    assert cached_s < 2 * FAST and parsed(cached).credits.spent == 0
    assert read_s < FAST and read.contents
    # Once the lock is gone the waiting call reserves, fetches and settles as usual: the ledger covers it.
    assert parsed(paid["result"]).credits.spent == 2
    assert after is not None and after["spent_today"] == 3 == fake.charged


async def test_a_lock_held_past_the_busy_timeout_refuses_the_paid_call_clearly_and_spends_nothing(
    tmp_path: Path, base_env: dict[str, str], no_secret_leaks: list[str]
):
    fake = FakeUpstream(demo_dataset(), api_key=TEST_API_KEY)
    with FakeUpstreamServer(fake) as upstream:
        env = {**base_env, "KEYAPI_API_KEY": TEST_API_KEY, "KEYAPI_BASE_URL": upstream.url}
        with http_server_process(tmp_path, env, no_secret_leaks) as (_, base):
            async with connect(base, None) as client:
                locker = hold_write_lock(tmp_path / "state" / DB_FILENAME)
                try:
                    refused, seconds = await timed(client.call_tool(TOOL, {"video_ids": [TWELVE_ROWS]}))
                finally:
                    locker.stdin.close()  # type: ignore[union-attr]
                    locker.wait(10)
                usage = (await client.call_tool("get_credit_usage", {})).structured_content
    text = assert_tool_error(refused, "budget_exceeded")
    assert "stayed locked by another process" in text and "No upstream request was made" in text
    assert BUSY_TIMEOUT_MS / 1000 <= seconds < BUSY_TIMEOUT_MS / 1000 + 5
    assert fake.requests == [] and usage is not None and usage["spent_today"] == 0


def _locked() -> sqlite3.OperationalError:
    exc = sqlite3.OperationalError("database is locked")
    exc.sqlite_errorcode = sqlite3.SQLITE_BUSY  # what SQLite sets when a lock is held elsewhere
    return exc


async def test_a_read_runs_on_the_loop_and_only_a_read_that_would_wait_moves_to_a_worker_thread(tmp_path: Path):
    """In WAL mode a read waits for no writer, so it runs on the loop with no busy wait at all; the rare read
    that meets a lock (a crash recovery, an exclusive locking mode) is retried in a thread with the full wait."""
    store = SQLiteStore(tmp_path / DB_FILENAME)
    loop_thread = threading.get_ident()
    seen: list[tuple[int, int]] = []

    def read(conn: sqlite3.Connection) -> str:
        seen.append((threading.get_ident(), conn.execute("PRAGMA busy_timeout").fetchone()[0]))
        if len(seen) == 1:
            raise _locked()
        return "rows"

    try:
        assert await store._read(read) == "rows"
        (first, first_wait), (second, second_wait) = seen
        assert (first, first_wait) == (loop_thread, 0)
        assert second != loop_thread and second_wait == BUSY_TIMEOUT_MS
        assert await store._read(lambda conn: conn.execute("PRAGMA busy_timeout").fetchone()[0]) == 0

        def broken(conn: sqlite3.Connection) -> None:
            raise sqlite3.OperationalError("no such table: nowhere")

        with pytest.raises(StateStoreError, match="is not usable"):
            await store._read(broken)  # any other failure is mapped as before, not retried
    finally:
        await store.close()
