"""The project's assumed public home, kept in one place: `[project.urls] Repository` in pyproject.toml.

Nothing is published yet: the repository URL and the MCP Registry name (`io.github.<owner>/<repo>`, derived
from it) are what the project expects to be. Every other file that names them (the README, the docs, the
client examples, server.json, the bundle manifest, the changelog, the Dockerfile's labels) must agree;
tests/test_public_home.py checks that they do. To move the project, change it once:

    python scripts/public_home.py https://github.com/NEW-OWNER/keyapi-mcp

which rewrites pyproject.toml and every file in FILES from the current home to the new one.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = REPO / "pyproject.toml"
FILES = (
    "README.md",
    "CHANGELOG.md",
    "Dockerfile",
    "server.json",
    "mcpb/manifest.json",
    "claude_desktop_config.example.json",
    "docs/*.md",
    "examples/clients/*",
)
GITHUB = re.compile(r"^https://github\.com/([A-Za-z0-9-]+)/([A-Za-z0-9._-]+)$")


def home() -> str:
    """The repository URL, as pyproject.toml states it."""
    url: str = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["urls"]["Repository"]
    assert GITHUB.match(url), f"pyproject.toml's Repository is not a GitHub repository URL: {url}"
    return url


def mcp_name(url: str) -> str:
    """The MCP Registry name a GitHub-authenticated publisher may claim for that repository."""
    match = GITHUB.match(url)
    assert match, url
    owner, repo = match.groups()
    return f"io.github.{owner}/{repo}"


def raw(url: str) -> str:
    """Where GitHub serves the repository's files (the README's images, which a package index shows)."""
    return url.replace("https://github.com/", "https://raw.githubusercontent.com/", 1)


def files() -> list[Path]:
    return sorted({path for pattern in FILES for path in REPO.glob(pattern) if path.is_file()})


def main(new: str) -> None:
    old = home()
    if not GITHUB.match(new):
        raise SystemExit(f"not a GitHub repository URL: {new}")
    for path in [PYPROJECT, *files()]:
        text = path.read_text(encoding="utf-8")
        moved = text.replace(old, new).replace(raw(old), raw(new)).replace(mcp_name(old), mcp_name(new))
        if moved != text:
            path.write_text(moved, encoding="utf-8")
            print(f"rewrote {path.relative_to(REPO)}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(sys.argv[1])
