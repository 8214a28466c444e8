"""Building and installing keyapi-mcp as a user would, for the packaging tests (`from installs import ...`).

The wheel and sdist are built once per test session (conftest.py's `dist`) and installed into fresh
environments with uv (PyPI's `uv`, from the test extra). Every uv process gets an explicit environment:
the session's own cache and tool directories, the test interpreter (no Python download), and the few
variables that decide how the package registry is reached on this machine.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from uv import find_uv_bin

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
VERSION: str = PYPROJECT["project"]["version"]
INSTALL_TIMEOUT = 300.0  # a cold cache downloads the dependencies from the registry

# How this machine reaches the package registries (proxies, private indexes, extra CA certificates):
# passed through to uv when set, and nothing else of the developer's environment.
REGISTRY_VARIABLES = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "UV_INDEX_URL",
    "UV_DEFAULT_INDEX",
    "UV_EXTRA_INDEX_URL",
    "UV_INDEX",
)


@dataclass(frozen=True)
class Dist:
    wheel: Path
    sdist: Path


@dataclass(frozen=True)
class Installed:
    """A fresh virtual environment holding the built wheel (and nothing from the checkout)."""

    venv: Path

    @property
    def bin(self) -> Path:
        return self.venv / ("Scripts" if os.name == "nt" else "bin")

    @property
    def command(self) -> Path:
        return self.bin / "keyapi-mcp"

    @property
    def python(self) -> Path:
        return self.bin / "python"


def uv_binary() -> str:
    return find_uv_bin()


def uvx_binary() -> str:
    """`uvx` ships next to `uv` in PyPI's uv package."""
    uvx = Path(find_uv_bin()).with_name("uvx" + (".exe" if os.name == "nt" else ""))
    assert uvx.is_file(), f"uvx is not installed next to {find_uv_bin()}"
    return str(uvx)


def uv_env(uv_home: Path, home: Path) -> dict[str, str]:
    """The whole environment of a uv process: its own cache and tool dirs, this interpreter, no downloads."""
    env = {key: os.environ[key] for key in REGISTRY_VARIABLES if key in os.environ}
    env.update(
        {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(home),
            "UV_CACHE_DIR": str(uv_home / "cache"),
            "UV_TOOL_DIR": str(uv_home / "tools"),
            "UV_TOOL_BIN_DIR": str(uv_home / "tool-bin"),
            "UV_PYTHON": sys.executable,
            "UV_PYTHON_DOWNLOADS": "never",
            "UV_NO_CONFIG": "1",
            # The platform's trust store, as pip uses: registries behind a TLS-inspecting proxy work too.
            "UV_NATIVE_TLS": "1",
        }
    )
    return env


def run(command: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    """Run a build or install step; on failure, fail with its output (not just the status)."""
    done = subprocess.run(
        command,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout


def build_dist(outdir: Path, env: dict[str, str]) -> Dist:
    """`python -m build`: the sdist, then the wheel built from that sdist (so the sdist is proven complete)."""
    run([sys.executable, "-m", "build", "--installer", "uv", "--outdir", str(outdir), str(REPO)], env=env)
    (wheel,) = outdir.glob("keyapi_mcp-*.whl")
    (sdist,) = outdir.glob("keyapi_mcp-*.tar.gz")
    return Dist(wheel=wheel, sdist=sdist)


def install_wheel(wheel: Path, venv: Path, env: dict[str, str]) -> Installed:
    run([uv_binary(), "venv", "--quiet", str(venv)], env=env)
    installed = Installed(venv)
    run([uv_binary(), "pip", "install", "--quiet", "--python", str(installed.python), str(wheel)], env=env)
    return installed


def user_settings() -> set[str]:
    """The environment variables a user sets, as the code reads them: every `Settings` field but the
    HTTP-transport-only `mcp_*` ones (a stdio install from a registry never uses those).

    A new setting makes the server.json and manifest tests fail until they list it (or the rule here says why
    not)."""
    from keyapi_mcp.config import ENV_PREFIX, Settings

    return {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields if not name.startswith("mcp_")}


PLACEHOLDER_KEY = "sk_live_your_key_here"
KEY_REFERENCE = re.compile(r"^\$\{?[A-Za-z_][A-Za-z0-9_:.-]*\}?$")  # $VAR, ${VAR}, ${input:id}, ${env:VAR}


def is_placeholder_key(value: str) -> bool:
    """A key in an example is the documented placeholder or a reference resolved by the client, never a key."""
    return value == PLACEHOLDER_KEY or bool(KEY_REFERENCE.match(value))
