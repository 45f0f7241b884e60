"""A user op, registered the way users do it (imported with ``graphc --plugin``)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

import graphc
from graphc.ops.lazy import torch
from graphc.shapes import TensorType


@graphc.op("scaled_swish", source="tests.plugins.swish_plugin", replace=True)
class ScaledSwish(graphc.OpArgs):
    """``x * sigmoid(beta * x)``: a user-defined activation."""

    family: ClassVar[str] = "user"
    examples: ClassVar[tuple[graphc.Example, ...]] = (graphc.Example({"beta": 2.0}, ("B,4",)),)
    beta: float = Field(1.0, gt=0)

    def infer(self, x: TensorType) -> TensorType:
        return x

    def lower(self, ctx: Any, x: Any) -> Any:
        return x * torch.sigmoid(x * self.beta)
