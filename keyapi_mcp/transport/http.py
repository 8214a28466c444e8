"""MCP over Streamable HTTP (`keyapi-mcp --transport http`): `/mcp`, `/healthz`, auth, limits, shutdown.

- `/mcp` is the SDK's Streamable HTTP endpoint, stateless (any replica can answer any request; all state
  is in the store) with SSE responses, so progress notifications reach the client during a call.
- `KEYAPI_MCP_AUTH_TOKEN`: every request except `GET /healthz` needs `Authorization: Bearer <token>`
  (constant-time comparison), else 401 with `WWW-Authenticate: Bearer`. Binding a non-loopback address
  without a token or OAuth refuses to start: anyone who could reach the port could spend the KeyAPI credits.
- OAuth (`KEYAPI_MCP_OAUTH_ISSUER` + `KEYAPI_MCP_RESOURCE_URL`): the SDK's own bearer middleware guards
  `/mcp` with `keyapi_mcp.transport.oauth`'s verifier (OAuth JWTs, and the static token if set) and serves the Protected
  Resource Metadata; `AuthGate` adds the WebSocket refusal and the 503 for an unreachable IdP.
- DNS-rebinding protection (the MCP spec's Host/Origin validation): always on for loopback binds, where a
  web page in the user's browser is the attacker; for other binds the allowed values come from
  `KEYAPI_MCP_ALLOWED_HOSTS` / `KEYAPI_MCP_ALLOWED_ORIGINS`.
- Request bodies above `KEYAPI_MCP_MAX_BODY_BYTES` get 413 before they are parsed; concurrent tool calls
  are capped by `KEYAPI_MCP_MAX_CONCURRENT_CALLS` (see `keyapi_mcp.concurrency`).
- SIGTERM/SIGINT: stop accepting connections, let in-flight calls finish and answer for up to
  `KEYAPI_MCP_SHUTDOWN_GRACE_SECONDS` (their ledger reservations are settled as they finish; a call still
  running after that is cancelled and its reservation settled as uncertain), then close the store.
- Slow clients: a request head or a `POST /mcp` body must arrive within `KEYAPI_MCP_READ_TIMEOUT_SECONDS`,
  idle keep-alive connections close after `KEEP_ALIVE_SECONDS`, and at most `KEYAPI_MCP_MAX_CONNECTIONS`
  connections are served at once (503 beyond). `GET /mcp` answers 405: see `keyapi_mcp.transport.guards`.
- The listening socket is bound before anything is printed: a port in use is reported as the only line.

The token never reaches a log line: failures are logged with the client address and reason only.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import socket
import sys
from collections.abc import Awaitable, Callable, Iterable

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from keyapi_mcp import __version__
from keyapi_mcp.config import Settings, is_loopback_host
from keyapi_mcp.errors import HttpBindError, HttpConfigError
from keyapi_mcp.metrics import METRICS_PATH, PrometheusMetrics
from keyapi_mcp.surface.caller import static_token_request
from keyapi_mcp.transport.guards import (
    BodyDeadlineMiddleware,
    StatelessGetMiddleware,
    head_timeout_protocol,
    keep_sse_streams_through_shutdown,
    refuse_websocket,
    send_json,
)
from keyapi_mcp.transport.oauth import AuthGate

log = logging.getLogger(__name__)

MCP_PATH = "/mcp"
HEALTH_PATH = "/healthz"
KEEP_ALIVE_SECONDS = 5
LISTEN_BACKLOG = 2048
MIN_TOKEN_CHARS = 16
# OAuth metadata (RFC 9728 protected resource, RFC 8414 authorization server, OpenID discovery), with or
# without a path suffix: served by the SDK when OAuth is on, 404 otherwise.
OAUTH_DISCOVERY_PREFIXES = ("/.well-known/oauth-", "/.well-known/openid-configuration")

LOOPBACK_HOSTS = ["127.0.0.1", "127.0.0.1:*", "localhost", "localhost:*", "[::1]", "[::1]:*"]
LOOPBACK_ORIGINS = [f"http://{host}" for host in LOOPBACK_HOSTS]


def _host_literal(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def check_http_config(settings: Settings, host: str, port: int) -> None:
    """Refuse configurations that would expose the server: no token off loopback, weak token, bad port."""
    if not 0 <= port <= 65535:
        raise HttpConfigError(f"--port {port} is not a TCP port (0-65535).")
    token = settings.mcp_auth_token.get_secret_value() if settings.mcp_auth_token is not None else ""
    if token and len(token) < MIN_TOKEN_CHARS:
        raise HttpConfigError(
            f"KEYAPI_MCP_AUTH_TOKEN is too short (at least {MIN_TOKEN_CHARS} characters). Generate one with: "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    if not is_loopback_host(host) and not token and not settings.oauth_enabled:
        raise HttpConfigError(
            f"refusing to listen on {host} without KEYAPI_MCP_AUTH_TOKEN or OAuth: anyone who can reach this port "
            "could spend your KeyAPI credits. Set KEYAPI_MCP_OAUTH_ISSUER and KEYAPI_MCP_RESOURCE_URL (see "
            "docs/team.md), or KEYAPI_MCP_AUTH_TOKEN to a long random secret (e.g. python -c "
            "'import secrets; print(secrets.token_urlsafe(32))') sent as 'Authorization: Bearer <token>', "
            "or bind --host 127.0.0.1."
        )


def transport_security(settings: Settings, host: str) -> TransportSecuritySettings:
    """Host/Origin validation: loopback names always allowed on loopback binds, plus the configured lists."""
    hosts = list(settings.mcp_allowed_hosts)
    origins = list(settings.mcp_allowed_origins)
    if is_loopback_host(host):
        bound = _host_literal(host)  # e.g. 127.0.0.2, also loopback
        own = [] if bound in LOOPBACK_HOSTS else [bound, f"{bound}:*"]
        return TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=[*LOOPBACK_HOSTS, *own, *hosts],
            allowed_origins=[*LOOPBACK_ORIGINS, *(f"http://{h}" for h in own), *origins],
        )
    if not hosts:
        # Behind a load balancer the public host name is not known here. The bearer token (required off
        # loopback) still guards every request; a rebinding page cannot know it.
        log.warning(
            "KEYAPI_MCP_ALLOWED_HOSTS is not set: Host/Origin headers are not checked on %s. Set it (comma "
            "list, e.g. mcp.example.com,mcp.example.com:443) to enable DNS-rebinding protection.",
            host,
        )
        return TransportSecuritySettings(enable_dns_rebinding_protection=False)
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins)


def bearer_of(headers: Iterable[tuple[bytes, bytes]]) -> tuple[bytes | None, str]:
    """The request's one `Authorization: Bearer` credential, or None and why not (missing, repeated, other)."""
    values = [v for k, v in headers if k.lower() == b"authorization"]
    if len(values) != 1:
        return None, "repeated" if values else "missing"
    scheme, _, credentials = values[0].strip().partition(b" ")
    if scheme.lower() != b"bearer" or not credentials.strip():
        return None, "not a bearer token"
    return credentials.strip(), ""


class BearerAuthMiddleware:
    """Require `Authorization: Bearer <token>` on every HTTP request except the exempt paths.

    The comparison is constant-time over bytes (`hmac.compare_digest`), so response timing does not
    reveal how much of a guessed token was right.
    """

    def __init__(self, app: ASGIApp, token: str, *, exempt_paths: tuple[str, ...] = (HEALTH_PATH,)) -> None:
        self.app = app
        self._expected = token.encode("utf-8")
        self._exempt = exempt_paths

    def _authorized(self, scope: Scope) -> tuple[bool, str]:
        presented, why = bearer_of(scope.get("headers", []))
        if presented is None:
            return False, why
        if not hmac.compare_digest(presented, self._expected):
            return False, "invalid"
        return True, ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await refuse_websocket(send)
            return
        if scope["type"] != "http" or scope.get("path") in self._exempt:
            await self.app(scope, receive, send)
            return
        if str(scope.get("path", "")).startswith(OAUTH_DISCOVERY_PREFIXES):
            # Clients probe these to learn whether to start an OAuth flow: a 401 reads as "OAuth, but broken"
            # (mcp-use logs errors), a 404 as "no OAuth here", which is the truth with a static bearer token.
            await send_json(
                send,
                404,
                {
                    "error": "not_found",
                    "error_description": "OAuth is off: send the bearer token (KEYAPI_MCP_AUTH_TOKEN).",
                },
                [],
            )
            return
        ok, reason = self._authorized(scope)
        if ok:
            with static_token_request():  # the caller is `static` (keyapi_mcp.caller)
                await self.app(scope, receive, send)
            return
        client = scope.get("client") or ("?", 0)
        log.info("rejected %s %s from %s: %s bearer token", scope.get("method"), scope.get("path"), client[0], reason)
        challenge = 'Bearer realm="keyapi-mcp"'
        if reason == "invalid":
            challenge += ', error="invalid_token"'
        await send_json(
            send,
            401,
            {
                "error": "unauthorized",
                "error_description": "Send 'Authorization: Bearer <KEYAPI_MCP_AUTH_TOKEN>' with every request.",
            },
            [(b"www-authenticate", challenge.encode())],
        )


async def _healthz(_: Request) -> JSONResponse:
    # Liveness only, nothing secret: no settings, no counts, no upstream check (that would spend nothing but
    # would make a load balancer's probe depend on KeyAPI).
    return JSONResponse({"status": "ok", "version": __version__}, headers={"cache-control": "no-store"})


def build_http_app(server: MCPServer, settings: Settings, *, host: str = "127.0.0.1", port: int = 8000) -> ASGIApp:
    """The ASGI app served by `run_http`: `/mcp` (Streamable HTTP) and `/healthz`, behind the bearer check.

    Raises `HttpConfigError` for configurations that must not start (see `check_http_config`).
    """
    check_http_config(settings, host, port)
    if settings.oauth_enabled and server.settings.auth is None:
        # build_server must pass `**auth_kwargs(settings)`; serving without it would ignore the OAuth settings.
        raise HttpConfigError("OAuth is configured but the server was built without it (auth_kwargs missing).")
    app: Starlette = server.streamable_http_app(
        streamable_http_path=MCP_PATH,
        stateless_http=True,
        json_response=False,
        max_request_body_size=settings.mcp_max_body_bytes,
        transport_security=transport_security(settings, host),
        host=host,
    )
    app.router.routes.insert(0, Route(HEALTH_PATH, _healthz, methods=["GET"], name="healthz"))
    metrics = getattr(server, "metrics", None)
    exempt: tuple[str, ...] = (HEALTH_PATH,)
    if isinstance(metrics, PrometheusMetrics):
        add_metrics_route(app, metrics, settings)
        exempt = (HEALTH_PATH, METRICS_PATH)  # /metrics checks its own tokens: the metrics token works alone
    guarded: ASGIApp = StatelessGetMiddleware(
        BodyDeadlineMiddleware(app, path=MCP_PATH, seconds=settings.mcp_read_timeout_seconds),
        path=MCP_PATH,
    )
    if settings.oauth_enabled:
        return AuthGate(guarded)
    if settings.mcp_auth_token is None:
        log.info("KEYAPI_MCP_AUTH_TOKEN is not set: /mcp accepts unauthenticated requests (loopback only)")
        return guarded
    return BearerAuthMiddleware(guarded, settings.mcp_auth_token.get_secret_value(), exempt_paths=exempt)


def add_metrics_route(app: Starlette, metrics: PrometheusMetrics, settings: Settings) -> None:
    """Serve `GET /metrics` to holders of KEYAPI_MCP_METRICS_TOKEN or KEYAPI_MCP_AUTH_TOKEN (never open)."""
    tokens = [s.get_secret_value() for s in (settings.mcp_metrics_token, settings.mcp_auth_token) if s is not None]
    if not tokens:
        raise HttpConfigError(
            "KEYAPI_MCP_METRICS=1 needs KEYAPI_MCP_METRICS_TOKEN (or KEYAPI_MCP_AUTH_TOKEN): /metrics is never "
            "served without a bearer token. Generate one with: python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))'"
        )
    if any(len(token) < MIN_TOKEN_CHARS for token in tokens):
        raise HttpConfigError(f"KEYAPI_MCP_METRICS_TOKEN is too short (at least {MIN_TOKEN_CHARS} characters).")
    app.router.routes.insert(0, Route(METRICS_PATH, metrics_endpoint(metrics, tokens), methods=["GET"], name="metrics"))


def metrics_endpoint(metrics: PrometheusMetrics, tokens: list[str]) -> Callable[[Request], Awaitable[Response]]:
    """The `GET /metrics` handler: the exposition text for a request bearing one of `tokens`, else 401."""
    expected = [token.encode() for token in tokens]

    async def endpoint(request: Request) -> Response:
        presented, _ = bearer_of(request.headers.raw)
        ok = False
        for token in expected:  # every token compared, in constant time: timing tells nothing
            ok |= presented is not None and hmac.compare_digest(presented, token)
        if not ok:
            return JSONResponse(
                {
                    "error": "unauthorized",
                    "error_description": "Send 'Authorization: Bearer <KEYAPI_MCP_METRICS_TOKEN>' "
                    "(or the KEYAPI_MCP_AUTH_TOKEN) to read /metrics.",
                },
                status_code=401,
                headers={"www-authenticate": 'Bearer realm="keyapi-mcp-metrics"'},
            )
        body, content_type = metrics.render()
        return Response(body, media_type=content_type, headers={"cache-control": "no-store"})

    return endpoint


def uvicorn_server(app: ASGIApp, *, host: str, port: int, settings: Settings) -> uvicorn.Server:
    """A uvicorn server that logs through the root logger (stderr) and shuts down gracefully."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,  # keep the CLI's stderr logging; uvicorn's default sends access logs to stdout
        log_level=settings.log_level.lower(),
        access_log=True,
        lifespan="on",
        server_header=False,
        http=head_timeout_protocol(settings.mcp_read_timeout_seconds),
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        limit_concurrency=settings.mcp_max_connections,
        backlog=LISTEN_BACKLOG,
        timeout_graceful_shutdown=settings.mcp_shutdown_grace_seconds,
    )
    return uvicorn.Server(config)


def bind_socket(host: str, port: int) -> socket.socket:
    """The listening socket, bound now: a failure is reported before anything claims the server is up."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise HttpBindError(f"cannot listen on {host}:{port}: {exc.strerror} (check --host).") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc)
        raise HttpBindError(
            f"cannot listen on {_host_literal(host)}:{port}: {reason}. Stop the process using that port or "
            "choose another with --port."
        ) from None
    return sock


def run_http(server: MCPServer, settings: Settings, *, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve until SIGTERM/SIGINT. Raises `HttpConfigError` before binding anything if unsafe."""
    app = build_http_app(server, settings, host=host, port=port)
    uv = uvicorn_server(app, host=host, port=port, settings=settings)
    sock = bind_socket(host, port)
    port = sock.getsockname()[1]
    keep_sse_streams_through_shutdown()
    if settings.oauth_enabled:
        auth = f"OAuth from {settings.mcp_oauth_issuer}" + (" or bearer token" if settings.mcp_auth_token else "")
    else:
        auth = "bearer token required" if settings.mcp_auth_token is not None else "no auth: loopback only"
    print(
        f"keyapi-mcp {__version__}: MCP Streamable HTTP on http://{_host_literal(host)}:{port}{MCP_PATH} ({auth}); "
        f"health at /healthz. Ctrl+C or SIGTERM stops it (calls in flight get up to "
        f"{settings.mcp_shutdown_grace_seconds} s to finish).",
        file=sys.stderr,
        flush=True,
    )
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises the signal after its graceful shutdown
        uv.run(sockets=[sock])
