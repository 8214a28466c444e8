"""The only place an upstream request is made.

`KeyAPIClient.fetch_page` sends one GET for one page through an injected `httpx.AsyncClient` and returns
the raw rows. Around every attempt it asks a `CreditGate` for a reservation and reports the outcome, so
the ledger sees every attempt (including retries) and no request leaves without a reserved credit.

Each attempt is two steps: `_exchange` makes the request (one overall deadline from connect to last byte,
the body bounded *while* it is decoded, `keyapi_mcp.bounded_read`) and `keyapi_mcp.upstream.classify` — pure —
turn what came back into a `Verdict`: the ledger outcome, whether it was charged, the rows or the error,
and whether and when to retry. One place settles the reservation with that verdict.

Retry policy: retried are 429 (honouring Retry-After), 5xx, HTTP 200 with a non-zero `code`, and
connection errors raised *before* the request was sent — none of these was charged. Never retried:
400/401/402/403 (retrying cannot help), timeouts and connections lost after the request was sent — the
upstream may have charged those, so a silent retry could pay twice. At most `MAX_ATTEMPTS` attempts and
about `RETRY_BUDGET_SECONDS` of waiting, so one page takes at most
`MAX_ATTEMPTS × KEYAPI_TIMEOUT_SECONDS + RETRY_BUDGET_SECONDS`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC
from typing import TYPE_CHECKING

import anyio

from keyapi_mcp import __version__
from keyapi_mcp.bounded_read import BodyTooLarge, UnsupportedEncoding, read_bounded
from keyapi_mcp.core.domain import ENDPOINT, PAGE_SIZE, Attempt
from keyapi_mcp.core.ports import CreditGate, Page
from keyapi_mcp.errors import RateLimited
from keyapi_mcp.upstream.classify import (
    MAX_BODY_BYTES,
    Verdict,
    classify_failure,
    classify_response,
    parse_body,
    request_id_of,
)

if TYPE_CHECKING:
    # Imported where a request is made, not at start: most servers a chat starts never pay for a request, and
    # httpx (with the modules it tries at import) is a visible share of the cold-start bar (bench/README.md).
    import httpx

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
RETRY_BUDGET_SECONDS = 20.0
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 8.0
CONNECT_TIMEOUT_SECONDS = 10.0


class RateLimiter:
    """Spaces requests at least `1/rps` apart across every caller in this process."""

    def __init__(
        self,
        rps: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._interval = 1.0 / rps
        self._clock = clock
        self._sleep = sleep
        self._next_free = 0.0
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            now = self._clock()
            wait = self._next_free - now
            self._next_free = max(now, self._next_free) + self._interval
        if wait > 0:
            await self._sleep(wait)


def backoff_seconds(attempt: int, rng: Callable[[], float] = random.random) -> float:
    """Exponential backoff with full jitter for attempt n (1-based) that just failed."""
    ceiling = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * (2 ** (attempt - 1)))
    return ceiling / 2 + rng() * ceiling / 2


def retry_after_seconds(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """Parse a `Retry-After` value (delta-seconds or HTTP date); None when absent or unparsable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        # "inf"/"nan" parse as floats but are no delay anyone can honour (and would crash rounding).
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:  # "-0000" parses as naive; HTTP dates are always UTC, never local time
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now())


# -- the client ----------------------------------------------------------------------------------------


class KeyAPIClient:
    """Upstream client over one `httpx.AsyncClient`: injected, or made by `http` on the first request.

    A factory lets the server start without the client: building one loads the TLS trust store, a visible
    share of the cold-start bar (bench/README.md), for a server that many chats start and seldom ask to pay.
    A client this object made is closed by `aclose`; an injected one belongs to its owner.
    """

    def __init__(
        self,
        http: httpx.AsyncClient | Callable[[], httpx.AsyncClient],
        *,
        api_key: str,
        base_url: str,
        rate_limiter: RateLimiter,
        timeout_seconds: float = 30.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        observe: Callable[[float], None] = lambda seconds: None,
    ) -> None:
        """`observe` receives each request's duration in seconds (the metrics' upstream histogram)."""
        # A client instance is not callable; a factory is.
        self._make_http: Callable[[], httpx.AsyncClient] | None = http if callable(http) else None
        self._http: httpx.AsyncClient | None = None if callable(http) else http
        self._observe = observe
        self._api_key = api_key
        self._url = base_url.rstrip("/") + ENDPOINT
        self._limiter = rate_limiter
        self.timeout_seconds = timeout_seconds
        self._sleep = sleep
        self._clock = clock
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "User-Agent": f"keyapi-mcp/{__version__}",
            "Accept": "application/json",
            "Accept-Encoding": "gzip, deflate",  # the rows carry long signed URLs: compress them on the wire
        }

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            assert self._make_http is not None
            self._http = self._make_http()
        return self._http

    async def aclose(self) -> None:
        """Close the HTTP client if this object made it."""
        if self._make_http is not None and self._http is not None:
            await self._http.aclose()
            self._http = None

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    async def fetch_page(self, video_ids: Sequence[str], page_num: int, gate: CreditGate) -> Page:
        """GET one page (page_size=10) for the comma-joined ids; retry what is safe to retry."""
        started = self._clock()
        attempt = 0
        while True:
            attempt += 1
            verdict = await self._attempt(video_ids, page_num, gate)
            if verdict.rows is not None:
                return Page(rows=verdict.rows, request_id=verdict.request_id)
            error = verdict.error
            assert error is not None
            error.status, error.request_id = verdict.status, verdict.request_id
            if not verdict.retry:
                raise error
            wait = verdict.retry_wait if verdict.retry_wait is not None else backoff_seconds(attempt)
            if attempt >= MAX_ATTEMPTS or self._clock() - started + wait > RETRY_BUDGET_SECONDS:
                if isinstance(error, RateLimited) and verdict.retry_wait is not None:
                    error.hint = (
                        f"Retry in about {max(1, round(verdict.retry_wait))} s; results already fetched are "
                        "cached and will not be paid again."
                    )
                raise error
            log.info("upstream attempt %d failed (%s); retrying in %.2fs", attempt, error.code, wait)
            await self._sleep(wait)

    async def _attempt(self, video_ids: Sequence[str], page_num: int, gate: CreditGate) -> Verdict:
        """One reserved attempt: the reservation is settled with the verdict, whatever happens."""
        reservation = await gate.reserve(len(video_ids), page_num)
        verdict: Verdict | None = None
        sent = False
        try:
            await self._limiter.acquire()
            sent = True
            verdict = await self._exchange(video_ids, page_num)
            return verdict
        finally:
            if verdict is None:  # cancelled (or crashed) before an outcome was seen
                verdict = Verdict("cancelled", "uncertain") if sent else Verdict("cancelled_before_send", "no")
            # Shielded from cancellation so the ledger row is settled now, not left behind as a reservation.
            with anyio.CancelScope(shield=True):
                await gate.settle(
                    reservation,
                    Attempt(
                        len(video_ids),
                        page_num,
                        verdict.status,
                        verdict.outcome,
                        verdict.charged,
                        verdict.request_id,
                    ),
                )

    async def _exchange(self, video_ids: Sequence[str], page_num: int) -> Verdict:
        """Send the GET and classify what came back, within one deadline from connect to last byte."""
        import httpx

        params = {"video_ids": ",".join(video_ids), "page_num": page_num, "page_size": PAGE_SIZE}
        # Waiting for a pooled connection ends before the overall deadline, as a PoolTimeout: nothing was sent,
        # so it is not charged and may be retried (a deadline passing later may have been charged).
        timeout = httpx.Timeout(
            self.timeout_seconds,
            connect=min(self.timeout_seconds, CONNECT_TIMEOUT_SECONDS),
            pool=self.timeout_seconds / 2,
        )
        status: int | None = None
        started = time.perf_counter()
        try:
            with anyio.fail_after(self.timeout_seconds):
                async with self._client().stream(
                    "GET", self._url, params=params, headers=self._headers, timeout=timeout
                ) as response:
                    status = response.status_code
                    body_bytes = await read_bounded(response, MAX_BODY_BYTES)
                    header_rid = response.headers.get("x-request-id")
                    retry_after = retry_after_seconds(response.headers.get("retry-after"))
        except (httpx.HTTPError, TimeoutError, BodyTooLarge, UnsupportedEncoding) as exc:
            return classify_failure(exc, status)
        finally:
            self._observe(time.perf_counter() - started)
        body = parse_body(body_bytes, self._redact)  # the key is redacted before any text is capped
        rid = request_id_of(body, self._redact(header_rid) if header_rid else None)
        return dataclasses.replace(classify_response(status, body, retry_after=retry_after), request_id=rid)
