"""Three `--transport http` replicas on one real Redis, three users with tokens of their own.

Per-user limit 3, team limit 5: however the users' parallel calls are spread over the replicas, no user is
charged more than 3 credits and the team no more than 5, counted by what the fake upstream on 127.0.0.1
actually charged (each call asks for one new video: one upstream request, one credit).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path

import anyio
import httpx
import pytest
from fakes import FakeUpstreamServer
from helpers import TEST_API_KEY, TOOL, assert_tool_error, free_port
from mcp import Client
from test_http import connect

pytestmark = pytest.mark.anyio

REPLICAS = 3
USERS = {
    "alice_token_0123456789abcdef": "alice",
    "bob_token_0123456789abcdef01": "bob",
    "carol_token_0123456789abcd": "carol",
}
USER_LIMIT = 3
TEAM_LIMIT = 5
CALLS_PER_USER = 5
STARTUP_TIMEOUT = 30.0


@contextmanager
def replicas(env: dict[str, str], cwd: Path) -> Iterator[list[str]]:
    script = Path(__file__).with_name("team_replica.py")
    procs: list[subprocess.Popen[bytes]] = []
    bases = []
    try:
        for _ in range(REPLICAS):
            port = free_port()
            procs.append(
                subprocess.Popen([sys.executable, str(script), str(port)], env=env, cwd=cwd, stderr=subprocess.DEVNULL)
            )
            bases.append(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + STARTUP_TIMEOUT
        for base, proc in zip(bases, procs, strict=True):
            while True:
                assert proc.poll() is None, f"replica {base} exited with {proc.returncode}"
                try:
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, f"replica {base} did not start"
                time.sleep(0.1)
        yield bases
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)


async def test_three_users_on_three_replicas_never_spend_more_than_their_own_or_the_teams_limit(
    redis_url: str, fake_upstream: FakeUpstreamServer, tmp_path: Path
):
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "KEYAPI_STATE_URL": redis_url,
        "KEYAPI_BASE_URL": fake_upstream.url,
        "KEYAPI_API_KEY": TEST_API_KEY,
        "KEYAPI_DAILY_CREDIT_LIMIT": str(TEAM_LIMIT),
        "KEYAPI_USER_DAILY_CREDIT_LIMIT": str(USER_LIMIT),
        "KEYAPI_MAX_RPS": "1000",
        "TEAM_TOKENS": ",".join(f"{token}={name}" for token, name in USERS.items()),
    }
    fake = fake_upstream.fake
    fake.latency = 0.05
    owner: dict[str, str] = {}  # video id -> the user who asked for it
    results: dict[str, list[bool]] = {name: [] for name in USERS.values()}
    with replicas(env, tmp_path) as bases:
        async with AsyncExitStack() as stack:
            # Every user has a client on every replica; their calls go round-robin, all at once.
            clients: dict[str, list[Client]] = {
                name: [await stack.enter_async_context(connect(base, token)) for base in bases]
                for token, name in USERS.items()
            }

            async def call(name: str, i: int) -> None:
                video = str(7_200_000_000_000_000_000 + len(owner))
                owner[video] = name
                result = await clients[name][i % REPLICAS].call_tool(TOOL, {"video_ids": [video]})
                if result.is_error:
                    text = assert_tool_error(result, "budget_exceeded")
                    assert "per-user daily credit limit" in text or "daily credit limit is reached" in text
                results[name].append(not result.is_error)

            async with anyio.create_task_group() as tg:
                for i in range(CALLS_PER_USER):
                    for name in USERS.values():
                        tg.start_soon(call, name, i)

            usage = {
                name: (await clients[name][0].call_tool("get_credit_usage", {})).structured_content
                for name in USERS.values()
            }

    charged_to: dict[str, int] = {name: 0 for name in USERS.values()}
    for request in fake.requests:
        charged_to[owner[request["params"]["video_ids"]]] += 1
    assert fake.charged == len(fake.requests) == TEAM_LIMIT  # the team's limit, exactly
    assert max(charged_to.values()) <= USER_LIMIT
    for name, served in results.items():
        assert sum(served) == charged_to[name]  # every served call paid once, every refusal paid nothing
        report = usage[name]
        assert report is not None
        assert report["spent_today"] == TEAM_LIMIT and report["remaining_today"] == 0
        assert report["you"]["caller"] == name and report["you"]["spent_today"] == charged_to[name]
