"""Single-flight within one process: concurrent calls that need the same video share one upstream walk.

Waiters take the data from the walker's future, not from the cache, so sharing works with the cache off and
under `refresh` too. (Across processes the store's claim/release locks do the same.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

from keyapi_mcp.core.domain import VideoData

Walks = Mapping[str, "asyncio.Future[VideoData | None]"]


class InFlight:
    """Video id → the future of the walk fetching it, resolved with its complete data or None."""

    def __init__(self) -> None:
        self._walks: dict[str, asyncio.Future[VideoData | None]] = {}

    @contextmanager
    def claim(self, ids: Sequence[str], result: Callable[[str], VideoData | None]) -> Iterator[tuple[list[str], Walks]]:
        """Claim the ids nobody is walking: yields (mine, theirs). On exit each of mine is resolved with
        `result(id)` — its complete data, or None when this walk did not complete it — and released."""
        mine = [v for v in ids if v not in self._walks]
        theirs = {v: self._walks[v] for v in ids if v in self._walks}
        loop = asyncio.get_running_loop()
        claims: dict[str, asyncio.Future[VideoData | None]] = {v: loop.create_future() for v in mine}
        self._walks.update(claims)
        try:
            yield mine, theirs
        finally:
            for vid, fut in claims.items():
                if self._walks.get(vid) is fut:
                    del self._walks[vid]
                if not fut.done():
                    fut.set_result(result(vid))

    @staticmethod
    async def shared(theirs: Walks) -> dict[str, VideoData]:
        """What the other calls' walks completed (a failed or incomplete walk shares nothing)."""
        done = await asyncio.gather(*theirs.values(), return_exceptions=True)
        return {vid: data for vid, data in zip(theirs, done, strict=True) if isinstance(data, VideoData)}
