"""A block reads its inputs' shapes: ``${x.shape[1]}`` inside a block body.

An inverted residual block then needs no ``cin`` param: it reads its input channels.  The
spec without ``cin`` must build the very same model (names, shapes, parameter count, and
with the same seed the same weights) as the one that passes ``cin`` by hand.  The mistakes
are golden files in tests/invalid/input_shape_*.yaml.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import graphc
from graphc.spec.expr import ExprError, InputShape, evaluate

ROOT = Path(__file__).resolve().parent.parent
MOBILENET_PARAMS = 3_504_872  # torchvision.models.mobilenet_v2()

WITH_CIN = """\
graphc: 1
name: inverted_residuals
inputs:
  image: {shape: [B, 3, H, W], example: {B: 2, H: 32, W: 32}}
blocks:
  conv_bn_relu6:
    params: {c: int, kernel: int, stride: int, groups: int}
    inputs: [x]
    nodes:
      conv: {op: conv2d, in: x, out: "${c}", kernel: "${kernel}", stride: "${stride}", padding: "${(kernel - 1) // 2}", groups: "${groups}", bias: false}
      bn: {op: batch_norm}
      act: {op: relu6}
    outputs: [act]
  inverted_residual:
    params: {cin: int, c: int, stride: int, t: int}
    inputs: [x]
    nodes:
      expand: {block: conv_bn_relu6, in: x, c: "${(cin if index == 0 else c) * t}", kernel: 1, stride: 1, groups: 1, when: "${t != 1}"}
      dw: {block: conv_bn_relu6, in: "${'expand' if t != 1 else 'x'}", c: "${(cin if index == 0 else c) * t}", kernel: 3, stride: "${stride if index == 0 else 1}", groups: "${(cin if index == 0 else c) * t}"}
      project: {op: conv2d, out: "${c}", kernel: 1, bias: false}
      project_bn: {op: batch_norm}
      sum: {op: add, in: [x, project_bn], when: "${index > 0 or (stride == 1 and cin == c)}"}
    outputs: ["${'sum' if index > 0 or (stride == 1 and cin == c) else 'project_bn'}"]
nodes:
  stem: {block: conv_bn_relu6, in: image, c: 16, kernel: 3, stride: 2, groups: 1}
  s1: {block: inverted_residual, repeat: 1, cin: 16, c: 16, stride: 1, t: 1}
  s2: {block: inverted_residual, repeat: 2, cin: 16, c: 24, stride: 2, t: 6}
  s3: {block: inverted_residual, repeat: 2, cin: 24, c: 24, stride: 1, t: 6}
  pool: {op: adaptive_avg_pool2d, size: 1}
  flat: {op: flatten}
  fc: {op: linear, out: 10}
outputs: {logits: fc}
"""

# the block reads its input channels instead: `x.shape[1]` where it said `cin` (copy 0) or `c`
NO_CIN_BLOCK = """\
  inverted_residual:
    params: {c: int, stride: int, t: int}
    inputs: [x]
    nodes:
      expand: {block: conv_bn_relu6, in: x, c: "${x.shape[1] * t}", kernel: 1, stride: 1, groups: 1, when: "${t != 1}"}
      dw: {block: conv_bn_relu6, in: "${'expand' if t != 1 else 'x'}", c: "${x.shape[1] * t}", kernel: 3, stride: "${stride if index == 0 else 1}", groups: "${x.shape[1] * t}"}
      project: {op: conv2d, out: "${c}", kernel: 1, bias: false}
      project_bn: {op: batch_norm}
      sum: {op: add, in: [x, project_bn], when: "${x.shape[1] == c and (stride == 1 or index > 0)}"}
    outputs: ["${'sum' if x.shape[1] == c and (stride == 1 or index > 0) else 'project_bn'}"]
"""


def _without_cin(text: str) -> str:
    start, end = text.index("  inverted_residual:\n"), text.index("\nnodes:\n")
    out = re.sub(r", cin: \d+", "", text[:start] + NO_CIN_BLOCK.rstrip("\n") + text[end:])
    assert not re.search(r"[{ ,(]cin\b", out)  # no param, no use (comments may still say `cin`)
    return out


def _write(tmp_path: Path, text: str, name: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def test_inverted_residual_without_cin_builds_the_same_model(tmp_path: Path) -> None:
    with_cin = graphc.lower_spec(_write(tmp_path, WITH_CIN, "with_cin"), seed=0).module.eval()
    no_cin = graphc.lower_spec(_write(tmp_path, _without_cin(WITH_CIN), "no_cin"), seed=0).module.eval()
    want, got = with_cin.state_dict(), no_cin.state_dict()
    assert list(got) == list(want)
    assert {k: v.shape for k, v in got.items()} == {k: v.shape for k, v in want.items()}
    assert "s3.1.sum.weight" not in got and "s2.0.expand.conv.weight" in got  # the when/outputs choices held
    assert all(torch.equal(got[k], want[k]) for k in want)  # same seed, same construction order
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(no_cin(x), with_cin(x), rtol=0, atol=0)
    for copy in ("s1.0", "s2.0", "s2.1", "s3.1"):
        assert no_cin.get_submodule(copy).code == with_cin.get_submodule(copy).code


def test_zoo_mobilenet_v2_needs_no_cin() -> None:
    """The zoo's MobileNetV2 calls the library's inverted_residual, which reads its input's
    channels (``x.shape[1]``): no stage is told ``cin``, and the model is torchvision's."""
    zoo = ROOT / "specs" / "mobilenet_v2.yaml"
    assert "cin" not in zoo.read_text() and "cin" not in (ROOT / "graphc" / "blocks" / "mobilenet.yaml").read_text()
    assert graphc.summary(zoo).total_params == MOBILENET_PARAMS


def test_symbolic_dims_read_as_their_text(tmp_path: Path) -> None:
    spec = """\
graphc: 1
name: sym
inputs:
  tokens: {shape: [B, 2*T, 16]}
blocks:
  proj:
    inputs: [x]
    nodes:
      fc: {op: linear, in: x, out: "${x.shape[-1] // 2}", doc: "batch ${x.shape[0]}, time ${x.shape[1]}, last ${x.shape[2]}"}
      on: {op: relu, when: "${x.shape[0] == 'B'}"}
    outputs: [on]
nodes:
  p: {block: proj, in: tokens}
outputs: {y: p}
"""
    tg = graphc.check(_write(tmp_path, spec, "sym"))
    fc = tg.flat.nodes["p.fc"]
    assert fc.doc == "batch B, time 2*T, last 16"
    assert tg.params["p.fc"]["weight"] == (8, 16)
    assert "p.on" in tg.flat.nodes


def test_shape_is_read_only_when_an_expression_asks() -> None:
    asked: list[int] = []

    def dims() -> list[int | str]:
        asked.append(1)
        return [4, 8]

    names = {"x": InputShape("x", dims), "t": 2}
    assert evaluate("t * 3", names) == 6 and not asked
    assert evaluate("x.shape[1] * t", names) == 16
    assert evaluate("x.shape[-2] + x.shape[0]", names) == 8
    assert asked == [1]  # typed once, then remembered
    for source, message in [("x.shape", "x.shape[i]"), ("x.shape['a']", "integer index"), ("x.size[0]", "only allowed as x.shape[i]"),
                            ("x.shape[2]", "out of range"), ("y.shape[0]", "'y' is not a block input")]:
        with pytest.raises(ExprError, match=re.escape(message)):
            evaluate(source, names)


def test_a_deep_chain_before_the_block_is_typed_without_recursion(tmp_path: Path) -> None:
    """The input's type is inferred over every node before it, with a stack, not recursion."""
    chain = "".join(f"  r{i}: {{op: relu}}\n" for i in range(1500))
    spec = f"""\
graphc: 1
name: deep
inputs:
  x: {{shape: [B, 12]}}
blocks:
  half:
    inputs: [h]
    nodes:
      fc: {{op: linear, in: h, out: "${{h.shape[1] // 2}}"}}
    outputs: [fc]
nodes:
{chain}  out: {{block: half}}
outputs: {{y: out}}
"""
    tg = graphc.check(_write(tmp_path, spec, "deep"))
    assert tg.params["out.fc"]["weight"] == (6, 12)
