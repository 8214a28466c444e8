"""Embedded state in SQLite: the credit ledger and the result cache.

One database file under the state dir, in WAL mode, shared safely by several server processes on one
machine (Claude Desktop, Claude Code and Cursor each start their own server). The daily limit is
enforced by reserving a ledger row *before* each upstream request with one conditional INSERT (insert
only while today's count is under the limit): a write statement holds SQLite's write lock, which
serialises writers across processes, so the count and the insert cannot interleave and N concurrent
callers can never exceed the limit. A reservation stays counted until it is settled; a process
killed mid-request leaves it counted (over-counting by one beats spending blind).

`synchronous=NORMAL` with WAL keeps the ledger intact across process crashes without a disk flush per
request (only an OS crash may lose the last transactions).

The schema and its migrations are in `keyapi_mcp.state.sqlite_schema`.

No statement waits for a lock on the event loop, so another process holding the write lock (a long
transaction, a backup) stalls only the writes waiting for it, up to the busy timeout, never health checks,
free reads or other calls: writes run in a worker thread, and reads on the loop only where they cannot wait
(`_read`). Each connection is used by one thread at a time (a capacity
limiter of one: callers wait as tasks, not threads): writes on one, reads on another (in WAL mode a reader
never waits for a writer), and the "saved by cache" counter on a third with a short wait, skipped (logged)
while the file stays locked, so a cached answer never queues behind a paid call. Atomicity is SQLite's, as
before: each write is one statement or one `BEGIN IMMEDIATE` transaction on the write connection. In
memory (demo mode) or without WAL, one connection serves all three.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import anyio.to_thread  # binds `anyio` too (CapacityLimiter)

from keyapi_mcp.core.domain import (
    COUNTED,
    LEDGER_KEEP_DAYS,
    LOCAL_CALLER,
    Attempt,
    CachedPage,
    CachedVideo,
    Clock,
    DayUsage,
    LedgerEntry,
    Reservation,
    budget_refusal,
    dumps_compact,
    user_budget_refusal,
    utc_day,
)
from keyapi_mcp.diagnose import state_open_failure
from keyapi_mcp.errors import StateStoreError, StoreOpenError
from keyapi_mcp.state.sqlite_consents import ConsentTable
from keyapi_mcp.state.sqlite_schema import apply_migrations

log = logging.getLogger(__name__)

DB_FILENAME = "state.sqlite3"
BUSY_TIMEOUT_MS = 10_000
SAVINGS_BUSY_TIMEOUT_MS = 250  # the "saved by cache" counter: a statistic, never worth holding an answer
LOCKED_HINT = "Retry in a moment; if it persists, look for a process holding the file in a long transaction."
UNUSABLE_HINT = "Check that the state directory is writable and not full (KEYAPI_STATE_DIR), then retry."


def _is_busy(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


class SQLiteStore(ConsentTable):
    """The default store: one SQLite file shared by every server process on this machine."""

    def __init__(self, path: Path | str, *, clock: Clock = time.time) -> None:
        self.path = str(path)
        self.description = f"SQLite state database {self.path}"
        self._clock = clock
        file = Path(self.path)
        try:
            if self.path != ":memory:":
                file.parent.mkdir(parents=True, exist_ok=True)
                if file.exists() and file.stat().st_size == 0:
                    # SQLite would open a zero-length file as a new, empty database and forget today's spending.
                    raise sqlite3.DatabaseError("the file is empty (truncated?), so its ledger cannot be trusted")
            self._writer = self._connect()
            mode = "memory"
            if self.path != ":memory:":
                mode = self._writer.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    log.warning("SQLite journal mode is %s, not WAL", mode)
            check = self._writer.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(f"integrity check failed: {check}")
            apply_migrations(self._writer, clock())
            # Without WAL a reader would wait for writers anyway; one connection then, as in memory.
            separate = str(mode).lower() == "wal"
            reader = self._connect(busy_timeout_ms=0) if separate else self._writer
            saver = self._connect(SAVINGS_BUSY_TIMEOUT_MS) if separate else self._writer
        except (sqlite3.Error, OSError) as exc:
            raise StoreOpenError(state_open_failure(file, exc)) from None
        self._loop_reads = separate  # see `_read`
        # One thread at a time per connection: one limiter each, shared where the connection is shared.
        write = (self._writer, anyio.CapacityLimiter(1))
        self._lanes = {"write": write, "read": write, "savings": write}
        if separate:
            self._lanes.update(read=(reader, anyio.CapacityLimiter(1)), savings=(saver, anyio.CapacityLimiter(1)))

    def _connect(self, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_ms / 1000)
        conn.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
        conn.execute("PRAGMA synchronous = NORMAL")
        # SQLite's default page cache (2 MB) fills as the cache table grows; the rows a call reads are
        # few, so a small one keeps the "RSS after 1,000 calls" bar of bench/README.md.
        conn.execute("PRAGMA cache_size = -128")  # KiB
        return conn

    @classmethod
    def in_dir(cls, state_dir: Path, *, clock: Clock = time.time) -> SQLiteStore:
        return cls(Path(state_dir) / DB_FILENAME, clock=clock)

    def now(self) -> float:
        return self._clock()

    async def _run(self, fn: Callable[[sqlite3.Connection], Any], *, txn: bool = False, lane: str = "write") -> Any:
        """Run `fn` in a worker thread on `lane`'s connection (write, read or savings).

        Autocommit: one statement is one atomic transaction (a write statement takes the write lock before it
        reads); `txn=True` wraps several in `BEGIN IMMEDIATE` … `COMMIT`. A started thread finishes even if the
        awaiting task is cancelled (anyio waits for it), so a settle is never cut."""
        conn, slot = self._lanes[lane]
        return await anyio.to_thread.run_sync(self._run_sync, conn, fn, txn, limiter=slot)

    async def _read(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run a read on the event loop where it cannot wait, else in a worker thread.

        In WAL mode a reader takes no lock that a writer holds, so on its own connection (busy timeout 0) a read
        answers at once or fails with SQLITE_BUSY (a crash recovery or an exclusive locking mode elsewhere); only
        then is it waited for, in a worker thread. Every cache read of a call would otherwise pay a thread hop."""
        if not self._loop_reads:
            return await self._run(fn, lane="read")
        conn, slot = self._lanes["read"]
        async with slot:
            try:
                return fn(conn)
            except sqlite3.Error as exc:
                if not _is_busy(exc):
                    raise self._failure(exc) from None
            return await anyio.to_thread.run_sync(self._wait_read, conn, fn)

    def _wait_read(self, conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        try:
            return self._run_sync(conn, fn, False)
        finally:
            conn.execute("PRAGMA busy_timeout = 0")

    def _run_sync(self, conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], Any], txn: bool) -> Any:
        """Map SQLite failures to `StateStoreError` (runs in the connection's one worker thread)."""
        try:
            if txn:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = fn(conn)
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
                return result
            return fn(conn)
        except sqlite3.Error as exc:
            raise self._failure(exc) from None

    def _failure(self, exc: sqlite3.Error) -> StateStoreError:
        if _is_busy(exc):
            what, hint = f"stayed locked by another process for {BUSY_TIMEOUT_MS // 1000} s", LOCKED_HINT
        else:
            what, hint = f"is not usable: {exc}", UNUSABLE_HINT
        return StateStoreError(f"The credit ledger ({self.description}) {what}.", hint=hint)

    # -- ledger ---------------------------------------------------------------------------------

    async def reserve(
        self, *, ids_count: int, page: int, daily_limit: int, caller: str = LOCAL_CALLER, user_limit: int = 0
    ) -> Reservation:
        now = self._clock()
        day = utc_day(now)

        def reserve_one(conn: sqlite3.Connection) -> Reservation | tuple[int, int]:
            # One conditional INSERT checking both limits: the counts and the insert run under the write lock
            # of a single statement, so concurrent callers in any process can never both take the last credit
            # of the day or of one caller.
            counted = "charged IN (" + ", ".join(f"'{state}'" for state in COUNTED) + ")"
            cur = conn.execute(
                "INSERT INTO ledger(at, day, ids_count, page, outcome, charged, pid, caller) "
                "SELECT :at, :day, :ids, :page, 'in_flight', 'reserved', :pid, :caller "
                f"WHERE (:limit <= 0 OR (SELECT COUNT(*) FROM ledger WHERE day = :day AND {counted}) < :limit) "
                "AND (:user_limit <= 0 OR "
                f"(SELECT COUNT(*) FROM ledger WHERE day = :day AND caller = :caller AND {counted}) < :user_limit)",
                {
                    "at": now,
                    "day": day,
                    "ids": ids_count,
                    "page": page,
                    "pid": os.getpid(),
                    "caller": caller,
                    "limit": daily_limit,
                    "user_limit": user_limit,
                },
            )
            if cur.rowcount == 1:
                return Reservation(id=int(cur.lastrowid or 0), day=day, caller=caller)
            total, mine = conn.execute(
                f"SELECT COUNT(*), COUNT(CASE WHEN caller = ? THEN 1 END) FROM ledger WHERE day = ? AND {counted}",
                (caller, day),
            ).fetchone()
            return int(total), int(mine)

        result = await self._run(reserve_one)
        if isinstance(result, tuple):
            total, mine = result
            if daily_limit > 0 and total >= daily_limit:  # raising the caller's own limit would not help
                raise budget_refusal(total, daily_limit, now)
            raise user_budget_refusal(mine, user_limit, now)
        return result

    async def settle(self, reservation: Reservation, attempt: Attempt) -> None:
        await self._run(
            lambda conn: conn.execute(
                "UPDATE ledger SET http_status = ?, outcome = ?, charged = ?, request_id = ? "
                "WHERE id = ? AND charged = 'reserved'",
                (attempt.http_status, attempt.outcome, attempt.charged, attempt.request_id, reservation.id),
            )
        )

    async def usage_today(self) -> DayUsage:
        day = utc_day(self._clock())
        # One statement: the day's ledger counts plus its savings row.
        rows = dict(
            await self._read(
                lambda conn: conn.execute(
                    "SELECT charged, COUNT(*) FROM ledger WHERE day = ? GROUP BY charged "
                    "UNION ALL SELECT ' saved', credits FROM savings WHERE day = ?",
                    (day, day),
                ).fetchall()
            )
        )
        spent = sum(int(rows.get(k, 0)) for k in COUNTED)
        uncertain = int(rows.get("uncertain", 0)) + int(rows.get("reserved", 0))
        return DayUsage(spent=spent, uncertain=uncertain, saved=int(rows.get(" saved", 0)))

    async def usage_for(self, caller: str) -> DayUsage:
        day = utc_day(self._clock())
        rows = dict(
            await self._read(
                lambda conn: conn.execute(
                    "SELECT charged, COUNT(*) FROM ledger WHERE day = ? AND caller = ? GROUP BY charged", (day, caller)
                ).fetchall()
            )
        )
        return DayUsage(
            spent=sum(int(rows.get(k, 0)) for k in COUNTED),
            uncertain=int(rows.get("uncertain", 0)) + int(rows.get("reserved", 0)),
            saved=0,
        )

    async def recent(self, limit: int = 10, caller: str | None = None) -> list[LedgerEntry]:
        mine = "" if caller is None else "WHERE caller = ? "
        rows = await self._read(
            lambda conn: conn.execute(
                "SELECT at, page, ids_count, http_status, outcome, charged, request_id FROM ledger "
                f"{mine}ORDER BY id DESC LIMIT ?",
                (limit,) if caller is None else (caller, limit),
            ).fetchall()
        )
        return [LedgerEntry(*row) for row in rows]

    async def add_saved(self, credits: int) -> None:
        if credits <= 0:
            return
        day = utc_day(self._clock())
        try:
            await self._run(
                lambda conn: conn.execute(
                    "INSERT INTO savings(day, credits) VALUES (?, ?) "
                    "ON CONFLICT(day) DO UPDATE SET credits = credits + excluded.credits",
                    (day, credits),
                ),
                lane="savings",  # its own connection, a short wait: never queued behind a paid call's write
            )
        except StateStoreError as exc:  # a statistic, not a credit: not worth failing an answer for
            if self._lanes["savings"][0] is self._writer:
                raise
            log.warning("credits saved by the cache not recorded (%s)", exc.message)

    # -- cache ----------------------------------------------------------------------------------

    async def get_videos(self, video_ids: Sequence[str], max_age: float) -> dict[str, CachedVideo]:
        if not video_ids or max_age <= 0:
            return {}
        since = self._clock() - max_age
        marks = ",".join("?" * len(video_ids))
        rows = await self._read(
            lambda conn: conn.execute(
                f"SELECT video_id, rows, fetched_at FROM videos WHERE video_id IN ({marks}) AND fetched_at > ?",
                (*video_ids, since),
            ).fetchall()
        )
        return {vid: CachedVideo(vid, json.loads(data), fetched) for vid, data, fetched in rows}

    async def put_videos(self, videos: dict[str, list[dict[str, Any]]], fetched_at: float) -> None:
        if not videos:
            return
        payload = [(vid, dumps_compact(rows), fetched_at) for vid, rows in videos.items()]
        # One transaction: the videos of one walk become visible together. An entry is replaced only by one
        # fetched at the same time or later (another process may have stored a newer list meanwhile).
        await self._run(
            lambda conn: conn.executemany(
                "INSERT INTO videos(video_id, rows, fetched_at) VALUES (?, ?, ?) ON CONFLICT(video_id) "
                "DO UPDATE SET rows = excluded.rows, fetched_at = excluded.fetched_at "
                "WHERE excluded.fetched_at >= fetched_at",
                payload,
            ),
            txn=len(payload) > 1,
        )

    async def get_page(self, key: str, page: int, max_age: float) -> CachedPage | None:
        if max_age <= 0:
            return None
        since = self._clock() - max_age
        row = await self._read(
            lambda conn: conn.execute(
                "SELECT rows, fetched_at FROM pages WHERE query = ? AND page = ? AND fetched_at > ?",
                (key, page, since),
            ).fetchone()
        )
        return CachedPage(json.loads(row[0]), row[1]) if row else None

    async def put_page(self, key: str, page: int, rows: list[Any], fetched_at: float) -> None:
        data = dumps_compact(rows)
        await self._run(
            lambda conn: conn.execute(
                "INSERT INTO pages(query, page, rows, fetched_at) VALUES (?, ?, ?, ?) ON CONFLICT(query, page) "
                "DO UPDATE SET rows = excluded.rows, fetched_at = excluded.fetched_at",
                (key, page, data, fetched_at),
            ),
        )

    async def cached_video_count(self, max_age: float) -> int:
        if max_age <= 0:
            return 0
        since = self._clock() - max_age
        return int(
            await self._read(
                lambda conn: conn.execute("SELECT COUNT(*) FROM videos WHERE fetched_at > ?", (since,)).fetchone()[0]
            )
        )

    async def cached_video_ids(self, max_age: float, limit: int) -> list[str]:
        """Ids of cached videos, most recently fetched first (argument completion offers them)."""
        if max_age <= 0 or limit <= 0:
            return []
        since = self._clock() - max_age
        rows = await self._read(
            lambda conn: conn.execute(
                "SELECT video_id FROM videos WHERE fetched_at > ? ORDER BY fetched_at DESC, video_id DESC LIMIT ?",
                (since, limit),
            ).fetchall()
        )
        return [row[0] for row in rows]

    async def prune(self, max_age: float) -> None:
        now = self._clock()
        since = now - max_age
        old_day = utc_day(now - LEDGER_KEEP_DAYS * 86_400)

        def txn(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM videos WHERE fetched_at <= ?", (since,))
            conn.execute("DELETE FROM pages WHERE fetched_at <= ?", (since,))
            conn.execute("DELETE FROM ledger WHERE day < ?", (old_day,))
            conn.execute("DELETE FROM savings WHERE day < ?", (old_day,))

        await self._run(txn, txn=True)

    # -- single-flight -------------------------------------------------------------------------

    # Processes on one machine share the ledger, but each keeps its own in-flight set (the service's
    # in-process single-flight): every id is ours to fetch, there is never anything to wait for.
    async def claim(self, video_ids: Sequence[str]) -> set[str]:
        return set(video_ids)

    async def release(self, video_ids: Iterable[str]) -> None:
        return None

    async def wait_released(self, video_ids: Sequence[str]) -> None:
        return None

    async def close(self) -> None:
        for lane in ("savings", "read", "write"):
            if lane == "write" or self._lanes[lane][0] is not self._writer:
                await self._run(lambda conn: conn.close(), lane=lane)
