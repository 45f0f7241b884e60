"""What lowering hands on: the module together with the typed graph it was lowered from.

Export (ONNX, verification, model.py), weight loading and training need both the
``fx.GraphModule`` and the :class:`TypedGraph` (names, shapes, positions for errors), plus
how each submodule was constructed; :class:`Built` carries them side by side instead of as
attributes stuck on the torch module (which would also take names from the spec language).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from graphc.graph.check import Overrides, SpecLike, typed
from graphc.graph.infer import TypedGraph

if TYPE_CHECKING:
    import torch
    from torch import fx

    from graphc.lower.context import ModuleRecord


@dataclass(frozen=True)
class Built:
    """A lowered model: ``module`` (call it, train it), ``graph`` (what it was lowered from),
    ``records`` (how each submodule was made, for model.py) and ``weights`` (the file its
    weights were loaded from; None while they are the spec's fresh initialisation)."""

    module: fx.GraphModule
    graph: TypedGraph
    records: dict[str, ModuleRecord]
    weights: str | None = None


def lower_spec(
    spec: SpecLike | TypedGraph,
    seed: int | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    overrides: Overrides = None,
) -> Built:
    """Check ``spec`` (unless it is a TypedGraph already) and lower it: the pipeline's build step.

    Example:
        >>> b = lower_spec("specs/mlp.yaml", seed=0)
        >>> b.module(*example_inputs(b.graph))
    """
    from graphc.lower.fx_lower import lower

    built = lower(typed(spec, overrides), seed=seed)
    if device is not None or dtype is not None:
        built.module.to(device=device, dtype=dtype)
    return built
