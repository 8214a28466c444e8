"""The native stdio transport (`keyapi_mcp.stdio`): real pipes and sockets, real subprocesses, the SDK client.

The e2e tests in test_e2e_stdio.py run over this transport too (the SDK client spawns the server on pipes);
these tests pin what is specific to it: that it is really the path taken, lines of any length, the fallback
to the SDK's transport, stdout hygiene while serving, and how a session ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any

import anyio
import pytest
from helpers import (
    INITIALIZE,
    INITIALIZED,
    TOOL,
    RawWire,
    assert_protocol_only,
    assert_tool_error,
    parsed,
    tool_call,
)
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.server.mcpserver import MCPServer

from keyapi_mcp.config import ConfigError, load_settings
from keyapi_mcp.fake_upstream import DOCUMENTED_ROW, DOCUMENTED_VIDEO_ID
from keyapi_mcp.stdio import ENV_SWITCH, READ_HIGH_WATER, native_refusal, serve_pipes

TIMEOUT = 20.0  # a generous bound on any single wait; the tests finish far sooner
NATIVE = "stdio transport: native asyncio"
SDK = "stdio transport: the SDK's"


@asynccontextmanager
async def sdk_client(command: str, env: dict[str, str], tmp_path: Path) -> AsyncIterator[tuple[Client, Path]]:
    """The SDK's stdio client on `keyapi-mcp --demo --log-level DEBUG`, its stderr kept in a file."""
    stderr_path = tmp_path / "stderr.log"
    params = StdioServerParameters(command=command, args=["--demo", "--log-level", "DEBUG"], env=env, cwd=tmp_path)
    with stderr_path.open("w") as errlog:
        async with Client(stdio_client(params, errlog=errlog), read_timeout_seconds=TIMEOUT) as client:
            yield client, stderr_path


# ---------------------------------------------------------------------------------------------
# The installed command, through the SDK's stdio client


@pytest.mark.anyio
async def test_the_sdk_client_gets_the_demo_answer_over_the_native_transport(
    command: str, base_env: dict[str, str], tmp_path: Path
):
    async with sdk_client(command, base_env, tmp_path) as (client, stderr_path):
        server_name = client.server_info.name if client.server_info else None
        tools = await client.list_tools()
        result = await client.call_tool(TOOL, {"video_ids": [DOCUMENTED_VIDEO_ID]})

    assert server_name == "keyapi-mcp"
    assert {t.name for t in tools.tools} == {"get_video_products", "get_credit_usage"}
    out = parsed(result)
    assert out.demo is True
    [video] = out.videos
    assert video.video_id == DOCUMENTED_VIDEO_ID == "7521783049722285367"
    assert [p.product_id for p in video.products] == [DOCUMENTED_ROW["product_id"]]
    log = stderr_path.read_text()
    assert f"{NATIVE} (stdin: pipe, stdout: pipe)" in log  # the native path served, not the SDK's
    assert SDK not in log
    assert "Traceback" not in log


@pytest.mark.anyio
async def test_a_request_line_of_megabytes_is_answered_and_the_next_call_works(
    command: str, base_env: dict[str, str], tmp_path: Path
):
    huge_id = "7" * (2 * READ_HIGH_WATER)  # one 2 MiB line: far above any StreamReader default limit
    async with sdk_client(command, base_env, tmp_path) as (client, stderr_path):
        rejected = await client.call_tool(TOOL, {"video_ids": [huge_id]})
        answered = await client.call_tool(TOOL, {"video_ids": [DOCUMENTED_VIDEO_ID]})

    assert_tool_error(rejected, "invalid_input")  # the id is over the tool's 4096-character cap: fine
    assert parsed(answered).videos[0].video_id == DOCUMENTED_VIDEO_ID
    log = stderr_path.read_text()
    assert NATIVE in log
    assert "Traceback" not in log


# ---------------------------------------------------------------------------------------------
# The installed command on raw descriptors


def test_a_regular_file_on_stdin_is_served_by_the_sdk_transport(command: str, base_env: dict[str, str], tmp_path: Path):
    # The SDK cancels requests still in flight at EOF (tools/list as the file's last line went unanswered
    # about one run in three), so pings after it keep the session open until it has been answered.
    pings = [{"jsonrpc": "2.0", "id": 100 + i, "method": "ping"} for i in range(50)]
    requests = [INITIALIZE, INITIALIZED, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, *pings]
    requests_path = tmp_path / "requests.jsonl"
    requests_path.write_text("".join(json.dumps(r) + "\n" for r in requests))

    with requests_path.open("rb") as stdin:
        proc = subprocess.run(
            [command, "--demo", "--log-level", "DEBUG"],
            env=base_env,
            cwd=tmp_path,
            stdin=stdin,
            capture_output=True,
            timeout=TIMEOUT,
            check=False,
        )

    assert proc.returncode == 0, proc.stderr.decode()
    lines = proc.stdout.splitlines()
    assert_protocol_only(lines)
    [listed] = [m for m in map(json.loads, lines) if m.get("id") == 2]
    assert {t["name"] for t in listed["result"]["tools"]} == {"get_video_products", "get_credit_usage"}
    log = proc.stderr.decode()
    assert f"{SDK} (stdin is a regular file)" in log
    assert NATIVE not in log


@contextlib.contextmanager
def demo_over_pipes(
    command: str, env: dict[str, str], cwd: Path, stderr_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """`keyapi-mcp --demo` (DEBUG logs into `stderr_path`) on raw pipes; killed on the way out if still running."""
    with stderr_path.open("w") as stderr:
        proc = subprocess.Popen(
            [command, "--demo", "--log-level", "DEBUG"],
            env=env,
            cwd=cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_eof_on_stdin_ends_the_server_with_status_0(command: str, base_env: dict[str, str], tmp_path: Path):
    stderr_path = tmp_path / "stderr.log"
    with demo_over_pipes(command, base_env, tmp_path, stderr_path) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        wire = RawWire(proc.stdin, proc.stdout, proc.stdin.close)
        wire.initialize()
        wire.send(tool_call(2, {"video_ids": [DOCUMENTED_VIDEO_ID]}))
        answer = wire.response(2)
        closed_at = time.monotonic()
        wire.finish()  # closes stdin, then reads until the server's stdout closes
        code = proc.wait(timeout=5)
        exit_seconds = time.monotonic() - closed_at

    assert code == 0 and exit_seconds < 5
    assert answer["result"]["structuredContent"]["videos"][0]["video_id"] == DOCUMENTED_VIDEO_ID
    assert_protocol_only(wire.lines)
    log = stderr_path.read_text()
    assert NATIVE in log
    assert "Traceback" not in log


def test_the_setting_forces_the_sdk_transport(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(ENV_SWITCH, "SDK")
    settings = load_settings()
    assert settings.mcp_stdio == "sdk"
    assert native_refusal(settings.mcp_stdio) == "KEYAPI_MCP_STDIO=sdk"  # run_stdio logs it, calls server.run("stdio")
    monkeypatch.setenv(ENV_SWITCH, "threads")
    with pytest.raises(ConfigError, match="KEYAPI_MCP_STDIO"):
        load_settings()


def test_a_client_that_closes_stdout_ends_the_server_quietly_although_stdin_stays_open(
    command: str, base_env: dict[str, str], tmp_path: Path
):
    stderr_path = tmp_path / "stderr.log"
    with demo_over_pipes(command, base_env, tmp_path, stderr_path) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(json.dumps(INITIALIZE).encode() + b"\n")
            proc.stdin.flush()
            assert json.loads(proc.stdout.readline())["id"] == 1
            proc.stdout.close()  # the client stops reading: a later write would get EPIPE
            for request_id in range(2, 5):
                request = tool_call(request_id, {"video_ids": [DOCUMENTED_VIDEO_ID]})
                proc.stdin.write(json.dumps(request).encode() + b"\n")
                proc.stdin.flush()
            code = proc.wait(timeout=5)  # stdin is still open: the server ended because stdout went away
        finally:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()

    assert code == 0
    log = stderr_path.read_text()
    assert "stdout: the client stopped reading" in log
    assert "Traceback" not in log and "ERROR" not in log


# ---------------------------------------------------------------------------------------------
# Stray output while serving: a tiny server whose tool writes everywhere it should not

NOISY_SERVER = textwrap.dedent(
    """
    import logging, os, subprocess, sys

    from mcp.server.mcpserver import MCPServer

    from keyapi_mcp.stdio import run_stdio

    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
    server = MCPServer("noisy")


    @server.tool()
    def noisy() -> str:
        print("STRAY print, flushed", flush=True)
        os.write(1, b"STRAY os.write to fd 1\\n")
        subprocess.run(["echo", "STRAY child process"], check=True)
        stolen = os.read(0, 1 << 16) + subprocess.run(["cat"], capture_output=True, check=True).stdout
        print("STRAY print, never flushed by the tool")  # block-buffered: still buffered when serving ends
        return f"read from fd 0: {len(stolen)} bytes"


    run_stdio(server)
    """
)


def _spawn_noisy(
    script: Path, stdin: int | IO[bytes], stdout: int | IO[bytes], stderr: IO[str]
) -> subprocess.Popen[bytes]:
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.Popen([sys.executable, str(script)], env=env, stdin=stdin, stdout=stdout, stderr=stderr)


@pytest.mark.parametrize("wiring", ["pipes", "socketpairs", "one duplex socket"])
def test_stray_output_while_serving_goes_to_stderr_and_never_reaches_the_wire(tmp_path: Path, wiring: str):
    script = tmp_path / "noisy_server.py"
    script.write_text(NOISY_SERVER)
    stderr_path = tmp_path / "stderr.log"
    closers: list[Callable[[], None]] = []
    with stderr_path.open("w") as stderr:
        if wiring == "pipes":
            proc = _spawn_noisy(script, subprocess.PIPE, subprocess.PIPE, stderr)
            assert proc.stdin is not None and proc.stdout is not None
            wire = RawWire(proc.stdin, proc.stdout, proc.stdin.close)
        elif wiring == "socketpairs":  # what Node-based clients (libuv) give their children
            ours_in, theirs_in = socket.socketpair()
            ours_out, theirs_out = socket.socketpair()
            proc = _spawn_noisy(script, theirs_in.fileno(), theirs_out.fileno(), stderr)
            theirs_in.close()
            theirs_out.close()
            closers += [ours_in.close, ours_out.close]
            wire = RawWire(ours_in.makefile("wb"), ours_out.makefile("rb"), lambda: ours_in.shutdown(socket.SHUT_WR))
        else:  # fd 0 and fd 1 are the same socket, as under inetd or socat
            ours, theirs = socket.socketpair()
            proc = _spawn_noisy(script, theirs.fileno(), theirs.fileno(), stderr)
            theirs.close()
            closers.append(ours.close)
            wire = RawWire(ours.makefile("wb"), ours.makefile("rb"), lambda: ours.shutdown(socket.SHUT_WR))
        try:
            wire.initialize()
            wire.send({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "noisy", "arguments": {}}})
            noisy = wire.response(2)
            wire.send({"jsonrpc": "2.0", "id": 3, "method": "ping"})
            pong = wire.response(3)
            wire.finish()
            code = proc.wait(timeout=TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for close in closers:
                close()

    assert code == 0
    assert noisy["result"]["content"][0]["text"] == "read from fd 0: 0 bytes"  # fd 0 was /dev/null to the tool
    assert pong["result"] == {}
    assert_protocol_only(wire.lines)  # including what arrived after EOF, until the process exited
    log = stderr_path.read_text()
    kind = "pipe" if wiring == "pipes" else "socket"
    assert f"{NATIVE} (stdin: {kind}, stdout: {kind})" in log
    for stray in ("never flushed by the tool", "STRAY print, flushed", "STRAY os.write to fd 1", "STRAY child"):
        assert stray in log, stray  # diverted to stderr, not lost


# ---------------------------------------------------------------------------------------------
# The async core in process, over os.pipe() pairs


def echo_server() -> MCPServer:
    server = MCPServer("echo")

    @server.tool()
    def size(text: str) -> int:
        """How many characters `text` has."""
        return len(text)

    @server.tool()
    def blob(n: int) -> str:
        """`n` characters: a response larger than a pipe's buffer."""
        return "b" * n

    return server


class PipeClient:
    """The client side of two os.pipe() pairs; blocking reads and writes run in worker threads."""

    def __init__(self) -> None:
        self.server_in, self._to_server = os.pipe()
        self._from_server, self.server_out = os.pipe()
        self._send = os.fdopen(self._to_server, "wb")
        self._receive = os.fdopen(self._from_server, "rb")

    async def send(self, *messages: dict[str, Any]) -> None:
        data = b"".join(json.dumps(m).encode() + b"\n" for m in messages)
        await anyio.to_thread.run_sync(lambda: (self._send.write(data), self._send.flush()))

    async def receive(self, count: int) -> list[dict[str, Any]]:
        lines = await anyio.to_thread.run_sync(lambda: [self._receive.readline() for _ in range(count)])
        return [json.loads(line) for line in lines]

    def close_input(self) -> None:
        self._send.close()

    def close(self) -> None:
        for f in (self._send, self._receive):
            f.close()
        for fd in (self.server_in, self.server_out):
            os.close(fd)


@pytest.mark.anyio
async def test_the_core_reads_a_line_several_times_the_read_high_water_mark_and_hands_the_pipes_back():
    client = PipeClient()
    text = "é" * (3 * READ_HIGH_WATER)  # two UTF-8 bytes each: 6 MiB on the wire
    try:
        with anyio.fail_after(TIMEOUT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(serve_pipes, echo_server(), client.server_in, client.server_out)
                await client.send(INITIALIZE)
                [init] = await client.receive(1)
                await client.send(
                    INITIALIZED, tool_call(2, {"text": text}, name="size"), tool_call(3, {"text": "ok"}, name="size")
                )
                answers = {m["id"]: m for m in await client.receive(2)}
                client.close_input()  # EOF: serve_pipes returns, the task group ends
        assert init["result"]["serverInfo"]["name"] == "echo"
        assert answers[2]["result"]["structuredContent"] == {"result": len(text)}  # the whole line, decoded
        assert answers[3]["result"]["structuredContent"] == {"result": 2}
        # The borrowed descriptors are still open and blocking again (asyncio had set O_NONBLOCK).
        assert os.get_blocking(client.server_in) and os.get_blocking(client.server_out)
    finally:
        client.close()


@pytest.mark.anyio
async def test_a_client_reading_late_gets_every_large_response_whole_and_separate():
    client = PipeClient()
    size, calls = 300_000, 8  # each response is several times a pipe's 64 KiB buffer
    try:
        with anyio.fail_after(TIMEOUT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(serve_pipes, echo_server(), client.server_in, client.server_out)
                await client.send(INITIALIZE)
                await client.receive(1)
                await client.send(INITIALIZED, *(tool_call(10 + i, {"n": size}, name="blob") for i in range(calls)))
                await anyio.sleep(0.3)  # the server fills the pipe and must wait (back-pressure), not fail
                messages = await client.receive(calls)
                client.close_input()
        assert sorted(m["id"] for m in messages) == [10 + i for i in range(calls)]
        for m in messages:
            assert m["result"]["content"][0]["text"] == "b" * size  # not torn, not interleaved
    finally:
        client.close()
