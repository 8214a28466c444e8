"""The upstream HTTP clients: created on first use, requests spread over small pools."""

from __future__ import annotations

import httpx
import pytest

from keyapi_mcp.client import LazyAsyncClient

pytestmark = pytest.mark.anyio


async def test_no_http_client_exists_until_the_first_upstream_request() -> None:
    seen: list[str] = []
    transport = httpx.MockTransport(lambda request: seen.append(str(request.url)) or httpx.Response(200))
    async with LazyAsyncClient(limits={"max_connections": 4}, shards=3, transport=transport) as http:
        assert http._clients == []
        await http.get("http://127.0.0.1:9/a")
        assert len(http._clients) == 3
    assert seen == ["http://127.0.0.1:9/a"]


async def test_requests_rotate_over_the_shards_so_each_pool_stays_small() -> None:
    used: list[int] = []
    async with LazyAsyncClient(
        limits={"max_connections": 4}, shards=3, transport=httpx.MockTransport(lambda r: httpx.Response(204))
    ) as http:
        for _ in range(7):
            await http.get("http://127.0.0.1:9/")
            used.append((http._next - 1) % 3)
    assert used == [0, 1, 2, 0, 1, 2, 0]
