"""graphc's Python API: the pipeline's stages as plain functions.

    >>> import graphc
    >>> spec = graphc.load_spec("specs/mlp.yaml")
    >>> gm = graphc.build(spec, seed=0)
    >>> y = gm(*graphc.example_inputs(spec, B=4))

Every function accepts a :class:`~graphc.spec.load.Spec`, a path, YAML text or a dict, and
raises :class:`~graphc.errors.GraphcError` subclasses that carry file positions.  The stages
live in their packages (``check`` in graphc/graph/check.py, ``lower_spec`` and
``example_inputs`` in graphc/lower/); this module re-exports them for users.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from graphc.graph.check import Overrides, SpecLike, check, typed
from graphc.graph.infer import TypedGraph
from graphc.lower.built import Built, lower_spec
from graphc.lower.inputs import example_inputs

if TYPE_CHECKING:
    import torch
    from torch import fx


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

    :func:`lower_spec` gives the module together with its typed graph (a :class:`Built`).
    """
    return lower_spec(spec, seed, device, dtype).module


def summary(spec: SpecLike | TypedGraph, overrides: Overrides = None) -> Any:
    """Per-node shapes, parameters and FLOPs with totals; see :mod:`graphc.summary`."""
    from graphc.summarize import summarize

    return summarize(typed(spec, overrides))


__all__ = ["Built", "SpecLike", "build", "check", "example_inputs", "lower_spec", "summary"]
