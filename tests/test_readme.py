"""The README documents exactly the interface the server has: tools, arguments, error codes, variables."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import OFFLINE_URL, connect, make_settings

from keyapi_mcp.config import ENV_PREFIX, Settings
from keyapi_mcp.errors import KeyAPIError

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")

pytestmark = pytest.mark.anyio


def _error_codes() -> set[str]:
    codes: set[str] = set()
    pending = [KeyAPIError]
    while pending:
        cls = pending.pop()
        codes.add(cls.code)
        pending.extend(cls.__subclasses__())
    return codes


async def test_the_readme_documents_each_tool_and_each_of_its_arguments():
    async with connect(make_settings(OFFLINE_URL)) as client:
        tools = (await client.list_tools()).tools
    documented = set(re.findall(r"^### `([a-z_]+)`", README, flags=re.MULTILINE))
    assert documented == {tool.name for tool in tools}
    for tool in tools:
        for argument in tool.input_schema.get("properties", {}):
            assert f"| `{argument}` |" in README, f"{tool.name}.{argument} is not in the README's argument table"


def test_the_readme_error_table_lists_every_error_code():
    table = set(re.findall(r"^\| `\[([a-z_]+)\]` \|", README, flags=re.MULTILINE))
    assert table == _error_codes()


def test_every_setting_is_documented_as_an_environment_variable():
    for field in Settings.model_fields:
        assert f"`{ENV_PREFIX}{field.upper()}`" in README, f"{ENV_PREFIX}{field.upper()} is not in the README"
