"""The CLI imports the MCP SDK's server half only (`keyapi_mcp.__main__.load_sdk_server_half`).

That works only while the SDK's server side never reaches for its package root (`from mcp import X`) or its
client. The first test scans the installed SDK for such imports, including imports inside functions, so an
SDK upgrade that starts to make them fails here and not at a user's start. The second runs the CLI's import
path in a fresh interpreter and builds both transports' servers.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import mcp

SDK_ROOT = Path(mcp.__file__).parent
SERVER_SIDE = ("server", "shared", "os", "types")  # what a serving process loads; `client` and `cli` it never does


def _module_name(path: Path) -> str:
    parts = ["mcp", *path.relative_to(SDK_ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """Every import in the file as (absolute module, names imported from it; [] for `import x`)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.append((module, [alias.name for alias in node.names]))
    return found


def test_the_sdks_server_side_imports_nothing_from_its_package_root_or_its_client() -> None:
    def is_submodule(name: str) -> bool:
        return (SDK_ROOT / f"{name}.py").exists() or (SDK_ROOT / name / "__init__.py").exists()

    files = [path for part in SERVER_SIDE for path in sorted((SDK_ROOT / part).rglob("*.py"))]
    assert len(files) > 50  # the scan really covers the SDK's server side
    problems = []
    for path in files:
        for module, names in _imports(path):
            if module == "mcp" and not all(is_submodule(n) for n in names):
                problems.append(f"{path.relative_to(SDK_ROOT)}: from mcp import {', '.join(names)}")
            if module == "mcp.client" or module.startswith(("mcp.client.", "mcp.cli")):
                problems.append(f"{path.relative_to(SDK_ROOT)}: imports {module}")
    assert problems == []


PROBE = """
import json, sys
from keyapi_mcp.__main__ import load_sdk_server_half
load_sdk_server_half()
from keyapi_mcp.config import Settings
from keyapi_mcp.http import build_http_app
from keyapi_mcp.server import build_server
from keyapi_mcp.stdio import serve_pipes
import mcp
settings = Settings(api_key="k")
server = build_server(settings)
build_http_app(server, settings)
print(json.dumps({"modules": sorted(sys.modules), "root_ran": hasattr(mcp, "Client")}))
"""


def test_the_cli_builds_its_stdio_and_http_servers_without_loading_the_sdks_client(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "KEYAPI_STATE_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    report = json.loads(done.stdout)

    assert report["root_ran"] is False  # the bare package was used
    assert "mcp.server.mcpserver" in report["modules"]
    assert [m for m in report["modules"] if m.startswith(("mcp.client", "jsonschema"))] == []


FALLBACK_PROBE = """
import importlib.abc, sys

class FailOnce(importlib.abc.MetaPathFinder):
    failed = False

    def find_spec(self, name, path=None, target=None):
        if name == "mcp.server.mcpserver" and not FailOnce.failed:
            FailOnce.failed = True
            raise ImportError("simulated: this SDK's server needs its package root")
        return None

sys.meta_path.insert(0, FailOnce())
from keyapi_mcp.__main__ import load_sdk_server_half
load_sdk_server_half()
import mcp
from mcp.server.mcpserver import MCPServer
print(FailOnce.failed, hasattr(mcp, "Client"), MCPServer.__name__)
"""


def test_an_sdk_that_cannot_be_imported_by_halves_is_imported_whole(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", FALLBACK_PROBE],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    assert done.stdout.split() == ["True", "True", "MCPServer"]
