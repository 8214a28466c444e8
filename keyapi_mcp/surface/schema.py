"""Compact JSON Schemas for `tools/list`: the same accepted JSON, fewer tokens, cheaper to validate.

pydantic emits `$defs` + `$ref`, `anyOf: [{type: X}, {type: null}]` for every optional field and a
`title` on everything. Clients show tool schemas to the model (tokens) and validate every result
against the output schema (jsonschema resolves each `$ref` and tries each `anyOf` branch per value).
Inlining references, writing nullable types as `type: [X, "null"]` and dropping the generated titles
changes none of what validates — the tests check both forms accept and reject the same documents.

Only output schemas have nullable fields (the tools' arguments have none, tests/test_portability.py says why).
Their type lists are what a schema-portability check (the Inspector's) still warns about: they stay, because
output schemas are only validated against, never converted into a provider's function format, and the lists
are shorter to read and cheaper to validate than `anyOf`.
"""

from __future__ import annotations

from typing import Any

_REF_PREFIX = "#/$defs/"


def compact_schema(schema: dict[str, Any]) -> dict[str, Any]:
    defs: dict[str, Any] = schema.get("$defs", {})
    return _compact({k: v for k, v in schema.items() if k != "$defs"}, defs)


def _compact(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_compact(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith(_REF_PREFIX):
        target = _compact(defs[ref.removeprefix(_REF_PREFIX)], defs)
        siblings = {k: _compact(v, defs) for k, v in node.items() if k not in ("$ref", "title")}
        return {**target, **siblings}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "title":
            continue
        if key in ("properties", "patternProperties"):
            # A mapping of names to schemas: the names are data, never keywords to drop.
            out[key] = {name: _compact(sub, defs) for name, sub in value.items()}
        else:
            out[key] = _compact(value, defs)
    return _collapse_nullable(out)


def _collapse_nullable(node: dict[str, Any]) -> dict[str, Any]:
    """`{anyOf: [S, {type: null}]}` → S with `type: [T, "null"]`, when S is a single-type schema."""
    branches = node.get("anyOf")
    if not isinstance(branches, list) or len(branches) != 2:
        return node
    nulls = [b for b in branches if b == {"type": "null"}]
    others = [b for b in branches if b != {"type": "null"}]
    if len(nulls) != 1 or len(others) != 1:
        return node
    other = others[0]
    kind = other.get("type")
    if not isinstance(kind, str) or "anyOf" in other or "oneOf" in other or "allOf" in other:
        return node
    merged = {**other, **{k: v for k, v in node.items() if k != "anyOf"}, "type": [kind, "null"]}
    if "enum" in merged:
        merged["enum"] = [*merged["enum"], None]
    if "const" in merged:
        merged["enum"] = [merged.pop("const"), None]
    return merged
