"""Shared pieces: the bench data set, the fake upstream, in-process servers and spawn parameters."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from keyapi_mcp.upstream.demo import FakeUpstream
from tests.fakes import FakeUpstreamServer, synthetic_dataset

BENCH_DIR = Path(__file__).resolve().parent
BENCH_API_KEY = "bench-fake-key-not-a-secret"
PAGE_SIZE = 10
Dataset = dict[str, list[dict[str, Any]]]


def dataset(n_videos: int, *, seed: int = 7) -> Dataset:
    """Realistic rows (documented fields/types, long signed CDN URLs, emoji, 0–12 products per video)."""
    return synthetic_dataset(n_videos, seed=seed, min_products=0, max_products=12)


@contextmanager
def fake_upstream(data: Dataset, *, latency: float = 0.0) -> Iterator[FakeUpstreamServer]:
    with FakeUpstreamServer(FakeUpstream(data, api_key=BENCH_API_KEY, latency=latency)) as server:
        yield server


def keyapi_env(base_url: str, state_dir: Path, **extra: str) -> dict[str, str]:
    """Explicit environment for a spawned keyapi-mcp: fake upstream, private state, limits out of the way."""
    env = {
        "KEYAPI_API_KEY": BENCH_API_KEY,
        "KEYAPI_BASE_URL": base_url,
        "KEYAPI_STATE_DIR": str(state_dir),
        "KEYAPI_MAX_RPS": "10000",
        "KEYAPI_MAX_CREDITS_PER_CALL": "1000",
        "KEYAPI_DAILY_CREDIT_LIMIT": "0",
        "KEYAPI_LOG_LEVEL": "WARNING",
    }
    env.update(extra)
    return env


SERVER_PYTHON_VAR = "KEYAPI_BENCH_SERVER_PYTHON"


def server_python() -> str:
    """The interpreter the measured servers run on: the runtime-only environment `python -m bench` makes
    (`runtime_environment`), else this one (the test suite's smoke run)."""
    return os.environ.get(SERVER_PYTHON_VAR) or sys.executable


def runtime_environment(workdir: Path) -> str:
    """A virtual environment holding keyapi-mcp and only its runtime dependencies; returns its python.

    Servers are measured as users run them (`uvx keyapi-mcp`, `pip install keyapi-mcp`): the development
    environment also holds the test and bench tools (twine brings rich, pytest brings pygments), which
    httpx's import tries to load for its command-line client, so they would count against keyapi-mcp's
    start-up and memory and not against the minimal server, which never imports httpx. Built with uv,
    byte-compiled as an install leaves it.
    """
    uv = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
    venv = workdir / "runtime-venv"
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never", "UV_NATIVE_TLS": "1"}
    env.pop("VIRTUAL_ENV", None)
    subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], check=True, env=env)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    subprocess.run(
        [uv, "pip", "install", "--quiet", "--compile-bytecode", "--python", str(python), str(BENCH_DIR.parent)],
        check=True,
        env=env,
    )
    return str(python)


def keyapi_command() -> str:
    """The installed `keyapi-mcp` console script beside the servers' interpreter."""
    beside = Path(server_python()).with_name("keyapi-mcp")
    if beside.exists():
        return str(beside)
    found = shutil.which("keyapi-mcp")
    if not found:
        raise SystemExit("keyapi-mcp is not installed in this environment: pip install -e '.[bench]'")
    return found


def script(name: str) -> str:
    return str(BENCH_DIR / name)


def python_env() -> dict[str, str]:
    # The SDK's stdio client passes only a safe subset of the environment. A runtime environment finds its
    # own site-packages; this interpreter's venv is passed on for the smoke run.
    if os.environ.get(SERVER_PYTHON_VAR):
        return {}
    return {k: os.environ[k] for k in ("VIRTUAL_ENV", "PYTHONPATH") if k in os.environ}


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def pages_for(rows: int) -> int:
    """Pages (credits) to read `rows` rows at page_size 10 when paging until a short page."""
    return rows // PAGE_SIZE + 1
