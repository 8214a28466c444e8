"""server.json (the MCP Registry entry) is valid against the registry's published schema and lists exactly
the settings a user of the stdio package sets, as the code reads them."""

from __future__ import annotations

import json

import jsonschema
from installs import REPO, VERSION, user_settings

from scripts.public_home import home, mcp_name

SERVER = json.loads((REPO / "server.json").read_text(encoding="utf-8"))
# CI puts the shared directory beside the clone: a byte copy of the published 2025-12-11 schema.
SCHEMA_PATH = REPO.parent / "shared" / "schemas" / "server.schema.json"


def test_server_json_validates_against_the_registry_schema():
    assert SCHEMA_PATH.is_file(), f"the registry schema is missing: expected a copy at {SCHEMA_PATH}"
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    assert schema["$id"].endswith("/2025-12-11/server.schema.json")
    assert SERVER["$schema"] == schema["$id"]
    validator = jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(SERVER)]
    assert not errors, errors


def test_server_json_describes_the_pypi_package_run_with_uvx_over_stdio():
    assert SERVER["name"] == mcp_name(home())
    assert len(SERVER["description"]) <= 100
    assert SERVER["version"] == VERSION
    (package,) = SERVER["packages"]
    assert package["registryType"] == "pypi" and package["identifier"] == "keyapi-mcp"
    assert package["version"] == VERSION
    assert package["runtimeHint"] == "uvx" and package["transport"] == {"type": "stdio"}


def test_server_json_lists_exactly_the_settings_the_code_reads():
    variables = {v["name"]: v for v in SERVER["packages"][0]["environmentVariables"]}
    assert set(variables) == user_settings()
    key = variables["KEYAPI_API_KEY"]
    assert key["isSecret"] is True and key["isRequired"] is True
    assert not [name for name, v in variables.items() if name != "KEYAPI_API_KEY" and v.get("isSecret")]
