"""Stateless tensor ops: arithmetic, shape manipulation, reductions (``call_function``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import Field

from graphc.ops.common import broadcast, norm_dim, prod, promote
from graphc.ops.lazy import torch
from graphc.ops.registry import Example, Onnx, OpArgs, OpError, op
from graphc.shapes import Dim, Sym, TensorType, numel


class _Binary(OpArgs):
    family: ClassVar[str] = "tensor"
    inputs: ClassVar[tuple[str, ...]] = ("a", "b")
    examples: ClassVar[tuple[Example, ...]] = (
        Example({}, ("B,T,4", "B,T,4")),
        Example({}, ("B,T,4", "4"), id="broadcast"),
    )
    fn: ClassVar[str] = "add"

    def infer(self, a: TensorType, b: TensorType) -> TensorType:
        return TensorType(broadcast(a.shape, b.shape), promote(a, b))

    def lower(self, ctx: Any, a: Any, b: Any) -> Any:
        return getattr(torch, self.fn)(a, b)

    def flops(self, ins: Sequence[tuple[int, ...]], outs: Sequence[tuple[int, ...]]) -> int:
        return prod(outs[0])


@op("add")
class Add(_Binary):
    """Elementwise ``a + b`` with broadcasting (residual connections)."""

    onnx: ClassVar[Onnx] = Onnx(("Add",))
    fn: ClassVar[str] = "add"


@op("sub")
class Sub(_Binary):
    """Elementwise ``a - b`` with broadcasting."""

    onnx: ClassVar[Onnx] = Onnx(("Sub",))
    fn: ClassVar[str] = "sub"


@op("mul")
class Mul(_Binary):
    """Elementwise ``a * b`` with broadcasting (gating)."""

    onnx: ClassVar[Onnx] = Onnx(("Mul",))
    fn: ClassVar[str] = "mul"


@op("div")
class Div(_Binary):
    """Elementwise ``a / b`` with broadcasting."""

    onnx: ClassVar[Onnx] = Onnx(("Div",))
    fn: ClassVar[str] = "div"

    def infer(self, a: TensorType, b: TensorType) -> TensorType:
        t = super().infer(a, b)
        return t if t.dtype in ("float16", "bfloat16", "float32", "float64") else TensorType(t.shape, "float32")


@op("flatten")
class Flatten(OpArgs):
    """Merge dims ``start..end`` into one (default: everything but the batch dim)."""

    family: ClassVar[str] = "tensor"
    onnx: ClassVar[Onnx] = Onnx(("Flatten", "Reshape"))
    examples: ClassVar[tuple[Example, ...]] = (Example({}, ("B,3,H,W",)), Example({"start": 0, "end": 1}, ("B,T,4",), id="merge-bt"))
    start: int = 1
    end: int = -1

    def infer(self, x: TensorType) -> TensorType:
        s, e = norm_dim(self.start, x.rank, "start"), norm_dim(self.end, x.rank, "end")
        if s > e:
            raise OpError(f"start {self.start} comes after end {self.end}")
        merged = numel(x.shape[s : e + 1])
        return x.with_shape((*x.shape[:s], merged, *x.shape[e + 1 :]))

    def lower(self, ctx: Any, x: Any) -> Any:
        return torch.flatten(x, self.start, self.end)


@op("reshape")
class Reshape(OpArgs):
    """Reshape to ``shape``: ints, one ``-1``, and symbolic dim names of the input (``[B, T, 4, -1]``)."""

    family: ClassVar[str] = "tensor"
    onnx: ClassVar[Onnx] = Onnx(("Reshape",))
    examples: ClassVar[tuple[Example, ...]] = (
        Example({"shape": ["B", "T", 2, -1]}, ("B,T,8",)),
        Example({"shape": [-1, 12]}, ("B,3,4",), id="flat"),
    )
    shape: list[int | str] = Field(description="target shape")

    def _target(self, x: TensorType) -> list[Dim]:
        syms = {s for d in x.shape if isinstance(d, Sym) for s in d.symbols()}
        out: list[Dim] = []
        for d in self.shape:
            if isinstance(d, str):
                if d not in syms:
                    raise OpError(f"'{d}' is not a symbolic dim of the input {x}")
                out.append(Sym.var(d))
            elif d < -1 or d == 0:
                raise OpError(f"invalid size {d} in shape (use positive sizes and at most one -1)")
            else:
                out.append(d)
        return out

    def infer(self, x: TensorType) -> TensorType:
        target = self._target(x)
        total = numel(x.shape)
        holes = [i for i, d in enumerate(target) if d == -1]
        if len(holes) > 1:
            raise OpError("at most one -1 is allowed in shape")
        known = numel([d for d in target if d != -1])
        if holes:
            if isinstance(total, Sym):
                rest = total // known
                if isinstance(rest, Sym) and rest.terms and next(iter(rest.terms))[0].startswith("("):
                    raise OpError(f"cannot infer -1: {total} is not divisible by {known}")
            elif isinstance(known, int) and total % known:
                raise OpError(f"cannot reshape {x} ({total} elements) into {self.shape}")
            else:
                rest = total // known
            target[holes[0]] = rest
        elif total != known:
            raise OpError(f"cannot reshape {x} ({total} elements) into {self.shape} ({known} elements)")
        return x.with_shape(target)

    def lower(self, ctx: Any, x: Any) -> Any:
        in_t: TensorType = ctx.in_types[0]
        sizes: list[Any] = []
        for d in self._target(in_t):
            if isinstance(d, Sym):
                idx = next((i for i, s in enumerate(in_t.shape) if s == d), None)
                if idx is None:
                    raise OpError(f"symbolic dim '{d}' must appear as a whole dim of the input {in_t}")
                sizes.append(x.size(idx))
            else:
                sizes.append(d)
        return torch.reshape(x, tuple(sizes))
