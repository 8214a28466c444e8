"""End to end: the installed `keyapi-mcp` command as a subprocess, over stdio, against a fake upstream on 127.0.0.1.

This exercises what a user's MCP client runs: the console script, the CLI, configuration from an explicit
environment, logging, and the MCP protocol on real pipes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from fakes import FakeUpstreamServer
from helpers import TEST_API_KEY, THREE_ROWS, TOOL, TWELVE_ROWS, RawWire, parsed, text_of, tool_call
from mcp import Client, StdioServerParameters

from keyapi_mcp import __version__
from keyapi_mcp.presentation.models import CreditUsage
from keyapi_mcp.upstream.demo import DOCUMENTED_ROW, DOCUMENTED_VIDEO_ID, FakeUpstream, demo_dataset

PROCESS_TIMEOUT = 20.0


def run_cli(command: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
        check=False,
    )


# ---------------------------------------------------------------------------------------------
# Through the SDK's stdio client


@pytest.mark.anyio
async def test_the_installed_command_serves_both_tools_over_stdio_against_the_upstream(
    command: str, base_env: dict[str, str], fake_upstream: FakeUpstreamServer, tmp_path: Path
):
    env = {
        **base_env,
        "KEYAPI_API_KEY": TEST_API_KEY,
        "KEYAPI_BASE_URL": fake_upstream.url,
        "KEYAPI_MAX_RPS": "100",
    }
    params = StdioServerParameters(command=command, args=[], env=env, cwd=tmp_path)
    async with Client(params, read_timeout_seconds=PROCESS_TIMEOUT) as client:
        tools = await client.list_tools()
        result = await client.call_tool(TOOL, {"video_ids": [DOCUMENTED_VIDEO_ID, TWELVE_ROWS]})
        usage = await client.call_tool("get_credit_usage", {})

    assert {t.name for t in tools.tools} == {"get_video_products", "compare_video_groups", "get_credit_usage"}
    out = parsed(result)
    assert out.demo is False and out.complete
    assert {v.video_id for v in out.videos} == {DOCUMENTED_VIDEO_ID, TWELVE_ROWS}
    data = demo_dataset()
    assert out.summary.products == len(data[DOCUMENTED_VIDEO_ID]) + len(data[TWELVE_ROWS])

    requests = fake_upstream.fake.requests
    assert [r["params"]["page_num"] for r in requests] == ["1", "2"]
    assert all(r["params"]["page_size"] == "10" for r in requests)
    assert all(r["auth"] == f"Bearer {TEST_API_KEY}" for r in requests)
    assert all(r["user_agent"] == f"keyapi-mcp/{__version__}" for r in requests)

    assert not usage.is_error
    report = CreditUsage.model_validate(usage.structured_content)
    assert report.spent_today == len(requests) == out.credits.spent
    assert await anyio.Path(env["KEYAPI_STATE_DIR"]).is_dir()  # state went where the environment said
    for res in (result, usage):
        assert TEST_API_KEY not in res.model_dump_json()


@pytest.mark.anyio
async def test_demo_mode_over_stdio_needs_no_key_and_makes_no_request(
    command: str, base_env: dict[str, str], fake_upstream: FakeUpstreamServer, tmp_path: Path
):
    # KEYAPI_BASE_URL points at a live fake: a request there would mean --demo used the network.
    env = {**base_env, "KEYAPI_BASE_URL": fake_upstream.url}
    params = StdioServerParameters(command=command, args=["--demo"], env=env, cwd=tmp_path)
    async with Client(params, read_timeout_seconds=PROCESS_TIMEOUT) as client:
        result = await client.call_tool(TOOL, {"video_ids": [DOCUMENTED_VIDEO_ID]})

    out = parsed(result)
    assert out.demo is True
    assert "demo" in text_of(result).splitlines()[0].lower()
    [video] = out.videos
    [product] = video.products
    assert product.product_id == DOCUMENTED_ROW["product_id"]
    assert product.units_sold == DOCUMENTED_ROW["total_video_sale_cnt"]
    assert product.gmv == DOCUMENTED_ROW["total_video_sale_gmv_amt"]
    assert fake_upstream.fake.requests == []


# ---------------------------------------------------------------------------------------------
# The CLI as a plain process


def test_version_and_help_are_the_same_program_as_python_dash_m(command: str, base_env: dict[str, str], tmp_path: Path):
    script_version = run_cli([command, "--version"], base_env, tmp_path)
    module_version = run_cli([sys.executable, "-m", "keyapi_mcp", "--version"], base_env, tmp_path)
    assert script_version.returncode == module_version.returncode == 0
    assert script_version.stdout.strip() == module_version.stdout.strip() == f"keyapi-mcp {__version__}"

    script_help = run_cli([command, "--help"], base_env, tmp_path)
    module_help = run_cli([sys.executable, "-m", "keyapi_mcp", "--help"], base_env, tmp_path)
    assert script_help.returncode == module_help.returncode == 0
    assert script_help.stdout == module_help.stdout
    for option in ("--version", "--demo", "--log-level"):
        assert option in script_help.stdout


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("KEYAPI_MAX_CREDITS_PER_CALL", "-1"),
        ("KEYAPI_BASE_URL", "http://example.com"),
        ("KEYAPI_TIMEOUT_SECONDS", "soon"),
    ],
)
def test_an_invalid_setting_stops_the_server_with_one_line_naming_the_variable(
    command: str, base_env: dict[str, str], tmp_path: Path, variable: str, value: str
):
    env = {**base_env, "KEYAPI_API_KEY": TEST_API_KEY, variable: value}
    proc = run_cli([command], env, tmp_path)
    assert proc.returncode != 0
    assert proc.stdout == ""  # nothing that a client could mistake for protocol
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert variable in lines[0]
    assert TEST_API_KEY not in proc.stderr


# ---------------------------------------------------------------------------------------------
# Raw pipes: stdout is protocol only, logs go to stderr


def test_stdout_carries_only_json_rpc_while_debug_logs_go_to_stderr_without_the_key(
    command: str, base_env: dict[str, str], fake_upstream: FakeUpstreamServer, tmp_path: Path
):
    # The second call's upstream answer echoes the key, as a careless upstream error message might.
    fake_upstream.fake.script.append((401, {"code": 401, "message": f"key {TEST_API_KEY} rejected", "data": None}, {}))
    env = {
        **base_env,
        "KEYAPI_API_KEY": TEST_API_KEY,
        "KEYAPI_BASE_URL": fake_upstream.url,
        "KEYAPI_LOG_LEVEL": "DEBUG",
    }
    stderr_path = tmp_path / "stderr.log"
    with stderr_path.open("w") as stderr:
        proc = subprocess.Popen(
            [command],
            env=env,
            cwd=tmp_path,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,  # a file, not a pipe: DEBUG output can never block the server
        )
        assert proc.stdin is not None and proc.stdout is not None
        session = RawWire(proc.stdin, proc.stdout, proc.stdin.close)
        try:
            init = session.initialize()
            session.send({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
            listed = session.response(2)
            # The fake's scripted 401 answers the first upstream request: this call.
            session.send(tool_call(3, {"video_ids": [THREE_ROWS]}))
            refused = session.response(3)
            session.send(tool_call(4, {"video_ids": [DOCUMENTED_VIDEO_ID]}))
            answered = session.response(4)
            session.finish()
            exit_code = proc.wait(timeout=PROCESS_TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    assert init["result"]["serverInfo"]["name"] == "keyapi-mcp"
    assert {t["name"] for t in listed["result"]["tools"]} == {
        "get_video_products",
        "compare_video_groups",
        "get_credit_usage",
    }
    assert refused["result"]["isError"] is True
    assert refused["result"]["content"][0]["text"].startswith("[unauthorized]")
    assert answered["result"].get("isError") is not True
    assert answered["result"]["structuredContent"]["videos"][0]["video_id"] == DOCUMENTED_VIDEO_ID
    assert exit_code == 0  # stdin closed: the server exits cleanly

    assert session.lines
    for line in session.lines:
        message = json.loads(line)
        assert isinstance(message, dict) and message.get("jsonrpc") == "2.0", line
        assert TEST_API_KEY.encode() not in line

    log = stderr_path.read_text()
    assert " DEBUG " in log  # logging really ran at DEBUG, on stderr
    assert TEST_API_KEY not in log
    assert len(fake_upstream.fake.requests) == 2


@pytest.mark.parametrize("source", ["pipe", "file"])
def test_a_last_request_without_a_trailing_newline_is_answered_before_the_server_exits(
    command: str, base_env: dict[str, str], tmp_path: Path, source: str
):
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}},
    }
    call = tool_call(2, {"video_ids": [DOCUMENTED_VIDEO_ID]})
    messages = [init, {"jsonrpc": "2.0", "method": "notifications/initialized"}, call]
    piped = "\n".join(json.dumps(m) for m in messages).encode()  # `printf '%s' "$requests" | keyapi-mcp`
    assert not piped.endswith(b"\n")
    fake = FakeUpstream(demo_dataset(), api_key=TEST_API_KEY, latency=0.5)  # in flight when the input ends
    with FakeUpstreamServer(fake) as upstream:
        env = {**base_env, "KEYAPI_API_KEY": TEST_API_KEY, "KEYAPI_BASE_URL": upstream.url}
        run = {"env": env, "cwd": tmp_path, "capture_output": True, "timeout": PROCESS_TIMEOUT}
        if source == "pipe":
            proc = subprocess.run([command], input=piped, **run)  # type: ignore[call-overload]
        else:
            (tmp_path / "requests.jsonl").write_bytes(piped)
            with (tmp_path / "requests.jsonl").open("rb") as stdin:
                proc = subprocess.run([command], stdin=stdin, **run)  # type: ignore[call-overload]
    answers = {m.get("id"): m for m in map(json.loads, proc.stdout.splitlines())}
    assert proc.returncode == 0, proc.stderr
    assert "error" not in answers[2], answers[2]
    assert answers[2]["result"]["structuredContent"]["videos"][0]["video_id"] == DOCUMENTED_VIDEO_ID
    assert fake.charged == 1
