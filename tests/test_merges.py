"""Merges of N inputs (``add``, ``mul``, ``maximum``, ``minimum``, ``average``): values
against torch, the two-input forms kept, and the ONNX export verified in onnxruntime."""

from __future__ import annotations

from functools import reduce
from pathlib import Path
from typing import Any

import pytest
import torch

import graphc
from graphc.errors import GraphcError

HEAD = "graphc: 1\nname: merge\ninputs:\n  a: {shape: [B, T, 4]}\n  b: {shape: [B, T, 4]}\n  c: {shape: [4]}\n  d: {shape: [B, 1, 4]}\n"
TORCH: dict[str, Any] = {
    "add": lambda xs: reduce(torch.add, xs),
    "mul": lambda xs: reduce(torch.mul, xs),
    "maximum": lambda xs: reduce(torch.maximum, xs),
    "minimum": lambda xs: reduce(torch.minimum, xs),
    "average": lambda xs: reduce(torch.add, xs) / len(xs),
}


def _spec(op: str) -> str:
    return HEAD + f"nodes:\n  m: {{op: {op}, in: [a, b, c, d]}}\noutputs: {{y: m}}\n"


@pytest.mark.parametrize("op", sorted(TORCH))
def test_merge_of_four_matches_torch(op: str) -> None:
    tg = graphc.check(_spec(op))
    assert tg.types[tg.flat.outputs["y"]].concrete({"B": 2, "T": 3}) == (2, 3, 4)
    xs = graphc.example_inputs(tg, B=2, T=3)
    got = graphc.build(tg, seed=0)(*xs)
    torch.testing.assert_close(got, TORCH[op](list(xs)))


@pytest.mark.parametrize("op", sorted(TORCH))
def test_merge_of_four_exports_and_verifies(op: str, tmp_path: Path) -> None:
    res = graphc.export_onnx(_spec(op), tmp_path / "m.onnx")
    assert res.verify is not None and res.verify.passed and set(res.verify.outputs) == {"y"}


def test_add_of_two_by_name_still_works() -> None:
    tg = graphc.check(HEAD + "nodes:\n  m: {op: add, in: {a: b, b: a}}\noutputs: {y: m}\n")
    assert [r.node for r in tg.flat.nodes["m"].inputs] == ["b", "a"]


def test_merge_needs_two_inputs() -> None:
    with pytest.raises(GraphcError, match=r"op 'maximum' takes at least 2 input\(s\)"):
        graphc.check(HEAD + "nodes:\n  m: {op: maximum, in: [a]}\noutputs: {y: m}\n")


def test_average_needs_floats() -> None:
    spec = "graphc: 1\nname: merge\ninputs:\n  i: {shape: [B], dtype: int64}\n  j: {shape: [B], dtype: int64}\n"
    with pytest.raises(GraphcError, match="average needs floating-point inputs"):
        graphc.check(spec + "nodes:\n  m: {op: average, in: [i, j]}\noutputs: {y: m}\n")
