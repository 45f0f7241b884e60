"""Selection, ordering and comparison ops: ``topk``, ``sort``, ``argmax``, ``gather``, ``eq``, ``where``...

Integer and bool outputs (indices, comparison results) carry no gradient; the op table
skips its backward check for nodes whose outputs are not all floating point, so these ops
need no flag of their own.  ``values`` outputs of ``topk``/``sort`` are differentiable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from math import prod
from typing import Any, ClassVar

from pydantic import Field, PositiveInt

from graphc.ops.common import broadcast, in_type, norm_dim, promote
from graphc.ops.context import LowerContext
from graphc.ops.lazy import torch
from graphc.ops.registry import Example, Facts, Onnx, OpArgs, OpError, Saved, op
from graphc.shapes import FLOAT_DTYPES, TensorType

INT_DTYPES = ("int64", "int32")


def _need_index(t: TensorType, what: str) -> None:
    if t.dtype not in INT_DTYPES:
        raise OpError(f"{what} must be an int64 or int32 tensor, got {t.dtype} {t}")


def _declared_high(facts: Facts) -> int | None:
    """The exclusive upper bound of the index input's declared value range, if any."""
    r = facts.range_of(1)
    return None if r is None else math.ceil(r[1])


# ordering ---------------------------------------------------------------------------


@op("topk")
class TopK(OpArgs):
    """The ``k`` largest (or smallest) entries along ``dim``: outputs ``values`` and ``indices`` (int64).

    ``k`` is checked against the dim when the dim is a fixed size; against a symbolic dim
    (``T``) it is checked at the example sizes by ``graphc check`` (torch raises at run time
    for an input shorter than ``k``).
    """

    family: ClassVar[str] = "select"
    onnx: ClassVar[Onnx] = Onnx(("TopK",))
    examples: ClassVar[tuple[Example, ...]] = (
        Example({"k": 3}, ("B,T,8",)),
        Example({"k": 2, "dim": 1, "largest": False}, ("B,T,4",), id="smallest-symbolic"),
    )
    k: PositiveInt = Field(description="how many entries to keep")
    dim: int = -1
    largest: bool = Field(True, description="keep the largest (else the smallest)")
    sorted: bool = Field(True, description="return them in sorted order")

    def output_names(self) -> list[str]:
        return ["values", "indices"]

    def infer(self, x: TensorType) -> list[TensorType]:
        d = norm_dim(self.dim, x.rank)
        n = x.shape[d]
        if isinstance(n, int) and self.k > n:
            raise OpError(f"k {self.k} is larger than dim {d} of {x}")
        shape = (*x.shape[:d], self.k, *x.shape[d + 1 :])
        return [x.with_shape(shape), TensorType(shape, "int64")]

    def check(self, facts: Facts, x: TensorType) -> None:
        n = x.shape[norm_dim(self.dim, x.rank)]
        if not isinstance(n, int) and self.k > facts.size(n):
            raise OpError(f"k {self.k} is larger than dim '{n}' at its example size {facts.size(n)}")

    def saves(self, ins: Sequence[tuple[int, ...] | None], outs: Sequence[tuple[int, ...]], itemsize: int) -> Saved:
        return Saved(extra=8 * prod(outs[0]))  # the indices (int64), to scatter the gradient back

    def lower(self, ctx: LowerContext, x: Any) -> Any:
        out = torch.topk(x, self.k, self.dim, self.largest, self.sorted)
        return [out[0], out[1]]

    def flops(self, ins: Sequence[tuple[int, ...]], outs: Sequence[tuple[int, ...]]) -> int:
        return prod(ins[0])


@op("sort")
class Sort(OpArgs):
    """Sort along ``dim``: outputs ``values`` and ``indices`` (int64, where each value came from)."""

    family: ClassVar[str] = "select"
    onnx: ClassVar[Onnx] = Onnx(("TopK",))
    examples: ClassVar[tuple[Example, ...]] = (Example({}, ("B,T,8",)), Example({"dim": 1, "descending": True}, ("B,T,4",), id="desc"))
    dim: int = -1
    descending: bool = False

    def output_names(self) -> list[str]:
        return ["values", "indices"]

    def infer(self, x: TensorType) -> list[TensorType]:
        norm_dim(self.dim, x.rank)
        return [x, TensorType(x.shape, "int64")]

    def saves(self, ins: Sequence[tuple[int, ...] | None], outs: Sequence[tuple[int, ...]], itemsize: int) -> Saved:
        return Saved(extra=8 * prod(outs[0]))  # the indices (int64), to scatter the gradient back

    def lower(self, ctx: LowerContext, x: Any) -> Any:
        out = torch.sort(x, self.dim, self.descending)
        return [out[0], out[1]]


@op("argsort")
class Argsort(OpArgs):
    """Indices (int64) that sort ``x`` along ``dim``."""

    family: ClassVar[str] = "select"
    onnx: ClassVar[Onnx] = Onnx(("TopK",))
    examples: ClassVar[tuple[Example, ...]] = (Example({}, ("B,T,8",)), Example({"dim": 0, "descending": True}, ("B,4",), id="desc"))
    dim: int = -1
    descending: bool = False

    def infer(self, x: TensorType) -> TensorType:
        norm_dim(self.dim, x.rank)
        return TensorType(x.shape, "int64")

    def lower(self, ctx: LowerContext, x: Any) -> Any:
        return torch.argsort(x, self.dim, self.descending)


class _ArgReduce(OpArgs):
    family: ClassVar[str] = "select"
    examples: ClassVar[tuple[Example, ...]] = (
        Example({"dim": -1}, ("B,T,8",)),
        Example({"dim": 1, "keepdim": True}, ("B,T,4",), id="keep"),
        Example({}, ("B,4",), id="flat"),
    )
    fn: ClassVar[str] = "argmax"
    dim: int | None = Field(None, description="reduced dim; default: the index into the flattened input")
    keepdim: bool = Field(False, description="keep the reduced dim with size 1")

    def infer(self, x: TensorType) -> TensorType:
        if self.dim is None:
            return TensorType((1,) * x.rank if self.keepdim else (), "int64")
        d = norm_dim(self.dim, x.rank)
        shape = [1 if i == d else s for i, s in enumerate(x.shape)] if self.keepdim else [s for i, s in enumerate(x.shape) if i != d]
        return TensorType(tuple(shape), "int64")

    def lower(self, ctx: LowerContext, x: Any) -> Any:
        return getattr(torch, self.fn)(x, self.dim, self.keepdim)

    def flops(self, ins: Sequence[tuple[int, ...]], outs: Sequence[tuple[int, ...]]) -> int:
        return prod(ins[0])


@op("argmax")
class Argmax(_ArgReduce):
    """Index (int64) of the largest entry along ``dim`` (the first one on ties)."""

    onnx: ClassVar[Onnx] = Onnx(("ArgMax",))
    fn: ClassVar[str] = "argmax"


@op("argmin")
class Argmin(_ArgReduce):
    """Index (int64) of the smallest entry along ``dim`` (the first one on ties)."""

    onnx: ClassVar[Onnx] = Onnx(("ArgMin",))
    fn: ClassVar[str] = "argmin"


# indexing ---------------------------------------------------------------------------


@op("index_select")
class IndexSelect(OpArgs):
    """Entries ``index`` of ``dim``, in that order: a literal list (``index: [0, 2]``) or a 1-D int tensor input.

    Literal indices are checked against a fixed-size dim and may then be negative; against a
    symbolic dim they must be non-negative (torch raises at run time for one past the end).
    """

    family: ClassVar[str] = "select"
    inputs: ClassVar[tuple[str, ...]] = ("x", "index?")
    onnx: ClassVar[Onnx] = Onnx(("Gather",))
    examples: ClassVar[tuple[Example, ...]] = (
        Example({"dim": -1, "index": [3, 0, 0, -1]}, ("B,T,4",)),
        Example({"dim": 1}, ("B,T,4", "3:int64<2"), sizes=({"B": 2, "T": 5}, {"B": 3, "T": 7}), id="tensor"),
    )
    dim: int = Field(description="the dim to pick from")
    index: list[int] | None = Field(None, min_length=1, description="literal indices; else the second input")

    def _literal(self, x: TensorType) -> list[int]:
        """The literal indices, non-negative (``torch.index_select`` takes no negative index)."""
        assert self.index is not None
        d = norm_dim(self.dim, x.rank)
        n = x.shape[d]
        if not isinstance(n, int):
            if any(i < 0 for i in self.index):
                raise OpError(f"a negative index needs a fixed-size dim, got symbolic '{n}' (dim {d} of {x})")
            return list(self.index)
        bad = [i for i in self.index if not -n <= i < n]
        if bad:
            raise OpError(f"index {bad[0]} is out of range for dim {d} of {x}")
        return [i % n for i in self.index]

    def infer(self, x: TensorType, index: TensorType | None = None) -> TensorType:
        d = norm_dim(self.dim, x.rank)
        if (index is None) == (self.index is None):
            raise OpError("give the indices either as 'index: [...]' or as a second input, not both or neither")
        if self.index is not None:
            count: Any = len(self._literal(x))
        else:
            assert index is not None
            _need_index(index, "index")
            if index.rank != 1:
                raise OpError(f"index must be 1-D, got {index}")
            count = index.shape[0]
        return x.with_shape((*x.shape[:d], count, *x.shape[d + 1 :]))

    def check(self, facts: Facts, x: TensorType, index: TensorType | None = None) -> None:
        n = facts.size(x.shape[norm_dim(self.dim, x.rank)])
        top = max(self.index) + 1 if self.index is not None else _declared_high(facts)
        if top is not None and top > n:
            raise OpError(f"index {top - 1} is out of range for dim {self.dim} of {x} at its example size {n}")

    def saves(self, ins: Sequence[tuple[int, ...] | None], outs: Sequence[tuple[int, ...]], itemsize: int) -> Saved:
        return Saved(inputs=(1,) if len(ins) > 1 else ())  # the index

    def lower(self, ctx: LowerContext, x: Any, index: Any = None) -> Any:
        if self.index is not None:  # a literal in the graph (no buffer), on x's device; exports as a Gather of a constant
            index = x.new_tensor(self._literal(in_type(ctx)), dtype=torch.int64)
        return torch.index_select(x, self.dim, index)


@op("gather")
class Gather(OpArgs):
    """``out[i][j][k] = x[i][index[i][j][k]][k]`` along ``dim`` (torch.gather): the output has index's shape.

    ``index`` has x's rank; along every other dim its size must not exceed x's: equal
    symbolic sizes, or fixed sizes no larger (a symbolic size against another is refused,
    since it cannot be proven).
    """

    family: ClassVar[str] = "select"
    inputs: ClassVar[tuple[str, ...]] = ("x", "index")
    onnx: ClassVar[Onnx] = Onnx(("GatherElements",))
    examples: ClassVar[tuple[Example, ...]] = (
        Example({"dim": -1}, ("B,T,8", "B,T,3:int64<8")),
        Example({"dim": 1}, ("B,T,4", "B,2,4:int64<2"), sizes=({"B": 2, "T": 5}, {"B": 3, "T": 7}), id="dim1"),
    )
    dim: int = Field(description="the dim indexed by index's values")

    def infer(self, x: TensorType, index: TensorType) -> TensorType:
        d = norm_dim(self.dim, x.rank)
        _need_index(index, "index")
        if index.rank != x.rank:
            raise OpError(f"index {index} must have the rank of x {x}")
        for i, (a, b) in enumerate(zip(index.shape, x.shape, strict=True)):
            fits = a == b or (isinstance(a, int) and isinstance(b, int) and a <= b)
            if i != d and not fits:
                raise OpError(f"dim {i} of index {index} must not exceed dim {i} of x {x}")
        return TensorType(index.shape, x.dtype)

    def check(self, facts: Facts, x: TensorType, index: TensorType) -> None:
        n = facts.size(x.shape[norm_dim(self.dim, x.rank)])
        top = _declared_high(facts)
        if top is not None and top > n:
            raise OpError(f"index values up to {top - 1} are out of range for dim {self.dim} of {x} at its example size {n}")

    def saves(self, ins: Sequence[tuple[int, ...] | None], outs: Sequence[tuple[int, ...]], itemsize: int) -> Saved:
        return Saved(inputs=(1,))  # the index

    def lower(self, ctx: LowerContext, x: Any, index: Any) -> Any:
        return torch.gather(x, self.dim, index)


# comparison and where ---------------------------------------------------------------


class _Compare(OpArgs):
    family: ClassVar[str] = "select"
    inputs: ClassVar[tuple[str, ...]] = ("a", "b?")
    examples: ClassVar[tuple[Example, ...]] = (
        Example({}, ("B,T,4", "B,T,4")),
        Example({}, ("B,T,4", "4"), id="broadcast"),
        Example({"value": 0}, ("B,T:int64<2",), id="scalar"),
    )
    fn: ClassVar[str] = "eq"
    value: float | None = Field(None, description="compare with this number instead of a second input (``eq(mask, 0)``)")

    def infer(self, a: TensorType, b: TensorType | None = None) -> TensorType:
        if (b is None) == (self.value is None):
            raise OpError("compare with either a second input or 'value', not both or neither")
        return TensorType(a.shape if b is None else broadcast(a.shape, b.shape), "bool")

    def lower(self, ctx: LowerContext, a: Any, b: Any = None) -> Any:
        return getattr(torch, self.fn)(a, self.value if b is None else b)

    def flops(self, ins: Sequence[tuple[int, ...]], outs: Sequence[tuple[int, ...]]) -> int:
        return prod(outs[0])


@op("eq")
class Eq(_Compare):
    """``a == b`` elementwise with broadcasting, as bool (``eq(attention_mask, 0)`` is a padding mask)."""

    onnx: ClassVar[Onnx] = Onnx(("Equal",))
    fn: ClassVar[str] = "eq"


@op("ne")
class Ne(_Compare):
    """``a != b`` elementwise with broadcasting, as bool."""

    onnx: ClassVar[Onnx] = Onnx(("Equal", "Not"))
    fn: ClassVar[str] = "ne"


@op("lt")
class Lt(_Compare):
    """``a < b`` elementwise with broadcasting, as bool."""

    onnx: ClassVar[Onnx] = Onnx(("Less",))
    fn: ClassVar[str] = "lt"


@op("le")
class Le(_Compare):
    """``a <= b`` elementwise with broadcasting, as bool."""

    onnx: ClassVar[Onnx] = Onnx(("LessOrEqual",))
    fn: ClassVar[str] = "le"


@op("gt")
class Gt(_Compare):
    """``a > b`` elementwise with broadcasting, as bool."""

    onnx: ClassVar[Onnx] = Onnx(("Greater",))
    fn: ClassVar[str] = "gt"


@op("ge")
class Ge(_Compare):
    """``a >= b`` elementwise with broadcasting, as bool."""

    onnx: ClassVar[Onnx] = Onnx(("GreaterOrEqual",))
    fn: ClassVar[str] = "ge"


@op("where")
class Where(OpArgs):
    """``a`` where the bool ``cond`` is true, else ``b`` (or the number ``value``); all three broadcast.

    The result dtype is the promotion of ``a`` and ``b`` (as for ``add``); ``value``
    takes ``a``'s dtype, so ``where(pad, scores, value: -1e9)`` masks scores.
    """

    family: ClassVar[str] = "select"
    inputs: ClassVar[tuple[str, ...]] = ("cond", "a", "b?")
    onnx: ClassVar[Onnx] = Onnx(("Where",))
    examples: ClassVar[tuple[Example, ...]] = (
        Example({}, ("B,T,4:bool", "B,T,4", "B,T,4")),
        Example({}, ("B,T,1:bool", "B,T,4", "4"), id="broadcast"),
        Example({"value": -1.0e9}, ("B,1,T:bool", "B,T,T"), id="scalar"),
    )
    value: float | None = Field(None, description="the value where cond is false, instead of a third input")

    def infer(self, cond: TensorType, a: TensorType, b: TensorType | None = None) -> TensorType:
        if cond.dtype != "bool":
            raise OpError(f"cond must be a bool tensor, got {cond.dtype} {cond}")
        if (b is None) == (self.value is None):
            raise OpError("give the false branch as a third input or as 'value', not both or neither")
        if b is None:
            assert self.value is not None
            if a.dtype not in FLOAT_DTYPES and not (a.dtype in INT_DTYPES and float(self.value).is_integer()):
                raise OpError(f"value {self.value} does not fit a's dtype {a.dtype} (give a third input instead)")
            return TensorType(broadcast(cond.shape, a.shape), a.dtype)
        return TensorType(broadcast(cond.shape, a.shape, b.shape), promote(a, b))

    def saves(self, ins: Sequence[tuple[int, ...] | None], outs: Sequence[tuple[int, ...]], itemsize: int) -> Saved:
        return Saved(inputs=(0,))  # the condition

    def lower(self, ctx: LowerContext, cond: Any, a: Any, b: Any = None) -> Any:
        if b is None:
            assert self.value is not None  # infer refused a missing false branch
            v = self.value if in_type(ctx, 1).dtype in FLOAT_DTYPES else int(self.value)  # an int keeps an int a int
            return torch.where(cond, a, v)
        want = getattr(torch, promote(in_type(ctx, 1), in_type(ctx, 2)))
        return torch.where(cond, a.to(want), b.to(want))

    def flops(self, ins: Sequence[tuple[int, ...]], outs: Sequence[tuple[int, ...]]) -> int:
        return prod(outs[0])
