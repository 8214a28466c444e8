"""The composition root, the only module that knows every wing: `build_server(settings)` opens the store,
makes the upstream client, builds the `ProductsService` over both and registers the MCP surface on it."""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from mcp.server.auth.provider import TokenVerifier
from mcp.server.auth.settings import AuthSettings
from mcp.server.caching import CacheHint
from mcp.server.mcpserver import MCPServer, RequestStateSecurity

from keyapi_mcp import __version__
from keyapi_mcp.config import Settings
from keyapi_mcp.core.budget import CallLimits, cap_sized_from_ids
from keyapi_mcp.core.ports import Store
from keyapi_mcp.core.service import ProductsService
from keyapi_mcp.metrics import NO_METRICS, Metrics, MetricsMiddleware, PrometheusMetrics
from keyapi_mcp.state.sqlite_store import SQLiteStore
from keyapi_mcp.surface.app import SERVER_TITLE, AppOnlyTools, ProductsView, icons
from keyapi_mcp.surface.calls import KeyAPIMCPServer
from keyapi_mcp.surface.groups import compare_tool
from keyapi_mcp.surface.prompts import register_prompts
from keyapi_mcp.surface.resources import register_resources
from keyapi_mcp.surface.slots import CallSlots
from keyapi_mcp.surface.state import AppState, LiveState
from keyapi_mcp.surface.tools import INSTRUCTIONS, tools_for
from keyapi_mcp.transport.oauth import auth_kwargs
from keyapi_mcp.upstream.client import KeyAPIClient, RateLimiter

if TYPE_CHECKING:  # imported on the first paid request (see keyapi_mcp.upstream.client)
    import httpx

SERVER_NAME = "keyapi-mcp"
DEMO_API_KEY = "demo-key-not-secret"
DEMO_BASE_URL = "https://demo.invalid"
UPSTREAM_CONNECTIONS = 20

# The lists never change while the process runs (tool descriptions follow the settings, read at start) and are
# the same for every caller: clients may reuse them for 5 minutes and share them across authorization contexts.
LIST_CACHE_HINTS = {
    "tools/list": CacheHint(ttl_ms=300_000, scope="public"),
    "prompts/list": CacheHint(ttl_ms=300_000, scope="public"),
    "resources/list": CacheHint(ttl_ms=300_000, scope="public"),
    "resources/templates/list": CacheHint(ttl_ms=300_000, scope="public"),
}


def default_state_dir() -> Path:
    import platformdirs

    return platformdirs.user_cache_path("keyapi-mcp", appauthor=False)


def open_store(settings: Settings, *, demo: bool = False, clock: Callable[[], float] = time.time) -> Store:
    """Open the configured store. Demo mode uses a private in-memory ledger: no real credits exist there."""
    if demo:
        return SQLiteStore(":memory:", clock=clock)
    url = settings.state_url
    if url and url.startswith(("redis://", "rediss://")):
        from keyapi_mcp.state.redis_store import RedisStore

        return RedisStore.from_url(url, clock=clock, cache_ttl=settings.cache_ttl_seconds)
    if url and url.startswith("sqlite:///"):
        return SQLiteStore(url.removeprefix("sqlite:///") or ":memory:", clock=clock)
    return SQLiteStore.in_dir(settings.state_dir or default_state_dir(), clock=clock)


def upstream_http_client(settings: Settings, transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """The one HTTP client for the upstream, made on the first paid request and closed with the server.

    At most `UPSTREAM_CONNECTIONS`, all kept alive: httpcore's pool examines every connection it holds on each
    request, so a pool sized to the call cap costs more CPU per request than the waits it saves (the HTTP
    throughput figure of bench/README.md); `KEYAPI_MAX_RPS` (5 by default) keeps fewer in use anyway.
    Certificates are loaded only for an https upstream: a plain http:// one (loopback only, see
    `Settings.base_url`) has no TLS to verify, and the CA bundle costs memory.
    """
    import httpx

    return httpx.AsyncClient(
        transport=transport,
        limits=httpx.Limits(max_connections=UPSTREAM_CONNECTIONS, max_keepalive_connections=UPSTREAM_CONNECTIONS),
        verify=settings.base_url.startswith("https://"),
        follow_redirects=False,
    )


def request_state_security(settings: Settings) -> RequestStateSecurity | None:
    """The sealing of the 2026-07-28 round trip's state (a user's answer to a spend question).

    With KEYAPI_MCP_REQUEST_STATE_KEY every replica seals and opens it with one key, so the answer can come back
    to any of them; without it the SDK seals with a key of this process only (None).
    """
    key = settings.mcp_request_state_key
    return None if key is None else RequestStateSecurity(keys=[key.get_secret_value()])


def build_server(
    settings: Settings,
    *,
    demo: bool = False,
    transport: httpx.AsyncBaseTransport | None = None,
    store: Store | None = None,
    clock: Callable[[], float] = time.time,
    token_verifier: TokenVerifier | None = None,
    auth: AuthSettings | None = None,
) -> KeyAPIMCPServer:
    """Build the server. `transport`, `store` and `clock` are injection points for tests and benchmarks.

    A `store` passed in belongs to the caller (the CLI opens it early to report a bad state file before
    serving); otherwise the lifespan opens and closes one. `token_verifier` + `auth` (both or neither, as the
    SDK requires) replace the verifier the settings configure (OAuth, `keyapi_mcp.transport.oauth`); each
    verified token's identity is the caller its credits are booked for (`keyapi_mcp.surface.caller`).
    """
    metrics: Metrics = PrometheusMetrics() if settings.mcp_metrics else NO_METRICS
    live = LiveState()  # the running state, for the resources and completions (no request context)
    limits = CallLimits(
        per_call=settings.max_credits_per_call,
        daily=settings.daily_credit_limit,
        per_user=settings.user_daily_credit_limit,
        sized=cap_sized_from_ids(settings),
        confirm_above=settings.confirm_above_credits,
        with_consent=settings.max_credits_with_consent,
    )

    @asynccontextmanager
    async def lifespan(_: MCPServer[AppState]) -> AsyncIterator[AppState]:
        state_store = store if store is not None else open_store(settings, demo=demo, clock=clock)
        http_transport = transport
        if demo and http_transport is None:
            from keyapi_mcp.upstream.demo import FakeUpstream, demo_dataset, mock_transport

            http_transport = mock_transport(FakeUpstream(demo_dataset()))
        client = KeyAPIClient(
            functools.partial(upstream_http_client, settings, http_transport),
            api_key=DEMO_API_KEY if demo else (settings.api_key.get_secret_value() if settings.api_key else ""),
            base_url=DEMO_BASE_URL if demo else settings.base_url,
            rate_limiter=RateLimiter(settings.max_rps if not demo else 1000.0),
            timeout_seconds=settings.timeout_seconds,
            observe=metrics.upstream_request,
        )
        upstream = client if (demo or settings.has_api_key) else None
        service = ProductsService(state_store, upstream, limits, cache_ttl=settings.cache_ttl_seconds, metrics=metrics)
        try:
            await service.prune()
            with live.serving(AppState(settings=settings, service=service, demo=demo)) as app_state:
                yield app_state
        finally:
            await client.aclose()
            if store is None:
                await state_store.close()

    demo_ids: list[str] = []
    if demo:
        from keyapi_mcp.upstream.demo import demo_dataset

        demo_ids = [vid for vid, rows in demo_dataset().items() if rows]
    view = ProductsView()  # the MCP Apps view of get_video_products (ui://keyapi/products)
    tools = [*tools_for(settings, view, demo_ids=demo_ids), compare_tool(settings)]
    server = KeyAPIMCPServer(
        SERVER_NAME,
        title=SERVER_TITLE,
        icons=icons(),
        version=__version__,
        instructions=INSTRUCTIONS,
        tools=tools,
        extensions=[view],
        lifespan=lifespan,
        log_level=settings.log_level,
        cache_hints=LIST_CACHE_HINTS,
        request_state_security=request_state_security(settings),
        # OAuth resource server on the HTTP transport, when configured (or the verifier a caller passes in)
        **({"token_verifier": token_verifier, "auth": auth} if token_verifier or auth else auth_kwargs(settings)),
    )
    server.call_slots = CallSlots(settings.mcp_max_concurrent_calls)
    register_resources(server, live)
    register_prompts(server, live)
    server.metrics = metrics
    server.middleware.append(AppOnlyTools())
    if metrics.enabled:
        server.middleware.append(MetricsMiddleware(metrics, [tool.name for tool in tools]))
    return server
