"""Credit-aware fetching: cache first, single-flight, page walking under the call's budget.

This is the domain core of `get_video_products`, with no MCP in it. Rules it keeps:
- A video id with a fresh *complete* cache entry is never requested again (a repeat, a subset or a
  reordering costs 0; an overlap pays only for the new ids).
- Pending ids go to the upstream in one query, sorted (canonical), `page_size=10`, pages followed
  until a short page. A short page proves every id in the query complete (possibly empty).
- Every page fetched is cached before anything else happens — under (query, page), or per video when a
  short first page completes the query at once — so a credit spent always yields data returned or
  cached, and a continuation (`page_num > 1`) never pays twice.
- Concurrent calls that need the same id share one upstream walk (in this process; across replicas
  through the store's claim/release locks, Redis only).
- Budget: each request reserves a credit first (`keyapi_mcp.core.budget`: per-call cap there, daily and
  per-user limits in the store). Above KEYAPI_CONFIRM_ABOVE_CREDITS a call spends only what the user
  consented to (`quote` states the bound first; keyapi_mcp.core.consent).
- Freshness: a call may accept cached data no older than its `max_age` (0 = fetch now, like `refresh`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from keyapi_mcp.core.budget import CallBudget, CallLimits
from keyapi_mcp.core.domain import (
    LOCAL_CALLER,
    PAGE_SIZE,
    CachedPage,
    CachedVideo,
    FetchOutcome,
    UsageSnapshot,
    VideoData,
    canonical_ids,
    query_key,
)
from keyapi_mcp.core.ids import canonical_id, numeric_id
from keyapi_mcp.core.inflight import InFlight
from keyapi_mcp.core.ports import Store, Upstream
from keyapi_mcp.errors import BudgetExceeded, KeyAPIError, MissingApiKey, OutOfCredits, StateStoreError
from keyapi_mcp.metrics import NO_METRICS, Metrics

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, str], Awaitable[None]]
PageFn = Callable[[int, int, bool], Awaitable[None]]  # (page, rows, served from the page cache)
RECENT_ATTEMPTS = 10


@dataclass
class _Walk:
    """Result of walking one upstream query."""

    ids: list[str]
    rows: list[Any]
    complete: bool
    next_page: int | None
    fetched_at: float
    stop_reason: str | None = None


def _take_free(outcome: FetchOutcome, vid: str, rows: list[dict[str, Any]], fetched_at: float) -> None:
    """Add a complete product list this call did not pay for (cache hit or another call's walk)."""
    if vid in outcome.videos:
        return
    outcome.videos[vid] = VideoData(vid, rows, fetched_at, from_cache=True)
    outcome.complete_ids.add(vid)
    outcome.cached_videos += 1


def _row_video_id(row: Any) -> str | None:
    return numeric_id(row.get("video_id")) if isinstance(row, dict) else None


def group_rows(ids: Sequence[str], rows: Sequence[Any]) -> tuple[dict[str, list[dict[str, Any]]], int]:
    """Group raw rows by video id (only ids in `ids`); return groups and how many rows were unattributable."""
    wanted = set(ids)
    groups: dict[str, list[dict[str, Any]]] = {vid: [] for vid in ids}
    stray = 0
    for row in rows:
        vid = _row_video_id(row)
        key = canonical_id(vid) if vid is not None else None
        if key in wanted:
            groups[key].append(row)
        else:
            stray += 1
    return groups, stray


class ProductsService:
    """The credit-aware answer to `get_video_products`, over the core's two ports."""

    def __init__(
        self,
        store: Store,
        upstream: Upstream | None,
        limits: CallLimits,
        *,
        cache_ttl: float,
        metrics: Metrics = NO_METRICS,
    ) -> None:
        """`upstream` is None when no API key is configured: free reads work, paid calls are refused."""
        self.store = store
        self.upstream = upstream
        self.limits = limits
        self.cache_ttl = cache_ttl
        self.metrics = metrics
        self._inflight = InFlight()

    def budget(
        self, max_credits: int | None, caller: str = LOCAL_CALLER, ids_asked: int = 0, consented: int | None = None
    ) -> CallBudget:
        return CallBudget(
            self.store,
            self.limits,
            max_credits=max_credits,
            consented=consented,
            caller=caller,
            metrics=self.metrics,
            ids_asked=ids_asked,
        )

    def freshness(self, refresh: bool = False, max_age: float | None = None) -> float:
        """How old cached data this call accepts, in seconds: never older than the cache keeps; 0 = fetch now."""
        if refresh:
            return 0.0
        return float(self.cache_ttl if max_age is None else max(0.0, min(max_age, self.cache_ttl)))

    async def fetch(
        self,
        video_ids: Sequence[str],
        *,
        page_num: int = 1,
        max_credits: int | None = None,
        refresh: bool = False,
        max_age: float | None = None,
        consented: int | None = None,
        progress: ProgressFn | None = None,
        caller: str = LOCAL_CALLER,
    ) -> FetchOutcome:
        """Answer for `video_ids` (already normalised) at the lowest credit cost the cache allows.

        `caller` (keyapi_mcp.surface.caller) is who the credits are booked for; the cache is shared by all callers.
        `max_age` bounds cached data's age (`refresh` = 0); `consented` is the quote the user agreed to, without
        which the call never spends more than the free cap (KEYAPI_CONFIRM_ABOVE_CREDITS)."""
        if self.upstream is None:
            raise MissingApiKey("KEYAPI_API_KEY is not set, so no KeyAPI request can be made.")
        budget = self.budget(max_credits, caller, len(video_ids), consented)
        fresh = self.freshness(refresh, max_age)
        outcome = FetchOutcome(requested=list(video_ids), videos={}, complete_ids=set())
        pages_done = 0
        pages_from_cache = 0

        async def on_page(page: int, rows: int, from_cache: bool) -> None:
            nonlocal pages_done, pages_from_cache
            pages_done += 1
            pages_from_cache += from_cache
            if progress is not None:
                await progress(pages_done, f"page {page}: {rows} rows")

        bypass = refresh or (max_age is not None and max_age <= 0)
        try:
            await self._fetch_into(outcome, video_ids, page_num, budget, fresh, on_page, bypass=bypass)
        except KeyAPIError as exc:
            exc.spent = budget.reserved  # the failed call's cost, for its result's _meta
            raise
        finally:
            outcome.spent = budget.reserved
        if budget.unrecorded:
            outcome.warnings.append(
                f"the credit ledger ({self.store.description}) could not record {budget.unrecorded} upstream "
                "request(s) of this call; they stay counted as possibly spent"
            )
        # Credits the cache saved (only for an answer actually returned): for a complete first-page
        # answer, what the same request would have cost with no cache at all minus what it spent;
        # otherwise the pages served from the page cache.
        if outcome.complete and page_num == 1:
            total_rows = sum(len(v.rows) for v in outcome.videos.values())
            saved = max(0, total_rows // PAGE_SIZE + 1 - outcome.spent) if outcome.videos else 0
        else:
            saved = pages_from_cache
        try:
            await self.store.add_saved(saved)
            outcome.usage = await self.store.usage_today()
            if self.limits.per_user:
                outcome.caller_usage = await self.store.usage_for(caller)
        except StateStoreError as exc:
            outcome.usage = None
            outcome.warnings.append(f"today's credit usage could not be read: {exc.message}")
        outcome.answered_at = self.store.now()
        self.metrics.cache_videos(outcome.cached_videos, len(outcome.videos) - outcome.cached_videos)
        return outcome

    async def usage_snapshot(self, caller: str = LOCAL_CALLER) -> UsageSnapshot:
        """What `get_credit_usage` reports: today's figures, the caller's own and last attempts, the cache size."""
        return UsageSnapshot(
            usage=await self.store.usage_today(),
            caller=caller,
            caller_usage=await self.store.usage_for(caller),
            recent=await self.store.recent(RECENT_ATTEMPTS, caller=caller),
            cached_videos=await self.store.cached_video_count(self.cache_ttl),
            now=self.store.now(),
        )

    async def cached_video(self, video_id: str) -> VideoData | None:
        """One video's complete product list from the cache, or None; never an upstream request."""
        entry = (await self.store.get_videos([video_id], self.cache_ttl)).get(video_id)
        return None if entry is None else VideoData(video_id, entry.rows, entry.fetched_at, from_cache=True)

    async def cached_video_ids(self, limit: int) -> list[str]:
        """Ids of cached videos, most recently fetched first (argument completion offers them)."""
        return await self.store.cached_video_ids(self.cache_ttl, limit)

    async def prune(self) -> None:
        """Drop expired cache entries and old ledger days (at start; a failure only delays it)."""
        try:
            await self.store.prune(self.cache_ttl)
        except KeyAPIError as exc:
            log.warning("could not prune the cache: %s", exc)

    async def _fetch_into(
        self,
        outcome: FetchOutcome,
        video_ids: Sequence[str],
        page_num: int,
        budget: CallBudget,
        max_age: float,
        on_page: PageFn,
        *,
        bypass: bool,
    ) -> None:
        cached = {} if bypass else await self.store.get_videos(video_ids, max_age)
        if page_num > 1:
            if len(cached) == len(set(video_ids)):
                # Every id of the continued query is complete in the cache by now: the whole answer is free.
                self._take_cached(cached, outcome)
                return
            # A continuation walks exactly the query it names (never a further reduced id set, which
            # would make `page_num` point into a different result list), whatever the cache holds now.
            walk = await self._walk(canonical_ids(video_ids), page_num, budget, max_age, on_page, outcome)
            await self._absorb(walk, outcome, start_page=page_num)
            return

        self._take_cached(cached, outcome)
        pending = [v for v in video_ids if v not in outcome.videos]
        for _round in range(3):
            if not pending or outcome.next_page_num is not None:
                break
            try:
                pending = await self._fetch_round(pending, budget, max_age, outcome, on_page)
            except BudgetExceeded as exc:
                pending = [v for v in pending if v not in outcome.videos]
                if not outcome.videos:
                    raise
                # Cached (or shared) videos are still worth returning; the rest stays pending, page 1.
                outcome.pending_ids.extend(v for v in pending if v not in outcome.pending_ids)
                outcome.next_page_num = 1
                outcome.warnings.append(f"not fetched: {exc.render()}")
                return
        if pending and outcome.next_page_num is None:
            # Others' walks failed three times over: report rather than loop forever.
            outcome.pending_ids.extend(v for v in pending if v not in outcome.pending_ids)
            outcome.next_page_num = 1
            outcome.warnings.append("some ids could not be fetched; call again for them")
        elif pending:
            # An incomplete walk of ours owns next_page_num/pending_ids; these ids belong to no query of it.
            outcome.warnings.append(
                "also not fetched yet (another call was fetching them): "
                + ",".join(pending)
                + "; call again for them without page_num"
            )

    def _take_cached(self, cached: dict[str, CachedVideo], outcome: FetchOutcome) -> None:
        for vid, entry in cached.items():
            _take_free(outcome, vid, entry.rows, entry.fetched_at)

    async def _fetch_round(
        self,
        pending: list[str],
        budget: CallBudget,
        max_age: float,
        outcome: FetchOutcome,
        on_page: PageFn,
    ) -> list[str]:
        """Fetch what nobody else is fetching; wait for the rest; return ids still missing."""
        error: KeyAPIError | None = None
        elsewhere: list[str] = []
        with self._inflight.claim(pending, outcome.complete_data) as (mine, theirs):
            try:
                elsewhere = await self._walk_claimed(mine, budget, max_age, outcome, on_page)
            except KeyAPIError as exc:
                error = exc  # raised after collecting what the other calls fetched for us (free)
        for vid, data in (await InFlight.shared(theirs)).items():
            _take_free(outcome, vid, data.rows, data.fetched_at)  # paid by the call that walked it
        if error is not None:
            raise error
        return [v for v in [*theirs, *elsewhere] if v not in outcome.videos]

    async def _walk_claimed(
        self, mine: list[str], budget: CallBudget, max_age: float, outcome: FetchOutcome, on_page: PageFn
    ) -> list[str]:
        """Walk the ids this call claimed that no other process holds (the store's locks); wait for the ones
        another process holds and take its result. Returns those."""
        if not mine:
            return []
        held = await self.store.claim(mine)
        elsewhere = [v for v in mine if v not in held]
        try:
            if held:
                walk = await self._walk(canonical_ids(held), 1, budget, max_age, on_page, outcome)
                await self._absorb(walk, outcome, start_page=1)
        finally:
            await self.store.release(held)
        if elsewhere:
            await self._await_elsewhere(elsewhere, max_age, outcome)
        return elsewhere

    async def _await_elsewhere(self, ids: list[str], max_age: float, outcome: FetchOutcome) -> None:
        """Wait until the process holding these ids' locks is done, then take its result from the cache.

        Under `refresh` (max_age 0) only data fetched after this call asked counts, so the next round walks
        them again.
        """
        asked = self.store.now()
        await self.store.wait_released(ids)
        fresh = max_age if max_age > 0 else self.store.now() - asked
        if fresh > 0:
            self._take_cached(await self.store.get_videos(ids, fresh), outcome)

    async def _walk(
        self,
        ids: list[str],
        start_page: int,
        budget: CallBudget,
        max_age: float,
        on_page: PageFn,
        outcome: FetchOutcome,
    ) -> _Walk:
        """Follow pages of one query from `start_page` until a short page, the cap, or an error.

        An error before any row propagates (the call has nothing to show); after some rows it ends
        the walk as incomplete, and what was fetched is returned (it is cached already).
        """
        assert self.upstream is not None
        key = query_key(ids)
        rows: list[Any] = []
        page = start_page
        fetched_at = self.store.now()
        while True:
            cached = None if max_age <= 0 else await self._cached_page(key, page, max_age)
            if cached is not None:
                page_rows = cached.rows
                fetched_at = min(fetched_at, cached.fetched_at)
            else:
                if budget.exhausted and rows:
                    return _Walk(
                        ids,
                        rows,
                        False,
                        page,
                        fetched_at,
                        stop_reason=f"the per-call credit cap ({budget.cap_source}) was reached",
                    )
                try:
                    result = await self.upstream.fetch_page(ids, page, budget)
                except KeyAPIError as exc:
                    if isinstance(exc, OutOfCredits):
                        outcome.account_exhausted = True
                    if not rows:
                        raise
                    return _Walk(ids, rows, False, page, fetched_at, stop_reason=exc.render())
                page_rows = result.rows
                # A short first page completes the walk, and `_absorb` caches it per video right away:
                # a page entry would be a second copy. Any other page is cached before anything else.
                single_short_page = page == 1 and len(page_rows) < PAGE_SIZE
                if self.cache_ttl > 0 and not single_short_page:
                    await self._cache_write(self.store.put_page(key, page, page_rows, self.store.now()), outcome)
            rows.extend(page_rows)
            await on_page(page, len(page_rows), cached is not None)
            if len(page_rows) < PAGE_SIZE:
                return _Walk(ids, rows, True, None, fetched_at)
            page += 1

    async def _absorb(self, walk: _Walk, outcome: FetchOutcome, *, start_page: int) -> None:
        """Fold one walk into the outcome and cache whatever it proved complete."""
        rows = walk.rows
        assembled = False
        if walk.complete and start_page > 1:
            earlier = await self._earlier_pages(walk.ids, start_page)
            if earlier is not None:
                rows = earlier + rows
                assembled = True
            else:
                outcome.warnings.append(
                    f"pages 1–{start_page - 1} of this query are not in the cache, so this answer holds "
                    f"only pages {start_page}+ and cannot tell which ids have no products"
                )
        groups, stray = group_rows(walk.ids, rows)
        if stray:
            outcome.warnings.append(f"ignored {stray} upstream row(s) for videos that were not requested")
        if walk.complete and (start_page == 1 or assembled):
            if self.cache_ttl > 0:
                await self._cache_write(self.store.put_videos(groups, walk.fetched_at), outcome)
            outcome.complete_ids.update(walk.ids)
        for vid, vrows in groups.items():
            if vrows or (walk.complete and (start_page == 1 or assembled)):
                outcome.videos[vid] = VideoData(vid, vrows, walk.fetched_at, from_cache=False)
        if not walk.complete:
            outcome.pending_ids.extend(v for v in walk.ids if v not in outcome.pending_ids)
            if outcome.next_page_num is None:
                outcome.next_page_num = walk.next_page
            outcome.warnings.append(f"stopped before page {walk.next_page}: {walk.stop_reason}")

    async def _cached_page(self, key: str, page: int, max_age: float | None = None) -> CachedPage | None:
        """A cached page, or None; an unreadable cache is a miss (the reservation decides if we may pay)."""
        try:
            return await self.store.get_page(key, page, self.cache_ttl if max_age is None else max_age)
        except StateStoreError as exc:
            log.warning("could not read the page cache: %s", exc)
            return None

    async def _cache_write(self, write: Awaitable[None], outcome: FetchOutcome) -> None:
        """Cache what was fetched; if the store refuses, the rows are still returned, with a warning."""
        try:
            await write
        except StateStoreError as exc:
            log.warning("could not cache fetched rows: %s", exc)
            note = (
                f"fetched rows could not be cached ({exc.message.rstrip('.')}); they are in this answer, "
                "but asking again will pay for them again"
            )
            if note not in outcome.warnings:
                outcome.warnings.append(note)

    async def _earlier_pages(self, ids: list[str], start_page: int) -> list[Any] | None:
        key = query_key(ids)
        rows: list[Any] = []
        for page in range(1, start_page):
            cached = await self._cached_page(key, page)
            if cached is None:
                return None
            rows.extend(cached.rows)
        return rows
