"""The container image, tested without a container engine (none is reachable here): the Dockerfile's facts,
and its exact ENTRYPOINT/CMD and HEALTHCHECK commands run against the wheel installed in a fresh
environment. The one change from the image: the bind address and port, since this is not the container's
own network namespace (127.0.0.1 and a free port instead of 0.0.0.0:8000). hadolint lints the file in
scripts/test.sh; compose.yaml is checked for the shared-Redis wiring the replicas need."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import httpx2
import pytest
import yaml
from helpers import TEST_AUTH_TOKEN, free_port
from installs import REPO, VERSION, Installed
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

DOCKERFILE = (REPO / "Dockerfile").read_text(encoding="utf-8")
COMPOSE = yaml.safe_load((REPO / "compose.yaml").read_text(encoding="utf-8"))
SERVER_NAME = json.loads((REPO / "server.json").read_text(encoding="utf-8"))["name"]
STARTUP_TIMEOUT = 30.0


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of every stage, in order, continuation lines joined and comments dropped."""
    joined = DOCKERFILE.replace("\\\n", " ")
    lines = [line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    return steps[last_from:]


def exec_form(op: str) -> list[str]:
    (args,) = [args for name, args in final_stage() if name == op]
    return json.loads(args)


def health_command() -> list[str]:
    (args,) = [args for name, args in final_stage() if name == "HEALTHCHECK"]
    return json.loads(args.split(" CMD ", 1)[1])


def in_installed_env(command: list[str], installed: Installed) -> list[str]:
    """The image puts its virtual environment first on PATH; here the installed wheel's environment is it."""
    return [str(installed.bin / command[0]), *command[1:]]


def test_the_image_is_slim_non_root_labelled_and_serves_http_on_all_interfaces():
    stage = final_stage()
    assert stage[0][1].startswith("python:") and "slim" in stage[0][1]
    (user,) = [args for op, args in stage if op == "USER"]
    assert user.split(":")[0] not in ("0", "root")
    assert f'io.modelcontextprotocol.server.name="{SERVER_NAME}"' in dict(stage).get("LABEL", "")
    assert exec_form("ENTRYPOINT") == ["keyapi-mcp"]
    assert exec_form("CMD") == ["--transport", "http", "--host", "0.0.0.0", "--port", "8000"]
    assert "KEYAPI_MCP_AUTH_TOKEN" not in dict(stage).get("ENV", "")  # never baked in: given at run time
    assert health_command()[0] == "python"  # the slim image has no curl
    assert "uv pip install" in DOCKERFILE and "[redis]" in DOCKERFILE


def test_the_images_command_refuses_to_start_without_a_token(installed: Installed, tmp_path: Path):
    command = in_installed_env(exec_form("ENTRYPOINT") + exec_form("CMD"), installed)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "KEYAPI_STATE_DIR": str(tmp_path / "s")}
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=STARTUP_TIMEOUT)
    assert done.returncode == 2 and "KEYAPI_MCP_AUTH_TOKEN" in done.stderr


@contextmanager
def serving_like_the_image(installed: Installed, tmp_path: Path, leaks: list[str]) -> Iterator[int]:
    port = free_port()
    command = exec_form("ENTRYPOINT") + exec_form("CMD")
    command[command.index("--host") + 1] = "127.0.0.1"
    command[command.index("--port") + 1] = str(port)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "KEYAPI_STATE_DIR": str(tmp_path / "state"),
        "KEYAPI_MCP_AUTH_TOKEN": TEST_AUTH_TOKEN,
    }
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            in_installed_env(command, installed), env=env, cwd=tmp_path, stdin=subprocess.DEVNULL, stderr=log
        )
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(STARTUP_TIMEOUT)
        leaks.append(log_path.read_text(errors="replace"))


def wait_for_the_health_check(installed: Installed, port: int) -> dict[str, object]:
    """Run the image's HEALTHCHECK command until it passes (as Docker would, more often); return /healthz."""
    probe = in_installed_env(health_command(), installed)
    probe[-1] = probe[-1].replace(":8000/", f":{port}/")
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while subprocess.run(probe, capture_output=True, timeout=STARTUP_TIMEOUT).returncode != 0:
        assert time.monotonic() < deadline, "the HEALTHCHECK command never passed"
        time.sleep(0.2)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
        return json.load(response)


@pytest.mark.anyio
async def test_the_images_command_serves_and_its_health_check_passes(
    installed: Installed, tmp_path: Path, no_secret_leaks: list[str]
):
    with serving_like_the_image(installed, tmp_path, no_secret_leaks) as port:
        health = await anyio.to_thread.run_sync(wait_for_the_health_check, installed, port)
        assert health == {"status": "ok", "version": VERSION}

        headers = {"Authorization": f"Bearer {TEST_AUTH_TOKEN}"}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0)) as http,
            Client(
                streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=http, terminate_on_close=False)
            ) as client,
        ):
            tools = await client.list_tools()
        assert {t.name for t in tools.tools} == {"get_video_products", "compare_video_groups", "get_credit_usage"}
        async with httpx2.AsyncClient() as http:  # without the token: refused
            assert (await http.post(f"http://127.0.0.1:{port}/mcp", json={})).status_code == 401


def test_compose_runs_replicas_on_one_redis_with_a_required_token():
    services = COMPOSE["services"]
    server, redis = services["keyapi-mcp"], services["redis"]
    assert server["build"] == "." and server["deploy"]["replicas"] >= 2
    env = server["environment"]
    assert env["KEYAPI_STATE_URL"] == "redis://redis:6379/0"
    assert env["KEYAPI_MCP_AUTH_TOKEN"].startswith("${KEYAPI_MCP_AUTH_TOKEN:?")  # compose refuses to start without
    assert env["KEYAPI_API_KEY"].startswith("${KEYAPI_API_KEY:?")
    assert server["depends_on"]["redis"]["condition"] == "service_healthy"
    assert redis["image"].startswith("redis:") and "healthcheck" in redis
