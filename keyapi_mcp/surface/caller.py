"""Who is calling: the name a credit is booked under for the per-user daily limit.

One function, `current_caller()`, decides it for a tool call, in this order:

1. an access token verified by the SDK's bearer middleware (OAuth, or any `TokenVerifier` given to
   `build_server`): its `sub` (the user), else its `client_id` (client-credentials tokens have no user);
2. `static` when the request carried the shared `KEYAPI_MCP_AUTH_TOKEN` (scripts, health checks);
3. `local` otherwise (stdio, or HTTP on loopback without any auth).

The token comes from the SDK's public `get_access_token()`, which reads the context the SDK's auth
middleware set for this request; the static-token marker is a context variable set the same way by
`BearerAuthMiddleware`. Every OAuth/verifier change only has to produce an `AccessToken`: the budget,
the ledger and `get_credit_usage` follow from this one function.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken

from keyapi_mcp.core.domain import LOCAL_CALLER

STATIC_CALLER = "static"
# Identities are stored in the ledger and used in Redis key names: long or odd ones are cut, not refused.
MAX_CALLER_CHARS = 200

_static_token_used: ContextVar[bool] = ContextVar("keyapi_mcp_static_token_used", default=False)


@contextmanager
def static_token_request() -> Iterator[None]:
    """Mark the current request as authenticated by the shared static token (see `BearerAuthMiddleware`)."""
    mark = _static_token_used.set(True)
    try:
        yield
    finally:
        _static_token_used.reset(mark)


def caller_of(token: AccessToken | None, *, static: bool = False) -> str:
    """The caller name for a verified token (or its absence): `sub`, else `client_id`, else static/local."""
    if token is not None:
        identity = (token.subject or token.client_id or "").strip()
        if identity:
            return "".join(ch if ch.isprintable() else "?" for ch in identity)[:MAX_CALLER_CHARS]
    return STATIC_CALLER if static else LOCAL_CALLER


def current_caller() -> str:
    """The caller of the request being served (call it inside a tool)."""
    return caller_of(get_access_token(), static=_static_token_used.get())
