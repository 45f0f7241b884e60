"""``graphc schema`` is valid JSON Schema (2020-12), accepts every spec in specs/, rejects
broken ones, and docs/graphc.schema.json (what editors load) is kept in sync with it."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import jsonschema
import pytest
from conftest import ROOT, SPECS, run_cli

from graphc.spec.yaml_loader import load_yaml

DOCS_SCHEMA = ROOT / "docs" / "graphc.schema.json"


@cache
def schema() -> dict[str, Any]:
    res = run_cli("schema")
    assert res.code == 0, res.err
    out: dict[str, Any] = json.loads(res.out)
    return out


def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema())


def test_schema_is_valid_draft_2020_12() -> None:
    assert schema()["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema())


@pytest.mark.parametrize("spec", SPECS, ids=[p.name for p in SPECS])
def test_schema_accepts_every_example_spec(spec: Any) -> None:
    doc = load_yaml(spec.read_bytes(), str(spec))
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in _validator().iter_errors(doc)]
    assert not errors, errors[:5]


BROKEN = {
    "unknown top-level key": {"outputz": {"y": "fc"}},
    "unknown op": {"nodes": {"fc": {"op": "lnear", "in": "x", "out": 3}}},
    "unknown op field": {"nodes": {"fc": {"op": "linear", "in": "x", "out": 3, "outt": 4}}},
    "wrong version": {"graphc": 2},
    "shape not a list": {"inputs": {"x": {"shape": 10}}},
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_schema_rejects_broken_specs(case: str) -> None:
    doc: dict[str, Any] = {
        "graphc": 1,
        "name": "m",
        "inputs": {"x": {"shape": ["B", 10]}},
        "nodes": {"fc": {"op": "linear", "in": "x", "out": 3}},
        "outputs": {"y": "fc"},
    }
    assert _validator().is_valid(doc)
    doc.update(BROKEN[case])
    assert not _validator().is_valid(doc)


def test_expressions_are_accepted_where_numbers_are() -> None:
    doc = {"graphc": 1, "name": "m", "params": {"d": 4}, "inputs": {"x": {"shape": ["B", 10]}},
           "nodes": {"fc": {"op": "linear", "in": "x", "out": "${2 * d}"}}, "outputs": {"y": "fc"}}
    assert _validator().is_valid(doc)


def test_docs_schema_is_in_sync() -> None:
    current = json.dumps(schema(), indent=2) + "\n"
    on_disk = DOCS_SCHEMA.read_text() if DOCS_SCHEMA.exists() else ""
    assert on_disk == current, (
        "docs/graphc.schema.json is out of date (ops or spec models changed); regenerate it with: "
        "graphc schema -o docs/graphc.schema.json"
    )
