"""What an op's ``lower`` may use: the :class:`LowerContext` protocol.

The registry and the ops sit below lowering in the pipeline, so they name what they need from
it here, as a protocol, instead of importing it; :class:`graphc.lower.context.LowerCtx`
implements it structurally (nothing subclasses it).  Ops and user plugins annotate
``lower(self, ctx: LowerContext, ...)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from graphc.shapes import TensorType

if TYPE_CHECKING:  # for annotations only: checking a spec never imports torch
    import torch
    from torch import nn


class LowerContext(Protocol):
    """One node's lowering: its types, its module path, and a way to add its one layer."""

    @property
    def target(self) -> str:
        """Attribute path of this node's module inside the built model (``body.0.fc``)."""
        ...

    @property
    def in_types(self) -> Sequence[TensorType | None]:
        """The inputs' static types (``None`` for an optional input left out)."""
        ...

    @property
    def out_types(self) -> Sequence[TensorType]:
        """The outputs' static types, as inferred by the op's ``infer``."""
        ...

    @property
    def dtype(self) -> torch.dtype:
        """The torch dtype of the first output (for layers that must be created in it)."""
        ...

    def module(self, ctor: Callable[..., nn.Module], *args: Any, **kwargs: Any) -> Callable[..., Any]:
        """Create this node's layer ``ctor(*args, **kwargs)`` (recorded, so ``graphc compile``
        can write it as source) and return a function that calls it on fx proxies."""
        ...

