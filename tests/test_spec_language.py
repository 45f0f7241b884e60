"""The spec language, unit by unit: expressions, includes, overrides, blocks, repeat and
index, ties, multi-output references, implicit inputs, dead-node warnings, and the complete
examples in docs/spec.md."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT

import graphc
from graphc.errors import GraphcError, SpecError
from graphc.spec.expr import ExprError, evaluate, substitute
from graphc.spec.ir import Ref

HEAD = "graphc: 1\nname: t\ninputs:\n  x: {shape: [B, 8]}\n"


def check(body: str, overrides: Any = None, head: str = HEAD) -> Any:
    return graphc.check(head + body, overrides)


# --- expressions ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("src", "value"),
    [("4 * d", 32), ("d // 3", 2), ("d % 3", 2), ("d / 4", 2.0), ("2 ** 3", 8), ("min(d, 3)", 3), ("max(1, d, 9)", 9),
     ("-d + 1", -7), ("d if d > 4 else 0", 8), ("d == 8 and not false", True), ("ceil(d / 3)", 3), ("'a' + 'b'", "ab")],
)
def test_expressions(src: str, value: object) -> None:
    assert evaluate(src, {"d": 8}) == value


@pytest.mark.parametrize(
    ("src", "message"),
    [("d.real", "attribute access"), ("x[0]", "subscripting"), ("open('f')", "unknown function 'open'"), ("1 / 0", "division by zero"),
     ("dd", "did you mean 'd'"), ("2 ** 100", "exponent is too large"), ("d *", "invalid expression"), ("lambda: 1", "lambda"),
     ("max(d, key=abs)", "keyword"), ("[1, 2]", "a list"), ("9 ** 40 * 9 ** 40", "too large")],
)
def test_bad_expressions(src: str, message: str) -> None:
    with pytest.raises(ExprError, match=re.escape(message)):
        evaluate(src, {"d": 8})


def test_substitute_keeps_type_or_makes_text() -> None:
    assert substitute("${2 * d}", {"d": 3}) == 6
    assert substitute("layer_${d}_${d > 2}", {"d": 3}) == "layer_3_true"


def test_params_chain_in_order() -> None:
    tg = check("params: {d: 4, h: '${2 * d}'}\nnodes:\n  fc: {op: linear, in: x, out: '${h}'}\noutputs: {y: fc}\n")
    assert str(tg.output_types()["y"].shape[-1]) == "8"


# --- overrides -----------------------------------------------------------------------

BODY = "params: {d: 4, h: '${2 * d}'}\nnodes:\n  fc: {op: linear, in: x, out: '${h}', bias: true}\noutputs: {y: fc}\n"


@pytest.mark.parametrize(
    ("overrides", "params"),
    [(["d=5"], 8 * 10 + 10), ({"d": 5}, 8 * 10 + 10), (["nodes.fc.bias=false"], 8 * 8), (["h=3"], 8 * 3 + 3), (["inputs.x.shape.1=2"], 2 * 8 + 8)],
)
def test_overrides(overrides: Any, params: int) -> None:
    tg = check(BODY, overrides)
    assert sum(n for shape in tg.params["fc"].values() for n in [_numel(shape)]) == params


def _numel(shape: tuple[int, ...]) -> int:
    out = 1
    for s in shape:
        out *= s
    return out


def test_override_type_error() -> None:
    with pytest.raises(SpecError, match="expected bool like the value it replaces"):
        check(BODY, ["nodes.fc.bias=maybe"])


# --- references and implicit inputs --------------------------------------------------


def test_implicit_previous_node_and_first_input() -> None:
    tg = check("nodes:\n  a: {op: relu}\n  b: {op: tanh}\n  c: {op: add, in: [a, b]}\noutputs: {y: c}\n")
    nodes = tg.flat.nodes
    assert nodes["a"].inputs == [Ref("x")] and nodes["b"].inputs == [Ref("a")]
    assert nodes["c"].inputs == [Ref("a"), Ref("b")]


def test_inputs_by_name_and_forward_reference() -> None:
    tg = check("nodes:\n  c: {op: sub, in: {a: b, b: x}}\n  b: {op: relu, in: x}\noutputs: {y: c}\n")
    assert tg.flat.nodes["c"].inputs == [Ref("b"), Ref("x")]


def test_reference_to_a_multi_output_node() -> None:
    from graphc.ops.registry import REGISTRY

    multi = [n for n, d in REGISTRY.items() if n in ("lstm", "gru")]
    if not multi:
        pytest.skip("no multi-output op registered")
    tg = graphc.check(
        "graphc: 1\nname: t\ninputs:\n  x: {shape: [B, T, 8]}\nnodes:\n"
        f"  rnn: {{op: {multi[0]}, in: x, hidden: 6}}\n  last: {{op: relu, in: rnn.1}}\noutputs: {{seq: rnn, state: last}}\n"
    )
    names = tg.flat.nodes["rnn"].outputs
    assert len(names) >= 2 and tg.flat.nodes["last"].inputs == [Ref("rnn", 1)]
    by_name = graphc.check(
        "graphc: 1\nname: t\ninputs:\n  x: {shape: [B, T, 8]}\nnodes:\n"
        f"  rnn: {{op: {multi[0]}, in: x, hidden: 6}}\n  last: {{op: relu, in: rnn.{names[1]}}}\noutputs: {{seq: rnn, state: last}}\n"
    )
    assert by_name.flat.nodes["last"].inputs == [Ref("rnn", 1)]


def test_dead_nodes_are_warnings() -> None:
    tg = check("nodes:\n  a: {op: relu}\n  b: {op: tanh, in: x}\noutputs: {y: a}\n")
    assert [w.message for w in tg.flat.warnings] == ["node 'b' does not contribute to any output"]
    assert tg.flat.warnings[0].pos.line == 7


# --- blocks, repeat, index -----------------------------------------------------------

BLOCKS = """\
params: {layers: 3}
blocks:
  inner:
    params: {w: int}
    inputs: [h]
    nodes:
      fc: {op: linear, in: h, out: "${w}"}
    outputs: [fc]
  layer:
    params: {scale: {type: int, default: 1}}
    inputs: [h, s]
    nodes:
      sub: {block: inner, in: h, w: "${8 * scale}"}
      tag: {op: dropout, p: "${index / 10}"}
    outputs: {main: tag, skip: sub}
nodes:
  body: {block: layer, in: [x, x], repeat: "${layers}"}
  out: {op: add, in: [body, body.skip]}
outputs: {y: out}
"""


def test_nested_blocks_repeat_and_index() -> None:
    tg = check(BLOCKS)
    nodes = tg.flat.nodes
    assert [f"body.{i}.sub.fc" in nodes for i in range(3)] == [True] * 3
    assert [nodes[f"body.{i}.tag"].args.p for i in range(3)] == [0.0, 0.1, 0.2]  # type: ignore[attr-defined]
    assert nodes["body.1.h"].inputs == [Ref("body.0.tag")]  # copies are chained, output i -> input i
    assert nodes["body.1.s"].inputs == [Ref("body.0.sub.fc")]
    assert nodes["out"].inputs == [Ref("body.2.tag"), Ref("body.2.sub.fc")]
    assert set(tg.flat.instances) >= {"body.0", "body.2", "body.2.sub"}


def test_repeat_override() -> None:
    tg = check(BLOCKS, ["layers=5"])
    assert "body.4.sub.fc" in tg.flat.nodes and "body.5.sub.fc" not in tg.flat.nodes


def test_block_call_freeze_freezes_every_node() -> None:
    tg = check(BLOCKS.replace('repeat: "${layers}"', 'repeat: "${layers}", freeze: true'))
    assert all(n.freeze for n in tg.flat.op_nodes() if n.name.startswith("body."))
    assert not tg.flat.nodes["out"].freeze


# --- ties ----------------------------------------------------------------------------


def test_ties_whole_and_by_param() -> None:
    tg = check(
        "nodes:\n  a: {op: linear, in: x, out: 8}\n  b: {op: linear, out: 8, tie: a}\n"
        "  c: {op: linear, out: 8, tie: {weight: a.weight}}\noutputs: {y: c}\n"
    )
    assert tg.ties["b"] == {"weight": ("a", "weight"), "bias": ("a", "bias")}
    assert tg.ties["c"] == {"weight": ("a", "weight")}


def test_tie_to_a_later_node_is_not_a_cycle() -> None:
    tg = check("nodes:\n  a: {op: linear, in: x, out: 8, tie: b}\n  b: {op: linear, out: 8}\noutputs: {y: b}\n")
    assert tg.ties["a"]["weight"] == ("b", "weight")


# --- includes ------------------------------------------------------------------------


def test_include_block_library(tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "blocks.yaml").write_text(
        "graphc: 1\ninclude: [more.yaml]\nblocks:\n  twice:\n    inputs: [h]\n    nodes:\n      a: {block: act, in: h}\n      b: {block: act}\n    outputs: [b]\n"
    )
    (tmp_path / "lib" / "more.yaml").write_text("graphc: 1\nblocks:\n  act:\n    inputs: [h]\n    nodes:\n      r: {op: relu, in: h}\n    outputs: [r]\n")
    main = tmp_path / "main.yaml"
    main.write_text(HEAD + "include: [lib/blocks.yaml]\nnodes:\n  t: {block: twice, in: x}\noutputs: {y: t}\n")
    tg = graphc.check(str(main))
    assert "t.b.r" in tg.flat.nodes


def test_include_of_non_block_content_is_refused(tmp_path: Path) -> None:
    (tmp_path / "lib.yaml").write_text("graphc: 1\nnodes: {}\n")
    main = tmp_path / "main.yaml"
    main.write_text(HEAD + "include: [lib.yaml]\nnodes:\n  a: {op: relu}\noutputs: {y: a}\n")
    with pytest.raises(SpecError, match="may hold only blocks"):
        graphc.check(str(main))


def test_all_errors_of_a_file_at_once() -> None:
    with pytest.raises(GraphcError) as info:
        check("nodes:\n  a: {op: relu, in: q}\n  b: {op: tanhh}\n  c: {op: linear, in: x}\noutputs: {y: c}\n")
    assert [d.pos.line for d in info.value.diagnostics] == [6, 7, 8]


# --- docs/spec.md --------------------------------------------------------------------

DOC_SPECS = [
    block for block in re.findall(r"```yaml\n(.*?)```", (ROOT / "docs" / "spec.md").read_text(), re.S) if re.search(r"^graphc: 1\b", block, re.M)
]


def test_docs_have_complete_examples() -> None:
    assert len(DOC_SPECS) >= 2


@pytest.mark.parametrize("text", DOC_SPECS, ids=[f"example{i}" for i in range(len(DOC_SPECS))])
def test_docs_examples_check(text: str, tmp_path: Path) -> None:
    path = tmp_path / "example.yaml"
    path.write_text(text)
    tg = graphc.check(str(path))
    assert tg.flat.warnings == [] and tg.output_types()


# --- when: and repeat: 0 ----------------------------------------------------------------

WHEN_SPEC = """
graphc: 1
name: when
inputs: {x: {shape: [B, 8]}}
blocks:
  layer:
    params: {d: int}
    inputs: [h]
    nodes:
      proj: {op: linear, in: h, out: "${d}", when: "${index == 0}"}
      fc: {op: linear, in: h, out: "${d}"}
      act: {op: relu}
      sum: {op: add, in: [act, "${'proj' if index == 0 else 'h'}"]}
    outputs: [sum]
nodes:
  body: {block: layer, in: x, repeat: 3, d: 8}
  skip: {block: layer, in: body, repeat: 0, d: 8}
  tail: {op: relu, when: false}
  out: {op: identity}
outputs: {y: out}
"""


def test_when_leaves_nodes_out_and_repeat_zero_passes_inputs_through() -> None:
    tg = graphc.check(WHEN_SPEC)
    names = set(tg.flat.nodes)
    assert "body.0.proj" in names and "body.1.proj" not in names and "body.2.proj" not in names
    assert "tail" not in names
    assert not any(n.startswith("skip.") for n in names), "repeat 0 makes no copy"
    out = tg.flat.nodes["out"]
    assert out.inputs == [Ref("body.2.sum", 0)], "reads the last enabled node, through the repeat-0 call"
    gm = graphc.build(tg, seed=0)
    assert not hasattr(gm.body._modules["1"], "proj")
    assert gm(*graphc.example_inputs(tg)).shape[-1] == 8


def test_reference_to_switched_off_node_is_an_error() -> None:
    with pytest.raises(SpecError, match=r"'proj' is switched off by its `when` \(line \d+\)"):
        graphc.check(WHEN_SPEC.replace("""[act, "${'proj' if index == 0 else 'h'}"]""", "[act, proj]"))


def test_overrides_on_a_loaded_spec_stack_on_its_own() -> None:
    """check(spec, overrides) re-loads a Spec from its source (text here) with both sets."""
    spec = graphc.load_spec((ROOT / "specs" / "mlp.yaml").read_text(), {"hidden": 7})
    tg = graphc.check(spec, ["classes=4"])
    assert tg.params["fc1"]["weight"] == (7, 10)
    assert str(tg.output_types()["logits"]) == "[B, 4]"
