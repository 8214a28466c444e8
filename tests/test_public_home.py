"""The assumed public home (repository URL, MCP Registry name) is stated once, in pyproject.toml, and every
shipped file that names it agrees (scripts/public_home.py rewrites them all when the project moves)."""

from __future__ import annotations

import json
import re

from installs import REPO

from scripts.public_home import files, home, mcp_name, raw

# Any GitHub address of a repository named like this project, whatever its owner.
PROJECT_URL = re.compile(r"https://(?:github\.com|raw\.githubusercontent\.com)/[A-Za-z0-9-]+/keyapi-mcp\b")


def test_every_file_names_the_home_pyproject_states():
    expected = {home(), raw(home())}
    stale = [
        f"{path.relative_to(REPO)}: {url}"
        for path in files()
        for url in PROJECT_URL.findall(path.read_text(encoding="utf-8"))
        if url not in expected
    ]
    assert not stale, f"not the Repository of pyproject.toml ({home()}): {stale}"
    # The home is named somewhere besides pyproject.toml: an empty file list would pass the check above.
    assert any(home() in path.read_text(encoding="utf-8") for path in files())


def test_the_registry_name_is_derived_from_the_home():
    server = json.loads((REPO / "server.json").read_text(encoding="utf-8"))
    assert server["name"] == mcp_name(home())
    assert server["repository"]["url"] == home()
    assert f"<!-- mcp-name: {mcp_name(home())} -->" in (REPO / "README.md").read_text(encoding="utf-8")
    assert f'io.modelcontextprotocol.server.name="{mcp_name(home())}"' in (REPO / "Dockerfile").read_text()
    names = {name for path in files() for name in re.findall(r"io\.github\.[\w-]+/[\w.-]+", path.read_text())}
    assert names == {mcp_name(home())}, names
