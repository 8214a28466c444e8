"""Three `keyapi-mcp` processes on one Redis: one shared daily limit, one shared cache.

Each replica is the installed console script, started over stdio by the SDK's client with an explicit
environment (KEYAPI_STATE_URL=redis://..., the fake upstream's URL, the test key), as a deployment runs
them. The fake upstream on 127.0.0.1 counts what was charged.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import anyio
import pytest
from fakes import FakeUpstreamServer
from helpers import NO_PRODUCTS, TEST_API_KEY, THREE_ROWS, TOOL, TWELVE_ROWS, assert_tool_error, parsed
from mcp import Client, StdioServerParameters
from mcp_types import CallToolResult

pytestmark = pytest.mark.anyio

REPLICAS = 3
DAILY_LIMIT = 6
PROCESS_TIMEOUT = 30.0


@asynccontextmanager
async def replicas(env: dict[str, str], cwd: Path) -> AsyncIterator[list[Client]]:
    command = Path(sys.executable).parent / "keyapi-mcp"
    assert command.is_file(), f"the console script is not installed next to {sys.executable}: pip install -e ."
    async with AsyncExitStack() as stack:
        clients = []
        for _ in range(REPLICAS):
            params = StdioServerParameters(command=str(command), args=[], env=env, cwd=cwd)
            clients.append(await stack.enter_async_context(Client(params, read_timeout_seconds=PROCESS_TIMEOUT)))
        yield clients


async def call_all(calls: list[tuple[Client, str, dict[str, object]]]) -> list[CallToolResult]:
    """Run the calls concurrently; results in the same order."""
    results: list[CallToolResult | None] = [None] * len(calls)

    async def one(i: int, client: Client, tool: str, args: dict[str, object]) -> None:
        results[i] = await client.call_tool(tool, args)

    async with anyio.create_task_group() as tg:
        for i, (client, tool, args) in enumerate(calls):
            tg.start_soon(one, i, client, tool, args)
    return [r for r in results if r is not None]


async def test_three_replicas_on_one_redis_pay_once_for_overlaps_and_hold_the_shared_daily_limit_exactly(
    redis_url: str, fake_upstream: FakeUpstreamServer, tmp_path: Path
):
    env = {
        "KEYAPI_STATE_URL": redis_url,
        "KEYAPI_BASE_URL": fake_upstream.url,
        "KEYAPI_API_KEY": TEST_API_KEY,
        "KEYAPI_DAILY_CREDIT_LIMIT": str(DAILY_LIMIT),
        "KEYAPI_MAX_RPS": "1000",
        "HOME": str(tmp_path),
    }
    fake = fake_upstream.fake
    async with replicas(env, tmp_path) as clients:
        # Overlap: every replica asks for the same videos at once; the upstream walk is slow enough that
        # the others arrive while it is in flight. One walk is paid (15 rows: 2 pages), the rest share it.
        fake.latency = 0.3
        same = {"video_ids": [TWELVE_ROWS, THREE_ROWS, NO_PRODUCTS]}
        overlap = [parsed(r) for r in await call_all([(c, TOOL, same) for c in clients])]
        assert fake.charged == 2
        assert sorted(answer.credits.spent for answer in overlap) == [0, 0, 2]

        # Flood: 12 calls for distinct new videos (1 credit each) spread over the replicas, with 4 credits
        # left today. Exactly 4 are served; the rest are refused before any request is sent.
        fake.latency = 0.05
        flood = await call_all(
            [(clients[i % REPLICAS], TOOL, {"video_ids": [str(7_100_000_000_000_000_000 + i)]}) for i in range(12)]
        )
        served = [r for r in flood if not r.is_error]
        assert len(served) == DAILY_LIMIT - 2
        for refused in (r for r in flood if r.is_error):
            assert_tool_error(refused, "budget_exceeded")
        assert fake.charged == DAILY_LIMIT
        assert len(fake.requests) == DAILY_LIMIT

        usage = await call_all([(c, "get_credit_usage", {}) for c in clients])
    for report in usage:
        assert report.structured_content is not None
        assert report.structured_content["spent_today"] == DAILY_LIMIT
        assert report.structured_content["remaining_today"] == 0
