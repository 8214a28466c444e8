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

The name is a key: the per-user limit counts by it and the stores keep it (a SQLite column, Redis key
names), so two different identities never get the same one (`caller_key`). A plain identity — printable,
no surrounding whitespace, at most `MAX_CALLER_CHARS` characters — is its own key, as ledgers written by
earlier versions have it; any other identity, and one spelled like a built-in caller (`local`, `static`),
is `~<readable prefix>~<sha256 digest>`, which no plain identity can equal (none starts with `~`). A token
whose `sub` is `static` is therefore never the shared static token: that one is recognised by the exact
`AccessToken` `keyapi_mcp.transport.oauth` makes for it (client and subject `static`, no claims; every
verified JWT carries its `iss` claim). `client_id` stands in for a missing `sub`, as RFC 9068 has the
`sub` of a client-credentials token name the client.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken

from keyapi_mcp.core.domain import LOCAL_CALLER

STATIC_CALLER = "static"
BUILT_IN_CALLERS = frozenset({LOCAL_CALLER, STATIC_CALLER})
# Identities are stored in the ledger and used in Redis key names: longer or odd ones are keyed by a digest.
MAX_CALLER_CHARS = 200
DIGEST_MARK = "~"
SHOWN_CHARS = 40  # of a digested identity, shown before its digest so a person can still tell who it is
DIGEST_HEX = 32  # 128 bits of SHA-256

_static_token_used: ContextVar[bool] = ContextVar("keyapi_mcp_static_token_used", default=False)


@contextmanager
def static_token_request() -> Iterator[None]:
    """Mark the current request as authenticated by the shared static token (see `BearerAuthMiddleware`)."""
    mark = _static_token_used.set(True)
    try:
        yield
    finally:
        _static_token_used.reset(mark)


def caller_key(identity: str) -> str:
    """The ledger key of a token's identity: itself when plain, else a digest of all of it (never a merge)."""
    plain = (
        0 < len(identity) <= MAX_CALLER_CHARS
        and identity.isprintable()
        and identity == identity.strip()
        and not identity.startswith(DIGEST_MARK)
        and identity not in BUILT_IN_CALLERS
    )
    if plain:
        return identity
    digest = hashlib.sha256(identity.encode("utf-8", "surrogatepass")).hexdigest()[:DIGEST_HEX]
    shown = "".join(ch if ch.isprintable() and not ch.isspace() else "?" for ch in identity[:SHOWN_CHARS])
    return f"{DIGEST_MARK}{shown}{DIGEST_MARK}{digest}"


def _is_static_token(token: AccessToken) -> bool:
    """The access token `keyapi_mcp.transport.oauth` makes for the shared static token (a verified JWT has claims)."""
    return token.claims is None and token.subject == STATIC_CALLER and token.client_id == STATIC_CALLER


def caller_of(token: AccessToken | None, *, static: bool = False) -> str:
    """The caller name for a verified token (or its absence): `sub`, else `client_id`, else static/local."""
    if token is None:
        return STATIC_CALLER if static else LOCAL_CALLER
    if _is_static_token(token):
        return STATIC_CALLER
    return caller_key(token.subject or token.client_id or "")


def current_caller() -> str:
    """The caller of the request being served (call it inside a tool)."""
    return caller_of(get_access_token(), static=_static_token_used.get())
