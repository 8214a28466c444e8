"""The only place an upstream request is made.

`KeyAPIClient.fetch_page` sends one GET for one page and returns the raw rows. Around every attempt
it asks a `CreditGate` for a reservation and reports the outcome, so the ledger sees every attempt
(including retries) and no request leaves without a reserved credit.

Retry policy (small named pieces below):
- retried: 429 (honouring Retry-After), 5xx, HTTP 200 with a non-zero `code`, and connection errors
  raised *before* the request was sent (connect errors) — none of these was charged;
- never retried: 400/401/402/403 (retrying cannot help), read timeouts and connections lost after
  the request was sent — the upstream may have charged those, so a silent retry could pay twice.
At most `MAX_ATTEMPTS` attempts and about `RETRY_BUDGET_SECONDS` of waiting in all.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import random
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import TYPE_CHECKING, Any, Literal, Protocol

import anyio

if TYPE_CHECKING:  # imported on the first request instead: keeps ~10 ms and ~1.5 MB off the start path
    import httpx

from keyapi_mcp import __version__
from keyapi_mcp.errors import (
    KeyAPIError,
    OutOfCredits,
    RateLimited,
    Unauthorized,
    UpstreamError,
    UpstreamTimeout,
)
from keyapi_mcp.text import clean_text, safe_token, upstream_said

log = logging.getLogger(__name__)

ENDPOINT = "/v1/tiktok/video/products/analytics"
PAGE_SIZE = 10  # the upstream maximum: the fewest credits for a given number of rows
MAX_ATTEMPTS = 3
RETRY_BUDGET_SECONDS = 20.0
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 8.0
MAX_BODY_BYTES = 8 * 1024 * 1024
POOL_SHARD_SIZE = 8  # connections per upstream httpx pool (see UpstreamPool)

Charged = Literal["yes", "no", "uncertain"]


def _load_httpx() -> None:
    """Import httpx, without the command-line client its package tries to load at import.

    httpx's `__init__` attempts `from ._main import main` (its CLI), which imports click and pygments
    whenever they are installed (pygments comes with pytest, IPython, rich, …) and only then gives up for
    lack of rich: ~0.7 MB of RSS and a few ms for a module a server never runs. An absent `httpx._main`
    makes that attempt fail at once; httpx then defines its stub `main`, as it does without the extras.
    Call it before the first `import httpx` of a request path; later calls cost a dict lookup.
    """
    if "httpx" in sys.modules or "httpx._main" in sys.modules:
        return
    sys.modules["httpx._main"] = None  # type: ignore[assignment]  # the documented "not importable" marker
    try:
        import httpx  # noqa: F401
    finally:
        if sys.modules.get("httpx._main", ...) is None:
            del sys.modules["httpx._main"]


@dataclass(frozen=True)
class Attempt:
    """What one upstream attempt did, as the ledger records it."""

    ids_count: int
    page: int
    http_status: int | None
    outcome: str  # "ok", "http_429", "envelope_500", "read_timeout", ...
    charged: Charged
    request_id: str | None = None


class CreditGate(Protocol):
    """Reserves a credit before each attempt and settles it after. Implemented by the ledger."""

    async def reserve(self, ids_count: int, page: int) -> object:
        """Reserve one credit or raise `BudgetExceeded`. Returns an opaque reservation handle."""
        ...

    async def settle(self, reservation: object, attempt: Attempt) -> None:
        """Record the attempt; a reservation settled with charged="no" is released."""
        ...


@dataclass(frozen=True)
class Page:
    rows: list[Any]
    request_id: str | None


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


def retry_after_seconds(response: httpx.Response, now: Callable[[], float] = time.time) -> float | None:
    """Parse `Retry-After` (delta-seconds or HTTP date); None when absent or unparsable."""
    value = response.headers.get("retry-after")
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


def _no_redaction(text: str) -> str:
    return text


def _scalar(value: Any, redact: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        if not value.isascii():
            # A lone surrogate ("\\ud800") is valid JSON but not valid Unicode: nothing downstream
            # (cache, JSON output) could encode it.
            value = value.encode("utf-8", "replace").decode("utf-8")
        return redact(value)
    if value is None or isinstance(value, int | float):
        return value
    return None  # a nested array/object: no documented field is one


def parse_body(body_bytes: bytes, redact: Callable[[str], str] = _no_redaction) -> Any:
    """The JSON body reduced to the documented envelope shape, or None when it is not a JSON object.

    Top-level values and the fields of each `data` row are kept only as scalars (strings valid Unicode,
    the API key redacted); a `data` row that is not an object becomes None (still counted as a row of the
    page). So no hostile body — nesting deep enough to exhaust the stack, lone surrogates, the key echoed
    back — reaches the cache, the formatter or the model.
    """
    try:
        body = json.loads(body_bytes) if body_bytes else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(body, dict):
        return None
    clean: dict[str, Any] = {_scalar(k, redact): _scalar(v, redact) for k, v in body.items() if k != "data"}
    if "data" in body:
        data = body["data"]
        if isinstance(data, list):
            clean["data"] = [
                {_scalar(k, redact): _scalar(v, redact) for k, v in row.items()} if isinstance(row, dict) else None
                for row in data
            ]
        else:  # keeps "not a list" observable (an object stays an object) without its contents
            clean["data"] = {} if isinstance(data, dict) else _scalar(data, redact)
    return clean


def _upstream_message(body: Any) -> str:
    """The envelope's `message`, capped. `body` comes from `parse_body`, which already redacted the key
    (before this cap: a cap cutting through an echoed key would leave a prefix of it)."""
    if isinstance(body, dict):
        msg = body.get("message")
        if isinstance(msg, str) and msg.strip():
            return clean_text(msg, limit=200) or ""
    return ""


def _request_id(
    body: Any, response: httpx.Response | None = None, redact: Callable[[str], str] = _no_redaction
) -> str | None:
    rid = body.get("requestId") if isinstance(body, dict) else None
    if rid is None and response is not None:
        rid = response.headers.get("x-request-id")
    if isinstance(rid, str | int) and not isinstance(rid, bool):
        return safe_token(redact(str(rid)), limit=100)
    return None


class _Retryable(Exception):
    """An attempt failed in a way that was not charged and may succeed if tried again."""

    def __init__(self, error: KeyAPIError, wait: float | None = None) -> None:
        self.error = error
        self.wait = wait


class UpstreamPool:
    """Connection pools to the upstream, made on the first upstream request, not at start.

    The first https request loads the TLS trust store (~20 ms, ~3 MB): a server that is started by every
    chat session but seldom asked for paid data should not pay that before it answers `initialize`.

    Requests go straight to httpx transports (`keyapi_mcp.transport.UpstreamTransport`: httpcore on plain
    asyncio streams, a TLS context only for https; or the injected one), not through an `httpx.AsyncClient`:
    we send one fixed kind of GET with explicit headers and timeouts, no redirects, cookies, auth flows or
    proxies from the environment, and the client layer around it cost ~0.2 ms per request (18% of a loopback
    GET, measured). Errors are httpx's own (the transport maps httpcore's), and `respx` mocks this path
    exactly as it mocks a client.

    `connections` are spread over pools of at most `shard_size` each, every connection kept alive:
    httpcore's pool re-examines every connection it holds (a socket poll for each idle one) whenever a
    request starts or ends, so one pool of N connections costs O(N) per request and O(N^2) per burst.
    Small pools keep that cost flat and avoid reconnecting after every burst. Each request goes to the pool
    with the fewest requests under way (the first of equals), so calls one at a time reuse one connection.
    An injected `transport` is a single pool of its own, so it is the only one.
    """

    def __init__(
        self,
        *,
        connections: int,
        shard_size: int = POOL_SHARD_SIZE,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._injected = transport
        self._shards = 1 if transport is not None else max(1, -(-connections // shard_size))
        self._per_shard = max(1, -(-connections // self._shards))
        self._transports: list[httpx.AsyncBaseTransport] = []
        self._in_flight: list[int] = []  # requests under way, per pool

    def _open(self) -> list[httpx.AsyncBaseTransport]:
        if self._injected is not None:
            return [self._injected]
        from keyapi_mcp.transport import UpstreamTransport  # imports httpx: get() has loaded it without its CLI

        # Every shard shares one verified TLS context, made on the first https request (none for an http:// upstream).
        return [UpstreamTransport(max_connections=self._per_shard) for _ in range(self._shards)]

    async def get(
        self,
        url: str,
        *,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        # httpx's per-phase (connect, read, write, pool) timeouts, the same argument as `httpx.AsyncClient.get`.
        timeout: tuple[float, float, float, float] = (10.0, 30.0, 30.0, 30.0),  # noqa: ASYNC109
    ) -> httpx.Response:
        """GET `url` and read the whole body; the response is closed when this returns."""
        _load_httpx()
        import httpx

        if not self._transports:
            self._transports = self._open()
            self._in_flight = [0] * len(self._transports)
        # The least busy pool, the first of equals: one-at-a-time traffic keeps to one kept-alive connection
        # (not one per pool, each with its buffers), a burst spreads evenly over all of them.
        shard = min(range(len(self._transports)), key=self._in_flight.__getitem__)
        transport = self._transports[shard]
        connect, read, write, pool = timeout
        request = httpx.Request(
            "GET",
            url,
            params=params,
            headers=headers,
            extensions={"timeout": {"connect": connect, "read": read, "write": write, "pool": pool}},
        )
        self._in_flight[shard] += 1
        try:
            response = await transport.handle_async_request(request)
            response.request = request
            try:
                await response.aread()
            finally:
                await response.aclose()
        finally:
            self._in_flight[shard] -= 1
        return response

    async def __aenter__(self) -> UpstreamPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._injected is None:
            for transport in self._transports:
                await transport.aclose()
        self._transports = []


class HTTPGetter(Protocol):
    """What `KeyAPIClient` needs from HTTP: an `UpstreamPool`, or an `httpx.AsyncClient` in tests."""

    async def get(
        self,
        url: str,
        *,
        params: dict[str, Any],
        headers: dict[str, str],
        timeout: tuple[float, float, float, float],  # noqa: ASYNC109  (httpx's per-phase timeouts)
    ) -> httpx.Response: ...


class KeyAPIClient:
    """Upstream client. Owns no connection pool: the `UpstreamPool` is injected (lifespan-owned)."""

    def __init__(
        self,
        http: HTTPGetter,
        *,
        api_key: str,
        base_url: str,
        rate_limiter: RateLimiter,
        timeout_seconds: float = 30.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self._api_key = api_key
        self._url = base_url.rstrip("/") + ENDPOINT
        self._limiter = rate_limiter
        # httpx's (connect, read, write, pool) tuple form: no httpx import needed at construction.
        self._timeout = (min(timeout_seconds, 10.0), timeout_seconds, timeout_seconds, timeout_seconds)
        self._sleep = sleep
        self._clock = clock
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "User-Agent": f"keyapi-mcp/{__version__}",
            "Accept": "application/json",
            "Accept-Encoding": "gzip, deflate",  # the rows carry long signed URLs: compress them on the wire
        }

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    async def fetch_page(self, video_ids: Sequence[str], page_num: int, gate: CreditGate) -> Page:
        """GET one page (page_size=10) for the comma-joined ids; retry what is safe to retry."""
        started = self._clock()
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._attempt(video_ids, page_num, gate)
            except _Retryable as retry:
                elapsed = self._clock() - started
                wait = retry.wait if retry.wait is not None else backoff_seconds(attempt)
                if attempt >= MAX_ATTEMPTS or elapsed + wait > RETRY_BUDGET_SECONDS:
                    if isinstance(retry.error, RateLimited) and retry.wait is not None:
                        retry.error.hint = (
                            f"Retry in about {max(1, round(retry.wait))} s; results already "
                            "fetched are cached and will not be paid again."
                        )
                    raise retry.error from None
                log.info("upstream attempt %d failed (%s); retrying in %.2fs", attempt, retry.error.code, wait)
                await self._sleep(wait)

    async def _attempt(self, video_ids: Sequence[str], page_num: int, gate: CreditGate) -> Page:
        params = {"video_ids": ",".join(video_ids), "page_num": page_num, "page_size": PAGE_SIZE}
        _load_httpx()
        import httpx

        ids_count = len(video_ids)
        reservation = await gate.reserve(ids_count, page_num)

        async def settle(status: int | None, outcome: str, charged: Charged, rid: str | None = None) -> None:
            await gate.settle(reservation, Attempt(ids_count, page_num, status, outcome, charged, rid))

        try:
            await self._limiter.acquire()
        except BaseException:
            # Cancelled while waiting for the rate limiter: nothing was sent, release the credit.
            with anyio.CancelScope(shield=True):
                await settle(None, "cancelled_before_send", "no")
            raise
        try:
            response = await self._http.get(self._url, params=params, headers=self._headers, timeout=self._timeout)
            body_bytes = response.content
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            # Never reached the upstream: not charged, safe to retry.
            await settle(None, type(exc).__name__, "no")
            raise _Retryable(
                UpstreamError(
                    "Could not connect to the KeyAPI upstream.",
                    hint="Check the network and KEYAPI_BASE_URL, then retry; nothing was charged.",
                )
            ) from None
        except httpx.TimeoutException:
            await settle(None, "read_timeout", "uncertain")
            raise UpstreamTimeout(
                "The KeyAPI upstream did not answer in time; the request may have been charged (counted as spent).",
                hint="Retry the same call later; pages already fetched are cached. Raise "
                "KEYAPI_TIMEOUT_SECONDS if this persists.",
            ) from None
        except httpx.TransportError as exc:
            # Sent, then the connection broke: the upstream may have charged it.
            await settle(None, f"transport_error:{type(exc).__name__}", "uncertain")
            raise UpstreamError(
                "The connection to the KeyAPI upstream was lost after the request was sent; it may "
                "have been charged (counted as spent).",
                hint="Retry the same call; pages already fetched are cached.",
            ) from None
        except BaseException:
            # Cancelled mid-request: the request may have reached the upstream.
            # Shielded from the (anyio) cancellation so the ledger row is settled now, not left behind.
            with anyio.CancelScope(shield=True):
                await settle(None, "cancelled", "uncertain")
            raise

        status = response.status_code
        if len(body_bytes) > MAX_BODY_BYTES:
            await settle(status, "oversized_body", "uncertain" if status == 200 else "no")
            raise UpstreamError("The upstream answered with an oversized body.", hint="Retry with fewer video ids.")
        body = parse_body(body_bytes, self._redact)
        rid = _request_id(body, response, self._redact)
        upstream_msg = _upstream_message(body)
        quoted = upstream_said(upstream_msg)

        if status in (401, 403):
            await settle(status, f"http_{status}", "no", rid)
            raise Unauthorized(f"KeyAPI refused the API key (HTTP {status}).{quoted}", status=status, request_id=rid)
        if status == 402:
            await settle(status, "http_402", "no", rid)
            raise OutOfCredits(
                f"KeyAPI reports the account is out of credits (HTTP 402).{quoted}",
                status=status,
                request_id=rid,
            )
        if status == 429:
            await settle(status, "http_429", "no", rid)
            wait = retry_after_seconds(response)
            raise _Retryable(
                RateLimited(
                    f"KeyAPI rate limit reached (HTTP 429).{quoted}",
                    hint="Retry in a few seconds; results already fetched are cached.",
                    status=status,
                    request_id=rid,
                ),
                wait=wait,
            )
        if status >= 500:
            await settle(status, f"http_{status}", "no", rid)
            raise _Retryable(
                UpstreamError(
                    f"KeyAPI upstream error (HTTP {status}).{quoted}",
                    hint="The upstream is failing; retry later. Nothing was charged.",
                    status=status,
                    request_id=rid,
                )
            )
        if status != 200:
            await settle(status, f"http_{status}", "no", rid)
            raise UpstreamError(
                f"KeyAPI rejected the request (HTTP {status}).{quoted}",
                hint="Check the video ids; nothing was charged.",
                status=status,
                request_id=rid,
            )

        if not isinstance(body, dict) or "code" not in body:
            # A 200 whose body is not the documented envelope (HTML page, truncated JSON...). We
            # cannot tell whether it was charged: count it, never silently.
            await settle(status, "malformed_body", "uncertain", rid)
            raise UpstreamError(
                "KeyAPI answered HTTP 200 with a body that is not the documented JSON envelope "
                "(counted as possibly charged).",
                hint="Retry later; if it persists the upstream API may have changed.",
                status=status,
                request_id=rid,
            )
        code = body.get("code")
        if code not in (0, "0"):
            await settle(status, f"envelope_{safe_token(code, 30) or 'other'}", "no", rid)
            # The documented `code` is an integer; accept "401" as 401 so a stringly upstream maps the same.
            if isinstance(code, str) and code.strip().isdigit():
                code = int(code)
            error_cls = {401: Unauthorized, 403: Unauthorized, 402: OutOfCredits}.get(
                code if isinstance(code, int) and not isinstance(code, bool) else -1
            )
            if error_cls is not None:
                raise error_cls(f"KeyAPI refused the request (code {code}).{quoted}", status=status, request_id=rid)
            if code == 400:
                raise UpstreamError(
                    f"KeyAPI rejected the request (code 400).{quoted}",
                    hint="Check the video ids; nothing was charged.",
                    request_id=rid,
                )
            if code == 429:
                raise _Retryable(
                    RateLimited(
                        f"KeyAPI rate limit reached (code 429).{quoted}",
                        hint="Retry in a few seconds.",
                        request_id=rid,
                    )
                )
            raise _Retryable(
                UpstreamError(
                    f"KeyAPI returned an error envelope (code {safe_token(code, 20) or 'not a number'}).{quoted}",
                    hint="Retry later; nothing was charged.",
                    request_id=rid,
                )
            )
        data = body.get("data")
        if data is None:
            data = []
        if not isinstance(data, list):
            await settle(status, "malformed_data", "yes", rid)
            raise UpstreamError(
                "KeyAPI answered success but `data` is not a list (this credit was charged).",
                hint="Retry later; if it persists the upstream API may have changed.",
                request_id=rid,
            )
        await settle(status, "ok", "yes", rid)
        return Page(rows=data, request_id=rid)
