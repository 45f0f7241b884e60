"""The JSON Schema of the spec format, generated from the pydantic models and the registry.

Editors use it for completion and checking (``# yaml-language-server: $schema=...``).  Any
number, boolean or list in a spec may instead be a ``${...}`` expression, so the schema
accepts an expression string wherever such a value is expected.
"""

from __future__ import annotations

import copy
from typing import Any

from graphc.spec.model import BlockDef, SpecDoc, node_adapter

EXPR = {"type": "string", "pattern": r"^.*\$\{.*\}.*$", "description": "a ${...} expression over params"}
_RELAX = {"integer", "number", "boolean", "array"}


def _relax(schema: Any) -> Any:
    """Allow ``${...}`` where a number, boolean or list is expected."""
    if isinstance(schema, list):
        return [_relax(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _relax(v) for k, v in schema.items()}
    if isinstance(out.get("type"), str) and out["type"] in _RELAX:
        return {"anyOf": [out, {"$ref": "#/$defs/Expr"}]}
    return out


def spec_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a spec file."""
    top = SpecDoc.model_json_schema(by_alias=True)
    nodes = node_adapter().json_schema(by_alias=True, ref_template="#/$defs/{model}")
    block = BlockDef.model_json_schema(by_alias=True, ref_template="#/$defs/{model}")
    defs: dict[str, Any] = {}
    defs.update(top.pop("$defs", {}))
    defs.update(nodes.pop("$defs", {}))
    defs.update(block.pop("$defs", {}))
    defs["Node"] = nodes
    block["properties"]["nodes"] = {"type": "object", "additionalProperties": {"$ref": "#/$defs/Node"}}
    defs["Block"] = block
    props = top["properties"]
    props["nodes"] = {"type": "object", "minProperties": 1, "additionalProperties": {"$ref": "#/$defs/Node"}}
    props["blocks"] = {"type": "object", "additionalProperties": {"$ref": "#/$defs/Block"}}
    props["params"] = {"type": "object", "additionalProperties": {"type": ["integer", "number", "boolean", "string"]}}
    top = _relax(top)
    defs = {k: _relax(copy.deepcopy(v)) for k, v in defs.items()}
    defs["Expr"] = EXPR
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://graphc.dev/schema/spec-v1.json",
        "title": "graphc spec (format 1)",
        **top,
        "$defs": defs,
    }
