"""The upstream connection pools: created on first use, requests spread over small pools."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest
import respx

from keyapi_mcp.client import UpstreamPool
from keyapi_mcp.transport import UpstreamTransport

pytestmark = pytest.mark.anyio


async def test_no_pool_exists_until_the_first_upstream_request() -> None:
    seen: list[str] = []
    transport = httpx.MockTransport(lambda request: seen.append(str(request.url)) or httpx.Response(200))
    async with UpstreamPool(connections=12, shard_size=4, transport=transport) as http:
        assert http._transports == []
        await http.get("http://127.0.0.1:9/a")
        assert http._transports == [transport]  # an injected transport is one pool: the only one
    assert seen == ["http://127.0.0.1:9/a"]


async def test_connections_are_split_into_small_fully_kept_alive_pools_the_least_busy_used_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[UpstreamTransport] = []
    used: list[UpstreamTransport] = []
    release = anyio.Event()
    hold = {"burst": False}
    original_init = UpstreamTransport.__init__

    def record(self: UpstreamTransport, **kwargs: Any) -> None:
        assert kwargs == {"max_connections": 4}  # every connection of a pool kept alive
        original_init(self, **kwargs)
        made.append(self)

    async def answer(self: UpstreamTransport, request: httpx.Request) -> httpx.Response:
        used.append(self)
        if hold["burst"]:
            await release.wait()
        return httpx.Response(204)

    monkeypatch.setattr(UpstreamTransport, "__init__", record)
    monkeypatch.setattr(UpstreamTransport, "handle_async_request", answer)
    async with UpstreamPool(connections=12, shard_size=4) as http:
        for _ in range(3):
            await http.get("http://127.0.0.1:9/")
        assert len(made) == 3
        assert used == [made[0]] * 3  # one at a time: always the first pool, one kept-alive connection
        used.clear()
        hold["burst"] = True
        async with anyio.create_task_group() as tg:
            for _ in range(7):
                tg.start_soon(http.get, "http://127.0.0.1:9/")
            await wait_until(lambda: len(used) == 7)
            release.set()
        assert used == [made[0], made[1], made[2], made[0], made[1], made[2], made[0]]  # a burst spreads evenly
        assert http._in_flight == [0, 0, 0]


async def wait_until(condition: Any) -> None:
    with anyio.fail_after(5):
        while not condition():
            await anyio.lowlevel.checkpoint()


async def test_get_sends_params_headers_and_timeouts_and_returns_a_read_decoded_response() -> None:
    body = json.dumps({"code": 0, "data": []}).encode()
    with respx.mock(assert_all_called=True) as mock:
        route = mock.get("https://api.example.test/x").mock(
            return_value=httpx.Response(200, content=gzip.compress(body), headers={"Content-Encoding": "gzip"})
        )
        async with UpstreamPool(connections=2) as http:
            response = await http.get(
                "https://api.example.test/x",
                params={"video_ids": "1,2", "page_num": 1},
                headers={"Authorization": "Bearer k"},
                timeout=(1.0, 2.0, 3.0, 4.0),
            )
    sent = route.calls.last.request
    assert sent.url.params["video_ids"] == "1,2" and sent.url.params["page_num"] == "1"
    assert sent.headers["Authorization"] == "Bearer k"
    assert sent.extensions["timeout"] == {"connect": 1.0, "read": 2.0, "write": 3.0, "pool": 4.0}
    assert response.status_code == 200
    assert response.content == body  # read, and decoded from gzip
    assert response.request is sent or response.request.url == sent.url


async def test_a_refused_connection_is_httpx_connect_error() -> None:
    async with UpstreamPool(connections=1) as http:
        with pytest.raises(httpx.ConnectError):
            await http.get("http://127.0.0.1:9/", timeout=(2.0, 2.0, 2.0, 2.0))


def test_the_lazy_httpx_import_leaves_httpx_cli_dependencies_unloaded() -> None:
    # pygments is installed here (pytest needs it), so a plain `import httpx` would load it through
    # httpx's CLI module; the server's first request must not. Checked in a fresh interpreter.
    probe = (
        "import sys, importlib.util\n"
        "assert importlib.util.find_spec('pygments') is not None\n"
        "from keyapi_mcp.client import _load_httpx\n"
        "_load_httpx()\n"
        "import httpx\n"
        "assert httpx.AsyncHTTPTransport and httpx.Request\n"
        "assert 'pygments' not in sys.modules, 'pygments was imported'\n"
        "assert 'httpx._main' not in sys.modules, 'the import marker was left behind'\n"
        "_load_httpx()\n"
        "assert sys.modules['httpx'] is httpx\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
