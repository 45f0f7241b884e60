"""graphc's Python API: the pipeline's stages as plain functions.

    >>> import graphc
    >>> spec = graphc.load_spec("specs/mlp.yaml")
    >>> gm = graphc.build(spec, seed=0)
    >>> y = gm(*graphc.example_inputs(spec, B=4))

Every function accepts a :class:`~graphc.spec.load.Spec`, a path, YAML text or a dict, and
raises :class:`~graphc.errors.GraphcError` subclasses that carry file positions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from graphc.errors import GraphcError, SpecError
from graphc.graph.infer import TypedGraph, infer
from graphc.spec.expand import expand_partial
from graphc.spec.load import Spec, load_spec

if TYPE_CHECKING:
    import torch
    from torch import fx

SpecLike = Spec | str | Path | Mapping[str, Any]


def _spec(spec: SpecLike, overrides: Mapping[str, Any] | Sequence[str] | None = None) -> Spec:
    if isinstance(spec, Spec):
        return spec.with_overrides(overrides)
    return load_spec(spec, overrides)


def check(spec: SpecLike, overrides: Mapping[str, Any] | Sequence[str] | None = None) -> TypedGraph:
    """Validate, expand, build the DAG and infer every shape (no torch, no weights).

    Returns:
        The :class:`TypedGraph`; its ``flat.warnings`` hold non-fatal diagnostics.
    """
    flat, errors = expand_partial(_spec(spec, overrides))
    if not errors:
        return infer(flat)
    try:  # still check the shapes of the intact part, so every mistake shows at once
        infer(flat)
    except GraphcError as e:
        errors = [*errors, *e.diagnostics]
    raise SpecError.many(errors)


def build(
    spec: SpecLike | TypedGraph,
    seed: int | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> fx.GraphModule:
    """Build the ``torch.fx.GraphModule`` of ``spec`` (parameters seeded by ``seed``).

    Example:
        >>> gm = graphc.build("specs/mlp.yaml", seed=0)
        >>> print(gm.code)  # readable, with the spec's node names
    """
    from graphc.lower.fx_lower import lower

    tg = spec if isinstance(spec, TypedGraph) else check(spec)
    gm = lower(tg, seed=seed)
    gm.graphc = tg  # type: ignore[assignment]
    if device is not None or dtype is not None:
        gm.to(device=device, dtype=dtype)
    return gm


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

    tg = spec if isinstance(spec, TypedGraph) else check(spec)
    sizes = {**tg.example, **dims}
    gen = torch.Generator().manual_seed(seed)
    out = []
    types = tg.spec_input_types()
    for name, inp in tg.flat.spec.doc.inputs.items():
        shape = types[name].concrete(sizes)
        dtype = getattr(torch, inp.dtype)
        lo, hi = inp.range if inp.range is not None else _default_range(name, inp.dtype, tg)
        if dtype.is_floating_point:
            t = torch.rand(shape, generator=gen) * (hi - lo) + lo
        elif dtype == torch.bool:
            t = torch.rand(shape, generator=gen) < 0.5
        else:
            t = torch.randint(int(lo), int(hi), shape, generator=gen)
        out.append(t.to(dtype=dtype, device=device))
    return tuple(out)


def _default_range(name: str, dtype: str, tg: TypedGraph) -> tuple[float, float]:
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


def summary(spec: SpecLike | TypedGraph, overrides: Mapping[str, Any] | Sequence[str] | None = None) -> Any:
    """Per-node shapes, parameters and FLOPs with totals; see :mod:`graphc.summary`."""
    from graphc.summarize import summarize

    tg = spec if isinstance(spec, TypedGraph) else check(spec, overrides)
    return summarize(tg)
