"""One version, from the package metadata (pyproject.toml), wherever it is shown or published: `--version`,
the MCP server info, `/healthz` (tests/test_docker.py), server.json, the bundle manifest and the changelog."""

from __future__ import annotations

import json
import re
from importlib.metadata import version
from pathlib import Path

import pytest
from helpers import OFFLINE_URL, connect, make_settings
from installs import REPO, VERSION, Installed, run

import keyapi_mcp


def _published_versions() -> dict[str, str]:
    server = json.loads((REPO / "server.json").read_text(encoding="utf-8"))
    manifest = json.loads((REPO / "mcpb" / "manifest.json").read_text(encoding="utf-8"))
    changelog = (REPO / "CHANGELOG.md").read_text(encoding="utf-8")
    return {
        "server.json": server["version"],
        "server.json package": server["packages"][0]["version"],
        "mcpb/manifest.json": manifest["version"],
        "CHANGELOG.md (latest entry)": re.findall(r"^## \[([^\]]+)\]", changelog, flags=re.MULTILINE)[0],
    }


@pytest.mark.anyio
async def test_every_place_that_shows_the_version_agrees_with_the_package_metadata(
    installed: Installed, tmp_path: Path
):
    shown = {
        "installed metadata": version("keyapi-mcp"),
        "keyapi_mcp.__version__": keyapi_mcp.__version__,
        "installed wheel --version": run([str(installed.command), "--version"], cwd=tmp_path).split()[-1],
        **_published_versions(),
    }
    async with connect(make_settings(OFFLINE_URL)) as client:
        assert client.server_info is not None
        shown["MCP server info"] = client.server_info.version
    assert shown == dict.fromkeys(shown, VERSION)
