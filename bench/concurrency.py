"""Concurrency over HTTP, for information (no bar): bursts of 100 concurrent uncached calls vs direct GETs.

keyapi-mcp runs as `keyapi-mcp --transport http` (a real subprocess, Streamable HTTP on 127.0.0.1)
against a fake upstream in its own process (`bench/fake_process.py`) that answers each request after
50 ms, with KEYAPI_MAX_RPS and KEYAPI_MCP_MAX_CONCURRENT_CALLS set high enough not to be the limit.
Each burst asks for 100 videos never seen before (one upstream page each), all at once, from one MCP
client (the SDK's). The reference is the same burst of 100 GETs sent straight to the fake with one
`httpx.AsyncClient` (httpx defaults). For scale, the MCP SDK's own pace is measured too: the minimal
server over the same HTTP transport, its one tool waiting 50 ms. Bursts alternate between the paths;
throughput is calls per second of a burst, compared as medians. CPU seconds per call of each process
(load generator, server, fake) are recorded, since on 2 shared cores CPU, not the 50 ms, sets the pace.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import psutil
from mcp import Client

from bench.common import (
    BENCH_API_KEY,
    PAGE_SIZE,
    dataset,
    keyapi_command,
    keyapi_env,
    median,
    python_env,
    script,
    server_python,
)
from bench.naive_server import ENDPOINT
from bench.stdio import single_page_videos

CONCURRENCY = 100
UPSTREAM_LATENCY = 0.050


@contextmanager
def fake_process(n_videos: int, seed: int, latency: float) -> Iterator[tuple[str, subprocess.Popen[str], list[str]]]:
    """The fake upstream as a subprocess: yields its URL, the process, and (after exit) its last lines."""
    proc = subprocess.Popen(
        [
            *(sys.executable, script("fake_process.py"), "--videos", str(n_videos), "--seed", str(seed)),
            *("--latency", str(latency), "--api-key", BENCH_API_KEY),
        ],
        env={"PATH": os.environ.get("PATH", ""), **python_env()},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    tail: list[str] = []
    try:
        url = proc.stdout.readline().strip()
        if not url.startswith("http://127.0.0.1:"):
            raise RuntimeError("the fake upstream process did not start")
        yield url, proc, tail
    finally:
        out, _ = proc.communicate(input="", timeout=30)
        tail.extend(out.splitlines())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def http_server(argv: list[str], env: dict[str, str], cwd: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """Start an MCP HTTP server (argv ends with its port option), wait until it listens, stop it after."""
    port = _free_port()
    with (cwd / f"server-{port}.log").open("wb") as log:
        proc = subprocess.Popen(
            [*argv, str(port)],
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        try:
            _wait_listening(port, proc)
            yield port, proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{proc.args!r} did not start listening")


async def _burst(fn: Callable[[str], Awaitable[None]], items: list[str]) -> float:
    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for item in items:
            tg.start_soon(fn, item)
    return time.perf_counter() - started


def _cpu(processes: list[psutil.Process]) -> list[float]:
    return [sum(p.cpu_times()[:2]) for p in processes]


async def run(*, quick: bool = False) -> dict[str, Any]:
    rounds = 2 if quick else 5
    n_videos, seed = int((rounds + 1) * CONCURRENCY * 1.6), 33
    vids = single_page_videos(dataset(n_videos, seed=seed))
    bursts = [vids[i * CONCURRENCY : (i + 1) * CONCURRENCY] for i in range(rounds + 1)]
    if len(bursts[-1]) < CONCURRENCY:
        raise RuntimeError("data set too small for the concurrency bursts")
    throughput: dict[str, list[float]] = {"direct": [], "keyapi": [], "minimal_server": []}
    cpu_per_call: dict[str, list[list[float]]] = {k: [] for k in throughput}
    errors = 0
    with (
        tempfile.TemporaryDirectory(prefix="keyapi-bench-http-") as tmp,
        fake_process(n_videos, seed, UPSTREAM_LATENCY) as (upstream_url, fake_proc, fake_tail),
    ):
        workdir = Path(tmp)
        keyapi_env_full = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", tmp),
            **keyapi_env(upstream_url, workdir, KEYAPI_MCP_MAX_CONCURRENT_CALLS=str(CONCURRENCY)),
        }
        with (
            http_server(
                [keyapi_command(), "--transport", "http", "--host", "127.0.0.1", "--port"], keyapi_env_full, workdir
            ) as (keyapi_port, keyapi_proc),
            http_server(
                [server_python(), script("minimal_server.py"), "--delay", str(UPSTREAM_LATENCY), "--http"],
                {"PATH": os.environ.get("PATH", ""), **python_env()},
                workdir,
            ) as (minimal_port, minimal_proc),
        ):
            url = upstream_url + ENDPOINT
            headers = {"Authorization": f"Bearer {BENCH_API_KEY}"}
            me = psutil.Process()
            procs = {
                "direct": [me, psutil.Process(fake_proc.pid)],
                "keyapi": [me, psutil.Process(keyapi_proc.pid), psutil.Process(fake_proc.pid)],
                "minimal_server": [me, psutil.Process(minimal_proc.pid)],
            }
            async with (
                # httpx's defaults (a pool of 100, 20 kept alive): a direct GET as anyone would write it.
                httpx.AsyncClient(trust_env=False, timeout=30.0) as http,
                Client(f"http://127.0.0.1:{keyapi_port}/mcp") as keyapi,
                Client(f"http://127.0.0.1:{minimal_port}/mcp") as minimal,
            ):

                async def direct_get(vid: str) -> None:
                    response = await http.get(
                        url, params={"video_ids": vid, "page_num": 1, "page_size": PAGE_SIZE}, headers=headers
                    )
                    response.raise_for_status()
                    response.json()

                async def keyapi_call(vid: str) -> None:
                    nonlocal errors
                    result = await keyapi.call_tool("get_video_products", {"video_ids": [vid]})
                    errors += bool(result.is_error)

                async def minimal_call(vid: str) -> None:
                    await minimal.call_tool("echo", {"text": vid})

                paths = {"direct": direct_get, "keyapi": keyapi_call, "minimal_server": minimal_call}
                for i, ids in enumerate(bursts):  # burst 0 warms every path up and is not counted
                    for name, fn in paths.items():
                        before = _cpu(procs[name])
                        elapsed = await _burst(fn, ids)
                        after = _cpu(procs[name])
                        if i:
                            throughput[name].append(len(ids) / elapsed)
                            cpu_per_call[name].append([(b - a) / len(ids) for a, b in zip(before, after, strict=True)])
    charged = next((int(line.split()[1]) for line in fake_tail if line.startswith("charged ")), None)
    tp = {name: median(values) for name, values in throughput.items()}
    ratio = tp["keyapi"] / tp["direct"]

    def cpu_ms(name: str, labels: list[str]) -> dict[str, float]:
        return {
            label: round(median([sample[j] for sample in cpu_per_call[name]]) * 1000, 2)
            for j, label in enumerate(labels)
        }

    return {
        "concurrency": CONCURRENCY,
        "upstream_latency_ms": round(UPSTREAM_LATENCY * 1000),
        "bursts": rounds,
        "calls_per_s": {name: round(value, 1) for name, value in tp.items()},
        "keyapi_vs_direct": round(ratio, 3),
        "minimal_server_vs_direct": round(tp["minimal_server"] / tp["direct"], 3),
        "cpu_ms_per_call": {
            "direct": cpu_ms("direct", ["load_generator", "fake_upstream"]),
            "keyapi": cpu_ms("keyapi", ["load_generator", "server", "fake_upstream"]),
            "minimal_server": cpu_ms("minimal_server", ["load_generator", "server"]),
        },
        "tool_errors": errors,
        "upstream_requests": charged,
    }
