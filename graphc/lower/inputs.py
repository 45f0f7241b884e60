"""Example inputs of a typed graph: random tensors of the right shapes, dtypes and ranges.

Below export/ and train/ (which trace, verify and time with them); :mod:`graphc.api`
re-exports :func:`example_inputs` for users.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from graphc.graph.check import SpecLike, typed
from graphc.graph.infer import TypedGraph

if TYPE_CHECKING:
    import torch


def example_inputs(
    spec: SpecLike | TypedGraph,
    seed: int = 0,
    device: str | torch.device | None = None,
    **dims: int,
) -> tuple[torch.Tensor, ...]:
    """Random inputs of the right shapes, dtypes and value ranges (ids below the vocab size).

    Symbolic dims take their example sizes unless given: ``example_inputs(spec, B=1, T=7)``.
    """
    import torch

    tg = typed(spec)
    sizes = {**tg.example, **dims}
    gen = torch.Generator().manual_seed(seed)
    out = []
    types = tg.spec_input_types()
    for name, inp in tg.flat.spec.doc.inputs.items():
        shape = types[name].concrete(sizes)
        dtype = getattr(torch, inp.dtype)
        lo, hi = inp.range if inp.range is not None else default_range(name, inp.dtype, tg)
        if dtype.is_floating_point:
            t = torch.rand(shape, generator=gen) * (hi - lo) + lo
        elif dtype == torch.bool:
            t = torch.rand(shape, generator=gen) < 0.5
        else:
            t = torch.randint(int(lo), int(hi), shape, generator=gen)
        out.append(t.to(dtype=dtype, device=device))
    return tuple(out)


def default_range(name: str, dtype: str, tg: TypedGraph) -> tuple[float, float]:
    """Value range for an input: ids stay below the smallest table that reads them."""
    if dtype.startswith("float"):
        return (-1.0, 1.0)
    if dtype == "bool":
        return (0, 2)
    limits = []
    for node in tg.flat.op_nodes():
        if any(r is not None and r.node == name for r in node.inputs):
            limit = getattr(node.args, "num", None)
            if isinstance(limit, int):
                limits.append(limit)
    return (0, min(limits) if limits else 10)
