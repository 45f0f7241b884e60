"""The spec rules that are plain functions (graphc/spec/blocks.py, naming.py, ir.at): each
takes one call or name and returns what is wrong with it, without running an expansion."""

from __future__ import annotations

from graphc.errors import GraphcError
from graphc.spec import blocks, naming
from graphc.spec.ir import NO_ARGS, FlatNode, at
from graphc.spec.load import load_spec
from graphc.spec.model import BlockCall, BlockDef
from graphc.spec.yaml_loader import YMap, load_yaml

CALL_TEXT = "body: {block: ffn, in: x, dd: 4, repeat: 2}\n"


def _call(text: str = CALL_TEXT) -> tuple[BlockCall, YMap]:
    raw = load_yaml(text, "t.yaml")["body"]
    return BlockCall.model_validate(raw), raw


def test_at_names_the_block_copy_after_the_path_only_inside_a_block() -> None:
    assert at("nodes.fc.in", "") == "nodes.fc.in"
    assert at("blocks.ffn.nodes.up.in", "body.1") == "blocks.ffn.nodes.up.in (in body.1)"


def test_one_mistake_in_every_copy_folds_into_one_line_through_at() -> None:
    call, raw = _call()
    diags = [blocks.chain_mismatch(call, 1, 2, raw, "nodes.body", scope) for scope in ("body.0", "body.1", "body.2")]
    assert blocks.chain_mismatch(call, 2, 2, raw, "nodes.body", "body.0") is None
    merged = GraphcError.many([d for d in diags if d is not None]).diagnostics
    assert [d.message.split(":")[0] for d in merged] == ["nodes.body.repeat (in body.0 .. body.2)"]


def test_call_params_reports_the_typo_once_and_not_the_param_it_misspells() -> None:
    call, raw = _call()
    params, errors = blocks.call_params(call, BlockDef.model_validate({"params": {"d": "int"}, "inputs": ["h"], "nodes": {"a": {}}, "outputs": ["a"]}), raw, "nodes.body", "")
    assert params is None
    assert [(d.pos.line, d.pos.col, d.message) for d in errors] == [
        (1, CALL_TEXT.index("dd") + 1, "nodes.body.dd: block 'ffn' has no param 'dd' (did you mean 'd'?)")
    ]


def test_call_params_fills_defaults_and_makes_floats_float() -> None:
    call, raw = _call("body: {block: ffn, p: 1}\n")
    bdef = BlockDef.model_validate({"params": {"p": "float", "k": 3}, "inputs": ["h"], "nodes": {"a": {}}, "outputs": ["a"]})
    params, errors = blocks.call_params(call, bdef, raw, "nodes.body", "")
    assert errors == []
    assert params == {"p": 1.0, "k": 3} and isinstance(params["p"], float)


def test_node_name_rules() -> None:
    assert naming.node_name_error("fc1") is None
    assert "identifier" in (naming.node_name_error("fc-1") or "")
    assert "'_'" in (naming.node_name_error("_x") or "")
    assert "torch modules already have 'forward'" in (naming.node_name_error("ｆｏｒｗａｒｄ") or "")


def test_input_dims_errors_point_at_the_dim() -> None:
    spec = load_spec("graphc: 1\nname: t\ninputs:\n  x: {shape: [B, 0], example: {C: 2}}\nnodes:\n  a: {op: relu}\noutputs: [a]\n")
    errors = naming.input_dims_errors(spec, "x", [*spec.doc.inputs["x"].shape], spec.doc.inputs["x"].example)
    assert [d.message for d in errors] == [
        "inputs.x.shape.1: a size must be at least 1, got 0",
        "inputs.x.example.C: 'C' is not a symbolic dim of the shape [B, 0]",
    ]
    assert [d.pos.line for d in errors] == [4, 4]


def test_block_size_counts_nested_repeats_and_caches() -> None:
    defs = load_yaml(
        "inner: {inputs: [h], nodes: {a: {op: relu}, b: {op: relu}}, outputs: [b]}\n"
        "outer: {inputs: [h], nodes: {r: {block: inner, repeat: 3}, c: {op: relu}}, outputs: [c]}\n",
        "t.yaml",
    )
    cache: dict[str, int] = {}
    assert blocks.block_size(defs, "outer", cache) == 1 + 3 * (1 + 2) + 1
    assert cache == {"inner": 3, "outer": 11}


def test_a_node_that_is_no_op_has_empty_args() -> None:
    node = FlatNode("x", "input", load_spec("graphc: 1\nname: t\ninputs: {x: {shape: [2]}}\nnodes: {a: {op: relu}}\noutputs: [a]\n").pos(), "inputs.x")
    assert node.args is NO_ARGS and node.op_name == "input"
