"""The only place an upstream request is made.

`KeyAPIClient.fetch_page` sends one GET for one page through an injected `httpx.AsyncClient` and returns
the raw rows. Around every attempt it asks a `CreditGate` for a reservation and reports the outcome, so
the ledger sees every attempt (including retries) and no request leaves without a reserved credit.

Each attempt is two steps: `_exchange` makes the request (one overall deadline from connect to last byte,
the body bounded *while* it is decoded) and `classify_response` / `classify_failure` — pure functions —
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
import json
import logging
import math
import random
import time
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from keyapi_mcp import __version__
from keyapi_mcp.domain import PAGE_SIZE, Attempt, Charged
from keyapi_mcp.errors import (
    KeyAPIError,
    OutOfCredits,
    RateLimited,
    Unauthorized,
    UpstreamError,
    UpstreamTimeout,
)
from keyapi_mcp.text import safe_token, upstream_said

if TYPE_CHECKING:
    # Imported where a request is made, not at start: most servers a chat starts never pay for a request, and
    # httpx (with the modules it tries at import) is a visible share of the cold-start bar (bench/README.md).
    import httpx

log = logging.getLogger(__name__)

ENDPOINT = "/v1/tiktok/video/products/analytics"
MAX_ATTEMPTS = 3
RETRY_BUDGET_SECONDS = 20.0
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 8.0
MAX_BODY_BYTES = 8 * 1024 * 1024  # decoded: a compressed reply is held to the same bound while it inflates
CONNECT_TIMEOUT_SECONDS = 10.0


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
    rows: list[Any]
    request_id: str | None


@dataclass(frozen=True)
class Verdict:
    """What one attempt's outcome means: for the ledger, for the caller, and for the retry loop."""

    outcome: str
    charged: Charged
    status: int | None = None
    request_id: str | None = None
    rows: list[Any] | None = None  # set exactly when the attempt succeeded
    error: KeyAPIError | None = None
    retry: bool = False
    retry_wait: float | None = None  # the upstream's Retry-After, when it gave one


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


# -- the body ------------------------------------------------------------------------------------------


class BodyTooLarge(Exception):
    """The reply grew past `MAX_BODY_BYTES` (after decoding): reading stopped there."""


class UnsupportedEncoding(Exception):
    """The reply used a Content-Encoding we never asked for."""


def _decompressor(encoding: str) -> Any:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj(zlib.MAX_WBITS)
    raise UnsupportedEncoding(encoding)


async def read_bounded(response: httpx.Response, limit: int | None = None) -> bytes:
    """Read and decode the body, never holding more than `limit` decoded bytes.

    The raw stream is inflated here with zlib's `max_length`, so a small compressed reply that would
    inflate to gigabytes (a "zip bomb") is stopped at `limit`, however much one compressed chunk holds.
    """
    import httpx

    limit = MAX_BODY_BYTES if limit is None else limit
    if response.is_stream_consumed:  # built in memory (httpx.MockTransport, respx): already whole and decoded
        if len(response.content) > limit:
            raise BodyTooLarge
        return response.content
    decoder = _decompressor(response.headers.get("content-encoding", ""))
    body = bytearray()
    async for chunk in response.aiter_raw():
        if decoder is None:
            body += chunk
        else:
            try:
                body += decoder.decompress(chunk, limit - len(body) + 1)
            except zlib.error as exc:
                raise httpx.DecodingError(f"invalid {response.headers['content-encoding']} body") from exc
            if decoder.unconsumed_tail:
                raise BodyTooLarge
        if len(body) > limit:
            raise BodyTooLarge
    if decoder is not None:
        body += decoder.flush()
    return bytes(body)


# -- classification (pure) -----------------------------------------------------------------------------


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


def request_id_of(body: Any, header: str | None) -> str | None:
    """The upstream request id (body `requestId`, else the `x-request-id` header), as a safe token."""
    rid = body.get("requestId") if isinstance(body, dict) else None
    if rid is None:
        rid = header
    if isinstance(rid, str | int) and not isinstance(rid, bool):
        return safe_token(str(rid), limit=100)
    return None


def _said(body: Any) -> str:
    """The envelope's `message` as a delimited quote for error text ("" when there is none)."""
    return upstream_said(body.get("message") if isinstance(body, dict) else None)


def _code_of(value: Any) -> int | None:
    """The envelope `code` as an integer (the documented type; "401" is read as 401), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def classify_response(status: int, body: Any, *, retry_after: float | None = None) -> Verdict:
    """Classify one HTTP answer; `body` comes from `parse_body` (None when it was not a JSON object)."""
    said = _said(body)
    if status in (401, 403):
        return Verdict(
            f"http_{status}", "no", status, error=Unauthorized(f"KeyAPI refused the API key (HTTP {status}).{said}")
        )
    if status == 402:
        return Verdict(
            "http_402", "no", status, error=OutOfCredits(f"KeyAPI reports the account is out of credits.{said}")
        )
    if status == 429:
        error = RateLimited(
            f"KeyAPI rate limit reached (HTTP 429).{said}",
            hint="Retry in a few seconds; results already fetched are cached.",
        )
        return Verdict("http_429", "no", status, error=error, retry=True, retry_wait=retry_after)
    if status >= 500:
        error = UpstreamError(
            f"KeyAPI upstream error (HTTP {status}).{said}",
            hint="The upstream is failing; retry later. Nothing was charged.",
        )
        return Verdict(f"http_{status}", "no", status, error=error, retry=True)
    if status != 200:
        error = UpstreamError(
            f"KeyAPI rejected the request (HTTP {status}).{said}", hint="Check the video ids; nothing was charged."
        )
        return Verdict(f"http_{status}", "no", status, error=error)
    if not isinstance(body, dict) or "code" not in body:
        # A 200 whose body is not the documented envelope (HTML page, truncated JSON...): we cannot tell
        # whether it was charged, so count it, never silently.
        error = UpstreamError(
            "KeyAPI answered HTTP 200 with a body that is not the documented JSON envelope (counted as "
            "possibly charged).",
            hint="Retry later; if it persists the upstream API may have changed.",
        )
        return Verdict("malformed_body", "uncertain", status, error=error)
    code = _code_of(body["code"])
    if code != 0:
        shown = code if code is not None else safe_token(body["code"], limit=20) or "not a number"
        outcome = f"envelope_{code}"[:40] if code is not None else "envelope_other"  # one word in the ledger
        if code in (401, 403):
            return Verdict(
                outcome, "no", status, error=Unauthorized(f"KeyAPI refused the request (code {code}).{said}")
            )
        if code == 402:
            return Verdict(outcome, "no", status, error=OutOfCredits(f"KeyAPI refused the request (code 402).{said}"))
        if code == 400:
            error = UpstreamError(
                f"KeyAPI rejected the request (code 400).{said}", hint="Check the video ids; nothing was charged."
            )
            return Verdict(outcome, "no", status, error=error)
        if code == 429:
            error = RateLimited(f"KeyAPI rate limit reached (code 429).{said}", hint="Retry in a few seconds.")
            return Verdict(outcome, "no", status, error=error, retry=True)
        error = UpstreamError(
            f"KeyAPI returned an error envelope (code {shown}).{said}", hint="Retry later; nothing was charged."
        )
        return Verdict(outcome, "no", status, error=error, retry=True)
    data = body.get("data")
    if data is None:
        data = []
    if not isinstance(data, list):
        error = UpstreamError(
            "KeyAPI answered success but `data` is not a list (this credit was charged).",
            hint="Retry later; if it persists the upstream API may have changed.",
        )
        return Verdict("malformed_data", "yes", status, error=error)
    return Verdict("ok", "yes", status, rows=data)


def classify_failure(exc: BaseException, status: int | None = None) -> Verdict:
    """Classify an attempt that produced no usable answer (connection, deadline, body problems)."""
    import httpx

    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        # Never reached the upstream: not charged, safe to retry.
        error = UpstreamError(
            "Could not connect to the KeyAPI upstream.",
            hint="Check the network and KEYAPI_BASE_URL, then retry; nothing was charged.",
        )
        return Verdict(type(exc).__name__, "no", error=error, retry=True)
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        error = UpstreamTimeout(
            "The KeyAPI upstream did not answer within KEYAPI_TIMEOUT_SECONDS; the request may have been "
            "charged (counted as spent).",
            hint="Retry the same call later; pages already fetched are cached. Raise KEYAPI_TIMEOUT_SECONDS "
            "if this persists.",
        )
        return Verdict("timeout", "uncertain", status, error=error)
    charged: Charged = "uncertain" if status in (None, 200) else "no"
    if isinstance(exc, BodyTooLarge):
        error = UpstreamError(
            f"The upstream answered with an oversized body (over {MAX_BODY_BYTES // (1024 * 1024)} MB decoded); "
            "reading stopped there.",
            hint="Retry with fewer video ids.",
        )
        return Verdict("oversized_body", charged, status, error=error)
    if isinstance(exc, UnsupportedEncoding | httpx.DecodingError):
        error = UpstreamError(
            "The upstream answered with a body that could not be decoded (counted as possibly charged).",
            hint="Retry later; if it persists the upstream API may have changed.",
        )
        return Verdict("undecodable_body", charged, status, error=error)
    # Sent, then the connection broke: the upstream may have charged it.
    error = UpstreamError(
        "The connection to the KeyAPI upstream was lost after the request was sent; it may have been charged "
        "(counted as spent).",
        hint="Retry the same call; pages already fetched are cached.",
    )
    return Verdict(f"transport_error:{type(exc).__name__}", "uncertain", status, error=error)


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
                    body_bytes = await read_bounded(response)
                    header_rid = response.headers.get("x-request-id")
                    retry_after = retry_after_seconds(response.headers.get("retry-after"))
        except (httpx.HTTPError, TimeoutError, BodyTooLarge, UnsupportedEncoding) as exc:
            return classify_failure(exc, status)
        finally:
            self._observe(time.perf_counter() - started)
        body = parse_body(body_bytes, self._redact)  # the key is redacted before any text is capped
        rid = request_id_of(body, self._redact(header_rid) if header_rid else None)
        return dataclasses.replace(classify_response(status, body, retry_after=retry_after), request_id=rid)
