"""THE op table: every registered op x every row of its ``examples``, at both example sizes.

Each row becomes a one-op spec.  The shapes and dtypes inferred symbolically must equal the
real outputs of the lowered module (train and eval mode), a backward pass must reach every
parameter, and ``params``/``buffers``/``flops`` must agree with the module that was built.
Ops registered by any module (attention, recurrent, plugins) are picked up automatically.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

import graphc
from graphc.ops import REGISTRY, Example
from graphc.spec.ir import Ref

CASES = [(name, ex) for name, d in sorted(REGISTRY.items()) for ex in d.cls.examples]
IDS = [f"{name}-{ex.id or i}" for name, d in sorted(REGISTRY.items()) for i, ex in enumerate(d.cls.examples)]


def parse_input(text: str) -> dict[str, Any]:
    """``"B,T:int64<20"`` -> an input definition (dims, dtype, id range)."""
    dims_text, _, rest = text.partition(":")
    dtype, _, high = rest.partition("<")
    shape: list[int | str] = [int(d) if d.strip().isdigit() else d.strip() for d in dims_text.split(",") if d.strip()]
    out: dict[str, Any] = {"shape": shape, "dtype": dtype or "float32"}
    if high:
        out["range"] = [0, int(high)]
    return out


def input_names(op_name: str, count: int) -> list[str]:
    names = REGISTRY[op_name].cls.inputs
    if any(n.startswith("*") for n in names):
        base = names[-1].strip("*")
        return [n.strip("?") for n in names[:-1]] + [f"{base}{i}" for i in range(count - len(names) + 1)]
    return [n.strip("?") for n in names[:count]]


def one_op_spec(op_name: str, ex: Example) -> dict[str, Any]:
    """A spec with the example's inputs feeding one node ``n``, exposing every output."""
    names = input_names(op_name, len(ex.inputs))
    node: dict[str, Any] = {"op": op_name, **ex.args}
    if names:
        node["in"] = names
    outs = REGISTRY[op_name].cls.model_validate(ex.args).output_names()
    outputs = {"y": "n"} if len(outs) == 1 else {f"y{i}": f"n.{o}" for i, o in enumerate(outs)}
    inputs = {n: parse_input(t) for n, t in zip(names, ex.inputs, strict=True)}
    return {
        "graphc": 1,
        "name": f"table_{op_name}",
        "inputs": inputs or {"unused": {"shape": ["B"]}},  # a spec has at least one input
        "nodes": {"n": node},
        "outputs": outputs,
    }


def as_list(result: Any) -> list[torch.Tensor]:
    return list(result.values()) if isinstance(result, dict) else [result]


@pytest.mark.parametrize(("op_name", "ex"), CASES, ids=IDS)
def test_op_table(op_name: str, ex: Example) -> None:
    spec = one_op_spec(op_name, ex)
    tg = graphc.check(spec)
    n_out = len(tg.node("n").outputs)
    for sizes in ex.sizes:
        gm = graphc.build(tg, seed=0)
        xs = graphc.example_inputs(tg, **sizes)
        want = [tg.types[Ref("n", i)] for i in range(n_out)]
        for mode in ("train", "eval"):
            gm.train(mode == "train")
            outs = as_list(gm(*xs))
            assert [tuple(o.shape) for o in outs] == [t.concrete(sizes) for t in want], f"{mode} mode at {sizes}"
            assert [str(o.dtype).removeprefix("torch.") for o in outs] == [t.dtype for t in want]
        check_backward(gm, xs)
        check_counts(gm, tg, sizes)


def check_backward(gm: torch.nn.Module, xs: tuple[torch.Tensor, ...]) -> None:
    """Every trainable parameter gets a finite gradient (when the outputs are float)."""
    gm.train()
    outs = as_list(gm(*xs))
    if not all(o.dtype.is_floating_point for o in outs):
        return
    gen = torch.Generator().manual_seed(1)
    loss = sum((o * torch.randn(o.shape, generator=gen)).sum() for o in outs)
    params = [p for p in gm.parameters() if p.requires_grad]
    if not params:
        return
    assert isinstance(loss, torch.Tensor)
    loss.backward()
    for name, p in gm.named_parameters():
        assert p.grad is not None, f"no gradient reached {name}"
        assert torch.isfinite(p.grad).all(), f"non-finite gradient in {name}"


def check_counts(gm: torch.nn.Module, tg: Any, sizes: dict[str, int]) -> None:
    """``params``/``buffers`` name exactly what was built; ``flops`` is a non-negative int."""
    node = tg.node("n")
    ins = [t for t in tg.in_types(node) if t is not None]
    real_p = {k: tuple(v.shape) for k, v in gm.named_parameters()}
    real_b = {k: tuple(v.shape) for k, v in gm.named_buffers()}
    assert real_p == {f"n.{k}": v for k, v in node.args.params(*ins).items()}
    assert real_b == {f"n.{k}": v for k, v in node.args.buffers(*ins).items()}
    flops = node.args.flops([t.concrete(sizes) for t in ins], [t.concrete(sizes) for t in tg.out_types(node)])
    assert isinstance(flops, int)
    assert flops >= 0


def test_every_op_has_an_example_row() -> None:
    missing = sorted(name for name, d in REGISTRY.items() if not d.cls.examples)
    assert not missing, f"ops without an example row in the op table: {missing}"


def test_every_op_has_a_doc_line_and_family() -> None:
    bad = sorted(name for name, d in REGISTRY.items() if not d.doc or d.cls.family == "misc")
    assert not bad, f"ops without a docstring or family: {bad}"


def test_parse_input() -> None:
    assert parse_input("B,T:int64<20") == {"shape": ["B", "T"], "dtype": "int64", "range": [0, 20]}
    assert parse_input("B,3,H,W") == {"shape": ["B", 3, "H", "W"], "dtype": "float32"}
    assert parse_input("") == {"shape": [], "dtype": "float32"}


BAD = [
    ("concat", {"dim": 1}, ("B,T,4", "B,T,6"), "concat needs equal shapes except in dim 1: [B, T, 4] vs [B, T, 6]"),
    ("matmul", {}, ("B,T,4", "5,6"), "inner dim 4 of [B, T, 4] does not match 5 of [5, 6]"),
    ("split", {"sizes": [2, 2]}, ("B,8",), "sizes [2, 2] add up to 4, but the dim has size 8"),
    ("chunk", {"chunks": 2}, ("B,T",), "dim of size T does not split into 2 equal chunks"),
    ("max_pool2d", {"kernel": 5}, ("B,3,4,4",), "too small for a window of 5"),
    ("max_pool2d", {"kernel": 2}, ("B,L",), "max_pool2d input [N, C, H, W] must have rank 3 or 4"),
    ("upsample", {"scale": 1.5}, ("B,3,H,W",), "a fractional scale 1.5 needs a fixed size, got symbolic 'H'"),
    ("permute", {"dims": [0, 0, 1]}, ("B,T,4",), "not a permutation"),
    ("select", {"dim": 1, "index": 4}, ("B,4",), "index 4 is out of range for dim 1 of [B, 4]"),
    ("pad", {"pad": [1, 1], "mode": "reflect"}, ("B,3,1",), "reflect pad 1 must be smaller than dim 2"),
]


@pytest.mark.parametrize(("op_name", "args", "inputs", "message"), BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_shape_errors_are_clear(op_name: str, args: dict[str, Any], inputs: tuple[str, ...], message: str) -> None:
    spec = one_op_spec(op_name, Example(args, inputs))
    with pytest.raises(graphc.errors.ShapeError) as err:
        graphc.check(spec)
    text = str(err.value)
    assert message in text
    assert "error: nodes.n: " in text  # the node's path and position are added


def test_symbolic_shapes_stay_symbolic() -> None:
    spec = one_op_spec("concat", Example({"dim": 1}, ("B,T,4", "B,T,4")))
    assert str(graphc.check(spec).output_types()["y"]) == "[B, 2*T, 4]"
    spec = one_op_spec("upsample", Example({"scale": 2}, ("B,3,H,W",)))
    assert str(graphc.check(spec).output_types()["y"]) == "[B, 3, 2*H, 2*W]"
    spec = one_op_spec("split", Example({"sizes": [1, -1], "dim": 1}, ("B,T,4",)))
    assert [str(t) for t in graphc.check(spec).output_types().values()] == ["[B, 1, 4]", "[B, T - 1, 4]"]
