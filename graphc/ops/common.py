"""Shape helpers shared by op definitions (torch-free)."""

from __future__ import annotations

from collections.abc import Sequence

from graphc.ops.registry import OpError
from graphc.shapes import Dim, TensorType, numel


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
    if t.dtype not in ("float32", "float16", "bfloat16", "float64"):
        raise OpError(f"{what} must be a floating-point tensor, got {t.dtype}")


def tup(v: int | Sequence[int], n: int) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, Sequence) else (v,) * n


def size_of(shape: Sequence[Dim]) -> Dim:
    return numel(shape)


def promote(*types: TensorType) -> str:
    """Result dtype of an elementwise op (floats win over ints, wider floats win)."""
    order = ["bool", "int32", "int64", "bfloat16", "float16", "float32", "float64"]
    return max((t.dtype for t in types), key=order.index)


def prod(values: Sequence[int]) -> int:
    out = 1
    for v in values:
        out *= v
    return out
