"""Concurrency over HTTP: bursts of 100 concurrent uncached tool calls vs the direct-httpx floor.

keyapi-mcp runs as `keyapi-mcp --transport http` (a real subprocess, Streamable HTTP on 127.0.0.1) against a
fake upstream that answers each request after 50 ms, with KEYAPI_MAX_RPS and KEYAPI_MCP_MAX_CONCURRENT_CALLS
set high enough not to be the limit. Each burst asks for 100 videos never seen before (one upstream page
each), all at once, from one MCP client. The floor is the same burst of 100 GETs sent straight to the
fake with one `httpx.AsyncClient`. Bursts alternate between the two; throughput is calls per second of a
burst, and the medians over the bursts are compared.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
from mcp import Client

from bench.common import (
    BENCH_API_KEY,
    PAGE_SIZE,
    dataset,
    fake_upstream,
    keyapi_command,
    keyapi_env,
    median,
)
from bench.naive_server import ENDPOINT
from bench.stdio import single_page_videos

CONCURRENCY = 100
UPSTREAM_LATENCY = 0.050


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_http_server(base_url: str, state_dir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", str(state_dir)),
        **keyapi_env(base_url, state_dir, KEYAPI_MCP_MAX_CONCURRENT_CALLS=str(CONCURRENCY * 2)),
    }
    log = (state_dir / "server.log").open("wb")
    return subprocess.Popen(
        [keyapi_command(), "--transport", "http", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=state_dir,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )


def wait_healthy(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"keyapi-mcp --transport http exited with status {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("keyapi-mcp --transport http did not become healthy")


async def _burst(fn: Any, items: list[str]) -> float:
    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for item in items:
            tg.start_soon(fn, item)
    return time.perf_counter() - started


async def run(*, quick: bool = False) -> dict[str, Any]:
    rounds = 2 if quick else 5
    data = dataset(int((rounds + 1) * CONCURRENCY * 1.6), seed=33)
    vids = single_page_videos(data)
    bursts = [vids[i * CONCURRENCY : (i + 1) * CONCURRENCY] for i in range(rounds + 1)]
    if len(bursts[-1]) < CONCURRENCY:
        raise RuntimeError("data set too small for the concurrency bursts")
    direct_tp: list[float] = []
    keyapi_tp: list[float] = []
    errors = 0
    with (
        tempfile.TemporaryDirectory(prefix="keyapi-bench-http-") as tmp,
        fake_upstream(data, latency=UPSTREAM_LATENCY) as upstream,
    ):
        port = _free_port()
        proc = start_http_server(upstream.url, Path(tmp), port)
        try:
            wait_healthy(port, proc)
            url = upstream.url + ENDPOINT
            headers = {"Authorization": f"Bearer {BENCH_API_KEY}"}
            limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
            async with (
                httpx.AsyncClient(trust_env=False, limits=limits, timeout=30.0) as http,
                Client(f"http://127.0.0.1:{port}/mcp") as mcp,
            ):

                async def direct_get(vid: str) -> None:
                    response = await http.get(
                        url, params={"video_ids": vid, "page_num": 1, "page_size": PAGE_SIZE}, headers=headers
                    )
                    response.raise_for_status()
                    response.json()

                async def keyapi_call(vid: str) -> None:
                    nonlocal errors
                    result = await mcp.call_tool("get_video_products", {"video_ids": [vid]})
                    errors += bool(result.is_error)

                for i, ids in enumerate(bursts):  # burst 0 warms both paths up and is not counted
                    d = await _burst(direct_get, ids)
                    k = await _burst(keyapi_call, ids)
                    if i:
                        direct_tp.append(len(ids) / d)
                        keyapi_tp.append(len(ids) / k)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        charged = upstream.fake.charged
    ratio = median(keyapi_tp) / median(direct_tp)
    return {
        "concurrency": CONCURRENCY,
        "upstream_latency_ms": round(UPSTREAM_LATENCY * 1000),
        "bursts": rounds,
        "direct_httpx_calls_per_s": round(median(direct_tp), 1),
        "keyapi_calls_per_s": round(median(keyapi_tp), 1),
        "keyapi_vs_direct": round(ratio, 3),
        "tool_errors": errors,
        "upstream_requests_charged": charged,
        "bars": {"throughput ≥ 80% of direct httpx": ratio >= 0.8 and errors == 0},
    }
