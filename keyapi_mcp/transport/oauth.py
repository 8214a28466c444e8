"""OAuth 2.1 resource server for `--transport http`: who may call `/mcp`, and who the caller is.

Claude's remote connectors (and other MCP clients) speak OAuth: they read this server's Protected Resource
Metadata (RFC 9728), get an access token for its URL from the team's authorization server, and send it as a
bearer token. The SDK does the HTTP side once `MCPServer` gets `token_verifier=` and `auth=` (`auth_kwargs`):
the metadata document at `/.well-known/oauth-protected-resource/mcp`, 401 answers whose `WWW-Authenticate`
points at it, 403 `insufficient_scope`, and `get_access_token()` for the caller. This module supplies what is
ours: the verifier.

- JWT access tokens (RFC 9068) are checked with PyJWT against the issuer's published keys: signature (only
  asymmetric algorithms: a shared-secret `HS*` token or `alg: none` is forged by anyone who knows the public
  configuration), `iss`, `aud` = `KEYAPI_MCP_RESOURCE_URL` (RFC 8707: a token for another server is refused),
  `exp`/`nbf`/`iat` with `CLOCK_LEEWAY_SECONDS` (the leeway matters for `nbf`/`iat` of fresh tokens from an IdP
  whose clock runs ahead; the SDK itself then refuses a token past its `exp`, without leeway). Scopes are not
  checked here: the SDK answers 403 with the missing scope.
- The keys (JWKS) come from `keyapi_mcp.transport.jwks`: cached, refreshed in the background, fetched
  again on rotation, with cooldowns, one deadline and bounded reading against a slow or hostile IdP.
- The authorization server unreachable or unusable (no keys yet, or a rotation that cannot be fetched): the
  request — and every request that waited for the same fetch — is answered 503 `temporarily_unavailable`
  (`Retry-After`: the rest of the cooldown) by `AuthGate`, not 401, so a client does not throw away a good
  token and start a new login; nothing is spent.
- Tokens are refused on their header alone when it is malformed (`alg` or `kid` of the wrong type, not
  JSON), or typed as another kind of JWT (`typ` other than `at+jwt` or the generic `JWT`, RFC 8725 §3.11).
- `KEYAPI_MCP_AUTH_TOKEN` keeps working next to OAuth (scripts, health checks): compared in constant time,
  its caller is `static`.

Tokens never reach a log line: refusals are logged with their reason only.
"""

from __future__ import annotations

import contextvars
import hmac
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mcp.server.auth.provider import AccessToken, TokenVerifier
from mcp.server.auth.settings import AuthSettings
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keyapi_mcp.config import Settings
from keyapi_mcp.errors import AuthServerUnavailable
from keyapi_mcp.surface.caller import STATIC_CALLER
from keyapi_mcp.transport.guards import refuse_websocket, send_json
from keyapi_mcp.transport.jwks import JWKSCache

if TYPE_CHECKING:  # httpx (and PyJWT) are imported when OAuth is used, not at every start
    import httpx

log = logging.getLogger(__name__)

# Asymmetric JWS algorithms only: with HS* the "key" is a shared secret, and `none` is no signature at all.
ALLOWED_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
# RFC 9068 `at+jwt` (either spelling, RFC 7515 §4.1.9) or the generic `JWT` most IdPs still put on access
# tokens; any other explicit type (an ID token's `id_token+jwt`, `logout+jwt`, `dpop+jwt`, …) is another kind
# of JWT that must not pass for an access token. No `typ` at all is accepted, as RFC 7519 makes it optional.
ACCESS_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt", "jwt"})
CLOCK_LEEWAY_SECONDS = 30


def _scopes(claims: Mapping[str, Any]) -> list[str]:
    """RFC 9068 `scope` (space-separated string), or the `scp` list some IdPs (Entra, Okta) issue instead."""
    value = claims.get("scope", claims.get("scp"))
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [s for s in value if isinstance(s, str)]
    return []


class JWTVerifier:
    """Checks one JWT access token against the issuer, this server's resource URL and the issuer's keys."""

    def __init__(self, keys: JWKSCache, *, resource_url: str, leeway: int = CLOCK_LEEWAY_SECONDS) -> None:
        self.keys = keys
        self.resource_url = resource_url
        self.leeway = leeway

    async def verify(self, token: str) -> AccessToken | None:
        """The token's access, or None when it must be refused (reason logged). Raises `AuthServerUnavailable`."""
        import jwt

        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            log.info("refused a bearer token: not a JWT")
            return None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in ALLOWED_ALGORITHMS:
            log.info("refused a bearer token: algorithm %r is not an accepted asymmetric one", str(alg)[:20])
            return None
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            log.info("refused a bearer token: its key id is not a string")
            return None
        typ = header.get("typ")
        if typ is not None and (not isinstance(typ, str) or typ.lower() not in ACCESS_TOKEN_TYPES):
            log.info("refused a bearer token: type %r is not an access token", str(typ)[:20])
            return None
        key = await self.keys.key_for(kid, alg)
        if key is None:
            log.info("refused a bearer token: no signing key of the issuer matches it")
            return None
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.resource_url,
                issuer=self.keys.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            log.info("refused a bearer token: %s", type(exc).__name__)
            return None
        client_id = claims.get("client_id") or claims.get("azp") or claims.get("sub")
        subject = claims.get("sub") or client_id
        if not isinstance(client_id, str) or not isinstance(subject, str):
            log.info("refused a bearer token: it names neither a subject nor a client")
            return None
        return AccessToken(
            token=token,
            client_id=client_id,
            scopes=_scopes(claims),
            expires_at=int(claims["exp"]),
            resource=self.resource_url,
            subject=subject,
            claims={"iss": claims["iss"]},
        )


@dataclass
class _RequestAuth:
    """What the verifier learned about the current request that the SDK's 401 cannot say."""

    server_unavailable: bool = False
    retry_after: int = 1


_request_auth: contextvars.ContextVar[_RequestAuth | None] = contextvars.ContextVar("keyapi_request_auth", default=None)


class KeyAPITokenVerifier(TokenVerifier):
    """The SDK's `TokenVerifier`: the static `KEYAPI_MCP_AUTH_TOKEN` (caller `static`) or an OAuth JWT."""

    def __init__(
        self,
        *,
        static_token: str | None,
        jwt_verifier: JWTVerifier | None,
        resource_url: str | None,
        static_scopes: list[str],
    ) -> None:
        self._static = static_token.encode("utf-8") if static_token else None
        self._jwt = jwt_verifier
        self._resource_url = resource_url
        self._static_scopes = static_scopes

    async def verify_token(self, token: str) -> AccessToken | None:
        if self._static is not None and hmac.compare_digest(token.encode("utf-8"), self._static):
            return AccessToken(
                token=token,
                client_id=STATIC_CALLER,
                subject=STATIC_CALLER,
                scopes=list(self._static_scopes),
                resource=self._resource_url,
            )
        if self._jwt is None:
            return None
        try:
            return await self._jwt.verify(token)
        except AuthServerUnavailable as exc:
            log.warning("cannot check a bearer token: the authorization server is unavailable (%s)", exc)
            state = _request_auth.get()
            if state is not None:
                state.server_unavailable = True
                state.retry_after = self._jwt.keys.retry_after()
            return None


def build_verifier(settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None) -> KeyAPITokenVerifier:
    """The verifier for these settings (OAuth must be configured; the static token is optional)."""
    assert settings.mcp_oauth_issuer is not None and settings.mcp_resource_url is not None
    keys = JWKSCache(
        settings.mcp_oauth_issuer,
        jwks_url=settings.mcp_oauth_jwks_url,
        transport=transport,
        max_age=settings.mcp_oauth_jwks_ttl_seconds,
    )
    static = settings.mcp_auth_token.get_secret_value() if settings.mcp_auth_token is not None else None
    return KeyAPITokenVerifier(
        static_token=static,
        jwt_verifier=JWTVerifier(keys, resource_url=settings.mcp_resource_url),
        resource_url=settings.mcp_resource_url,
        static_scopes=list(settings.mcp_oauth_scopes),
    )


def auth_kwargs(settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None) -> dict[str, Any]:
    """`MCPServer(..., **auth_kwargs(settings))`: the SDK's resource-server wiring, or nothing without OAuth.

    `transport` (tests) carries the verifier's requests to the authorization server.
    """
    if not settings.oauth_enabled:
        return {}
    assert settings.mcp_oauth_issuer is not None and settings.mcp_resource_url is not None
    return {
        "token_verifier": build_verifier(settings, transport=transport),
        "auth": AuthSettings(
            issuer_url=settings.mcp_oauth_issuer,  # type: ignore[arg-type]  # pydantic parses the string
            resource_server_url=settings.mcp_resource_url,  # type: ignore[arg-type]
            required_scopes=list(settings.mcp_oauth_scopes),
            validate_token_resource=True,
        ),
    }


UNAVAILABLE = {
    "error": "temporarily_unavailable",
    "error_description": (
        "The authorization server could not be reached to check the access token; nothing was done. "
        "Retry in a moment with the same token."
    ),
}


class AuthGate:
    """Outermost layer of the OAuth-protected app: refuses WebSocket upgrades and turns the SDK's 401 into
    503 when the verifier could not reach the authorization server (the token was not found bad)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await refuse_websocket(send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = _RequestAuth()
        reset = _request_auth.set(state)
        replaced = False

        async def guarded_send(message: Message) -> None:
            nonlocal replaced
            if message["type"] == "http.response.start" and message["status"] == 401 and state.server_unavailable:
                replaced = True
                retry = [(b"retry-after", str(state.retry_after).encode()), (b"cache-control", b"no-store")]
                await send_json(send, 503, UNAVAILABLE, retry)
                return
            if not replaced:
                await send(message)

        try:
            await self.app(scope, receive, guarded_send)
        finally:
            _request_auth.reset(reset)
