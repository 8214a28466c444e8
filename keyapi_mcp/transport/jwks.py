"""The issuer's signing keys (JWKS) for the OAuth verifier (`keyapi_mcp.transport.oauth`): found, fetched, cached.

- The keys come from `KEYAPI_MCP_OAUTH_JWKS_URL` or the issuer's metadata (RFC 8414, then OpenID discovery),
  are cached, refreshed in the background once older than `KEYAPI_MCP_OAUTH_JWKS_TTL_SECONDS` (the cached
  keys keep verifying meanwhile, so a slow or hung IdP delays no signed-in request), and fetched again when
  a token names an unknown key id (the issuer rotated its keys), at most once per
  `UNKNOWN_KID_COOLDOWN_SECONDS` so that made-up key ids cannot turn the server into a load generator
  against the IdP. A failed fetch starts `FAILURE_COOLDOWN_SECONDS` in which nothing is fetched again.
- One request fetches at a time; requests that arrive meanwhile wait for it and share its outcome.
- One fetch (discovery and keys together) has one deadline, `FETCH_DEADLINE_SECONDS`, however slowly the
  bytes arrive; each document is read with a running cap of `MAX_METADATA_BYTES`, decoded bytes counted while
  a gzip body inflates (`read_bounded`, as for the upstream), and anything that is not a usable document
  (wrong types, nesting too deep to parse, a `jwks_uri` that is no URL, no usable key, more than
  `MAX_JWKS_KEYS`) is a failed fetch: `AuthServerUnavailable`, never another exception.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio

from keyapi_mcp.bounded_read import BodyTooLarge, UnsupportedEncoding, read_bounded
from keyapi_mcp.config import DEFAULT_OAUTH_JWKS_TTL_SECONDS, is_loopback_host
from keyapi_mcp.errors import AuthServerUnavailable

if TYPE_CHECKING:  # httpx (and PyJWT) are imported when OAuth is used, not at every start
    import httpx

log = logging.getLogger(__name__)

KEY_TYPE_BY_ALGORITHM_PREFIX = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}
FETCH_DEADLINE_SECONDS = 5.0  # discovery and keys together, from the first connect to the last byte
FAILURE_COOLDOWN_SECONDS = 5.0
UNKNOWN_KID_COOLDOWN_SECONDS = 30.0
MAX_METADATA_BYTES = 1_000_000
# IdPs publish a handful of keys; a set of thousands would make each fetch hold the event loop while loading.
MAX_JWKS_KEYS = 100
ACCEPT_JSON = {"accept": "application/json", "accept-encoding": "gzip, deflate"}  # what read_bounded decodes


def _usable_url(url: str) -> bool:
    """An https URL (http on loopback) that httpx can request: a metadata document's `jwks_uri` is not trusted."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- urlsplit checks the port lazily; httpx would fail on it in odd ways
    except ValueError:
        return False
    if not parts.hostname or any(ch.isspace() or not ch.isprintable() for ch in url):
        return False
    return parts.scheme == "https" or (parts.scheme == "http" and is_loopback_host(parts.hostname))


def metadata_urls(issuer: str) -> list[str]:
    """Where an issuer's metadata may live: RFC 8414 first, then OpenID Connect Discovery (both spellings
    for an issuer with a path, as the MCP authorization spec lists them)."""
    parts = urlsplit(issuer)
    origin = f"{parts.scheme}://{parts.netloc}"
    path = parts.path.rstrip("/")
    urls = [f"{origin}/.well-known/oauth-authorization-server{path}"]
    if path:
        urls.append(f"{origin}/.well-known/openid-configuration{path}")
    urls.append(f"{origin}{path}/.well-known/openid-configuration")
    return urls


@dataclass(frozen=True)
class _Key:
    kid: str | None
    alg: str | None  # the JWK's own `alg`, when it pins one
    kty: str
    key: Any  # PyJWK.key: a `cryptography` public key


class JWKSCache:
    """The issuer's signing keys: discovered, cached, refreshed on rotation, fetched one request at a time."""

    def __init__(
        self,
        issuer: str,
        *,
        jwks_url: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        unknown_kid_cooldown: float = UNKNOWN_KID_COOLDOWN_SECONDS,
        max_age: float = DEFAULT_OAUTH_JWKS_TTL_SECONDS,
        failure_cooldown: float = FAILURE_COOLDOWN_SECONDS,
        deadline: float = FETCH_DEADLINE_SECONDS,
    ) -> None:
        self.issuer = issuer
        self._jwks_url = jwks_url
        self._transport = transport
        self._clock = clock
        self._cooldown = unknown_kid_cooldown
        self._max_age = max_age
        self._failure_cooldown = failure_cooldown
        self._deadline = deadline
        self._keys: list[_Key] | None = None
        self._fetched_at = 0.0
        self._failed_at: float | None = None
        self._last_unknown_kid_fetch: float | None = None
        self._lock = anyio.Lock()
        self._fetches = 0  # fetches finished, either way: how a request that waited knows one ended meanwhile
        self._last_error: str | None = None
        self.background_refresh: asyncio.Task[None] | None = None  # the refresh of stale keys under way, if any

    async def key_for(self, kid: str | None, alg: str) -> Any | None:
        """The public key that may verify a token signed with `alg` by key `kid`, or None (refuse the token).

        Raises `AuthServerUnavailable` when no keys can be had (first fetch failed or cooling down, or a
        rotation could not be fetched).
        """
        if self._keys is None:
            await self._refresh()
        elif self._stale():
            self._refresh_in_background()  # the cached keys still verify what the issuer signed
        key = self._match(kid, alg)
        if key is None and kid is not None:
            if self._may_fetch_for_unknown_kid():
                self._last_unknown_kid_fetch = self._clock()
                await self._refresh()
            elif self._lock.locked():  # a fetch is under way, perhaps for this very key: wait for its outcome
                await self._refresh(join_only=True)
            key = self._match(kid, alg)
        return key

    def _may_fetch_for_unknown_kid(self) -> bool:
        last = self._last_unknown_kid_fetch
        return last is None or self._clock() - last >= self._cooldown

    def _match(self, kid: str | None, alg: str) -> Any | None:
        kty = KEY_TYPE_BY_ALGORITHM_PREFIX.get(alg[:2])
        candidates = [
            k
            for k in self._keys or []
            if k.kty == kty and (k.alg is None or k.alg == alg) and (kid is None or k.kid == kid)
        ]
        # Without a `kid` the key must be unambiguous: trying several would make any of them "the" key.
        return candidates[0].key if len(candidates) == 1 or (kid is not None and candidates) else None

    def retry_after(self) -> int:
        """Seconds until the keys may be fetched again (for `Retry-After`): the rest of the cooldown, at least 1."""
        left = self._failure_cooldown
        if self._failed_at is not None:
            left -= self._clock() - self._failed_at
        return max(1, math.ceil(left))

    def _stale(self) -> bool:
        return self._clock() - self._fetched_at >= self._max_age

    def _cooling_down(self) -> bool:
        return self._failed_at is not None and self._clock() - self._failed_at < self._failure_cooldown

    def _refresh_in_background(self) -> None:
        """Start refreshing stale keys unless a refresh runs or a failed one is cooling down; never waits."""
        if self._cooling_down() or self._lock.locked():
            return
        if self.background_refresh is not None and not self.background_refresh.done():
            return
        self.background_refresh = asyncio.get_running_loop().create_task(self._refresh_quietly())

    async def _refresh_quietly(self) -> None:
        try:
            await self._refresh(unless_fresh=True)
        except AuthServerUnavailable as exc:
            log.warning("keeping the cached signing keys of %s: %s", self.issuer, exc)

    async def _refresh(self, *, unless_fresh: bool = False, join_only: bool = False) -> None:
        """Fetch the keys, or share the outcome of the fetch that ended while this request waited for its turn.

        A fetch cancelled midway (its client left) counts as none: the next request in line fetches.
        """
        seen = self._fetches
        async with self._lock:
            if self._fetches != seen:  # another request fetched while this one waited: share its outcome
                if self._last_error is not None:
                    raise AuthServerUnavailable(self._last_error)
                return
            if join_only or (unless_fresh and not self._stale()):  # nothing to join / fetched meanwhile
                return
            if self._cooling_down():  # a fetch failed moments ago: asking again per token would flood the IdP
                raise AuthServerUnavailable(f"{self._last_error} (not asked again for {self.retry_after()} s)")
            try:
                keys = await self._fetch()
            except AuthServerUnavailable as exc:
                self._fetches += 1
                self._last_error = str(exc)
                self._failed_at = self._clock()
                raise
            self._fetches += 1
            self._last_error = None
            self._failed_at = None
            self._keys = keys
            self._fetched_at = self._clock()
            log.info("loaded %d signing key(s) of %s", len(keys), self.issuer)

    async def _fetch(self) -> list[_Key]:
        import httpx

        try:
            # One deadline for the whole fetch: httpx's timeouts bound each read, not a body trickled slowly.
            with anyio.fail_after(self._deadline):
                async with httpx.AsyncClient(
                    transport=self._transport, timeout=self._deadline, follow_redirects=False
                ) as http:
                    if self._jwks_url is None:
                        self._jwks_url = await self._discover(http)
                    document = await _get_json(http, self._jwks_url)
        except TimeoutError:
            raise AuthServerUnavailable(
                f"the authorization server's keys did not arrive within {self._deadline:g} s"
            ) from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise AuthServerUnavailable(f"{type(exc).__name__} fetching the authorization server's keys") from None
        return _parse_jwks(document, self._jwks_url)

    async def _discover(self, http: httpx.AsyncClient) -> str:
        for url in metadata_urls(self.issuer):
            status, body = await _get(http, url)
            if status in (404, 405, 410):
                continue
            metadata = _json_object(status, body, url)
            # RFC 8414 §3.3: metadata for another issuer must not be used (it could name anyone's keys).
            if metadata.get("issuer") != self.issuer:
                named = str(metadata.get("issuer"))[:100]  # the IdP's text, bounded before it reaches a log line
                raise AuthServerUnavailable(
                    f"{url} describes issuer {named!r}, not KEYAPI_MCP_OAUTH_ISSUER {self.issuer!r}"
                )
            jwks_uri = metadata.get("jwks_uri")
            if not isinstance(jwks_uri, str) or not _usable_url(jwks_uri):
                raise AuthServerUnavailable(f"{url} has no usable https jwks_uri")
            return jwks_uri
        raise AuthServerUnavailable(
            f"no authorization server metadata for {self.issuer} (tried RFC 8414 and OpenID discovery); "
            "check KEYAPI_MCP_OAUTH_ISSUER or set KEYAPI_MCP_OAUTH_JWKS_URL"
        )


async def _get(http: httpx.AsyncClient, url: str) -> tuple[int, bytes]:
    """The status and, for a 200, the body: read bounded while it arrives and inflates, never read whole first."""
    async with http.stream("GET", url, headers=ACCEPT_JSON) as response:
        if response.status_code != 200:
            return response.status_code, b""
        try:
            return 200, await read_bounded(response, MAX_METADATA_BYTES)
        except BodyTooLarge:
            raise AuthServerUnavailable(f"{url} answered more than {MAX_METADATA_BYTES} bytes") from None
        except UnsupportedEncoding:
            raise AuthServerUnavailable(f"{url} answered in a content-encoding that was not asked for") from None


async def _get_json(http: httpx.AsyncClient, url: str) -> dict[str, Any]:
    return _json_object(*await _get(http, url), url)


def _json_object(status: int, body: bytes, url: str) -> dict[str, Any]:
    if status != 200:
        raise AuthServerUnavailable(f"{url} answered HTTP {status}")
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested too deep to parse
        raise AuthServerUnavailable(f"{url} did not answer JSON") from None
    if not isinstance(document, dict):
        raise AuthServerUnavailable(f"{url} did not answer a JSON object")
    return document


def _parse_jwks(document: Mapping[str, Any], url: str) -> list[_Key]:
    """The signature keys of a JWK Set; keys PyJWT cannot load (unknown types, encryption keys) are skipped."""
    import jwt

    raw_keys = document.get("keys")
    if not isinstance(raw_keys, list):
        raise AuthServerUnavailable(f"{url} is not a JWK Set (no list of keys)")
    if len(raw_keys) > MAX_JWKS_KEYS:
        raise AuthServerUnavailable(f"{url} lists {len(raw_keys)} keys, more than the {MAX_JWKS_KEYS} accepted")
    keys: list[_Key] = []
    for raw in raw_keys:
        if not isinstance(raw, dict) or raw.get("use", "sig") != "sig":
            continue
        try:
            loaded = jwt.PyJWK(raw)
        except Exception:  # any member PyJWT cannot load is skipped, whatever its fault
            continue
        kid = raw.get("kid")
        alg = raw.get("alg")
        keys.append(
            _Key(
                kid=kid if isinstance(kid, str) else None,
                alg=alg if isinstance(alg, str) else None,
                kty=str(raw.get("kty")),
                key=loaded.key,
            )
        )
    if not keys:
        raise AuthServerUnavailable(f"{url} holds no usable signing key")
    return keys
