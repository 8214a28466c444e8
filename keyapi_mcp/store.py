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

The schema is a list of named migrations recorded in the `migrations` table, applied in order.
Every method is `async` so this store and the Redis store share one interface; SQLite calls are
short and run inline.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from keyapi_mcp.client import Attempt
from keyapi_mcp.diagnose import state_open_failure
from keyapi_mcp.errors import BudgetExceeded, StateStoreError

log = logging.getLogger(__name__)

DB_FILENAME = "state.sqlite3"
BUSY_TIMEOUT_MS = 10_000
# Credits the cache saved are a statistic, not the ledger: written at most this late, in one batch, so a cached
# answer costs no write transaction of its own. Reserved and settled credits are never batched.
SAVED_FLUSH_SECONDS = 1.0
# Complete product lists kept decoded in memory after a read or write (see SQLiteStore._check_others).
HOT_VIDEOS = 8
LEDGER_KEEP_DAYS = 35
COUNTED = ("reserved", "yes", "uncertain")

Clock = Callable[[], float]


class StoreOpenError(RuntimeError):
    """The state database cannot be opened or migrated (corrupt, unwritable...). Fatal at start."""


def utc_day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def next_midnight(ts: float) -> datetime:
    day = datetime.fromtimestamp(ts, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day + timedelta(days=1)


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def dumps_compact(value: Any) -> str:
    """JSON as stored by both stores: compact, non-ASCII kept as is (emoji are common in rows)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def query_key(video_ids: Iterable[str]) -> str:
    """Canonical key of an upstream query: the sorted, comma-joined id set (also the order we send)."""
    return ",".join(sorted(set(video_ids), key=lambda v: (len(v), v)))


def canonical_ids(video_ids: Iterable[str]) -> list[str]:
    return query_key(video_ids).split(",")


@dataclass(frozen=True)
class Reservation:
    id: int | str
    day: str


@dataclass(frozen=True)
class CachedVideo:
    video_id: str
    rows: list[dict[str, Any]]
    fetched_at: float


@dataclass(frozen=True)
class CachedPage:
    rows: list[Any]
    fetched_at: float


@dataclass(frozen=True)
class LedgerEntry:
    at: float
    page: int | None
    ids_count: int
    http_status: int | None
    outcome: str
    charged: str  # reserved | yes | no | uncertain
    request_id: str | None


@dataclass(frozen=True)
class DayUsage:
    spent: int
    uncertain: int
    saved: int


class Store(Protocol):
    """What the service needs from embedded or shared state. Two implementations: SQLite, Redis."""

    description: str

    async def reserve(self, *, ids_count: int, page: int, daily_limit: int) -> Reservation: ...
    async def settle(self, reservation: Reservation, attempt: Attempt) -> None: ...
    async def usage_today(self) -> DayUsage: ...
    async def recent(self, limit: int = 10) -> list[LedgerEntry]: ...
    async def get_videos(self, video_ids: Sequence[str], max_age: float) -> dict[str, CachedVideo]: ...
    async def put_videos(self, videos: dict[str, list[dict[str, Any]]], fetched_at: float) -> None: ...
    async def get_page(self, key: str, page: int, max_age: float) -> CachedPage | None: ...
    async def put_page(self, key: str, page: int, rows: list[Any], fetched_at: float) -> None: ...
    async def add_saved(self, credits: int) -> None: ...
    def flush_saved(self) -> None: ...
    async def cached_video_count(self, max_age: float) -> int: ...
    async def prune(self, max_age: float) -> None: ...
    async def close(self) -> None: ...
    def now(self) -> float: ...
    # Single-flight across processes sharing the store: lock ids before walking them, unlock after;
    # ids locked elsewhere are waited for, then read from the cache.
    async def claim(self, video_ids: Sequence[str]) -> set[str]: ...
    async def release(self, video_ids: Iterable[str]) -> None: ...
    async def wait_released(self, video_ids: Sequence[str]) -> None: ...


def budget_refusal(spent: int, limit: int, now: float) -> BudgetExceeded:
    reset = next_midnight(now)
    return BudgetExceeded(
        f"The daily credit limit is reached: {spent} of {limit} credits spent today (UTC). "
        f"It resets at {iso(reset.timestamp())}.",
        hint="Cached results are still free: repeat earlier calls. To spend more today, raise "
        "KEYAPI_DAILY_CREDIT_LIMIT in the server's environment (0 = no daily limit) and restart it.",
    )


MIGRATIONS: list[tuple[str, str]] = [
    (
        "0001_ledger",
        """
        CREATE TABLE ledger (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at REAL NOT NULL,
            day TEXT NOT NULL,
            ids_count INTEGER NOT NULL,
            page INTEGER,
            http_status INTEGER,
            outcome TEXT NOT NULL,
            charged TEXT NOT NULL,
            request_id TEXT,
            pid INTEGER
        );
        CREATE INDEX ledger_day_charged ON ledger(day, charged);
        """,
    ),
    (
        "0002_cache",
        """
        CREATE TABLE videos (
            video_id TEXT PRIMARY KEY,
            rows TEXT NOT NULL,
            fetched_at REAL NOT NULL
        );
        CREATE INDEX videos_fetched_at ON videos(fetched_at);
        CREATE TABLE pages (
            query TEXT NOT NULL,
            page INTEGER NOT NULL,
            rows TEXT NOT NULL,
            fetched_at REAL NOT NULL,
            PRIMARY KEY (query, page)
        );
        CREATE INDEX pages_fetched_at ON pages(fetched_at);
        CREATE TABLE savings (
            day TEXT PRIMARY KEY,
            credits INTEGER NOT NULL
        );
        """,
    ),
]


def apply_migrations(conn: sqlite3.Connection, now: float) -> list[str]:
    """Apply pending migrations in order, each in its own transaction; return the names applied."""
    conn.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
    applied: list[str] = []
    for name, sql in MIGRATIONS:
        conn.execute("BEGIN IMMEDIATE")
        try:
            done = conn.execute("SELECT 1 FROM migrations WHERE name = ?", (name,)).fetchone()
            if done:
                conn.execute("COMMIT")
                continue
            for statement in sql.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("INSERT INTO migrations(name, applied_at) VALUES (?, ?)", (name, now))
            conn.execute("COMMIT")
            applied.append(name)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return applied


class SQLiteStore:
    """The default store: one SQLite file shared by every server process on this machine."""

    def __init__(self, path: Path | str, *, clock: Clock = time.time) -> None:
        self.path = str(path)
        self.description = f"SQLite state database {self.path}"
        self._clock = clock
        self._lock = threading.Lock()
        self._unsaved: dict[str, int] = {}  # UTC day -> saved credits not written yet (see SAVED_FLUSH_SECONDS)
        self._flush_timer: asyncio.TimerHandle | None = None
        # Hot copies of what this connection last read or wrote, valid while no other connection commits.
        self._data_version: int | None = None
        self._hot_videos: OrderedDict[str, CachedVideo] = OrderedDict()
        self._hot_usage: tuple[str, DayUsage] | None = None  # (UTC day, the database's figures for it)
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
            )
            self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if self.path != ":memory:":
                mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    log.warning("SQLite journal mode is %s, not WAL", mode)
            self._conn.execute("PRAGMA synchronous = NORMAL")
            # A small per-connection page cache (128 KiB, default 2 MiB; 0.5 MB less RSS than 512 KiB, measured):
            # the file stays in the OS page cache, which every server process on the machine shares, so a private
            # copy only adds RSS.
            self._conn.execute("PRAGMA cache_size = -128")
            check = self._conn.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(f"integrity check failed: {check}")
            apply_migrations(self._conn, clock())
            self._data_version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        except (sqlite3.Error, OSError) as exc:
            raise StoreOpenError(state_open_failure(self.path, exc)) from None

    @classmethod
    def in_dir(cls, state_dir: Path, *, clock: Clock = time.time) -> SQLiteStore:
        return cls(Path(state_dir) / DB_FILENAME, clock=clock)

    def now(self) -> float:
        return self._clock()

    # -- plumbing -------------------------------------------------------------------------------

    def _run(self, fn: Callable[[sqlite3.Connection], Any], *, txn: bool = False) -> Any:
        """Run `fn`; map SQLite failures to a refusal.

        The connection is in autocommit mode, so one statement is one atomic transaction (a write
        statement takes the database write lock before it reads anything). `txn=True` wraps several
        statements in `BEGIN IMMEDIATE` … `COMMIT` so they commit together.
        """
        with self._lock:
            try:
                if txn:
                    self._conn.execute("BEGIN IMMEDIATE")
                    try:
                        result = fn(self._conn)
                    except BaseException:
                        self._conn.execute("ROLLBACK")
                        raise
                    self._conn.execute("COMMIT")
                    return result
                return fn(self._conn)
            except sqlite3.Error as exc:
                raise StateStoreError(
                    f"The credit ledger ({self.description}) is not usable: {exc}.",
                    hint="No upstream request was made. Check that the state directory is writable "
                    "and not full (KEYAPI_STATE_DIR), then retry.",
                ) from None

    def _check_others(self, conn: sqlite3.Connection) -> None:
        """Forget every hot copy if any other connection (another server process) committed since we last looked.

        `PRAGMA data_version` changes exactly when another connection has committed to the file, never for our
        own writes (those update or drop the hot copies themselves), and costs ~3 µs: so a repeated question
        is answered from memory without decoding the same rows again, yet always agrees with the database.
        """
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        if version != self._data_version:
            self._data_version = version
            self._hot_videos.clear()
            self._hot_usage = None

    def _adjust_usage(self, day: str, *, spent: int, uncertain: int) -> None:
        """Apply one of our own ledger writes to the hot figures instead of forgetting them.

        Our commits never change `data_version`, so without this every paid call would re-count the
        day's ledger (a scan that grows with the day's requests). Another connection's commit still
        drops the figures at the next read (`_check_others`), so they never drift from the database.
        """
        hot = self._hot_usage
        if hot is None or hot[0] != day:
            self._hot_usage = None
            return
        usage = hot[1]
        self._hot_usage = (day, DayUsage(usage.spent + spent, usage.uncertain + uncertain, usage.saved))

    def _remember(self, entry: CachedVideo) -> None:
        self._hot_videos[entry.video_id] = entry
        self._hot_videos.move_to_end(entry.video_id)
        if len(self._hot_videos) > HOT_VIDEOS:
            self._hot_videos.popitem(last=False)

    # -- ledger ---------------------------------------------------------------------------------

    async def reserve(self, *, ids_count: int, page: int, daily_limit: int) -> Reservation:
        now = self._clock()
        day = utc_day(now)

        def reserve_one(conn: sqlite3.Connection) -> Reservation | int:
            # One conditional INSERT: the count and the insert run under the write lock of a single
            # statement, so concurrent callers in any process can never both take the last credit.
            cur = conn.execute(
                "INSERT INTO ledger(at, day, ids_count, page, outcome, charged, pid) "
                "SELECT ?, ?, ?, ?, 'in_flight', 'reserved', ? "
                "WHERE ? <= 0 OR (SELECT COUNT(*) FROM ledger WHERE day = ? AND charged IN (?, ?, ?)) < ?",
                (now, day, ids_count, page, os.getpid(), daily_limit, day, *COUNTED, daily_limit),
            )
            if cur.rowcount == 1:
                self._adjust_usage(day, spent=1, uncertain=1)  # a 'reserved' row counts as spent, uncertain
                return Reservation(id=int(cur.lastrowid or 0), day=day)
            return int(
                conn.execute(
                    "SELECT COUNT(*) FROM ledger WHERE day = ? AND charged IN (?, ?, ?)", (day, *COUNTED)
                ).fetchone()[0]
            )

        result = self._run(reserve_one)
        if isinstance(result, int):
            raise budget_refusal(result, daily_limit, now)
        return result

    async def settle(self, reservation: Reservation, attempt: Attempt) -> None:
        def settle_one(conn: sqlite3.Connection) -> None:
            cur = conn.execute(
                "UPDATE ledger SET http_status = ?, outcome = ?, charged = ?, request_id = ? "
                "WHERE id = ? AND charged = 'reserved'",
                (attempt.http_status, attempt.outcome, attempt.charged, attempt.request_id, reservation.id),
            )
            if cur.rowcount != 1:  # not a reservation of ours any more (pruned, settled twice): re-read later
                self._hot_usage = None
                return
            # reserved -> yes: still spent, now certain; -> uncertain: unchanged; -> no: neither.
            self._adjust_usage(
                reservation.day,
                spent=-1 if attempt.charged == "no" else 0,
                uncertain=0 if attempt.charged == "uncertain" else -1,
            )

        self._run(settle_one)

    async def usage_today(self) -> DayUsage:
        day = utc_day(self._clock())

        def read(conn: sqlite3.Connection) -> DayUsage:
            self._check_others(conn)
            if self._hot_usage is not None and self._hot_usage[0] == day:
                return self._hot_usage[1]
            # One statement: the day's ledger counts plus its savings row.
            rows = dict(
                conn.execute(
                    "SELECT charged, COUNT(*) FROM ledger WHERE day = ? GROUP BY charged "
                    "UNION ALL SELECT ' saved', credits FROM savings WHERE day = ?",
                    (day, day),
                ).fetchall()
            )
            spent = sum(int(rows.get(k, 0)) for k in COUNTED)
            uncertain = int(rows.get("uncertain", 0)) + int(rows.get("reserved", 0))
            usage = DayUsage(spent=spent, uncertain=uncertain, saved=int(rows.get(" saved", 0)))
            self._hot_usage = (day, usage)
            return usage

        stored: DayUsage = self._run(read)
        return DayUsage(stored.spent, stored.uncertain, stored.saved + self._unsaved.get(day, 0))

    async def recent(self, limit: int = 10) -> list[LedgerEntry]:
        rows = self._run(
            lambda conn: conn.execute(
                "SELECT at, page, ids_count, http_status, outcome, charged, request_id FROM ledger "
                "ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        )
        return [LedgerEntry(*row) for row in rows]

    async def add_saved(self, credits: int) -> None:
        """Count credits the cache saved; this process sees them at once, others within SAVED_FLUSH_SECONDS."""
        if credits <= 0:
            return
        day = utc_day(self._clock())
        self._unsaved[day] = self._unsaved.get(day, 0) + credits
        if self._flush_timer is None:
            self._flush_timer = asyncio.get_running_loop().call_later(SAVED_FLUSH_SECONDS, self.flush_saved)

    def flush_saved(self) -> None:
        """Write the batched savings now (also on close). A failure loses only the statistic, never a call."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        pending, self._unsaved = self._unsaved, {}
        if not pending:
            return
        self._hot_usage = None
        try:
            self._run(
                lambda conn: conn.executemany(
                    "INSERT INTO savings(day, credits) VALUES (?, ?) "
                    "ON CONFLICT(day) DO UPDATE SET credits = credits + excluded.credits",
                    list(pending.items()),
                ),
                txn=len(pending) > 1,
            )
        except StateStoreError as exc:
            log.warning("could not record %d saved credit(s): %s", sum(pending.values()), exc)

    # -- cache ----------------------------------------------------------------------------------

    async def get_videos(self, video_ids: Sequence[str], max_age: float) -> dict[str, CachedVideo]:
        if not video_ids or max_age <= 0:
            return {}
        since = self._clock() - max_age

        def read(conn: sqlite3.Connection) -> dict[str, CachedVideo]:
            self._check_others(conn)
            found: dict[str, CachedVideo] = {}
            missing: list[str] = []
            for vid in video_ids:
                hot = self._hot_videos.get(vid)
                if hot is not None and hot.fetched_at > since:
                    self._hot_videos.move_to_end(vid)
                    found[vid] = hot
                else:
                    missing.append(vid)
            if missing:
                marks = ",".join("?" * len(missing))
                for vid, data, fetched in conn.execute(
                    f"SELECT video_id, rows, fetched_at FROM videos WHERE video_id IN ({marks}) AND fetched_at > ?",
                    (*missing, since),
                ).fetchall():
                    found[vid] = CachedVideo(vid, json.loads(data), fetched)
                    self._remember(found[vid])
            return found

        return self._run(read)

    async def put_videos(self, videos: dict[str, list[dict[str, Any]]], fetched_at: float) -> None:
        if not videos:
            return
        payload = [(vid, dumps_compact(rows), fetched_at) for vid, rows in videos.items()]

        def write(conn: sqlite3.Connection) -> list[str]:
            stored = []
            for vid, data, fetched in payload:
                cur = conn.execute(
                    "INSERT INTO videos(video_id, rows, fetched_at) VALUES (?, ?, ?) ON CONFLICT(video_id) "
                    "DO UPDATE SET rows = excluded.rows, fetched_at = excluded.fetched_at "
                    "WHERE excluded.fetched_at >= fetched_at",
                    (vid, data, fetched),
                )
                if cur.rowcount == 1:  # 0: a newer list is already stored (by another connection); keep that
                    stored.append(vid)
            return stored

        for vid in self._run(write, txn=len(payload) > 1):  # several videos of one walk become visible together
            self._remember(CachedVideo(vid, videos[vid], fetched_at))

    async def get_page(self, key: str, page: int, max_age: float) -> CachedPage | None:
        if max_age <= 0:
            return None
        since = self._clock() - max_age
        row = self._run(
            lambda conn: conn.execute(
                "SELECT rows, fetched_at FROM pages WHERE query = ? AND page = ? AND fetched_at > ?",
                (key, page, since),
            ).fetchone()
        )
        return CachedPage(json.loads(row[0]), row[1]) if row else None

    async def put_page(self, key: str, page: int, rows: list[Any], fetched_at: float) -> None:
        data = dumps_compact(rows)
        self._run(
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
            self._run(
                lambda conn: conn.execute("SELECT COUNT(*) FROM videos WHERE fetched_at > ?", (since,)).fetchone()[0]
            )
        )

    async def prune(self, max_age: float) -> None:
        now = self._clock()
        since = now - max_age
        old_day = utc_day(now - LEDGER_KEEP_DAYS * 86_400)

        def txn(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM videos WHERE fetched_at <= ?", (since,))
            conn.execute("DELETE FROM pages WHERE fetched_at <= ?", (since,))
            conn.execute("DELETE FROM ledger WHERE day < ?", (old_day,))
            conn.execute("DELETE FROM savings WHERE day < ?", (old_day,))

        self._run(txn, txn=True)
        self._hot_videos.clear()
        self._hot_usage = None

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
        self.flush_saved()
        with self._lock:
            self._conn.close()
