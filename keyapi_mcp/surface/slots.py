"""A cap on concurrent in-flight tool calls (`KEYAPI_MCP_MAX_CONCURRENT_CALLS`).

Over HTTP any number of clients can call at once; each call may hold an upstream connection, a ledger
reservation and memory for its rows. Calls beyond the cap wait for a slot, but only for a bounded time:
a call that cannot start within `wait_seconds` fails with a `[rate_limited]` error saying to retry, and
nothing was reserved or charged for it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from keyapi_mcp.errors import ServerBusy

DEFAULT_SLOT_WAIT_SECONDS = 30.0


class CallSlots:
    """At most `total` tool calls run at once; the rest wait up to `wait_seconds`, then get `ServerBusy`."""

    def __init__(self, total: int, *, wait_seconds: float = DEFAULT_SLOT_WAIT_SECONDS) -> None:
        if total < 1:
            raise ValueError("total must be at least 1")
        self.total = total
        self.wait_seconds = wait_seconds
        self._limiter: anyio.CapacityLimiter | None = None

    @property
    def in_use(self) -> int:
        return int(self._limiter.borrowed_tokens) if self._limiter is not None else 0

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        if self._limiter is None:  # created lazily, inside the event loop that serves the calls
            self._limiter = anyio.CapacityLimiter(self.total)
        token = object()  # one borrower per call, even when calls share a task
        try:
            self._limiter.acquire_on_behalf_of_nowait(token)  # a free slot: no timer to set up (most calls)
        except anyio.WouldBlock:
            with anyio.move_on_after(self.wait_seconds) as waited:
                await self._limiter.acquire_on_behalf_of(token)
            if waited.cancelled_caught:
                raise self._busy() from None
        try:
            yield
        finally:
            self._limiter.release_on_behalf_of(token)

    def _busy(self) -> ServerBusy:
        return ServerBusy(
            f"keyapi-mcp is busy: all {self.total} tool-call slots (KEYAPI_MCP_MAX_CONCURRENT_CALLS) stayed "
            f"in use for {self.wait_seconds:g} s.",
            hint="Retry in a few seconds; nothing was charged for this call.",
        )
