"""Every client snippet under examples/clients/ (and the root Claude Desktop example) runs keyapi-mcp with
`uvx`, passes the key through the server's environment, and holds no key: they are what users copy."""

from __future__ import annotations

import base64
import json
import re
import shlex
import tomllib
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from installs import PLACEHOLDER_KEY, REPO, is_placeholder_key

from keyapi_mcp.config import ENV_PREFIX, Settings
from scripts.public_home import home

EXAMPLES = REPO / "examples" / "clients"
README = (REPO / "README.md").read_text(encoding="utf-8")
KEY = "KEYAPI_API_KEY"
SETTINGS = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
KEY_SHAPED = re.compile(r"sk_(live|test)_[A-Za-z0-9]{16,}")  # what a pasted real key would look like


def _json(name: str) -> Any:
    return json.loads((EXAMPLES / name).read_text(encoding="utf-8"))


def _server(config: dict[str, Any], servers_key: str = "mcpServers") -> dict[str, Any]:
    (server,) = config[servers_key].values()
    return server


def _stdio_servers() -> dict[str, dict[str, Any]]:
    """Each snippet reduced to the {command, args, env} its client launches."""
    code = shlex.split((EXAMPLES / "claude-code.sh").read_text(encoding="utf-8").splitlines()[-1])
    assert code[:3] == ["claude", "mcp", "add"], code
    dash = code.index("--")
    options = code[3:dash]
    env = dict(options[i + 1].split("=", 1) for i, option in enumerate(options) if option == "-e")
    codex = tomllib.loads((EXAMPLES / "codex-config.toml").read_text(encoding="utf-8"))
    return {
        "claude-desktop.json": _server(_json("claude-desktop.json")),
        "claude_desktop_config.example.json (root)": _server(
            json.loads((REPO / "claude_desktop_config.example.json").read_text(encoding="utf-8"))
        ),
        "claude-code.sh": {"command": code[dash + 1], "args": code[dash + 2 :], "env": env},
        "cursor-mcp.json": _server(_json("cursor-mcp.json")),
        "vscode-mcp.json": _server(_json("vscode-mcp.json"), "servers"),
        "codex-config.toml": codex["mcp_servers"]["keyapi"],
        "gemini-settings.json": _server(_json("gemini-settings.json")),
        "windsurf-mcp_config.json": _server(_json("windsurf-mcp_config.json")),
    }


@pytest.mark.parametrize("name", list(_stdio_servers()))
def test_each_client_snippet_runs_uvx_keyapi_mcp_with_the_key_from_its_environment(name: str):
    server = _stdio_servers()[name]
    assert server["command"] == "uvx" and server["args"][0] == "keyapi-mcp", server
    assert set(server["env"]) <= SETTINGS, f"{name} sets variables keyapi-mcp does not read"
    assert is_placeholder_key(server["env"][KEY]), f"{name}: {server['env'][KEY]!r} is not a placeholder"


def test_the_demo_variant_needs_no_key():
    server = _server(_json("claude-desktop-demo.json"))
    assert server["command"] == "uvx" and server["args"] == ["keyapi-mcp", "--demo"]
    assert KEY not in server.get("env", {})


def test_the_vs_code_snippet_prompts_for_the_key_instead_of_storing_it():
    config = _json("vscode-mcp.json")
    (prompt,) = config["inputs"]
    assert prompt["type"] == "promptString" and prompt["password"] is True
    assert _server(config, "servers")["env"][KEY] == f"${{input:{prompt['id']}}}"


def test_the_cursor_install_links_carry_the_same_config_as_the_file():
    expected = _server(_json("cursor-mcp.json"))
    links = (EXAMPLES / "cursor-install-link.txt").read_text(encoding="utf-8").split()
    assert [urlsplit(link).scheme for link in links] == ["cursor", "https"]
    for link in links:
        query = parse_qs(urlsplit(link).query)
        assert query["name"] == ["keyapi"]
        assert json.loads(base64.b64decode(query["config"][0])) == expected


def test_no_example_holds_anything_shaped_like_a_real_key():
    files = [*EXAMPLES.iterdir(), REPO / "claude_desktop_config.example.json", REPO / "README.md"]
    for path in files:
        text = path.read_text(encoding="utf-8")
        if path.name == "cursor-install-link.txt":
            text += "".join(base64.b64decode(v).decode() for v in re.findall(r"config=([A-Za-z0-9+/=]+)", text))
        assert not KEY_SHAPED.search(text.replace(PLACEHOLDER_KEY, "")), path


def test_the_readme_links_every_client_snippet():
    for path in EXAMPLES.iterdir():
        assert f"{home()}/blob/main/examples/clients/{path.name}" in README, path.name
