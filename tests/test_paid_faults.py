"""Faults around a paid request: the store failing after it was sent, hostile bodies, a dripping upstream,
coerced arguments and untrustworthy state files (issue 14, items 1, 2, 3, 7, 8).

Each case asserts what the upstream charged, what the ledger says, what the model reads, and that the
server still answers afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
import sqlite3
import subprocess
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes import FakeUpstreamServer, synthetic_dataset
from helpers import TOOL, Clock, assert_tool_error, connect, make_settings, parsed, text_of
from redis_proc import RedisProcess

from keyapi_mcp.core.domain import Attempt, Reservation
from keyapi_mcp.diagnose import state_open_failure
from keyapi_mcp.errors import StateStoreError, StoreOpenError
from keyapi_mcp.state.redis_store import RedisStore
from keyapi_mcp.state.sqlite_store import DB_FILENAME, SQLiteStore
from keyapi_mcp.upstream.client import KeyAPIClient, RateLimiter
from keyapi_mcp.upstream.demo import FakeUpstream

pytestmark = pytest.mark.anyio

VID = "7500000000000000001"


class HookedUpstream(FakeUpstream):
    """A fake upstream that runs `on_request` while it answers: the fault happens mid-request."""

    on_request: Callable[[], None] | None = None

    def respond(self, query: str, headers: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
        if self.on_request is not None:
            self.on_request()
        return super().respond(query, headers)


class FailsAfterSend:
    """The SQLite store, failing every write and read once the upstream has the request (a disk filling up)."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store
        self.broken = False
        self.description = store.description

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.store, name)
        if name in ("reserve", "now", "close", "claim", "release", "wait_released", "get_videos", "prune"):
            return attr

        async def failing(*args: Any, **kwargs: Any) -> Any:
            if self.broken:
                raise StateStoreError(f"The credit ledger ({self.description}) is not usable: disk is full.")
            return await attr(*args, **kwargs)

        return failing


@pytest.fixture
def hooked() -> Iterator[FakeUpstreamServer]:
    data = synthetic_dataset(1, min_products=3, max_products=3, first_id=int(VID))
    with FakeUpstreamServer(HookedUpstream(data)) as server:
        yield server


def _assert_paid_rows_returned(result: Any, text: str) -> None:
    answer = parsed(result)
    assert [v.video_id for v in answer.videos] == [VID] and len(answer.videos[0].products) == 3
    assert answer.credits.spent == 1
    assert any("could not record 1 upstream request" in w for w in answer.warnings), answer.warnings
    assert "No upstream request was made" not in text
    assert "no request was made" not in text.lower()


async def test_sqlite_failing_after_the_request_still_returns_the_paid_rows_and_keeps_the_credit_counted(
    hooked: FakeUpstreamServer, tmp_path: Path
):
    store = FailsAfterSend(SQLiteStore(tmp_path / DB_FILENAME))
    hooked.fake.on_request = lambda: setattr(store, "broken", True)  # type: ignore[attr-defined]
    async with connect(make_settings(hooked.url), store=store) as client:
        result = await client.call_tool(TOOL, {"video_ids": [VID]})
        text = text_of(result)
        _assert_paid_rows_returned(result, text)
        assert "could not be cached" in text and "counted as possibly spent" in text
        assert hooked.fake.charged == 1
        # The ledger kept the reservation: it counts the credit the upstream charged (possibly spent).
        usage = await store.store.usage_today()
        assert (usage.spent, usage.uncertain) == (1, 1)
        # The server still answers: with the store back, the next call pays for the uncached video again.
        store.broken = False
        again = parsed(await client.call_tool(TOOL, {"video_ids": [VID]}))
        assert again.credits.spent == 1 and hooked.fake.charged == 2
    await store.store.close()


async def test_redis_stopping_writes_mid_request_still_returns_the_paid_rows_and_the_ledger_counts_it(
    hooked: FakeUpstreamServer, redis_server: RedisProcess
):
    import redis

    redis_server.flush()
    admin = redis.Redis.from_url(redis_server.url)

    def pause_writes() -> None:  # Redis refuses writes for a while: every write after the request times out
        admin.execute_command("CLIENT", "PAUSE", "2500", "WRITE")

    hooked.fake.on_request = pause_writes  # type: ignore[attr-defined]
    fast = RedisStore.from_url(redis_server.url, socket_timeout=0.5)
    async with connect(make_settings(hooked.url), store=fast) as client:
        result = await client.call_tool(TOOL, {"video_ids": [VID]})
        text = text_of(result)
        _assert_paid_rows_returned(result, text)
        assert hooked.fake.charged == 1
        hooked.fake.on_request = None  # type: ignore[attr-defined]
        await asyncio.sleep(2.6)  # the pause is over
        usage = await fast.usage_today()
        assert usage.spent >= hooked.fake.charged  # equal to, or safely above, what the upstream charged
        assert parsed(await client.call_tool(TOOL, {"video_ids": [VID]})).videos  # still answers
    await fast.close()
    admin.close()


async def test_a_refused_reservation_says_no_request_was_made_because_none_was(
    hooked: FakeUpstreamServer, tmp_path: Path
):
    store = SQLiteStore(tmp_path / DB_FILENAME)
    other = sqlite3.connect(tmp_path / DB_FILENAME)
    other.execute("DROP TABLE ledger")
    other.commit()
    other.close()
    async with connect(make_settings(hooked.url), store=store) as client:
        text = assert_tool_error(await client.call_tool(TOOL, {"video_ids": [VID]}), "budget_exceeded")
    assert "No upstream request was made" in text
    assert hooked.fake.requests == []
    await store.close()


# -- hostile bodies and a dripping upstream: raw HTTP on 127.0.0.1 --------------------------------------


class RawServer:
    """Serves one canned raw HTTP exchange per connection, written by `answer(conn)` in a thread."""

    def __init__(self, answer: Callable[[socket.socket], None]) -> None:
        self.answer = answer
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.requests = 0
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.requests += 1
            with conn:
                conn.recv(65536)
                with contextlib.suppress(OSError):  # the client hung up first: nothing left to tell it
                    self.answer(conn)

    def __enter__(self) -> RawServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        self.thread.join(timeout=5)
        self.sock.close()


def _bomb(encoding: str, inflated_mb: int) -> bytes:
    zeros = b"\0" * (1024 * 1024)
    if encoding == "gzip":
        out = gzip.compress(zeros * inflated_mb, compresslevel=9)
    else:
        out = zlib.compress(zeros * inflated_mb, 9)
    return out


class RecordingGate:
    def __init__(self) -> None:
        self.attempts: list[Attempt] = []

    async def reserve(self, ids_count: int, page: int) -> object:
        return Reservation(id=len(self.attempts), day="2026-03-01")

    async def settle(self, reservation: object, attempt: Attempt) -> None:
        self.attempts.append(attempt)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_compression_bomb_is_stopped_while_it_inflates_with_bounded_memory(encoding: str):
    body = _bomb(encoding, 300)  # inflates to 300 MB

    def answer(conn: socket.socket) -> None:
        head = (
            f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: {encoding}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        conn.sendall(head.encode() + body)

    gate = RecordingGate()
    with RawServer(answer) as server:
        async with httpx.AsyncClient() as http:
            client = KeyAPIClient(http, api_key="k", base_url=server.url, rate_limiter=RateLimiter(1000))
            tracemalloc.start()
            started = time.monotonic()
            try:
                with pytest.raises(Exception) as info:
                    await client.fetch_page([VID], 1, gate)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            elapsed = time.monotonic() - started
    assert str(info.value).startswith("[upstream_error]") and "oversized" in str(info.value)
    assert peak < 40 * 2**20, f"peak {peak / 2**20:.1f} MiB while refusing a bomb"
    assert elapsed < 5
    assert [a.charged for a in gate.attempts] == ["uncertain"]  # a 200 that may have been charged
    assert server.requests == 1  # never retried: it may have been charged


async def test_an_upstream_dripping_one_byte_at_a_time_is_cut_at_the_overall_deadline():
    def answer(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
        for _ in range(100):
            conn.sendall(b" ")
            time.sleep(0.1)  # each read well within any per-read timeout

    gate = RecordingGate()
    with RawServer(answer) as server:
        async with httpx.AsyncClient() as http:
            client = KeyAPIClient(
                http, api_key="k", base_url=server.url, rate_limiter=RateLimiter(1000), timeout_seconds=1.0
            )
            started = time.monotonic()
            with pytest.raises(Exception) as info:
                await client.fetch_page([VID], 1, gate)
            elapsed = time.monotonic() - started
    assert str(info.value).startswith("[timeout]")
    assert 0.9 < elapsed < 2.5
    assert [a.charged for a in gate.attempts] == ["uncertain"]


# -- strict input --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"max_credits": True}, "max_credits"),
        ({"max_credits": "1"}, "max_credits"),
        ({"max_credits": " 1 "}, "max_credits"),
        ({"max_credits": 1.5}, "max_credits"),  # 1.0 is an integer (tests/test_portability.py), 1.5 is not
        ({"page_num": "1"}, "page_num"),
        ({"page_num": True}, "page_num"),
        ({"refresh": "yes"}, "refresh"),
        ({"refresh": "true"}, "refresh"),
        ({"refresh": 1}, "refresh"),
    ],
)
async def test_coerced_arguments_are_refused_naming_the_field_and_cost_nothing(
    fake_upstream: FakeUpstreamServer, arguments: dict[str, Any], field: str
):
    async with connect(make_settings(fake_upstream.url)) as client:
        text = assert_tool_error(await client.call_tool(TOOL, {"video_ids": [VID], **arguments}), "invalid_input")
        assert field in text
        usage = await client.call_tool("get_credit_usage", {})
    assert fake_upstream.fake.requests == []
    assert usage.structured_content is not None and usage.structured_content["spent_today"] == 0


async def test_an_unknown_tool_answers_with_a_code_and_what_to_do(fake_upstream: FakeUpstreamServer):
    async with connect(make_settings(fake_upstream.url)) as client:
        text = assert_tool_error(await client.call_tool("get_video_product", {"video_ids": [VID]}), "unknown_tool")
        assert "tools/list" in text
        assert not (await client.call_tool("get_credit_usage", {})).is_error  # still answers


# -- state files ---------------------------------------------------------------------------------------


def test_an_empty_state_file_is_refused_rather_than_opened_as_a_fresh_ledger(tmp_path: Path):
    (tmp_path / DB_FILENAME).write_bytes(b"")
    with pytest.raises(StoreOpenError) as info:
        SQLiteStore.in_dir(tmp_path)
    assert "empty" in str(info.value) and "Move the file aside" in str(info.value)


def test_the_cli_refuses_an_empty_state_file_with_one_clear_line(tmp_path: Path, command: str, base_env: dict):
    state = tmp_path / "state-empty"
    state.mkdir()
    (state / DB_FILENAME).write_bytes(b"")
    proc = subprocess.run(
        [command], env={**base_env, "KEYAPI_STATE_DIR": str(state)}, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1
    assert "empty" in proc.stderr and str(state / DB_FILENAME) in proc.stderr


def test_open_problems_name_their_actual_cause(tmp_path: Path):
    full = state_open_failure(tmp_path / DB_FILENAME, sqlite3.OperationalError("database or disk is full"))
    assert "disk is full" in full and "Free some space" in full
    missing = state_open_failure(tmp_path / "a-file" / "x" / DB_FILENAME, OSError("Not a directory"))
    assert "Cannot create the state directory" in missing and "Move the file aside" not in missing


def test_a_state_dir_that_cannot_be_created_says_so(tmp_path: Path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the directory should be")
    with pytest.raises(StoreOpenError) as info:
        SQLiteStore.in_dir(blocker / "state", clock=Clock())
    assert "Cannot create the state directory" in str(info.value)
