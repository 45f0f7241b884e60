"""Shape helpers shared by op definitions (torch-free)."""

from __future__ import annotations

from collections.abc import Sequence

from graphc.ops.context import LowerContext
from graphc.ops.registry import OpError
from graphc.shapes import FLOAT_DTYPES, Dim, TensorType


def in_type(ctx: LowerContext, i: int = 0) -> TensorType:
    """The static type of input ``i`` in a lowering, which must be present (not an optional
    input left out: those are ``None`` in ``ctx.in_types``)."""
    t = ctx.in_types[i]
    if t is None:
        raise OpError(f"input {i} is missing")
    return t


def norm_dim(dim: int, rank: int, what: str = "dim") -> int:
    """A possibly negative axis as an index in ``[0, rank)``."""
    if not -rank <= dim < rank:
        raise OpError(f"{what} {dim} is out of range for a rank-{rank} input")
    return dim % rank


def broadcast(*shapes: Sequence[Dim]) -> tuple[Dim, ...]:
    """NumPy-style broadcasting of symbolic shapes."""
    rank = max(len(s) for s in shapes)
    out: list[Dim] = []
    for i in range(rank):
        dims = [s[len(s) - rank + i] for s in shapes if len(s) - rank + i >= 0]
        picked: Dim = 1
        for d in dims:
            if d == 1:
                continue
            if picked == 1:
                picked = d
            elif picked != d:
                shown = " and ".join(f"[{', '.join(map(str, s))}]" for s in shapes)
                raise OpError(f"shapes {shown} do not broadcast (dim {i - rank}: {picked} vs {d})")
        out.append(picked)
    return tuple(out)


def need_rank(t: TensorType, *ranks: int, what: str = "input") -> None:
    if t.rank not in ranks:
        want = " or ".join(str(r) for r in ranks)
        raise OpError(f"{what} must have rank {want}, got {t.rank} ({t})")


def need_float(t: TensorType, what: str = "input") -> None:
    if t.dtype not in FLOAT_DTYPES:
        raise OpError(f"{what} must be a floating-point tensor, got {t.dtype}")


def tup(v: int | Sequence[int], n: int) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, Sequence) else (v,) * n


def promote(*types: TensorType) -> str:
    """Result dtype of an elementwise op (floats win over ints, wider floats win)."""
    order = ["bool", "int32", "int64", "bfloat16", "float16", "float32", "float64"]
    return max((t.dtype for t in types), key=order.index)


def plain(value: float) -> str:
    """A number as a spec would write it: ``50257``, not ``50257.0``."""
    return str(int(value)) if float(value).is_integer() else str(value)


def window_out(size: Dim, kernel: int, stride: int, pad: int, dilation: int = 1, ceil: bool = False,
               *, subject: str = "", window: str = "") -> Dim:
    """Output length of a sliding window (conv/pool arithmetic), kept symbolic.

    A window larger than the input is an error "SUBJECT is too small for WINDOW" (by default
    ``input size N`` and ``a window of K``; conv names the whole input and kernel).

    ``ceil_mode`` rounds up, but torch drops a last window that would start in the right
    padding; that correction needs a known size unless ``stride <= dilation*(kernel-1) + 1 +
    pad`` (then the window always starts inside), which covers every usual pooling setup.
    """
    if min(kernel, stride, dilation) < 1:  # stride 0 would divide by zero below
        raise OpError(f"kernel, stride and dilation must be at least 1, got kernel {kernel}, stride {stride}, dilation {dilation}")
    span = size + 2 * pad - dilation * (kernel - 1) - 1
    if not ceil:
        out = span // stride + 1
    else:
        out = (span + stride - 1) // stride + 1
        if isinstance(size, int):
            if (out - 1) * stride >= size + pad:  # type: ignore[operator]
                out = out - 1
        elif stride > dilation * (kernel - 1) + 1 + pad:
            raise OpError(f"ceil_mode with stride {stride} larger than the window needs a fixed size, got symbolic '{size}'")
    if isinstance(out, int) and out < 1:
        raise OpError(f"{subject or f'input size {size}'} is too small for {window or f'a window of {kernel}'} (output size {out})")
    return out


def spatial_rank(t: TensorType, ndim: int, what: str) -> None:
    """Pool-style inputs: ``[N, C, *spatial]`` or unbatched ``[C, *spatial]``."""
    need_rank(t, ndim + 1, ndim + 2, what=f"{what} input [N, C, {', '.join('DHW'[3 - ndim:]) if ndim > 1 else 'L'}]")
