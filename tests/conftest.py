"""Test isolation: no test sees the developer's KEYAPI_* environment, .env file or state directory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis_proc import RedisProcess, redis_server_binary

from keyapi_mcp.fake_upstream import FakeUpstream, FakeUpstreamServer, demo_dataset

TEST_API_KEY = "sk_live_TESTKEY_must_never_leak_0123456789"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for key in list(os.environ):
        if key.startswith("KEYAPI_"):
            monkeypatch.delenv(key, raising=False)
    state = tmp_path / "state"
    monkeypatch.setenv("KEYAPI_STATE_DIR", str(state))
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)  # so no stray .env is read
    return state


@pytest.fixture
def fake_upstream() -> Iterator[FakeUpstreamServer]:
    """A real HTTP fake of the KeyAPI endpoint on 127.0.0.1 serving the demo data set."""
    with FakeUpstreamServer(FakeUpstream(demo_dataset(), api_key=TEST_API_KEY)) as server:
        yield server


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """One real redis-server on 127.0.0.1 for the whole session (see tests/redis_proc.py)."""
    with RedisProcess(redis_server_binary(), tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisProcess) -> str:
    """The session's Redis, emptied for this test."""
    redis_server.flush()
    return redis_server.url
