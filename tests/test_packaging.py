"""The package as published: what the wheel and sdist hold, that a package index accepts them, and that the
installed command — from a fresh environment, and through `uvx` — answers MCP tool calls.

The build and installs come from conftest.py's session fixtures (`dist`, `installed`): one build and one
install per session. Network: only the package registry (for the build backend and the dependencies).
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tarfile
import zipfile
from email.parser import HeaderParser
from pathlib import Path

import pytest
from fakes import FakeUpstreamServer
from helpers import TEST_API_KEY, THREE_ROWS, TOOL, parsed, text_of
from installs import REPO, VERSION, Dist, Installed, run, uvx_binary
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from keyapi_mcp.upstream.demo import DOCUMENTED_VIDEO_ID
from scripts.public_home import home

PROCESS_TIMEOUT = 30.0
UVX_TIMEOUT = 180.0  # uvx installs the wheel's dependencies into its own environment first
README = (REPO / "README.md").read_text(encoding="utf-8")
MCP_NAME = json.loads((REPO / "server.json").read_text(encoding="utf-8"))["name"]


def test_the_wheel_holds_only_the_package_and_its_metadata(dist: Dist):
    with zipfile.ZipFile(dist.wheel) as wheel:
        names = wheel.namelist()
        metadata = HeaderParser().parsestr(wheel.read(f"keyapi_mcp-{VERSION}.dist-info/METADATA").decode())
        entry_points = wheel.read(f"keyapi_mcp-{VERSION}.dist-info/entry_points.txt").decode()
    top = {name.split("/")[0] for name in names}
    assert top == {"keyapi_mcp", f"keyapi_mcp-{VERSION}.dist-info"}
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    # The Python modules of every wing and the files the MCP Apps view serves (keyapi_mcp/surface/ui/), nothing
    # else: no test tool ships (they live in tests/).
    package = REPO / "keyapi_mcp"
    sources = {p.relative_to(package).as_posix() for p in package.rglob("*.py") if "__pycache__" not in p.parts} | {
        f"surface/ui/{p.name}" for p in (package / "surface" / "ui").iterdir() if p.is_file()
    }
    assert {n.removeprefix("keyapi_mcp/") for n in names if n.startswith("keyapi_mcp/")} == sources
    assert f"keyapi_mcp-{VERSION}.dist-info/licenses/LICENSE" in names
    assert "keyapi-mcp = keyapi_mcp.__main__:main" in entry_points

    assert metadata["Name"] == "keyapi-mcp" and metadata["Version"] == VERSION
    assert metadata["License-Expression"] == "MIT"
    assert metadata["Requires-Python"] == ">=3.11"
    assert metadata["Summary"] and metadata["Author"] and metadata["Keywords"]
    urls = dict(value.split(", ", 1) for value in metadata.get_all("Project-URL"))
    assert urls["Repository"] == home()  # the one place the assumed public home is stated
    classifiers = metadata.get_all("Classifier")
    assert "Programming Language :: Python :: 3.11" in classifiers
    assert not [c for c in classifiers if c.startswith("License ::")]  # the SPDX expression replaces them
    assert metadata["Description-Content-Type"] == "text/markdown"


def test_the_sdist_has_the_source_and_no_local_state_or_benchmark_output(dist: Dist):
    with tarfile.open(dist.sdist) as sdist:
        names = [name.split("/", 1)[1] for name in sdist.getnames() if "/" in name]
    for required in ("pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md", "server.json", "Dockerfile"):
        assert required in names
    assert "keyapi_mcp/server.py" in names and "tests/conftest.py" in names and "mcpb/manifest.json" in names
    unwanted = re.compile(r"(^|/)(\.venv|__pycache__|\.conformance|\.mcpb-tools|node_modules|dist|\.git)(/|$)|\.pyc$")
    assert not [n for n in names if unwanted.search(n)]
    assert not [n for n in names if n.startswith("bench/results")]


def test_a_package_index_accepts_both_files(dist: Dist):
    out = run([sys.executable, "-m", "twine", "check", "--strict", str(dist.wheel), str(dist.sdist)])
    assert out.count("PASSED") == 2, out


def test_the_readme_renders_on_a_package_index_and_claims_the_registry_name():
    assert f"<!-- mcp-name: {MCP_NAME} -->" in README
    # A package index shows the README away from the repository: every link and image must be absolute.
    targets = re.findall(r"\]\(([^)\s]+)", README) + re.findall(r'(?:src|href)="([^"]+)"', README)
    relative = [t for t in targets if not re.match(r"(https?://|mailto:|#)", t)]
    assert targets and not relative, relative


@pytest.mark.anyio
async def test_the_installed_wheel_serves_a_tool_call_over_stdio(
    installed: Installed, base_env: dict[str, str], fake_upstream: FakeUpstreamServer, tmp_path: Path
):
    # The package comes from the fresh environment, not from this checkout.
    where = run([str(installed.python), "-c", "import keyapi_mcp; print(keyapi_mcp.__file__)"], cwd=tmp_path)
    assert Path(where.strip()).is_relative_to(installed.venv)
    assert run([str(installed.command), "--version"], cwd=tmp_path).strip() == f"keyapi-mcp {VERSION}"

    env = {**base_env, "KEYAPI_API_KEY": TEST_API_KEY, "KEYAPI_BASE_URL": fake_upstream.url}
    params = StdioServerParameters(command=str(installed.command), env=env, cwd=tmp_path)
    async with Client(params, read_timeout_seconds=PROCESS_TIMEOUT) as client:
        assert client.server_info is not None and client.server_info.version == VERSION
        result = await client.call_tool(TOOL, {"video_ids": [DOCUMENTED_VIDEO_ID]})
    out = parsed(result)
    assert [v.video_id for v in out.videos] == [DOCUMENTED_VIDEO_ID] and out.credits.spent == 1
    assert [r["auth"] for r in fake_upstream.fake.requests] == [f"Bearer {TEST_API_KEY}"]


def readme_wheel_command() -> list[str]:
    """The README's command that works before publication: uvx running the wheel built in a clone."""
    (line,) = [line for line in README.splitlines() if line.startswith("uvx --from dist/")]
    return shlex.split(line.split("#", 1)[0])


def test_every_prepublication_snippet_names_the_wheel_of_this_version():
    wheel = f"keyapi_mcp-{VERSION}-py3-none-any.whl"
    files = [REPO / "README.md", *(REPO / "docs").glob("*.md"), *(REPO / "examples" / "clients").iterdir()]
    named = {
        (path.name, name) for path in files for name in re.findall(r"keyapi_mcp-[^\s\"'/\]]*\.whl", path.read_text())
    }
    assert named and {name for _, name in named} == {wheel}, named
    assert readme_wheel_command()[:3] == ["uvx", "--from", f"dist/{wheel}"]


@pytest.mark.anyio
async def test_uvx_runs_the_built_wheel_in_demo_mode(
    dist: Dist, uv_session_env: dict[str, str], tmp_path: Path, no_secret_leaks: list[str]
):
    """The README's pre-publication command, with the wheel this session built in place of dist/."""
    env = {**uv_session_env, "KEYAPI_STATE_DIR": str(tmp_path / "state")}
    command = readme_wheel_command()
    assert Path(command[2]).name == dist.wheel.name
    params = StdioServerParameters(
        command=uvx_binary(), args=["--from", str(dist.wheel), *command[3:]], env=env, cwd=tmp_path
    )
    with (tmp_path / "stderr.txt").open("w+") as errlog:
        async with Client(stdio_client(params, errlog=errlog), read_timeout_seconds=UVX_TIMEOUT) as client:
            tools = await client.list_tools()
            result = await client.call_tool(TOOL, {"video_ids": [THREE_ROWS]})
        errlog.seek(0)
        stderr = errlog.read()
    no_secret_leaks.append(stderr)
    assert {t.name for t in tools.tools} == {"get_video_products", "compare_video_groups", "get_credit_usage"}, stderr
    out = parsed(result)
    assert out.demo is True and out.summary.products == 3, text_of(result)


def test_the_installed_command_needs_no_checkout_for_its_help(installed: Installed, tmp_path: Path):
    done = subprocess.run(
        [str(installed.command), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=PROCESS_TIMEOUT
    )
    assert done.returncode == 0 and "--demo" in done.stdout
