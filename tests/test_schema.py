"""The compacted tool schemas accept and reject exactly what pydantic's original schemas do."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from helpers import NO_PRODUCTS, TOOL, ZERO_VIEWS, connect
from jsonschema.validators import validator_for

from keyapi_mcp.config import Settings
from keyapi_mcp.presentation.models import CreditUsage, VideoProductsResult
from keyapi_mcp.surface.schema import compact_schema
from keyapi_mcp.upstream.demo import DOCUMENTED_VIDEO_ID

pytestmark = pytest.mark.anyio


def _valid(schema: dict[str, Any], doc: Any) -> bool:
    return not list(validator_for(schema)(schema).iter_errors(doc))


def _mutations(doc: dict[str, Any]) -> list[Any]:
    """Documents near a real result: some still valid, most invalid in one place."""
    out: list[Any] = []
    video = doc["videos"][0]
    for key, value in [
        ("views", "many"),
        ("views", None),
        ("engagement_rate", "x"),
        ("source", "disk"),
        ("source", None),
        ("products", None),
        ("gmv", None),
        ("video_id", 7),
        ("hashtags", "#a"),
    ]:
        mutated = copy.deepcopy(doc)
        mutated["videos"][0][key] = value
        out.append(mutated)
    for key in ("video_id", "products", "fetched_at"):
        mutated = copy.deepcopy(doc)
        del mutated["videos"][0][key]
        out.append(mutated)
    for key, value in [("daily_limit", None), ("daily_limit", "100"), ("spent", 1.5), ("remaining_today", None)]:
        mutated = copy.deepcopy(doc)
        mutated["credits"][key] = value
        out.append(mutated)
    mutated = copy.deepcopy(doc)
    mutated["videos"][0]["products"][0]["avg_price"] = None
    out.append(mutated)
    mutated = copy.deepcopy(doc)
    mutated["videos"][0]["products"][0]["product_id"] = None
    out.append(mutated)
    out.append({**doc, "next_page_num": "2"})
    out.append({**doc, "complete": None})
    assert video is not None
    return out


async def test_compact_output_schema_agrees_with_pydantic_schema_on_real_and_mutated_results() -> None:
    original = VideoProductsResult.model_json_schema()
    compact = compact_schema(original)
    assert "$defs" not in json.dumps(compact) and "anyOf" not in json.dumps(compact)
    async with connect(Settings(_env_file=None), demo=True) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert tools[TOOL].output_schema == compact
        docs = []
        for fmt in ("concise", "detailed"):
            ids = [DOCUMENTED_VIDEO_ID, ZERO_VIEWS, NO_PRODUCTS]
            result = await client.call_tool(TOOL, {"video_ids": ids, "response_format": fmt})
            docs.append(result.structured_content)
    verdicts = []
    for doc in docs:
        for candidate in [doc, *_mutations(doc)]:
            verdict = _valid(original, candidate)
            assert _valid(compact, candidate) == verdict, candidate
            verdicts.append(verdict)
    assert True in verdicts and False in verdicts  # the mutations exercise both outcomes


def test_compacting_keeps_enums_nullable_and_property_names_called_title() -> None:
    schema = {
        "type": "object",
        "title": "Thing",
        "properties": {
            "title": {"title": "Title", "type": "string"},
            "charged": {"anyOf": [{"enum": ["yes", "no"], "type": "string"}, {"type": "null"}], "default": None},
        },
    }
    compact = compact_schema(schema)
    assert "title" in compact["properties"] and "title" not in compact
    assert compact["properties"]["charged"] == {
        "enum": ["yes", "no", None],
        "type": ["string", "null"],
        "default": None,
    }
    for doc, ok in [({"title": "a", "charged": None}, True), ({"charged": "maybe"}, False), ({"title": 3}, False)]:
        assert _valid(compact, doc) is ok and _valid(schema, doc) is ok


def test_credit_usage_schema_compacts_without_losing_required_fields() -> None:
    original = CreditUsage.model_json_schema()
    compact = compact_schema(original)
    assert compact["required"] == original["required"]
    assert compact["properties"]["recent"]["items"]["properties"]["charged"]["enum"] == ["yes", "no", "uncertain"]
