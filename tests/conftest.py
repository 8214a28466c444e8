"""Test isolation: no test sees the developer's KEYAPI_* environment, .env file or state directory."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeUpstreamServer
from helpers import TEST_API_KEY, TEST_AUTH_TOKEN
from installs import Dist, Installed, build_dist, install_wheel, uv_env
from mcp import Client
from redis_proc import RedisProcess, redis_server_binary

from keyapi_mcp.upstream import client as client_module
from keyapi_mcp.upstream.demo import FakeUpstream, demo_dataset

SECRETS = (TEST_API_KEY, TEST_AUTH_TOKEN)


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


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries of 5xx/error envelopes happen at once instead of after a jittered backoff."""
    monkeypatch.setattr(client_module, "backoff_seconds", lambda attempt, rng=None: 0.0)


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


class _LogTexts(logging.Handler):
    """Keeps the text (message and traceback) of every log record that reaches the root logger."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a malformed record is still scanned by its raw parts
            text = f"{record.msg!r} {record.args!r}"
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        self.texts.append(text)


@pytest.fixture(autouse=True)
def no_secret_leaks(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Scan every tool result and every log record of every test for the test API key and auth token.

    Output the fixture cannot see (a subprocess's stderr, raw HTTP bodies) is appended by the test to the
    list this fixture yields, and scanned too.
    """
    extra: list[str] = []
    results: list[str] = []
    handler = _LogTexts()
    root = logging.getLogger()
    root.addHandler(handler)
    original = Client.call_tool

    async def scanned_call_tool(self: Client, *args: Any, **kwargs: Any) -> Any:
        result = await original(self, *args, **kwargs)
        results.append(result.model_dump_json())
        return result

    monkeypatch.setattr(Client, "call_tool", scanned_call_tool)
    try:
        yield extra
    finally:
        root.removeHandler(handler)
    for where, texts in (("a tool result", results), ("a log record", handler.texts), ("captured output", extra)):
        leaked = [
            name
            for name, secret in zip(("API key", "auth token"), SECRETS, strict=True)
            if any(secret in t for t in texts)
        ]
        assert not leaked, f"the test {' and '.join(leaked)} leaked into {where}"


@pytest.fixture
def command() -> str:
    """The installed `keyapi-mcp` console script of this environment (the real CLI, as users launch it)."""
    path = Path(sys.executable).parent / "keyapi-mcp"
    assert path.is_file(), f"the console script is not installed next to {sys.executable}: pip install -e ."
    return str(path)


@pytest.fixture
def base_env(tmp_path: Path) -> dict[str, str]:
    """An explicit environment for a spawned server: nothing from the developer's KEYAPI_* settings leaks in."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "KEYAPI_STATE_DIR": str(tmp_path / "state"),
    }


# ---------------------------------------------------------------------------------------------
# The package as a user installs it: built once per session, installed into a fresh environment.


@pytest.fixture(scope="session")
def uv_session_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of every uv process of the session: one shared cache, so each download happens once."""
    return uv_env(tmp_path_factory.mktemp("uv"), tmp_path_factory.mktemp("uv-home"))


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory, uv_session_env: dict[str, str]) -> Dist:
    """The sdist and wheel, built by `python -m build` from this checkout."""
    return build_dist(tmp_path_factory.mktemp("dist"), uv_session_env)


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory, dist: Dist, uv_session_env: dict[str, str]) -> Installed:
    """The built wheel installed into a fresh virtual environment (not the checkout's editable install)."""
    return install_wheel(dist.wheel, tmp_path_factory.mktemp("installed") / "venv", uv_session_env)
