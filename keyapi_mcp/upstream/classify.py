"""What one upstream attempt's outcome means, as pure functions: for the ledger, the caller and the retries.

Refusals are one table (`REFUSALS`), applied alike to the HTTP status and to the envelope's `code`; what
the server cannot classify is counted as possibly charged ("uncertain"), never as free.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from keyapi_mcp.bounded_read import BodyTooLarge, UnsupportedEncoding
from keyapi_mcp.core.domain import Charged
from keyapi_mcp.core.text import safe_token, upstream_said
from keyapi_mcp.errors import KeyAPIError, OutOfCredits, RateLimited, Unauthorized, UpstreamError, UpstreamTimeout

MAX_BODY_BYTES = 8 * 1024 * 1024  # decoded: a compressed reply is held to the same bound while it inflates


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


@dataclass(frozen=True)
class Refusal:
    """One kind of refusal the upstream states, by HTTP status or by envelope code: never charged."""

    error: type[KeyAPIError]
    what: str  # completed with where it was said: "(HTTP 429)" or "(code 429)"
    hint: str | None
    retry: bool


REJECTED = Refusal(UpstreamError, "KeyAPI rejected the request", "Check the video ids; nothing was charged.", False)
FAILING = Refusal(
    UpstreamError, "KeyAPI upstream error", "The upstream is failing; retry later. Nothing was charged.", True
)
REFUSALS: dict[int, Refusal] = {
    400: REJECTED,
    401: Refusal(Unauthorized, "KeyAPI refused the API key", None, False),
    402: Refusal(OutOfCredits, "KeyAPI reports the account is out of credits", None, False),
    403: Refusal(Unauthorized, "KeyAPI refused the API key", None, False),
    429: Refusal(
        RateLimited, "KeyAPI rate limit reached", "Retry in a few seconds; results already fetched are cached.", True
    ),
}
# Any other envelope code is an error the upstream stated without charging: worth a retry.
OTHER_ENVELOPE = Refusal(UpstreamError, "KeyAPI returned an error envelope", "Retry later; nothing was charged.", True)


def refusal_for(number: int, *, envelope: bool) -> Refusal:
    """The refusal an HTTP status (other than 200) or a non-zero envelope code stands for."""
    if number in REFUSALS:
        return REFUSALS[number]
    if number >= 500:
        return FAILING
    return OTHER_ENVELOPE if envelope else REJECTED


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


def envelope_code(value: Any) -> int | None:
    """The envelope `code` as the number it spells (0, 0.0, "0" and "0.0" are all success), else None.

    The upstream documents an integer, but JSON does not tell 0 from 0.0 and proxies may send numbers as
    strings. A value that is no integral number (true, "ok", 1.5, null) is None: not a code we know.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def _refused(refusal: Refusal, where: str, outcome: str, status: int, said: str, retry_after: float | None) -> Verdict:
    error = refusal.error(f"{refusal.what} ({where}).{said}", hint=refusal.hint)
    wait = retry_after if refusal.error is RateLimited else None
    return Verdict(outcome, "no", status, error=error, retry=refusal.retry, retry_wait=wait)


def classify_response(status: int, body: Any, *, retry_after: float | None = None) -> Verdict:
    """Classify one HTTP answer; `body` comes from `parse_body` (None when it was not a JSON object)."""
    said = _said(body)
    if status != 200:
        return _refused(
            refusal_for(status, envelope=False), f"HTTP {status}", f"http_{status}", status, said, retry_after
        )
    if not isinstance(body, dict) or "code" not in body:
        # A 200 whose body is not the documented envelope (HTML page, truncated JSON...): we cannot tell
        # whether it was charged, so count it, never silently.
        error = UpstreamError(
            "KeyAPI answered HTTP 200 with a body that is not the documented JSON envelope (counted as "
            "possibly charged).",
            hint="Retry later; if it persists the upstream API may have changed.",
        )
        return Verdict("malformed_body", "uncertain", status, error=error)
    code = envelope_code(body["code"])
    if code is None:
        # Neither success nor a refusal we know: it may have been charged, so it is counted, never retried.
        shown = safe_token(body["code"], limit=20) or "not a number"
        error = UpstreamError(
            f"KeyAPI answered with an envelope code that is not a number ({shown}); counted as possibly charged.{said}",
            hint="Retry later; if it persists the upstream API may have changed.",
        )
        return Verdict("envelope_other", "uncertain", status, error=error)
    if code != 0:
        outcome = f"envelope_{code}"[:40]  # one word in the ledger
        return _refused(refusal_for(code, envelope=True), f"code {code}", outcome, status, said, None)
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
