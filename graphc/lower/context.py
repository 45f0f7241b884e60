"""What an op's ``lower`` method works with: fx proxies and a way to add a submodule.

An op lowers by writing ordinary torch code on :class:`torch.fx.Proxy` inputs
(``torch.add(a, b)``, ``x.view(...)``), and by calling :meth:`LowerCtx.module` for layers with
parameters.  The constructor and its arguments are recorded, so ``graphc compile`` can write
the same module as standalone source (``model.py``).  :class:`LowerCtx` implements the
:class:`graphc.ops.context.LowerContext` protocol that the ops are typed against (the ops sit
below lowering, so they name what they use instead of importing this module).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from graphc.shapes import TensorType


@dataclass
class ModuleRecord:
    """How a submodule was made: ``ctor(*args, **kwargs)`` (for model.py generation)."""

    ctor: Callable[..., nn.Module]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


@dataclass
class LowerCtx:
    """Per-node lowering context (a :class:`~graphc.ops.context.LowerContext`)."""

    tracer: fx.proxy.GraphAppendingTracer
    root: nn.Module
    target: str  # attribute path of this node's module inside ``root``
    in_types: list[TensorType | None]
    out_types: list[TensorType]
    made: nn.Module | None = None
    record: ModuleRecord | None = None

    def module(self, ctor: Callable[..., nn.Module], *args: Any, **kwargs: Any) -> Callable[..., Any]:
        """Create this node's layer and return a function that calls it on proxies."""
        if self.made is not None:
            raise RuntimeError(f"node '{self.target}' created two modules; wrap them in one")
        mod = ctor(*args, **kwargs)
        self.made = mod
        self.root.add_module(self.target, mod)
        self.record = ModuleRecord(ctor, args, kwargs)

        def call(*cargs: Any, **ckwargs: Any) -> Any:
            return self.tracer.create_proxy("call_module", self.target, cargs, ckwargs)

        return call

    @property
    def dtype(self) -> torch.dtype:
        t = self.out_types[0] if self.out_types else None
        return getattr(torch, t.dtype) if t is not None else torch.float32
