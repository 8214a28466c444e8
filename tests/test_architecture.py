"""The package's layout is its architecture: wings import downward only, no module imports in a circle, every
module is named in docs/architecture.md, and each module that logs has a logger of its own.

Imports are read from the source (every `import`, at any depth, `TYPE_CHECKING` blocks included), so a lazy
or type-only import cannot hide an upward dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "keyapi_mcp"
ARCHITECTURE = PACKAGE.parent / "docs" / "architecture.md"

# The modules beside the composition root that every wing may use: settings, errors, metrics, log safety.
FOUNDATION = {"keyapi_mcp", "config", "errors", "metrics", "logsafety", "diagnose", "bounded_read"}
ROOT = {"server", "__main__"}
# Which wings each wing may import (besides itself and the foundation).
MAY_IMPORT = {
    "foundation": set(),
    "core": set(),
    "upstream": {"core"},
    "state": {"core"},
    "presentation": {"core"},
    "surface": {"presentation", "core"},
    "transport": {"surface"},
    "root": {"transport", "surface", "presentation", "core", "upstream", "state"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def wing_of(module: str) -> str:
    rest = module.split(".")[1:]
    if not rest or rest[0] in FOUNDATION:
        return "foundation"
    if rest[0] in ROOT:
        return "root"
    return rest[0]


def imports_of(module: str) -> set[str]:
    """The modules of ours that `module` imports, anywhere in its source."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        found.update(name for name in names if name in MODULES and name != module)
    # `from keyapi_mcp.core import rows` names keyapi_mcp.core and keyapi_mcp.core.rows: keep the deepest only
    return {name for name in found if not any(other.startswith(name + ".") for other in found)} or found


GRAPH = {module: imports_of(module) for module in MODULES}


def test_every_wing_imports_only_the_wings_below_it():
    upward = [
        f"{module} ({wing_of(module)}) imports {target} ({wing_of(target)})"
        for module, targets in GRAPH.items()
        for target in targets
        if wing_of(target) not in {wing_of(module), "foundation", *MAY_IMPORT[wing_of(module)]}
    ]
    assert upward == []


def test_no_module_imports_in_a_circle():
    circles: list[list[str]] = []
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(GRAPH[module]):
            if state.get(target) == "open":
                circles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])
    assert circles == []


def test_the_core_knows_neither_mcp_nor_httpx():
    for module, path in MODULES.items():
        if wing_of(module) == "core":
            tree = ast.parse(path.read_text(encoding="utf-8"))
            third_party = {
                (node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
                for node in ast.walk(tree)
                if isinstance(node, ast.Import | ast.ImportFrom)
                and (not isinstance(node, ast.ImportFrom) or node.module)
                for alias in node.names
            }
            assert not third_party & {"mcp", "mcp_types", "httpx", "starlette", "uvicorn", "redis"}, module


def test_docs_architecture_names_every_module_and_no_other():
    text = ARCHITECTURE.read_text(encoding="utf-8")
    named = {path.relative_to(PACKAGE).as_posix() for path in MODULES.values()}
    missing = [name for name in sorted(named) if f"`{name}`" not in text]
    assert missing == []
    mentioned = {word.strip("`,.;:()") for word in text.split() if word.startswith(("`", "(`"))}
    stale = {m for m in mentioned if m.endswith(".py") and not m.startswith("tests/")} - named
    assert stale == set(), "docs/architecture.md names modules that do not exist"


@pytest.mark.parametrize("module", [m for m, p in MODULES.items() if "log." in p.read_text(encoding="utf-8")])
def test_a_module_that_logs_has_its_own_logger(module: str):
    assert "log = logging.getLogger(__name__)" in MODULES[module].read_text(encoding="utf-8")


def test_modules_stay_small():
    # The Redis store carries its Lua scripts inline; every other module has one job and stays short.
    sizes = {m: len(p.read_text(encoding="utf-8").splitlines()) for m, p in MODULES.items()}
    assert {m: n for m, n in sizes.items() if n > 450 and m != "keyapi_mcp.state.redis_store"} == {}
