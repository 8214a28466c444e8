"""The MCP Bundle (Claude Desktop one-click install): the manifest matches the server, the official CLI
validates and packs it (scripts/build-mcpb.sh), and the packed bundle's server answers when launched the
way the host launches it: `mcp_config` with `${__dirname}` and `${user_config.*}` substituted, through uv."""

from __future__ import annotations

import json
import platform
import re
import shutil
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeUpstreamServer
from helpers import OFFLINE_URL, TEST_API_KEY, connect, make_settings, parsed
from installs import INSTALL_TIMEOUT, REPO, VERSION, run, user_settings, uv_binary
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from keyapi_mcp.config import Settings
from keyapi_mcp.presentation.models import CreditUsage
from keyapi_mcp.upstream.demo import DOCUMENTED_VIDEO_ID

MANIFEST = json.loads((REPO / "mcpb" / "manifest.json").read_text(encoding="utf-8"))
LAUNCH_TIMEOUT = 180.0  # uv builds the bundled source and installs its dependencies on the first start
PLACEHOLDER = re.compile(r"\$\{(__dirname|user_config\.([a-z_]+))\}")


def substitute(value: str, dirname: Path, user_config: dict[str, Any]) -> str:
    """What the host does to every string of `mcp_config` before it starts the server."""

    def one(match: re.Match[str]) -> str:
        return str(dirname) if match.group(1) == "__dirname" else str(user_config[match.group(2)])

    return PLACEHOLDER.sub(one, value)


def _env_to_option() -> dict[str, str]:
    """KEYAPI_* variable -> the user_config option it is filled from."""
    mapping = {}
    for name, value in MANIFEST["server"]["mcp_config"]["env"].items():
        match = PLACEHOLDER.fullmatch(value)
        assert match and match.group(2), f"{name} is not filled from user_config"
        mapping[name] = match.group(2)
    return mapping


@pytest.mark.anyio
async def test_the_manifest_lists_the_servers_tools_and_version():
    async with connect(make_settings(OFFLINE_URL)) as client:
        tools = (await client.list_tools()).tools
    assert [t["name"] for t in MANIFEST["tools"]] == [t.name for t in tools]
    assert MANIFEST["version"] == VERSION
    assert MANIFEST["server"]["type"] == "uv" and MANIFEST["server"]["mcp_config"]["command"] == "uv"
    assert MANIFEST["privacy_policies"] == ["https://keyapi.ai/privacy"]


def test_the_manifests_user_config_fills_real_settings_with_the_servers_defaults():
    mapping = _env_to_option()
    assert set(mapping) <= user_settings()
    assert set(mapping.values()) == set(MANIFEST["user_config"])
    key = MANIFEST["user_config"][mapping["KEYAPI_API_KEY"]]
    assert key["type"] == "string" and key["sensitive"] is True and key["required"] is True
    defaults = Settings(_env_file=None)
    for variable, option in mapping.items():
        if variable != "KEYAPI_API_KEY":
            config = MANIFEST["user_config"][option]
            field = variable.removeprefix("KEYAPI_").lower()
            assert config["type"] == "number" and config["default"] == getattr(defaults, field), variable


def _bundle_tools_fit() -> bool:
    """scripts/build-mcpb.sh runs the CLI on its pinned Node (Linux x64) or else on a Node found on PATH."""
    return (platform.system(), platform.machine()) == ("Linux", "x86_64") or shutil.which("node") is not None


@pytest.fixture(scope="session")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not _bundle_tools_fit():
        pytest.skip(f"no Node for the MCP Bundle CLI on {platform.system()} {platform.machine()}: install Node >= 18")
    out = tmp_path_factory.mktemp("mcpb")
    subprocess.run(["bash", str(REPO / "scripts" / "build-mcpb.sh"), str(out)], check=True, timeout=INSTALL_TIMEOUT)
    return out / f"keyapi-mcp-{VERSION}.mcpb"


def test_the_bundle_holds_the_manifest_the_source_and_no_environment(bundle: Path):
    with zipfile.ZipFile(bundle) as archive:
        names = set(archive.namelist())
        assert json.loads(archive.read("manifest.json")) == MANIFEST
    assert {"manifest.json", "icon.png", "pyproject.toml", "README.md", "LICENSE", "server/main.py"} <= names
    assert {f"keyapi_mcp/{p.name}" for p in (REPO / "keyapi_mcp").glob("*.py")} <= names
    assert not [n for n in names if n.startswith((".venv/", "server/lib/", "server/venv/")) or "__pycache__" in n]


@pytest.mark.anyio
async def test_the_unpacked_bundle_answers_when_launched_as_the_host_launches_it(
    bundle: Path,
    uv_session_env: dict[str, str],
    fake_upstream: FakeUpstreamServer,
    tmp_path: Path,
    no_secret_leaks: list[str],
):
    unpacked = tmp_path / "bundle"
    with zipfile.ZipFile(bundle) as archive:
        archive.extractall(unpacked)
    user_config = {
        "api_key": TEST_API_KEY,
        "daily_credit_limit": 7,
        "max_credits_per_call": 3,
        "max_credits_with_consent": 25,
    }
    mcp_config = MANIFEST["server"]["mcp_config"]
    args = [substitute(arg, unpacked, user_config) for arg in mcp_config["args"]]
    env = {name: substitute(value, unpacked, user_config) for name, value in mcp_config["env"].items()}
    # The host's own uv and machine; the one change from a real install is the upstream: the fake one.
    env |= {**uv_session_env, "KEYAPI_BASE_URL": fake_upstream.url, "KEYAPI_STATE_DIR": str(tmp_path / "state")}
    params = StdioServerParameters(command=uv_binary(), args=args, env=env, cwd=tmp_path)

    with (tmp_path / "stderr.txt").open("w+") as errlog:
        async with Client(stdio_client(params, errlog=errlog), read_timeout_seconds=LAUNCH_TIMEOUT) as client:
            tools = await client.list_tools()
            result = await client.call_tool("get_video_products", {"video_ids": [DOCUMENTED_VIDEO_ID]})
            usage = await client.call_tool("get_credit_usage", {})
        errlog.seek(0)
        stderr = errlog.read()
    no_secret_leaks.append(stderr)

    assert [t.name for t in tools.tools] == [t["name"] for t in MANIFEST["tools"]], stderr
    assert parsed(result).credits.spent == 1
    assert [r["auth"] for r in fake_upstream.fake.requests] == [f"Bearer {TEST_API_KEY}"]
    report = CreditUsage.model_validate(usage.structured_content)
    assert (report.daily_limit, report.max_credits_per_call, report.spent_today) == (7, 3, 1)
    version = run([uv_binary(), "run", "--directory", str(unpacked), "keyapi-mcp", "--version"], env=env)
    assert version.strip() == f"keyapi-mcp {VERSION}"
