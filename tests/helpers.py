"""Helpers shared by the test modules: `from helpers import ...` (pytest puts tests/ on sys.path, as for conftest).

Fixtures live in conftest.py; this module holds the constants and plain functions several test files use,
among them the test API key and auth token that conftest.py's `no_secret_leaks` scans every test for.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import httpx
from mcp import Client
from mcp_types import CallToolResult

from keyapi_mcp.config import Settings
from keyapi_mcp.presentation.models import VideoProductsResult
from keyapi_mcp.server import build_server

TEST_API_KEY = "sk_live_TESTKEY_must_never_leak_0123456789"
TEST_AUTH_TOKEN = "mcp_TESTTOKEN_must_never_leak_9876543210"

TOOL = "get_video_products"
# The demo data set (keyapi_mcp.fake_upstream.demo_dataset), besides the documented example video:
THREE_ROWS = "9000000000000000001"  # 3 products
TWELVE_ROWS = "9000000000000000002"  # 12 products: two upstream pages
ZERO_VIEWS = "9000000000000000003"  # 0 views: engagement and per-1k metrics are null
NO_PRODUCTS = "9000000000000000004"  # no products: reported under `not_found`
RESELLS = "9000000000000000005"  # 3 products also sold through THREE_ROWS and TWELVE_ROWS (totals across videos)

OFFLINE_URL = "http://127.0.0.1:9"  # never contacted: tests using it inject a transport

# 2026-03-01 15:00:00 UTC: the daily limit resets at 2026-03-02T00:00:00Z.
T0 = datetime(2026, 3, 1, 15, 0, tzinfo=UTC).timestamp()
RESET_AT = "2026-03-02T00:00:00Z"


class Clock:
    """A settable clock to inject into a store (UTC days, TTLs): the test moves `now` by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def in_ci() -> bool:
    """Under CI (CI=true, as .ci/run is started) a test that cannot run its real part fails instead of skipping."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_settings(base_url: str = OFFLINE_URL, **overrides: Any) -> Settings:
    """Settings for a test: no .env, the test key, a rate limit high enough not to slow multi-page walks."""
    values: dict[str, Any] = {"api_key": TEST_API_KEY, "base_url": base_url, "max_rps": 1000.0}
    values.update(overrides)
    return Settings(_env_file=None, **values)


@asynccontextmanager
async def connect(settings: Settings, **build: Any) -> AsyncIterator[Client]:
    """The SDK's in-memory MCP client on `build_server(settings, **build)`."""
    async with Client(build_server(settings, **build)) as client:
        yield client


def text_of(result: CallToolResult) -> str:
    """The text the model reads: every tool result, answer or error, has exactly one text block, first; an answer
    may follow it with `resource_link`s to its cached videos (see `links_of`)."""
    assert result.content and result.content[0].type == "text", result.content
    assert all(block.type == "resource_link" for block in result.content[1:]), result.content
    assert not (result.is_error and len(result.content) > 1), result.content
    return result.content[0].text


def links_of(result: CallToolResult) -> list[str]:
    """The URIs of the `resource_link` blocks of a tool result."""
    return [str(block.uri) for block in result.content if block.type == "resource_link"]


def assert_tool_error(result: CallToolResult, code: str) -> str:
    """Assert the result is an error whose text starts with `[code]`; return the text."""
    text = text_of(result)
    assert result.is_error, text
    assert text.split()[0] == f"[{code}]", text
    return text


def parsed(result: CallToolResult) -> VideoProductsResult:
    """The structured answer of a successful `get_video_products` call."""
    assert not result.is_error, text_of(result)
    assert result.structured_content is not None
    return VideoProductsResult.model_validate(result.structured_content)


# ---------------------------------------------------------------------------------------------
# Raw JSON-RPC lines, for tests that must see exactly what crosses the wire

RAW_TIMEOUT = 20.0  # a generous bound on any single wait for a line; the tests finish far sooner
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}},
}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}


def tool_call(request_id: int, arguments: dict[str, Any], *, name: str = TOOL) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": name, "arguments": arguments},
    }


class RawWire:
    """JSON-RPC lines over any byte streams (pipes or sockets); a reader thread bounds every wait by RAW_TIMEOUT."""

    def __init__(self, send: IO[bytes], receive: IO[bytes], end_input: Callable[[], None]) -> None:
        self._send = send
        self._end_input = end_input
        self.lines: list[bytes] = []
        self._queue: queue.Queue[bytes | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, args=(receive,), daemon=True)
        self._reader.start()

    def _read(self, receive: IO[bytes]) -> None:
        for line in receive:
            self._queue.put(line)
        self._queue.put(None)

    def send(self, message: dict[str, Any]) -> None:
        self._send.write(json.dumps(message).encode() + b"\n")
        self._send.flush()

    def response(self, request_id: int) -> dict[str, Any]:
        while True:
            line = self._queue.get(timeout=RAW_TIMEOUT)
            assert line is not None, "the server closed its output before answering"
            self.lines.append(line)
            message = json.loads(line)
            if message.get("id") == request_id and ("result" in message or "error" in message):
                return message

    def initialize(self) -> dict[str, Any]:
        self.send(INITIALIZE)
        init = self.response(1)
        self.send(INITIALIZED)
        return init

    def finish(self) -> None:
        """End the input (EOF for the server) and collect what the server still writes until it closes."""
        self._end_input()
        while (line := self._queue.get(timeout=RAW_TIMEOUT)) is not None:
            self.lines.append(line)


def assert_protocol_only(lines: Sequence[bytes]) -> None:
    """Every line the client received is a JSON-RPC message: nothing else reached the wire."""
    assert lines
    for line in lines:
        message = json.loads(line)
        assert isinstance(message, dict) and message.get("jsonrpc") == "2.0", line


@contextmanager
def http_server_process(
    tmp_path: Path, env: dict[str, str], leaks: list[str], *args: str, timeout: float = 30.0
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`python -m keyapi_mcp --transport http` on a free port with exactly `env`, stdout and stderr to a file.

    Yields (process, base URL) once /healthz answers; on exit sends SIGTERM, waits, and appends the log to
    `leaks` (the conftest's secret scan).
    """
    port = free_port()
    log_path = tmp_path / f"http-{port}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "keyapi_mcp", "--transport", "http", "--port", str(port), *args],
            env=env,
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert proc.poll() is None, log_path.read_text(errors="replace")
            assert time.monotonic() < deadline, "the server did not answer /healthz"
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        yield proc, base
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        leaks.append(log_path.read_text(errors="replace"))
