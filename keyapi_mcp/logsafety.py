"""Log output without secrets, whatever the level: the API key and the HTTP auth token never reach stderr.

Three leaks this closes, all in code we do not own:
- uvicorn's access line logs the full request target, so a token sent as `POST /mcp?token=…` was logged at
  INFO: `StripQueryFilter` rewrites the path argument to the path alone;
- at DEBUG, httpcore traces upstream response headers verbatim (`receive_response_headers.complete
  return_value=(…, [(b'x-echo', b'<key>')])`), and h11/hpack can do the same for the HTTP side: those
  header-level tracers are held at INFO (`HEADER_TRACE_LOGGERS`) even when the CLI runs at DEBUG;
- anything else that quotes a secret (an exception message, a future library's DEBUG line) is caught by
  `RedactingFormatter`, which replaces every known secret value in the final formatted text, traceback
  included.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

REDACTED = "[redacted]"
ACCESS_LOGGER = "uvicorn.access"
# Loggers whose DEBUG output is wire-level (request/response headers): never below INFO.
HEADER_TRACE_LOGGERS = ("httpcore", "h11", "hpack", "h2")
# uvicorn's access record: (client address, method, request target, HTTP version, status).
_ACCESS_TARGET_ARG = 2


class StripQueryFilter(logging.Filter):
    """Drop the query string from uvicorn's access lines: `/mcp?token=…` is logged as `/mcp`."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) > _ACCESS_TARGET_ARG and isinstance(args[_ACCESS_TARGET_ARG], str):
            target = args[_ACCESS_TARGET_ARG]
            if "?" in target:
                stripped = list(args)
                stripped[_ACCESS_TARGET_ARG] = target.split("?", 1)[0]
                record.args = tuple(stripped)
        return True


class RedactingFormatter(logging.Formatter):
    """A formatter that replaces each known secret value in the whole formatted record (traceback too)."""

    def __init__(self, fmt: str, secrets: Iterable[str] = ()) -> None:
        super().__init__(fmt)
        # Longest first, so a secret containing another is replaced whole. Short values are ignored: a
        # secret of a few characters would redact ordinary words (settings refuse such tokens anyway).
        self._secrets = sorted({s for s in secrets if len(s) >= 8}, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text


def install(handler: logging.Handler, *, level: str, secrets: Iterable[str], fmt: str) -> None:
    """Make `handler` secret-safe and keep header-level tracers quiet; idempotent."""
    handler.setFormatter(RedactingFormatter(fmt, secrets))
    access = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(f, StripQueryFilter) for f in access.filters):
        access.addFilter(StripQueryFilter())
    floor = max(logging.getLevelName(level), logging.INFO)
    for name in HEADER_TRACE_LOGGERS:
        logging.getLogger(name).setLevel(floor)
