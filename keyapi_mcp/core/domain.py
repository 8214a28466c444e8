"""The domain's types and small rules, below everything else: what an attempt, a reservation, a day's usage,
a cached video and a fetch outcome are, the upstream's paging contract, time and key helpers.

It imports nothing of ours but `errors`, so the upstream client, the stores, the service and presentation
can all depend on it without depending on each other. The ports the adapters implement are in
`keyapi_mcp.core.ports`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from keyapi_mcp.errors import DailyLimitReached, UserLimitReached

ENDPOINT = "/v1/tiktok/video/products/analytics"
PAGE_SIZE = 10  # the upstream maximum: the fewest credits for a given number of rows
LEDGER_KEEP_DAYS = 35
COUNTED = ("reserved", "yes", "uncertain")  # ledger states that count against a limit
LOCAL_CALLER = "local"  # the caller of a server without auth: stdio, or HTTP on loopback (keyapi_mcp.surface.caller)

Charged = Literal["yes", "no", "uncertain"]
Clock = Callable[[], float]


@dataclass(frozen=True)
class Attempt:
    """What one upstream attempt did, as the ledger records it."""

    ids_count: int
    page: int
    http_status: int | None
    outcome: str  # "ok", "http_429", "envelope_500", "read_timeout", ...
    charged: Charged
    request_id: str | None = None


@dataclass(frozen=True)
class Reservation:
    id: int | str
    day: str
    caller: str = LOCAL_CALLER


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
class ConsentGrant:
    """A user's yes to one call's quote, kept under its token's digest until used or expired (core/consent)."""

    caller: str
    ids_key: str  # query_key of the call's ids
    page: int
    credits: int  # the most the call may spend with it
    expires_at: float
    used: bool = False


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


@dataclass(frozen=True)
class UsageSnapshot:
    """Everything `get_credit_usage` reports, read from the store in one place (the service)."""

    usage: DayUsage  # everyone's, today
    caller: str
    caller_usage: DayUsage  # the caller's own, today
    recent: list[LedgerEntry]  # the caller's own last attempts, never another user's
    cached_videos: int
    now: float


@dataclass
class VideoData:
    video_id: str
    rows: list[dict[str, Any]]
    fetched_at: float
    from_cache: bool


@dataclass
class FetchOutcome:
    """What one `get_video_products` call found and spent: the service's answer to the tool."""

    requested: list[str]
    videos: dict[str, VideoData]
    complete_ids: set[str]
    pending_ids: list[str] = field(default_factory=list)
    next_page_num: int | None = None
    spent: int = 0
    cached_videos: int = 0
    warnings: list[str] = field(default_factory=list)
    usage: DayUsage | None = None  # today's figures after the call; None when the ledger could not be read
    caller_usage: DayUsage | None = None  # the caller's own figures after the call, with a per-user limit
    answered_at: float = 0.0  # when the answer was put together (how old each video's data is)
    account_exhausted: bool = False  # the upstream answered 402 (no credits left on the account) during the call

    @property
    def complete(self) -> bool:
        return not self.pending_ids

    def complete_data(self, video_id: str) -> VideoData | None:
        """The video's data when this outcome holds its whole product list, else None."""
        return self.videos.get(video_id) if video_id in self.complete_ids else None


# -- small rules ---------------------------------------------------------------------------------------


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


def budget_refusal(spent: int, limit: int, now: float) -> DailyLimitReached:
    """The refusal a store raises when the daily limit leaves no credit to reserve (nothing was sent)."""
    reset = next_midnight(now)
    return DailyLimitReached(
        f"The daily credit limit is reached: {spent} of {limit} credits spent today (UTC). "
        f"It resets at {iso(reset.timestamp())}.",
        hint="Cached results are still free: repeat earlier calls. To spend more today, raise "
        "KEYAPI_DAILY_CREDIT_LIMIT in the server's environment (0 = no daily limit) and restart it.",
    )


def user_budget_refusal(spent: int, limit: int, now: float) -> UserLimitReached:
    """The refusal a store raises when the caller's own daily limit leaves no credit to reserve."""
    reset = next_midnight(now)
    return UserLimitReached(
        f"The per-user daily credit limit is reached: you spent {spent} of your {limit} credits today (UTC). "
        f"It resets at {iso(reset.timestamp())}.",
        hint="Cached results are still free: repeat earlier calls (a video another user paid for is free too). "
        "To spend more today, ask the server's operator to raise KEYAPI_USER_DAILY_CREDIT_LIMIT "
        "(0 = no per-user limit).",
    )
