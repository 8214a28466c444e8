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

`TokenMapVerifier` is a minimal `TokenVerifier` over a fixed token → identity map. It exists so tests
(and embedders that hand out per-user tokens themselves) can give HTTP callers distinct identities without
an authorization server: `build_server(settings, token_verifier=TokenMapVerifier({...}), auth=AuthSettings(...))`.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken

from keyapi_mcp.domain import LOCAL_CALLER

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


class TokenMapVerifier:
    """A `TokenVerifier` (the SDK's protocol) for a fixed map of bearer tokens to caller identities.

    Each token verifies as `AccessToken(client_id=<identity>, scopes=<scopes>)`; any other token is refused.
    Comparison is constant-time per entry. For tests and embedders, not configured by environment: a team
    deployment verifies real OAuth access tokens instead.
    """

    def __init__(self, tokens: Mapping[str, str], *, scopes: tuple[str, ...] = ()) -> None:
        self._tokens = [(token.encode(), identity) for token, identity in tokens.items()]
        self._scopes = list(scopes)

    async def verify_token(self, token: str) -> AccessToken | None:
        presented = token.encode()
        found: str | None = None
        for expected, identity in self._tokens:
            if hmac.compare_digest(presented, expected):
                found = identity
        if found is None:
            return None
        return AccessToken(token=token, client_id=found, scopes=list(self._scopes))
