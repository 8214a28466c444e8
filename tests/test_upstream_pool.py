"""The upstream HTTP clients: created on first use, requests spread over small pools."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from keyapi_mcp.client import LazyAsyncClient

pytestmark = pytest.mark.anyio


async def test_no_http_client_exists_until_the_first_upstream_request() -> None:
    seen: list[str] = []
    transport = httpx.MockTransport(lambda request: seen.append(str(request.url)) or httpx.Response(200))
    async with LazyAsyncClient(connections=12, shard_size=4, transport=transport) as http:
        assert http._clients == []
        await http.get("http://127.0.0.1:9/a")
        assert len(http._clients) == 1  # an injected transport is one pool: one client
    assert seen == ["http://127.0.0.1:9/a"]


async def test_connections_are_split_into_small_fully_kept_alive_pools_used_in_turn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[httpx.AsyncClient] = []
    used: list[int] = []
    original = httpx.AsyncClient.__init__

    def record(self: httpx.AsyncClient, *args: Any, **kwargs: Any) -> None:
        assert kwargs["limits"].max_connections == kwargs["limits"].max_keepalive_connections == 4
        kwargs["transport"] = httpx.MockTransport(lambda request: httpx.Response(204))
        original(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(httpx.AsyncClient, "__init__", record)
    async with LazyAsyncClient(connections=12, shard_size=4, verify=False) as http:
        for _ in range(7):
            await http.get("http://127.0.0.1:9/")
            used.append((http._next - 1) % 3)
    assert len(made) == 3
    assert used == [0, 1, 2, 0, 1, 2, 0]
