"""Hostile corpus, diagnostics quality: one mistake reads as one positioned line.

Each case is a spec with one mistake that used to print a line per block copy, cascade into
follow-on errors, be silently accepted (YAML 1.1 booleans, ints as bools) or pass ``check``
and fail only when compiled (position table, vocabulary).  Every case runs ``graphc check``
in a bounded child process (tests/hostile.py): exit 1, no traceback, under the time and
memory bound, exactly the expected number of ``FILE:LINE:COL: error:`` lines, the expected
text, and nothing written next to the spec.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hostile import assert_clean, assert_unchanged, run_guarded, snapshot

HEAD = "graphc: 1\nname: hostile\n"
X = "inputs:\n  x: {shape: [B, 8], example: {B: 2}}\n"
IDS = "inputs:\n  tokens: {shape: [B, T], dtype: int64, example: {B: 2, T: 128}, range: [0, 1000]}\n"


def _mlp(node: str, repeat: str, params: str = "") -> str:
    """A spec calling a one-node block ``mlp`` (whose node is ``node``) with ``repeat``."""
    return (f"{HEAD}{X}blocks:\n  mlp:\n{params}    inputs: [x]\n    nodes:\n      fc: {node}\n      act: {{op: relu}}\n"
            f"    outputs: [act]\nnodes:\n  body: {{block: mlp, repeat: {repeat}}}\noutputs: {{y: body}}\n")


def _node(node: str) -> str:
    return f"{HEAD}{X}nodes:\n  n: {node}\noutputs: {{y: n}}\n"


NESTED = f"""{HEAD}{X}blocks:
  inner:
    inputs: [x]
    nodes:
      fc: {{op: linear, out: 8, biass: true}}
      act: {{op: relu}}
    outputs: [act]
  outer:
    inputs: [x]
    nodes:
      deep: {{block: inner, repeat: 3}}
    outputs: [deep]
nodes:
  body: {{block: outer, repeat: 2}}
outputs: {{y: body}}
"""

PARALLEL = f"""{HEAD}{X}blocks:
  pair:
    inputs: [x]
    nodes:
      fc: {{op: linear, out: 6}}
      both: {{op: add, in: [x, fc]}}
    outputs: [both]
nodes:
  a: {{block: pair, in: x}}
  b: {{block: pair, in: x}}
  c: {{block: pair, in: x}}
  s: {{op: add, in: [a, b]}}
outputs: {{y: s, z: c}}
"""

FAILED_PARAM = f"""{HEAD}params: {{d: "${{64 / 0}}", layers: 8}}
{X}blocks:
  mlp:
    params: {{w: int}}
    inputs: [x]
    nodes:
      fc: {{op: linear, out: "${{w}}"}}
    outputs: [fc]
nodes:
  a: {{op: linear, in: x, out: "${{d}}"}}
  b: {{op: linear, in: a, out: "${{d * 2}}"}}
  body: {{block: mlp, repeat: "${{layers}}", w: "${{d}}"}}
  head: {{op: linear, out: "${{d}}", tie: a}}
outputs: {{y: head}}
"""

CHAIN = f"{HEAD}{X}nodes:\n  n0: {{op: linear, in: x, out: 0}}\n" + "".join(f"  n{i}: {{op: linear, out: 8}}\n" for i in range(1, 30)) + (
    "  head: {op: linear, in: n29, out: 8, tie: n0}\noutputs: {y: head}\n")

TIED_COPY = f"""{HEAD}{X}blocks:
  mlp:
    inputs: [x]
    nodes:
      fc: {{op: linear, out: 8, bias: nope}}
      act: {{op: relu}}
    outputs: [act]
nodes:
  body: {{block: mlp, repeat: 4}}
  head: {{op: linear, out: 8, tie: body.2.fc}}
outputs: {{y: head}}
"""

POS_IN_BLOCK = f"""{HEAD}{IDS}blocks:
  embed:
    inputs: [ids]
    nodes:
      pos: {{op: position_embedding, max_len: 100, dim: 16}}
    outputs: [pos]
nodes:
  e: {{block: embed, in: tokens}}
outputs: {{y: e}}
"""

# (id, spec text, text the one error line must contain, number of error lines)
CASES: list[tuple[str, str, str, int]] = [
    ("repeat6-typo", _mlp("{op: linear, out: 8, biass: true}", "6"), "(in body.0 .. body.5): unknown field 'biass'", 1),
    ("repeat50-unknown-param", _mlp('{op: linear, out: "${width}"}', "50"), "(in body.0 .. body.49): unknown param 'width'", 1),
    ("repeat12-bad-value", _mlp("{op: linear, out: -3}", "12"), "(in body.0 .. body.11): expected greater than 0", 1),
    ("repeat-when-yes", _mlp("{op: linear, out: 8, when: yes}", "5"), "(in body.0 .. body.4): expected true or false", 1),
    ("nested-repeats", NESTED, "(in 6 copies: body.0.deep.0, body.0.deep.1, body.0.deep.2, ..., body.1.deep.2)", 1),
    ("parallel-calls-shape", PARALLEL, "(in a, b, c): shapes [B, 8] and [B, 6] do not broadcast", 1),
    ("failed-param-cascade", FAILED_PARAM, "params.d: division by zero", 1),
    ("failed-node-chain-and-tie", CHAIN, "nodes.n0.out: expected greater than 0", 1),
    ("failed-copy-tied", TIED_COPY, "(in body.0 .. body.3): expected true or false (got 'nope')", 1),
    ("bias-no", _node("{op: linear, in: x, out: 4, bias: no}"), "nodes.n.bias: expected true or false (got 'no')", 1),
    ("bias-off", _node("{op: linear, in: x, out: 4, bias: off}"), "expected true or false (got 'off')", 1),
    ("bias-yes", _node("{op: linear, in: x, out: 4, bias: yes}"), "expected true or false (got 'yes')", 1),
    ("bias-one", _node("{op: linear, in: x, out: 4, bias: 1}"), "expected true or false (got 1)", 1),
    ("bias-quoted-true", _node('{op: linear, in: x, out: 4, bias: "true"}'), "expected true or false (got 'true')", 1),
    ("freeze-on", _node("{op: linear, in: x, out: 4, freeze: on}"), "nodes.n.freeze: expected true or false (got 'on')", 1),
    ("causal-zero", _node("{op: attention, in: x, heads: 2, causal: 0}"), "nodes.n.causal: expected true or false (got 0)", 1),
    ("out-true", _node("{op: linear, in: x, out: true}"), "nodes.n.out: expected a number, not true or false", 1),
    ("eps-false", _node("{op: layer_norm, in: x, eps: false}"), "nodes.n.eps: expected a number (got false)", 1),
    ("op-GELU", _node("{op: GELU, in: x}"), "unknown op 'GELU' (did you mean 'gelu'?)", 1),
    ("op-Linear", _node("{op: Linear, in: x, out: 4}"), "unknown op 'Linear' (did you mean 'linear'?)", 1),
    ("op-LayerNorm", _node("{op: LayerNorm, in: x}"), "unknown op 'LayerNorm' (did you mean 'layer_norm'?)", 1),
    ("max-len-short", f"{HEAD}{IDS}nodes:\n  pos: {{op: position_embedding, in: tokens, max_len: 64, dim: 8}}\noutputs: {{y: pos}}\n",
     "nodes.pos: sequence length T = 128 (its example size) exceeds max_len 64", 1),
    ("max-len-in-block", POS_IN_BLOCK, "(in e): sequence length T = 128 (its example size) exceeds max_len 100", 1),
    ("range-beyond-vocab", f"{HEAD}{IDS}nodes:\n  tok: {{op: embedding, in: tokens, num: 999, dim: 8}}\noutputs: {{y: tok}}\n",
     "range [0, 1000) holds ids up to 999, but num=999 rows take ids 0..998", 1),
    ("range-negative", f"{HEAD}inputs:\n  ids: {{shape: [B], dtype: int64, range: [-5, 10]}}\nnodes:\n  tok: {{op: embedding, in: ids, num: 10, dim: 8}}\n"
     "outputs: {y: tok}\n", "holds negative ids", 1),
]


@pytest.mark.parametrize(("text", "contains", "lines"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_one_mistake_one_line(tmp_path: Path, text: str, contains: str, lines: int) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    before = snapshot(tmp_path)
    r = run_guarded("check", str(spec), cwd=tmp_path)
    assert_clean(r, contains=contains)
    assert len(r.error_lines()) == lines, r.err
    assert all(ln.startswith(f"{spec}:") for ln in r.error_lines()), r.err
    assert_unchanged(before, snapshot(tmp_path))


@pytest.mark.parametrize(
    "node",
    ["{op: linear, in: x, out: 4, bias: false}", '{op: linear, in: x, out: 4, bias: "${2 > 1}", freeze: true}',
     "{op: layer_norm, in: x, eps: 1}", '{op: linear, in: x, out: "${16 / 4}"}'],
)
def test_legit_values_still_pass(tmp_path: Path, node: str) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(_node(node))
    r = run_guarded("check", str(spec), cwd=tmp_path)
    assert r.code == 0, r.err


def test_dead_node_in_copies_warns_once(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(_mlp("{op: linear, out: 8}", "4").replace("      act: {op: relu}\n", "      dead: {op: relu, in: x}\n").replace("[act]", "[fc]"))
    r = run_guarded("check", str(spec), cwd=tmp_path)
    assert r.code == 0, r.err
    warnings = [ln for ln in r.err.splitlines() if ": warning: " in ln]
    assert warnings == [f"{spec}:10:7: warning: node 'dead' (in body.0 .. body.3) does not contribute to any output"]
