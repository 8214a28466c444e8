"""`--transport http` as a network client sees it: a real uvicorn server on 127.0.0.1, real HTTP requests.

In-thread servers (`serving`) cover auth, DNS-rebinding protection, the body limit, /healthz and the MCP
clients; subprocesses (`keyapi_mcp_process`) cover what needs a whole process: SIGTERM and memory under load.
Every subprocess's stderr is handed to the `no_secret_leaks` fixture (tests/conftest.py) to be scanned.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import psutil
import pytest
from fakes import FakeUpstreamServer
from helpers import (
    TEST_API_KEY,
    TEST_AUTH_TOKEN,
    THREE_ROWS,
    TOOL,
    TWELVE_ROWS,
    ZERO_VIEWS,
    assert_tool_error,
    http_server_process,
    make_settings,
    parsed,
    text_of,
)
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from keyapi_mcp import __main__ as cli
from keyapi_mcp import __version__
from keyapi_mcp.config import Settings
from keyapi_mcp.errors import HttpConfigError
from keyapi_mcp.presentation.models import VideoProductsResult
from keyapi_mcp.server import build_server
from keyapi_mcp.state.sqlite_store import SQLiteStore
from keyapi_mcp.surface.calls import KeyAPIMCPServer
from keyapi_mcp.surface.slots import CallSlots
from keyapi_mcp.transport.http import build_http_app, check_http_config, transport_security, uvicorn_server
from keyapi_mcp.upstream.demo import DOCUMENTED_VIDEO_ID, FakeUpstream, demo_dataset, mock_transport

DEMO_IDS = [DOCUMENTED_VIDEO_ID, THREE_ROWS, TWELVE_ROWS, ZERO_VIEWS]
MCP_HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}},
}
STARTUP_TIMEOUT = 30.0


def http_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"mcp_auth_token": TEST_AUTH_TOKEN, "log_level": "DEBUG"}
    values.update(overrides)
    return Settings(_env_file=None, **values)


def bearer(token: str = TEST_AUTH_TOKEN) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@contextmanager
def serving(settings: Settings, *, app_host: str = "127.0.0.1", **build: Any) -> Iterator[str]:
    """Serve `build_server(settings, **build)` over HTTP on a free 127.0.0.1 port; yield the base URL.

    `app_host` is the bind address the app is configured for (its auth and rebinding rules); the socket
    is always 127.0.0.1.
    """
    build.setdefault("demo", True)
    app = build_http_app(build_server(settings, **build), settings, host=app_host, port=0)
    server = uvicorn_server(app, host="127.0.0.1", port=0, settings=settings)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(STARTUP_TIMEOUT)


def transport(base: str, http: httpx2.AsyncClient) -> Any:
    # Stateless server: there is no session to DELETE when the client closes.
    return streamable_http_client(f"{base}/mcp", http_client=http, terminate_on_close=False)


@asynccontextmanager
async def connect(base: str, token: str | None = TEST_AUTH_TOKEN, **client_options: Any) -> AsyncIterator[Client]:
    """The SDK's MCP client over Streamable HTTP, sending the bearer token on every request."""
    headers = bearer(token) if token else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=60.0)) as http,
        Client(transport(base, http), **client_options) as client,
    ):
        yield client


# ---------------------------------------------------------------------------------------------
# MCP over HTTP


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_an_authenticated_mcp_client_lists_and_calls_the_tools_with_progress_over_http(mode: str):
    progress: list[tuple[float, str | None]] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, message))

    with serving(http_settings()) as base:
        async with connect(base, mode=mode) as client:
            tools = await client.list_tools()
            result = await client.call_tool(TOOL, {"video_ids": [TWELVE_ROWS]}, progress_callback=on_progress)
            usage = await client.call_tool("get_credit_usage", {})

    assert {tool.name for tool in tools.tools} == {"get_video_products", "compare_video_groups", "get_credit_usage"}
    answer = parsed(result)
    assert [v.video_id for v in answer.videos] == [TWELVE_ROWS]
    assert len(answer.videos[0].products) == 12
    assert [done for done, _ in progress] == [1, 2], "one progress notification per upstream page, over SSE"
    assert not usage.is_error
    assert usage.structured_content is not None and usage.structured_content["spent_today"] == answer.credits.spent


def test_stateless_http_keeps_no_session_so_any_request_can_go_to_any_replica():
    with serving(http_settings()) as base:
        response = httpx.post(f"{base}/mcp", json=INITIALIZE, headers={**MCP_HEADERS, **bearer()})
        # A request without any session id, as a load balancer might route it to a fresh replica:
        listed = httpx.post(
            f"{base}/mcp",
            json={"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}},
            headers={**MCP_HEADERS, **bearer(), "mcp-protocol-version": "2025-11-25"},
        )

    assert response.status_code == 200
    assert "mcp-session-id" not in response.headers
    assert response.headers["content-type"].startswith("text/event-stream")
    assert listed.status_code == 200
    assert '"get_video_products"' in listed.text


# ---------------------------------------------------------------------------------------------
# Authentication


def test_requests_without_the_right_bearer_token_get_401_with_a_bearer_challenge():
    wrong = [
        {},
        bearer("not-the-token-but-long-enough"),
        bearer(TEST_AUTH_TOKEN + "x"),
        bearer(TEST_AUTH_TOKEN[:-1]),
        {"authorization": f"Basic {TEST_AUTH_TOKEN}"},
        {"authorization": "Bearer"},
        {"authorization": TEST_AUTH_TOKEN},
    ]
    with serving(http_settings()) as base:
        answers = [httpx.post(f"{base}/mcp", json=INITIALIZE, headers={**MCP_HEADERS, **h}) for h in wrong]
        get_stream = httpx.get(f"{base}/mcp", headers={"accept": "text/event-stream"})
        other_path = httpx.get(f"{base}/mcp/../admin")
        right = httpx.post(f"{base}/mcp", json=INITIALIZE, headers={**MCP_HEADERS, **bearer()})
        lowercase_scheme = httpx.post(
            f"{base}/mcp", json=INITIALIZE, headers={**MCP_HEADERS, "authorization": f"bearer {TEST_AUTH_TOKEN}"}
        )

    for response in [*answers, get_stream, other_path]:
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert TEST_AUTH_TOKEN not in response.text
    assert 'error="invalid_token"' in answers[1].headers["www-authenticate"]
    assert right.status_code == 200
    assert lowercase_scheme.status_code == 200


@pytest.mark.anyio
async def test_an_mcp_client_with_a_wrong_token_cannot_call_any_tool(no_secret_leaks: list[str]):
    statuses: list[int] = []

    async def record(response: httpx2.Response) -> None:
        statuses.append(response.status_code)

    with serving(http_settings()) as base:
        headers = bearer("wrong-token-0123456789")
        async with httpx2.AsyncClient(headers=headers, event_hooks={"response": [record]}) as http:
            with pytest.raises(Exception) as raised:  # the SDK turns the 401 into an MCPError
                async with Client(transport(base, http), mode="legacy") as client:
                    await client.call_tool("get_credit_usage", {})
    no_secret_leaks.append(repr(raised.value))
    assert statuses and set(statuses) == {401}


OAUTH_DISCOVERY = [
    "/.well-known/oauth-protected-resource",
    "/.well-known/oauth-protected-resource/mcp",
    "/.well-known/oauth-authorization-server",
    "/.well-known/oauth-authorization-server/mcp",
    "/.well-known/openid-configuration",
]


@pytest.mark.parametrize("token", [TEST_AUTH_TOKEN, None], ids=["bearer-token", "loopback-without-token"])
def test_oauth_discovery_answers_404_when_oauth_is_off(token: str | None):
    """A client probing for OAuth (mcp-use does, before connecting) learns there is none, instead of a 401 it
    reports as a failed OAuth discovery; /mcp still wants the token."""
    settings = http_settings(mcp_auth_token=token)
    with TestClient(build_http_app(build_server(settings, demo=True), settings)) as client:
        for path in OAUTH_DISCOVERY:
            for headers in ({}, bearer(token) if token else {}):
                response = client.get(path, headers=headers)
                assert response.status_code == 404, (path, response.status_code, response.text)
        if token:
            assert client.post("/mcp", json=INITIALIZE, headers=MCP_HEADERS).status_code == 401


def test_websocket_upgrades_are_refused_even_with_the_token():
    settings = http_settings()
    app = build_http_app(build_server(settings, demo=True), settings)
    with pytest.raises(WebSocketDisconnect) as closed, TestClient(app).websocket_connect("/mcp", headers=bearer()):
        pass
    assert closed.value.code == 1008


def test_healthz_answers_without_a_token_and_reveals_nothing_secret():
    with serving(http_settings(api_key=TEST_API_KEY), demo=False, transport=mock_transport(FakeUpstream({}))) as base:
        response = httpx.get(f"{base}/healthz")
        head = httpx.head(f"{base}/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "version": __version__}
    assert head.status_code in (200, 401, 405)  # only GET is the probe
    for secret in (TEST_API_KEY, TEST_AUTH_TOKEN):
        assert secret not in response.text
        assert secret not in str(response.headers)


# ---------------------------------------------------------------------------------------------
# DNS-rebinding protection


@pytest.mark.parametrize("token", [TEST_AUTH_TOKEN, None], ids=["with-token", "loopback-without-token"])
def test_a_rebinding_host_or_origin_is_refused_on_a_loopback_bind(token: str | None):
    headers = {**MCP_HEADERS, **(bearer(token) if token else {})}
    with serving(http_settings(mcp_auth_token=token)) as base:
        port = base.rsplit(":", 1)[1]
        evil_host = httpx.post(f"{base}/mcp", json=INITIALIZE, headers={**headers, "host": "evil.example.com"})
        evil_origin = httpx.post(f"{base}/mcp", json=INITIALIZE, headers={**headers, "origin": "http://evil.example"})
        localhost = httpx.post(
            f"{base}/mcp",
            json=INITIALIZE,
            headers={**headers, "host": f"localhost:{port}", "origin": f"http://localhost:{port}"},
        )

    assert evil_host.status_code == 421
    assert evil_origin.status_code == 403
    assert localhost.status_code == 200


def test_a_non_loopback_bind_accepts_only_the_configured_hosts_and_origins():
    settings = http_settings(
        mcp_allowed_hosts="mcp.example.com,mcp.example.com:443", mcp_allowed_origins="https://app.example.com"
    )
    headers = {**MCP_HEADERS, **bearer()}
    with serving(settings, app_host="0.0.0.0") as base:

        def post(**extra: str) -> int:
            return httpx.post(f"{base}/mcp", json=INITIALIZE, headers={**headers, **extra}).status_code

        public = post(host="mcp.example.com")
        public_port = post(host="mcp.example.com:443", origin="https://app.example.com")
        loopback_name = post()  # Host: 127.0.0.1:<port> is not in the configured list
        evil = post(host="evil.example.com")
        evil_origin = post(host="mcp.example.com", origin="https://evil.example.com")

    assert (public, public_port) == (200, 200)
    assert loopback_name == 421
    assert evil == 421
    assert evil_origin == 403


def test_rebinding_protection_is_on_for_every_loopback_bind_and_configurable_elsewhere():
    plain = http_settings()
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        security = transport_security(plain, host)
        assert security.enable_dns_rebinding_protection
        assert "evil.example.com" not in security.allowed_hosts
    assert "127.0.0.2:*" in transport_security(plain, "127.0.0.2").allowed_hosts  # the bound name itself
    assert not transport_security(plain, "0.0.0.0").enable_dns_rebinding_protection  # warned, token still required
    configured = transport_security(http_settings(mcp_allowed_hosts="a.example"), "0.0.0.0")
    assert configured.enable_dns_rebinding_protection
    assert configured.allowed_hosts == ["a.example"]


# ---------------------------------------------------------------------------------------------
# Limits


def test_a_request_body_over_the_limit_gets_413_before_it_is_parsed():
    limit = 4096
    padded = {**INITIALIZE, "params": {**INITIALIZE["params"], "pad": "x" * limit}}
    body = json.dumps(padded).encode()

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must hold while streaming too
        for i in range(0, len(body), 512):
            yield body[i : i + 512]

    with serving(http_settings(mcp_max_body_bytes=limit)) as base:
        declared = httpx.post(f"{base}/mcp", content=body, headers={**MCP_HEADERS, **bearer()})
        streamed = httpx.post(f"{base}/mcp", content=chunks(), headers={**MCP_HEADERS, **bearer()})
        unauthenticated = httpx.post(f"{base}/mcp", content=body, headers=MCP_HEADERS)
        small = httpx.post(f"{base}/mcp", json=INITIALIZE, headers={**MCP_HEADERS, **bearer()})

    assert declared.status_code == 413
    assert streamed.status_code == 413
    assert unauthenticated.status_code == 401  # the token is checked before any body is read
    assert small.status_code == 200


class HeldUpstream:
    """The demo upstream in memory, holding each request until `release` is set; `entered` marks the first."""

    def __init__(self) -> None:
        self.fake = FakeUpstream(demo_dataset(), api_key=TEST_API_KEY)
        self.entered = anyio.Event()
        self.release = anyio.Event()
        self._answer = mock_transport(self.fake)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.entered.set()
        await self.release.wait()
        return await self._answer.handle_async_request(request)

    def one_slot_server(self) -> KeyAPIMCPServer:
        """A server allowed one tool call at a time, on this upstream."""
        settings = make_settings(mcp_max_concurrent_calls=1)
        return build_server(settings, transport=httpx.MockTransport(self.handle))


@pytest.mark.anyio
async def test_tool_calls_beyond_the_concurrency_cap_wait_then_fail_with_rate_limited():
    upstream = HeldUpstream()
    server = upstream.one_slot_server()
    server.call_slots = CallSlots(1, wait_seconds=0.2)
    results: dict[str, CallToolResult] = {}

    async with Client(server) as client:

        async def call(name: str, ids: list[str]) -> None:
            results[name] = await client.call_tool(TOOL, {"video_ids": ids})

        async with anyio.create_task_group() as tg:
            tg.start_soon(call, "first", [DEMO_IDS[0]])
            await upstream.entered.wait()  # the first call now holds the only slot, inside the upstream request
            await call("second", [DEMO_IDS[1]])  # waits its bounded time, then gives up
            upstream.release.set()
        await call("third", [DEMO_IDS[1]])  # the slot is free again

    assert not results["first"].is_error
    assert "KEYAPI_MCP_MAX_CONCURRENT_CALLS" in assert_tool_error(results["second"], "rate_limited")
    assert not results["third"].is_error
    assert len(upstream.fake.requests) == 2, "the refused call made no upstream request"
    assert server.call_slots.in_use == 0


@pytest.mark.anyio
async def test_a_call_that_waits_for_a_slot_runs_once_one_frees_up():
    upstream = HeldUpstream()
    server = upstream.one_slot_server()
    assert server.call_slots is not None and server.call_slots.total == 1
    results: list[CallToolResult] = []

    async with Client(server) as client:

        async def call(ids: list[str]) -> None:
            results.append(await client.call_tool(TOOL, {"video_ids": ids}))

        async with anyio.create_task_group() as tg:
            tg.start_soon(call, [DEMO_IDS[0]])
            await upstream.entered.wait()
            tg.start_soon(call, [DEMO_IDS[1]])
            limiter = server.call_slots._limiter
            while limiter is None or limiter.statistics().tasks_waiting == 0:  # the second call is queued
                await anyio.sleep(0.01)
                limiter = server.call_slots._limiter
            upstream.release.set()

    assert len(results) == 2
    assert not any(r.is_error for r in results), [text_of(r) for r in results]


# ---------------------------------------------------------------------------------------------
# Refusing to start


def test_a_non_loopback_bind_without_a_token_refuses_to_start_with_exit_status_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    monkeypatch.setattr(cli, "configure_logging", lambda level, secrets=(): None)  # keep pytest's log capture in place
    status = cli.main(["--transport", "http", "--host", "0.0.0.0", "--port", "0", "--demo"])
    err = capsys.readouterr().err

    assert status == 2
    assert "KEYAPI_MCP_AUTH_TOKEN" in err
    assert "0.0.0.0" in err
    assert "Traceback" not in err


def test_a_too_short_token_refuses_to_start_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    monkeypatch.setattr(cli, "configure_logging", lambda level, secrets=(): None)
    monkeypatch.setenv("KEYAPI_MCP_AUTH_TOKEN", "short-secret")
    status = cli.main(["--transport", "http", "--port", "0", "--demo"])
    err = capsys.readouterr().err

    assert status == 2
    assert "KEYAPI_MCP_AUTH_TOKEN is too short" in err
    assert "short-secret" not in err


def test_the_bind_rules_need_a_token_only_off_loopback():
    no_token = http_settings(mcp_auth_token=None)
    for host in ("127.0.0.1", "localhost", "::1"):
        check_http_config(no_token, host, 8000)
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.com"):
        with pytest.raises(HttpConfigError, match="KEYAPI_MCP_AUTH_TOKEN"):
            check_http_config(no_token, host, 8000)
        check_http_config(http_settings(), host, 8000)
    with pytest.raises(HttpConfigError, match="port"):
        check_http_config(http_settings(), "127.0.0.1", 70000)


# ---------------------------------------------------------------------------------------------
# Whole processes: SIGTERM and load


@contextmanager
def keyapi_mcp_process(
    tmp_path: Path, leaks: list[str], env: dict[str, str], *args: str
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`python -m keyapi_mcp --transport http` on a free port; yields (process, base URL) once /healthz answers."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("KEYAPI_")}
    full_env.update({"KEYAPI_STATE_DIR": str(tmp_path / "state"), "KEYAPI_LOG_LEVEL": "DEBUG", **env})
    with http_server_process(tmp_path, full_env, leaks, *args, timeout=STARTUP_TIMEOUT) as served:
        yield served


@pytest.mark.anyio
async def test_sigterm_stops_accepting_but_lets_the_in_flight_call_finish_with_the_ledger_settled(
    tmp_path: Path, no_secret_leaks: list[str]
):
    fake = FakeUpstream(demo_dataset(), api_key=TEST_API_KEY, latency=2.0)
    env = {"KEYAPI_API_KEY": TEST_API_KEY, "KEYAPI_MCP_AUTH_TOKEN": TEST_AUTH_TOKEN, "KEYAPI_MAX_RPS": "100"}
    with FakeUpstreamServer(fake) as upstream:
        env["KEYAPI_BASE_URL"] = upstream.url
        with keyapi_mcp_process(tmp_path, no_secret_leaks, env) as (proc, base):
            result: list[CallToolResult] = []
            refused_while_in_flight = False
            async with connect(base) as client, anyio.create_task_group() as tg:
                await client.list_tools()  # the client validates results against these schemas: fetch them now

                async def in_flight() -> None:
                    result.append(await client.call_tool(TOOL, {"video_ids": [DEMO_IDS[0]]}))

                tg.start_soon(in_flight)
                while not fake.requests:  # noqa: ASYNC110 (the fake runs in another thread: poll its log)
                    await anyio.sleep(0.02)
                # The call is now inside its (slow) upstream request.
                proc.send_signal(signal.SIGTERM)
                while not refused_while_in_flight and not result:
                    try:
                        async with httpx.AsyncClient() as probe:
                            await probe.get(f"{base}/healthz", timeout=0.5)
                    except httpx.TransportError:
                        refused_while_in_flight = not result
                    await anyio.sleep(0.05)
            status = await anyio.to_thread.run_sync(proc.wait, STARTUP_TIMEOUT)

    assert refused_while_in_flight, "new connections must be refused once SIGTERM arrived"
    assert not result[0].is_error, text_of(result[0])
    assert status in (0, -signal.SIGTERM)
    store = SQLiteStore.in_dir(tmp_path / "state")
    try:
        entries = await store.recent(10)
        usage = await store.usage_today()
    finally:
        await store.close()
    assert [e.charged for e in entries] == ["yes"], "the in-flight reservation was settled, nothing left reserved"
    assert usage.spent == fake.charged == 1


def sse_result(response: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC result of a tools/call answered as SSE (or JSON)."""
    assert response.status_code == 200, response.text[:300]
    if response.headers["content-type"].startswith("text/event-stream"):
        payload = [line[5:] for line in response.text.splitlines() if line.startswith("data:")][-1]
    else:
        payload = response.text
    message = json.loads(payload)
    assert "result" in message, message
    return dict(message["result"])


@pytest.mark.anyio
async def test_fifty_concurrent_http_clients_making_cached_calls_all_succeed_and_memory_stays_flat(
    tmp_path: Path, no_secret_leaks: list[str]
):
    clients, run_seconds = 50, 3.0
    env = {"KEYAPI_MCP_AUTH_TOKEN": TEST_AUTH_TOKEN, "KEYAPI_LOG_LEVEL": "WARNING"}
    with keyapi_mcp_process(tmp_path, no_secret_leaks, env, "--demo") as (proc, base):
        server = psutil.Process(proc.pid)
        async with connect(base) as client:
            warm = await client.call_tool(TOOL, {"video_ids": DEMO_IDS})
        warm_spent = parsed(warm).credits.spent

        failures: list[str] = []
        calls = 0
        # Plain HTTP clients speaking MCP 2025-11-25 (as desktop clients do): the SDK client's own CPU cost
        # would otherwise be the bottleneck on a small machine, not the server.
        headers = {**MCP_HEADERS, **bearer(), "mcp-protocol-version": "2025-11-25"}

        async def worker(stop_at: float | None, rounds: int) -> None:
            nonlocal calls
            async with httpx.AsyncClient(headers=headers, timeout=60) as http:
                done = 0
                while done < rounds or (stop_at is not None and anyio.current_time() < stop_at):
                    ids = DEMO_IDS[::-1] if done % 2 else DEMO_IDS
                    call = {"name": TOOL, "arguments": {"video_ids": ids}}
                    body = {"jsonrpc": "2.0", "id": done, "method": "tools/call", "params": call}
                    result = sse_result(await http.post(f"{base}/mcp", json=body))
                    done += 1
                    calls += 1
                    answer = (
                        None
                        if result.get("isError")
                        else VideoProductsResult.model_validate(result["structuredContent"])
                    )
                    if answer is None or answer.credits.spent or {v.source for v in answer.videos} != {"cache"}:
                        failures.append(json.dumps(result)[:200])

        async with anyio.create_task_group() as tg:  # warm-up round: connections, caches, allocator arenas
            for _ in range(clients):
                tg.start_soon(worker, None, 3)
        rss_warm = server.memory_info().rss
        warm_calls = calls

        stop_at = anyio.current_time() + run_seconds
        async with anyio.create_task_group() as tg:
            for _ in range(clients):
                tg.start_soon(worker, stop_at, 3)
        rss_after = server.memory_info().rss

        async with connect(base) as client:
            usage = await client.call_tool("get_credit_usage", {})

    assert failures == []
    assert calls - warm_calls >= clients * 3
    assert usage.structured_content is not None and usage.structured_content["spent_today"] == warm_spent
    growth_mib = (rss_after - rss_warm) / 2**20
    print(
        f"load: {calls - warm_calls} cached calls by {clients} concurrent HTTP clients after {warm_calls} warm-up "
        f"calls; server RSS {rss_warm / 2**20:.1f} -> {rss_after / 2**20:.1f} MiB"
    )
    assert growth_mib < 10, f"server RSS grew {growth_mib:.1f} MiB over {calls - warm_calls} cached calls"
