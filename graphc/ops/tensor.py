"""Stateless tensor ops: arithmetic, shape manipulation, reductions (``call_function``)."""

from __future__ import annotations

from collections.abc import Sequence
from math import prod
from typing import Any, ClassVar, Literal

from pydantic import Field, PositiveInt

from graphc.ops.common import broadcast, in_type, norm_dim, promote
from graphc.ops.context import LowerContext
from graphc.ops.lazy import rt, torch
from graphc.ops.registry import Example, Onnx, OpArgs, OpError, Saved, op
from graphc.shapes import FLOAT_DTYPES, Dim, Opaque, Sym, TensorType, numel


class _View(OpArgs):
    """An op whose output is a view of its input: it keeps nothing and allocates nothing."""

    def saves(self, ins: Sequence[tuple[int, ...] | None], outs: Sequence[tuple[int, ...]], itemsize: int) -> Saved:
        return Saved()

    def view_of(self) -> int | None:
        return 0


class _Binary(OpArgs):
    family: ClassVar[str] = "tensor"
    inputs: ClassVar[tuple[str, ...]] = ("a", "b")
    examples: ClassVar[tuple[Example, ...]] = (
        Example({}, ("B,T,4", "B,T,4")),
        Example({}, ("B,T,4", "4"), id="broadcast"),
    )
    fn: ClassVar[str] = "add"
    keeps_inputs: ClassVar[bool] = False  # its backward reads its inputs (mul, div, maximum), not just the gradient (add)

    def saves(self, ins: Sequence[tuple[int, ...] | None], outs: Sequence[tuple[int, ...]], itemsize: int) -> Saved:
        return Saved(inputs=tuple(range(len(ins))) if self.keeps_inputs else ())

    def infer(self, a: TensorType, b: TensorType) -> TensorType:
        return TensorType(broadcast(a.shape, b.shape), promote(a, b))

    def lower(self, ctx: LowerContext, a: Any, b: Any) -> Any:
        return getattr(torch, self.fn)(a, b)

    def flops(self, ins: Sequence[tuple[int, ...]], outs: Sequence[tuple[int, ...]]) -> int:
        return prod(outs[0])


class _Merge(OpArgs):
    """Elementwise merge of two or more inputs, broadcast together (``in: [a, b, c, d]``).

    Folded left to right with the binary torch function, so two inputs lower to exactly one
    ``torch.<fn>(a, b)`` call (the same code as a binary op) and N inputs to N-1 calls.
    """

    family: ClassVar[str] = "tensor"
    inputs: ClassVar[tuple[str, ...]] = ("a", "b", "*more")
    examples: ClassVar[tuple[Example, ...]] = (
        Example({}, ("B,T,4", "B,T,4")),
        Example({}, ("B,T,4", "4"), id="broadcast"),
        Example({}, ("B,T,4", "B,T,4", "4", "B,1,4"), id="four"),
    )
    fn: ClassVar[str] = "add"
    keeps_inputs: ClassVar[bool] = False  # its backward reads its inputs (mul, div, maximum), not just the gradient (add)

    def saves(self, ins: Sequence[tuple[int, ...] | None], outs: Sequence[tuple[int, ...]], itemsize: int) -> Saved:
        return Saved(inputs=tuple(range(len(ins))) if self.keeps_inputs else ())

    def infer(self, *xs: TensorType) -> TensorType:
        return TensorType(broadcast(*(x.shape for x in xs)), promote(*xs))

    def lower(self, ctx: LowerContext, *xs: Any) -> Any:
        out = xs[0]
        for x in xs[1:]:
            out = getattr(torch, self.fn)(out, x)
        return out

    def flops(self, ins: Sequence[tuple[int, ...]], outs: Sequence[tuple[int, ...]]) -> int:
        return (len(ins) - 1) * prod(outs[0])


@op("add")
class Add(_Merge):
    """Elementwise sum of two or more inputs with broadcasting (residual connections, ``in: [a, b, c]``)."""

    onnx: ClassVar[Onnx] = Onnx(("Add",))
    fn: ClassVar[str] = "add"


@op("mul")
class Mul(_Merge):
    """Elementwise product of two or more inputs with broadcasting (gating)."""

    onnx: ClassVar[Onnx] = Onnx(("Mul",))
    fn: ClassVar[str] = "mul"
    keeps_inputs: ClassVar[bool] = True


@op("maximum")
class Maximum(_Merge):
    """Elementwise maximum of two or more inputs with broadcasting (``max`` reduces over dims)."""

    onnx: ClassVar[Onnx] = Onnx(("Max",))
    fn: ClassVar[str] = "maximum"
    keeps_inputs: ClassVar[bool] = True


@op("minimum")
class Minimum(_Merge):
    """Elementwise minimum of two or more inputs with broadcasting (``min`` reduces over dims)."""

    onnx: ClassVar[Onnx] = Onnx(("Min",))
    fn: ClassVar[str] = "minimum"
    keeps_inputs: ClassVar[bool] = True


@op("average")
class Average(_Merge):
    """Elementwise mean of two or more inputs with broadcasting (``mean`` reduces over dims)."""

    onnx: ClassVar[Onnx] = Onnx(("Add", "Div"), atol=1e-6)
    fn: ClassVar[str] = "add"

    def infer(self, *xs: TensorType) -> TensorType:
        t = super().infer(*xs)
        if t.dtype not in FLOAT_DTYPES:
            raise OpError(f"average needs floating-point inputs, got {', '.join(x.dtype for x in xs)}")
        return t

    def lower(self, ctx: LowerContext, *xs: Any) -> Any:
        return torch.div(super().lower(ctx, *xs), len(xs))

    def flops(self, ins: Sequence[tuple[int, ...]], outs: Sequence[tuple[int, ...]]) -> int:
        return len(ins) * prod(outs[0])


@op("sub")
class Sub(_Binary):
    """Elementwise ``a - b`` with broadcasting."""

    onnx: ClassVar[Onnx] = Onnx(("Sub",))
    fn: ClassVar[str] = "sub"


@op("div")
class Div(_Binary):
    """Elementwise ``a / b`` with broadcasting."""

    onnx: ClassVar[Onnx] = Onnx(("Div",))
    fn: ClassVar[str] = "div"
    keeps_inputs: ClassVar[bool] = True

    def infer(self, a: TensorType, b: TensorType) -> TensorType:
        t = super().infer(a, b)
        return t if t.dtype in FLOAT_DTYPES else TensorType(t.shape, "float32")


@op("flatten")
class Flatten(_View):
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

    def lower(self, ctx: LowerContext, x: Any) -> Any:
        return torch.flatten(x, self.start, self.end)


@op("reshape")
class Reshape(_View):
    """Reshape to ``shape``: ints, one ``-1``, and symbolic dim names of the input (``[B, T, 4, -1]``)."""

    family: ClassVar[str] = "tensor"
    onnx: ClassVar[Onnx] = Onnx(("Reshape",))
    examples: ClassVar[tuple[Example, ...]] = (
        Example({"shape": ["B", "T", 2, -1]}, ("B,T,8",)),
        Example({"shape": [-1, 12]}, ("B,3,4",), id="flat"),
    )
    shape: list[int | str] = Field(description="target shape")

    def _target(self, x: TensorType) -> list[Dim]:
        atoms = {str(a): a for d in x.shape if isinstance(d, Sym) for a in d.atoms()}
        out: list[Dim] = []
        for d in self.shape:
            if isinstance(d, str):
                if d not in atoms:
                    raise OpError(f"'{d}' is not a symbolic dim of the input {x}")
                out.append(Sym.atom(atoms[d]))
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
                if isinstance(rest, Sym) and rest.terms and isinstance(next(iter(rest.terms))[0], Opaque):
                    raise OpError(f"cannot infer -1: {total} is not divisible by {known}")
            elif not isinstance(known, int) or total % known:
                raise OpError(f"cannot reshape {x} ({total} elements) into {self.shape}")
            else:
                rest = total // known
            target[holes[0]] = rest
        elif total != known:
            raise OpError(f"cannot reshape {x} ({total} elements) into {self.shape} ({known} elements)")
        return x.with_shape(target)

    def lower(self, ctx: LowerContext, x: Any) -> Any:
        in_t: TensorType = in_type(ctx)
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


@op("permute")
class Permute(_View):
    """Reorder dims: output dim ``i`` is input dim ``dims[i]`` (``[0, 2, 1]`` swaps the last two)."""

    family: ClassVar[str] = "tensor"
    onnx: ClassVar[Onnx] = Onnx(("Transpose",))
    examples: ClassVar[tuple[Example, ...]] = (Example({"dims": [0, 2, 1]}, ("B,T,4",)), Example({"dims": [0, 2, 3, 1]}, ("B,3,H,W",), id="nchw-nhwc"))
    dims: list[int] = Field(description="a permutation of the input's dims (negative allowed)")

    def _dims(self, x: TensorType) -> list[int]:
        if len(self.dims) != x.rank:
            raise OpError(f"dims {self.dims} must list all {x.rank} dims of {x}")
        dims = [norm_dim(d, x.rank) for d in self.dims]
        if sorted(dims) != list(range(x.rank)):
            raise OpError(f"dims {self.dims} is not a permutation of the dims of {x}")
        return dims

    def infer(self, x: TensorType) -> TensorType:
        return x.with_shape([x.shape[d] for d in self._dims(x)])

    def lower(self, ctx: LowerContext, x: Any) -> Any:
        return torch.permute(x, self._dims(in_type(ctx)))


@op("transpose")
class Transpose(_View):
    """Swap two dims (default: the last two)."""

    family: ClassVar[str] = "tensor"
    onnx: ClassVar[Onnx] = Onnx(("Transpose",))
    examples: ClassVar[tuple[Example, ...]] = (Example({}, ("B,T,4",)), Example({"dim0": 0, "dim1": 1}, ("B,T,4",), id="bt"))
    dim0: int = -2
    dim1: int = -1

    def infer(self, x: TensorType) -> TensorType:
        a, b = norm_dim(self.dim0, x.rank, "dim0"), norm_dim(self.dim1, x.rank, "dim1")
        shape = list(x.shape)
        shape[a], shape[b] = shape[b], shape[a]
        return x.with_shape(shape)

    def lower(self, ctx: LowerContext, x: Any) -> Any:
        return torch.transpose(x, self.dim0, self.dim1)


def _same_except(xs: Sequence[TensorType], skip: int | None, what: str) -> None:
    """All inputs have equal shapes, except along dim ``skip`` (concat)."""
    first = xs[0]
    for t in xs[1:]:
        same = t.rank == first.rank and all(i == skip or a == b for i, (a, b) in enumerate(zip(t.shape, first.shape, strict=True)))
        if not same:
            but = f" except in dim {skip}" if skip is not None else ""
            raise OpError(f"{what} needs equal shapes{but}: {first} vs {t}")


@op("concat")
class Concat(OpArgs):
    """Join tensors along an existing dim (sizes add up: ``T + 2*T`` stays symbolic)."""

    family: ClassVar[str] = "tensor"
    inputs: ClassVar[tuple[str, ...]] = ("*xs",)
    onnx: ClassVar[Onnx] = Onnx(("Concat",))
    examples: ClassVar[tuple[Example, ...]] = (
        Example({"dim": -1}, ("B,T,4", "B,T,6")),
        Example({"dim": 1}, ("B,T,4", "B,T,4", "B,3,4"), id="three"),
    )
    dim: int = -1

    def infer(self, *xs: TensorType) -> TensorType:
        d = norm_dim(self.dim, xs[0].rank)
        _same_except(xs, d, "concat")
        total: Dim = 0
        for t in xs:
            total = t.shape[d] + total
        return TensorType((*xs[0].shape[:d], total, *xs[0].shape[d + 1 :]), promote(*xs))

    def saves(self, ins: Sequence[tuple[int, ...] | None], outs: Sequence[tuple[int, ...]], itemsize: int) -> Saved:
        return Saved()  # backward slices the gradient: no input needed

    def lower(self, ctx: LowerContext, *xs: Any) -> Any:
        return torch.cat(list(xs), self.dim)


@op("stack")
class Stack(OpArgs):
    """Join equal-shaped tensors along a new dim."""

    family: ClassVar[str] = "tensor"
    inputs: ClassVar[tuple[str, ...]] = ("*xs",)
    onnx: ClassVar[Onnx] = Onnx(("Unsqueeze", "Concat"))
    examples: ClassVar[tuple[Example, ...]] = (Example({"dim": 1}, ("B,4", "B,4", "B,4")), Example({"dim": -1}, ("B,T", "B,T"), id="last"))
    dim: int = 0

    def infer(self, *xs: TensorType) -> TensorType:
        _same_except(xs, None, "stack")
        d = norm_dim(self.dim, xs[0].rank + 1)
        return TensorType((*xs[0].shape[:d], len(xs), *xs[0].shape[d:]), promote(*xs))

    def saves(self, ins: Sequence[tuple[int, ...] | None], outs: Sequence[tuple[int, ...]], itemsize: int) -> Saved:
        return Saved()  # backward slices the gradient: no input needed

    def lower(self, ctx: LowerContext, *xs: Any) -> Any:
        return torch.stack(list(xs), self.dim)


class _MultiOut(_View):
    """Ops with one output per piece, referenced as ``node.0``, ``node.1``, ..."""

    family: ClassVar[str] = "tensor"
    onnx: ClassVar[Onnx] = Onnx(("Split", "Slice"))
    dim: int = -1

    def pieces(self) -> int:
        raise NotImplementedError

    def output_names(self) -> list[str]:
        return [str(i) for i in range(self.pieces())]

    def piece_sizes(self, n: Dim) -> list[Dim]:
        raise NotImplementedError

    def infer(self, x: TensorType) -> list[TensorType]:
        d = norm_dim(self.dim, x.rank)
        return [x.with_shape((*x.shape[:d], s, *x.shape[d + 1 :])) for s in self.piece_sizes(x.shape[d])]


@op("split")
class Split(_MultiOut):
    """Cut ``dim`` into pieces of the given sizes (one output each: ``split.0``, ``split.1``...).

    One size may be ``-1``: the rest of the dim (``[8, -1]`` of a ``T`` dim gives ``8`` and ``T - 8``).
    """

    examples: ClassVar[tuple[Example, ...]] = (
        Example({"sizes": [2, 6]}, ("B,T,8",)),
        Example({"sizes": [1, -1], "dim": 1}, ("B,T,4",), id="rest"),
    )
    sizes: list[int] = Field(min_length=1, description="piece sizes along dim; at most one -1")

    def pieces(self) -> int:
        return len(self.sizes)

    def piece_sizes(self, n: Dim) -> list[Dim]:
        holes = [i for i, s in enumerate(self.sizes) if s == -1]
        if len(holes) > 1 or any(s == 0 or s < -1 for s in self.sizes):
            raise OpError(f"sizes {self.sizes} must be positive, with at most one -1")
        known = sum(s for s in self.sizes if s > 0)
        rest = n - known
        if holes:
            if isinstance(rest, int) and rest < 1:
                raise OpError(f"sizes {self.sizes} leave nothing for -1 of a dim of size {n}")
            return [rest if s == -1 else s for s in self.sizes]
        if rest != 0:
            raise OpError(f"sizes {self.sizes} add up to {known}, but the dim has size {n}")
        return list(self.sizes)

    def lower(self, ctx: LowerContext, x: Any) -> Any:
        t: TensorType = in_type(ctx)
        sizes = self.piece_sizes(t.shape[norm_dim(self.dim, t.rank)])
        if any(isinstance(s, Sym) for s in sizes):  # the -1 piece: let torch size it from the input
            return _split_rest(x, self.sizes, self.dim)
        out = torch.split(x, sizes, self.dim)
        return [out[i] for i in range(len(sizes))]


def _split_rest(x: Any, sizes: list[int], dim: int) -> list[Any]:
    """Pieces by narrowing, so a ``-1`` piece follows the input's runtime size."""
    out = []
    start: Any = 0
    for i, s in enumerate(sizes):
        if s == -1:
            after = sum(sizes[i + 1 :])
            end: Any = x.size(dim) - after
            out.append(torch.narrow(x, dim, start, end - start))
            start = end
        else:
            out.append(torch.narrow(x, dim, start, s))
            start = start + s
    return out


@op("chunk")
class Chunk(_MultiOut):
    """Cut ``dim`` into ``chunks`` equal pieces (``chunk.0`` ...); the size must divide evenly."""

    examples: ClassVar[tuple[Example, ...]] = (Example({"chunks": 2}, ("B,T,8",)), Example({"chunks": 3, "dim": 1}, ("B,6,4",), id="dim1"))
    chunks: int = Field(ge=1, description="number of pieces")

    def pieces(self) -> int:
        return self.chunks

    def piece_sizes(self, n: Dim) -> list[Dim]:
        ok = n % self.chunks == 0 if isinstance(n, int) else n.divisible_by(self.chunks)
        if not ok:
            raise OpError(f"dim of size {n} does not split into {self.chunks} equal chunks")
        return [n // self.chunks] * self.chunks

    def lower(self, ctx: LowerContext, x: Any) -> Any:
        out = torch.chunk(x, self.chunks, self.dim)
        return [out[i] for i in range(self.chunks)]


@op("slice")
class Slice(_View):
    """``x[..., start:end:step, ...]`` along one dim (negative ``start``/``end`` count from the end)."""

    family: ClassVar[str] = "tensor"
    onnx: ClassVar[Onnx] = Onnx(("Slice",))
    examples: ClassVar[tuple[Example, ...]] = (
        Example({"dim": 1, "start": 1}, ("B,T,4",)),
        Example({"dim": -1, "start": 0, "end": 6, "step": 2}, ("B,8",), id="step"),
        Example({"dim": 1, "start": -2}, ("B,T,4",), id="last2"),
    )
    dim: int = Field(description="the sliced dim")
    start: int = 0
    end: int | None = Field(None, description="exclusive; default: the end of the dim")
    step: int = Field(1, ge=1)

    def infer(self, x: TensorType) -> TensorType:
        d = norm_dim(self.dim, x.rank)
        n = x.shape[d]
        length: Dim
        if isinstance(n, int):
            length = len(range(n)[self.start : self.end : self.step])
        else:
            start = self.start if self.start >= 0 else n + self.start
            end = n if self.end is None else (self.end if self.end >= 0 else n + self.end)
            length = (end - start + self.step - 1) // self.step if self.step > 1 else end - start
        if isinstance(length, int) and length < 1:
            raise OpError(f"slice {self.start}:{self.end}:{self.step} of dim {d} of {x} is empty")
        return x.with_shape((*x.shape[:d], length, *x.shape[d + 1 :]))

    def lower(self, ctx: LowerContext, x: Any) -> Any:
        d = norm_dim(self.dim, in_type(ctx).rank)
        return x[(slice(None),) * d + (slice(self.start, self.end, self.step),)]


@op("select")
class Select(_View):
    """Pick entry ``index`` of one dim, dropping the dim (``x[:, -1]`` = dim 1, index -1)."""

    family: ClassVar[str] = "tensor"
    onnx: ClassVar[Onnx] = Onnx(("Gather",))
    examples: ClassVar[tuple[Example, ...]] = (Example({"dim": 1, "index": -1}, ("B,T,4",)), Example({"dim": 0, "index": 1}, ("3,B",), id="first"))
    dim: int
    index: int

    def infer(self, x: TensorType) -> TensorType:
        d = norm_dim(self.dim, x.rank)
        n = x.shape[d]
        if isinstance(n, int) and not -n <= self.index < n:
            raise OpError(f"index {self.index} is out of range for dim {d} of {x}")
        return x.with_shape((*x.shape[:d], *x.shape[d + 1 :]))

    def lower(self, ctx: LowerContext, x: Any) -> Any:
        return torch.select(x, self.dim, self.index)


def _dims_equal(a: Dim, b: Dim, what: str, ta: TensorType, tb: TensorType) -> None:
    if a != b:
        raise OpError(f"{what} {a} of {ta} does not match {b} of {tb}")


@op("matmul")
class Matmul(OpArgs):
    """Matrix product ``a @ b`` with batch broadcasting (1-D operands as in torch.matmul)."""

    family: ClassVar[str] = "tensor"
    autocast: ClassVar[Literal["lower", "float32", "promote"]] = "lower"
    inputs: ClassVar[tuple[str, ...]] = ("a", "b")
    onnx: ClassVar[Onnx] = Onnx(("MatMul",), atol=1e-5)
    examples: ClassVar[tuple[Example, ...]] = (
        Example({}, ("B,T,4", "B,4,T")),
        Example({}, ("B,T,4", "4,6"), id="broadcast"),
        Example({}, ("B,3,4", "4"), id="vector"),
    )

    def infer(self, a: TensorType, b: TensorType) -> TensorType:
        if a.rank == 0 or b.rank == 0:
            raise OpError(f"matmul needs tensors of rank >= 1, got {a} and {b}")
        ka = a.shape[-1]
        kb = b.shape[-2] if b.rank >= 2 else b.shape[0]
        _dims_equal(ka, kb, "inner dim", a, b)
        rows = a.shape[-2:-1] if a.rank >= 2 else ()
        cols = b.shape[-1:] if b.rank >= 2 else ()
        batch = broadcast(a.shape[:-2], b.shape[:-2])
        return TensorType((*batch, *rows, *cols), promote(a, b))

    def saves(self, ins: Sequence[tuple[int, ...] | None], outs: Sequence[tuple[int, ...]], itemsize: int) -> Saved:
        return Saved(inputs=(0, 1))

    def lower(self, ctx: LowerContext, a: Any, b: Any) -> Any:
        return torch.matmul(a, b)

    def flops(self, ins: Sequence[tuple[int, ...]], outs: Sequence[tuple[int, ...]]) -> int:
        return 2 * prod(outs[0]) * ins[0][-1]


@op("dot")
class Dot(OpArgs):
    """Dot product over the last dim, ``sum(a * b, -1)``, broadcasting the other dims."""

    family: ClassVar[str] = "tensor"
    inputs: ClassVar[tuple[str, ...]] = ("a", "b")
    onnx: ClassVar[Onnx] = Onnx(("Mul", "ReduceSum"), atol=1e-5)
    examples: ClassVar[tuple[Example, ...]] = (Example({}, ("B,T,4", "B,T,4")), Example({}, ("B,4", "4"), id="broadcast"))

    def infer(self, a: TensorType, b: TensorType) -> TensorType:
        if a.rank == 0 or b.rank == 0:
            raise OpError(f"dot needs tensors of rank >= 1, got {a} and {b}")
        _dims_equal(a.shape[-1], b.shape[-1], "last dim", a, b)
        return TensorType(broadcast(a.shape, b.shape)[:-1], promote(a, b))

    def saves(self, ins: Sequence[tuple[int, ...] | None], outs: Sequence[tuple[int, ...]], itemsize: int) -> Saved:
        return Saved(inputs=(0, 1))

    def lower(self, ctx: LowerContext, a: Any, b: Any) -> Any:
        return torch.sum(torch.mul(a, b), -1)

    def flops(self, ins: Sequence[tuple[int, ...]], outs: Sequence[tuple[int, ...]]) -> int:
        return 2 * prod(outs[0]) * ins[0][-1]


class _Reduce(OpArgs):
    family: ClassVar[str] = "tensor"
    examples: ClassVar[tuple[Example, ...]] = (
        Example({"dims": -1}, ("B,T,4",)),
        Example({"dims": [2, 3], "keepdim": True}, ("B,3,H,W",), id="spatial-keep"),
        Example({}, ("B,4",), id="all"),
    )
    fn: ClassVar[str] = "mean"
    dims: int | list[int] | None = Field(None, description="reduced dim(s); default: all")
    keepdim: bool = Field(False, description="keep reduced dims with size 1")

    def _dims(self, x: TensorType) -> list[int]:
        if self.dims is None:
            return list(range(x.rank))
        raw = [self.dims] if isinstance(self.dims, int) else self.dims
        dims = [norm_dim(d, x.rank) for d in raw]
        if len(set(dims)) != len(dims):
            raise OpError(f"dims {raw} name a dim twice")
        return dims

    def infer(self, x: TensorType) -> TensorType:
        dims = self._dims(x)
        if self.keepdim:
            return x.with_shape([1 if i in dims else d for i, d in enumerate(x.shape)])
        return x.with_shape([d for i, d in enumerate(x.shape) if i not in dims])

    def lower(self, ctx: LowerContext, x: Any) -> Any:
        return getattr(torch, self.fn)(x, self._dims(in_type(ctx)), keepdim=self.keepdim)

    def saves(self, ins: Sequence[tuple[int, ...] | None], outs: Sequence[tuple[int, ...]], itemsize: int) -> Saved:
        return Saved()  # mean and sum spread the gradient back; max/min override

    def flops(self, ins: Sequence[tuple[int, ...]], outs: Sequence[tuple[int, ...]]) -> int:
        return prod(ins[0])


@op("mean")
class Mean(_Reduce):
    """Mean over ``dims`` (``[2, 3]`` of ``[N, C, H, W]`` is global average pooling)."""

    onnx: ClassVar[Onnx] = Onnx(("ReduceMean",), atol=1e-5)
    fn: ClassVar[str] = "mean"

    def infer(self, x: TensorType) -> TensorType:
        if x.dtype not in FLOAT_DTYPES:
            raise OpError(f"mean needs a floating-point input, got {x.dtype}")
        return super().infer(x)


@op("sum")
class Sum(_Reduce):
    """Sum over ``dims``."""

    onnx: ClassVar[Onnx] = Onnx(("ReduceSum",), atol=1e-5)
    fn: ClassVar[str] = "sum"


@op("max")
class Max(_Reduce):
    """Maximum over ``dims`` (values only; gradients flow to the maxima)."""

    onnx: ClassVar[Onnx] = Onnx(("ReduceMax",))
    fn: ClassVar[str] = "amax"

    def saves(self, ins: Sequence[tuple[int, ...] | None], outs: Sequence[tuple[int, ...]], itemsize: int) -> Saved:
        return Saved(inputs=(0,), output=True)  # where the extremes were


@op("min")
class Min(_Reduce):
    """Minimum over ``dims``."""

    onnx: ClassVar[Onnx] = Onnx(("ReduceMin",))
    fn: ClassVar[str] = "amin"

    def saves(self, ins: Sequence[tuple[int, ...] | None], outs: Sequence[tuple[int, ...]], itemsize: int) -> Saved:
        return Saved(inputs=(0,), output=True)  # where the extremes were


@op("identity")
class Identity(_View):
    """Passes its input through unchanged (a named tap point, or a placeholder while editing)."""

    family: ClassVar[str] = "tensor"
    onnx: ClassVar[Onnx] = Onnx(("Identity",))
    examples: ClassVar[tuple[Example, ...]] = (Example({}, ("B,T,4",)),)

    def infer(self, x: TensorType) -> TensorType:
        return x

    def lower(self, ctx: LowerContext, x: Any) -> Any:
        return x


@op("scale")
class Scale(OpArgs):
    """Multiply by a constant scalar (``factor: "${1 / d ** 0.5}"``)."""

    family: ClassVar[str] = "tensor"
    onnx: ClassVar[Onnx] = Onnx(("Mul",))
    examples: ClassVar[tuple[Example, ...]] = (Example({"factor": 0.5}, ("B,T,4",)),)
    factor: float = Field(description="the constant multiplier")

    def infer(self, x: TensorType) -> TensorType:
        return x if x.dtype in FLOAT_DTYPES else TensorType(x.shape, "float32")

    def saves(self, ins: Sequence[tuple[int, ...] | None], outs: Sequence[tuple[int, ...]], itemsize: int) -> Saved:
        return Saved()  # times a constant: the gradient needs only the factor

    def lower(self, ctx: LowerContext, x: Any) -> Any:
        return torch.mul(x, self.factor)

    def flops(self, ins: Sequence[tuple[int, ...]], outs: Sequence[tuple[int, ...]]) -> int:
        return prod(outs[0])


def _nested_shape(value: Any, where: str = "value") -> tuple[int, ...]:
    """Shape of a nested list of numbers; ragged lists are an error."""
    if not isinstance(value, list):
        return ()
    if not value:
        raise OpError(f"{where} has an empty list")
    inner = [_nested_shape(v, where) for v in value]
    if any(s != inner[0] for s in inner):
        raise OpError(f"{where} is ragged: its rows have different shapes")
    return (len(value), *inner[0])


@op("constant")
class Constant(OpArgs):
    """A fixed tensor (no inputs, not trained): ``value`` as a nested list, or a scalar filled to ``shape``.

    It is stored as a buffer named ``value`` so it moves with ``.to(device)``.
    """

    family: ClassVar[str] = "tensor"
    inputs: ClassVar[tuple[str, ...]] = ()
    onnx: ClassVar[Onnx] = Onnx(("Constant",))
    examples: ClassVar[tuple[Example, ...]] = (
        Example({"value": [[1.0, 2.0], [3.0, 4.0]]}, ()),
        Example({"value": 0.5, "shape": [2, 3]}, (), id="fill"),
        Example({"value": [0, 1, 2], "dtype": "int64"}, (), id="int"),
    )
    value: float | list[Any] = Field(description="a number, or nested lists of numbers")
    shape: list[PositiveInt] | None = Field(None, description="fill a scalar value to this shape")
    dtype: Literal["float32", "float64", "int64", "int32", "bool"] = "float32"

    def _shape(self) -> tuple[int, ...]:
        if isinstance(self.value, list):
            if self.shape is not None:
                raise OpError("give 'shape' only with a scalar value")
            return _nested_shape(self.value)
        return tuple(self.shape or ())

    def infer(self) -> TensorType:
        return TensorType(self._shape(), self.dtype)

    def buffers(self) -> dict[str, tuple[int, ...]]:
        return {"value": self._shape()}

    def saves(self, ins: Sequence[tuple[int, ...] | None], outs: Sequence[tuple[int, ...]], itemsize: int) -> Saved:
        return Saved()  # a buffer: nothing computed

    def lower(self, ctx: LowerContext) -> Any:
        return ctx.module(rt.Constant, self.value, self._shape(), self.dtype)()


@op("parameter")
class Parameter(OpArgs):
    """A learned tensor of a fixed ``shape`` (no inputs): a class token, a learned bias or scale.

    Its single parameter is ``weight``; ``fill`` sets every entry, otherwise entries are drawn
    from ``N(0, std^2)``.  Node-level ``init`` also applies.
    """

    family: ClassVar[str] = "tensor"
    inputs: ClassVar[tuple[str, ...]] = ()
    stateful: ClassVar[bool] = True
    onnx: ClassVar[Onnx] = Onnx(("Constant", "Identity"))
    examples: ClassVar[tuple[Example, ...]] = (Example({"shape": [1, 1, 8]}, ()), Example({"shape": [4], "fill": 1.0}, (), id="ones"))
    shape: list[PositiveInt] = Field(description="the tensor's shape")
    std: float = Field(0.02, ge=0, description="std of the normal init when no fill is given")
    fill: float | None = Field(None, description="initial value of every entry")

    def infer(self) -> TensorType:
        return TensorType(tuple(self.shape), "float32")

    def params(self) -> dict[str, tuple[int, ...]]:
        return {"weight": tuple(self.shape)}

    def saves(self, ins: Sequence[tuple[int, ...] | None], outs: Sequence[tuple[int, ...]], itemsize: int) -> Saved:
        return Saved()  # the parameter itself

    def lower(self, ctx: LowerContext) -> Any:
        return ctx.module(rt.Parameter, tuple(self.shape), self.std, self.fill)()


@op("expand")
class Expand(_View):
    """Repeat size-1 dims of ``x`` to the sizes of the same dims of ``like`` (no copy).

    ViT's class token is a ``[1, 1, d]`` parameter expanded to ``[B, 1, d]`` with
    ``{op: expand, in: [class_token, seq], dims: [0]}`` before it is concatenated.
    """

    family: ClassVar[str] = "tensor"
    inputs: ClassVar[tuple[str, ...]] = ("x", "like")
    onnx: ClassVar[Onnx] = Onnx(("Expand",))
    examples: ClassVar[tuple[Example, ...]] = (
        Example({"dims": [0]}, ("1,1,4", "B,T,4")),
        Example({"dims": [0, 1]}, ("1,1,4", "B,T,4"), id="two"),
    )
    dims: list[int] = Field(min_length=1, description="dims of x (size 1) that take like's size")

    def _dims(self, x: TensorType, like: TensorType) -> list[int]:
        if x.rank != like.rank:
            raise OpError(f"x {x} and like {like} must have the same rank")
        dims = [norm_dim(d, x.rank) for d in self.dims]
        for d in dims:
            if x.shape[d] != 1:
                raise OpError(f"dim {d} of x {x} must have size 1 to expand, not {x.shape[d]}")
        return dims

    def infer(self, x: TensorType, like: TensorType) -> TensorType:
        dims = self._dims(x, like)
        return x.with_shape([like.shape[i] if i in dims else d for i, d in enumerate(x.shape)])

    def lower(self, ctx: LowerContext, x: Any, like: Any) -> Any:
        dims = self._dims(in_type(ctx, 0), in_type(ctx, 1))
        sizes = [like.size(i) if i in dims else -1 for i in range(in_type(ctx).rank)]
        return x.expand(*sizes)
