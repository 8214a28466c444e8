"""What every agent framework and model provider can carry (issue 22), held for every tool, argument and
prompt the server lists now or later: a new argument or prompt that breaks a rule fails here.

- Tool descriptions fit in 1,024 characters (LlamaIndex's OpenAI conversion refuses longer ones, hosts cut
  them) under any settings, demo mode included; the server instructions fit in 2 KB.
- Input schemas use only what the providers' converters keep: one `type` per schema and no null (a type
  list `[integer, null]` becomes STRING through the Gemini converters; `anyOf` with null leaves smolagents
  with a STRING argument that refuses every value), no references or combinators; every argument described,
  and every optional one has a default of its own type (smolagents and OpenAI strict schemas declare every
  argument required, so the model sends that default back).
- Integers are accepted as a JSON number with no fraction (`3.0`, which JSON Schema counts as an integer and
  some converters produce), while booleans, fractions and strings are refused as before.
- Every prompt argument is described.

tests/test_frameworks.py checks the same through the frameworks themselves; these checks are the fast ones.
"""

from __future__ import annotations

from typing import Any

import pytest
from helpers import THREE_ROWS, TOOL, assert_tool_error, connect, make_settings, parsed
from jsonschema.validators import validator_for

pytestmark = pytest.mark.anyio

MAX_DESCRIPTION = 1024
MAX_INSTRUCTIONS = 2048
# Settings whose values lengthen the descriptions: the longest numbers each may take, every optional clause on.
SETTINGS_VARIANTS = [
    {},
    {"max_credits_per_call": 100_000, "daily_credit_limit": 10**12, "user_daily_credit_limit": 10**12},
    {"cache_ttl_seconds": 0, "max_output_tokens": 0, "daily_credit_limit": 0},
    {"cache_ttl_seconds": 10**9 + 7, "max_output_tokens": 1_000_000},
]
# Keywords the providers' function-declaration converters keep (OpenAI strict, Gemini, Anthropic).
PORTABLE_KEYWORDS = {
    "type",
    "description",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "default",
    "minimum",
    "maximum",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "pattern",
}
TYPES = {"string", "integer", "number", "boolean", "array", "object"}


def _walk(schema: dict[str, Any], where: str) -> list[str]:
    problems = [f"{where}: {key} is not portable" for key in schema if key not in PORTABLE_KEYWORDS]
    kind = schema.get("type")
    if not isinstance(kind, str) or kind not in TYPES:
        problems.append(f"{where}: type must be one JSON type other than null, not {kind!r}")
    for name, sub in schema.get("properties", {}).items():
        problems += _walk(sub, f"{where}.{name}")
    if isinstance(schema.get("items"), dict):
        problems += _walk(schema["items"], f"{where}[]")
    if "enum" in schema and not all(isinstance(v, str) for v in schema["enum"]):
        problems.append(f"{where}: enum values must all be strings")
    return problems


@pytest.mark.parametrize("demo", [False, True])
@pytest.mark.parametrize("overrides", SETTINGS_VARIANTS)
async def test_every_tool_description_fits_1024_characters_and_the_instructions_2_kb(
    demo: bool, overrides: dict[str, Any]
):
    async with connect(make_settings(**overrides), demo=demo) as client:
        tools = (await client.list_tools()).tools
        instructions = client.instructions
    long = {t.name: len(t.description or "") for t in tools if len(t.description or "") > MAX_DESCRIPTION}
    assert not long, long
    assert all(t.description for t in tools)
    assert instructions and len(instructions.encode("utf-8")) < MAX_INSTRUCTIONS, len(instructions or "")


async def test_every_input_schema_is_portable_and_every_argument_described():
    async with connect(make_settings(), demo=True) as client:
        tools = (await client.list_tools()).tools
    for tool in tools:
        schema = tool.input_schema
        assert schema["type"] == "object" and schema.get("additionalProperties") is False, tool.name
        assert set(schema.get("required", [])) <= set(schema.get("properties", {})), tool.name
        assert not _walk(schema, tool.name), _walk(schema, tool.name)
        for name, argument in schema.get("properties", {}).items():
            assert argument.get("description"), f"{tool.name}.{name} has no description"
            if name not in schema.get("required", []):
                assert "default" in argument, f"{tool.name}.{name} is optional without a default"
                assert not list(validator_for(argument)(argument).iter_errors(argument["default"])), name


async def test_every_prompt_argument_is_described():
    async with connect(make_settings(), demo=True) as client:
        prompts = (await client.list_prompts()).prompts
    assert prompts
    undescribed = [f"{p.name}.{a.name}" for p in prompts for a in p.arguments or [] if not a.description]
    assert not undescribed, undescribed


async def test_integral_numbers_are_accepted_where_the_schema_says_integer():
    async with connect(make_settings(), demo=True) as client:
        result = await client.call_tool(
            TOOL, {"video_ids": [THREE_ROWS], "page_num": 1.0, "top": 2.0, "max_credits": 3.0}
        )
        assert not result.is_error, result.content
        assert parsed(result).summary.products == 3


async def test_null_is_still_taken_as_an_optional_arguments_default():
    """Clients that send null for an argument they leave out (the schema used to allow it) get the default."""
    async with connect(make_settings(), demo=True) as client:
        result = await client.call_tool(TOOL, {"video_ids": [THREE_ROWS], "top": None, "max_credits": None})
    assert not result.is_error and parsed(result).summary.products == 3


@pytest.mark.parametrize(
    ("argument", "value"), [("top", True), ("top", 2.5), ("top", "2"), ("max_credits", False), ("page_num", 1.5)]
)
async def test_booleans_fractions_and_strings_are_still_refused_as_integers(argument: str, value: Any):
    async with connect(make_settings(), demo=True) as client:
        result = await client.call_tool(TOOL, {"video_ids": [THREE_ROWS], argument: value})
    assert argument in assert_tool_error(result, "invalid_input")
