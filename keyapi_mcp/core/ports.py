"""The core's two ports, `Store` (the state it keeps) and `Upstream` (what it pays for), which the adapters in
`keyapi_mcp.state` and `keyapi_mcp.upstream` implement; and `CreditGate`, what the upstream asks around each
attempt (the call budget implements it)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from keyapi_mcp.core.domain import (
    LOCAL_CALLER,
    Attempt,
    CachedPage,
    CachedVideo,
    ConsentGrant,
    DayUsage,
    LedgerEntry,
    Reservation,
)


class Store(Protocol):
    """What the service needs from embedded or shared state. Two implementations: SQLite, Redis."""

    description: str

    # One reservation checks both limits atomically: the global daily limit and the caller's own (0 = none).
    async def reserve(
        self, *, ids_count: int, page: int, daily_limit: int, caller: str = LOCAL_CALLER, user_limit: int = 0
    ) -> Reservation: ...
    async def settle(self, reservation: Reservation, attempt: Attempt) -> None: ...
    async def usage_today(self) -> DayUsage: ...
    async def usage_for(self, caller: str) -> DayUsage: ...  # one caller's figures today (saved is 0)
    async def recent(self, limit: int = 10, caller: str | None = None) -> list[LedgerEntry]: ...
    async def get_videos(self, video_ids: Sequence[str], max_age: float) -> dict[str, CachedVideo]: ...
    async def put_videos(self, videos: dict[str, list[dict[str, Any]]], fetched_at: float) -> None: ...
    async def get_page(self, key: str, page: int, max_age: float) -> CachedPage | None: ...
    async def put_page(self, key: str, page: int, rows: list[Any], fetched_at: float) -> None: ...
    async def add_saved(self, credits: int) -> None: ...
    async def cached_video_count(self, max_age: float) -> int: ...
    async def cached_video_ids(self, max_age: float, limit: int) -> list[str]: ...
    async def prune(self, max_age: float) -> None: ...
    async def close(self) -> None: ...
    def now(self) -> float: ...
    # Single-flight across processes sharing the store: lock ids before walking them, unlock after;
    # ids locked elsewhere are waited for, then read from the cache.
    async def claim(self, video_ids: Sequence[str]) -> set[str]: ...
    async def release(self, video_ids: Iterable[str]) -> None: ...
    async def wait_released(self, video_ids: Sequence[str]) -> None: ...
    # Confirmation tokens of large spends (keyapi_mcp.core.consent), keyed by the token's digest: `use_consent`
    # marks an unexpired, unused grant used and is True for exactly one caller, across processes sharing the store.
    async def put_consent(self, digest: str, grant: ConsentGrant) -> None: ...
    async def get_consent(self, digest: str) -> ConsentGrant | None: ...  # None when unknown or expired
    async def use_consent(self, digest: str) -> bool: ...


class CreditGate(Protocol):
    """Reserves a credit before each attempt and settles it after. Implemented by the service's call budget."""

    async def reserve(self, ids_count: int, page: int) -> object:
        """Reserve one credit or raise `BudgetExceeded`. Returns an opaque reservation handle."""
        ...

    async def settle(self, reservation: object, attempt: Attempt) -> None:
        """Record the attempt; a reservation settled with charged="no" is released."""
        ...


@dataclass(frozen=True)
class Page:
    """One upstream page: its raw rows (at most `PAGE_SIZE`) and the upstream's request id."""

    rows: list[Any]
    request_id: str | None


class Upstream(Protocol):
    """The paid upstream: one page of one query per call, every attempt reserved and settled through `gate`."""

    async def fetch_page(self, video_ids: Sequence[str], page_num: int, gate: CreditGate) -> Page: ...

    async def aclose(self) -> None: ...
