"""Elementwise activations and softmax-type normalizations (stateless: ``call_function``)."""

from __future__ import annotations

from collections.abc import Sequence
from math import prod
from typing import Any, ClassVar, Literal

from pydantic import Field

from graphc.ops.common import need_float, norm_dim
from graphc.ops.context import LowerContext
from graphc.ops.lazy import F, torch
from graphc.ops.registry import Example, Onnx, OpArgs, Saved, op
from graphc.shapes import TensorType

_EX = (Example({}, ("B,T,6",)),)


class _Elementwise(OpArgs):
    family: ClassVar[str] = "activation"
    examples: ClassVar[tuple[Example, ...]] = _EX
    cost: ClassVar[int] = 1
    keeps_input: ClassVar[bool] = False

    def infer(self, x: TensorType) -> TensorType:
        need_float(x)
        return x

    def flops(self, ins: Sequence[tuple[int, ...]], outs: Sequence[tuple[int, ...]]) -> int:
        return self.cost * prod(ins[0])

    def saves(self, ins: Sequence[tuple[int, ...] | None], outs: Sequence[tuple[int, ...]], itemsize: int) -> Saved:
        """relu, tanh, sigmoid and softmax differentiate from their output; the others set
        ``keeps_input`` (their derivative needs ``x``)."""
        return Saved(inputs=(0,)) if self.keeps_input else Saved(output=True)


@op("relu")
class Relu(_Elementwise):
    """``max(x, 0)``."""

    onnx: ClassVar[Onnx] = Onnx(("Relu",))

    def lower(self, ctx: LowerContext, x: Any) -> Any:
        return torch.relu(x)


@op("gelu")
class Gelu(_Elementwise):
    """Gaussian error linear unit, exact (erf) or the tanh approximation."""

    keeps_input: ClassVar[bool] = True
    onnx: ClassVar[Onnx] = Onnx(("Gelu", "Erf", "Tanh"))
    examples: ClassVar[tuple[Example, ...]] = (*_EX, Example({"approximate": "tanh"}, ("B,6",), id="tanh"))
    approximate: Literal["none", "tanh"] = "none"
    cost: ClassVar[int] = 8

    def lower(self, ctx: LowerContext, x: Any) -> Any:
        return F.gelu(x, approximate=self.approximate)


@op("silu")
class Silu(_Elementwise):
    """``x * sigmoid(x)`` (swish)."""

    keeps_input: ClassVar[bool] = True
    onnx: ClassVar[Onnx] = Onnx(("Sigmoid", "Mul"))
    cost: ClassVar[int] = 4

    def lower(self, ctx: LowerContext, x: Any) -> Any:
        return F.silu(x)


@op("tanh")
class Tanh(_Elementwise):
    """Hyperbolic tangent."""

    onnx: ClassVar[Onnx] = Onnx(("Tanh",))

    def lower(self, ctx: LowerContext, x: Any) -> Any:
        return torch.tanh(x)


@op("sigmoid")
class Sigmoid(_Elementwise):
    """Logistic sigmoid."""

    onnx: ClassVar[Onnx] = Onnx(("Sigmoid",))

    def lower(self, ctx: LowerContext, x: Any) -> Any:
        return torch.sigmoid(x)


@op("relu6")
class Relu6(_Elementwise):
    """``min(max(x, 0), 6)`` (MobileNet's activation; ``hardtanh`` between 0 and 6)."""

    keeps_input: ClassVar[bool] = True
    onnx: ClassVar[Onnx] = Onnx(("Clip",))

    def lower(self, ctx: LowerContext, x: Any) -> Any:
        return F.relu6(x)


@op("leaky_relu")
class LeakyRelu(_Elementwise):
    """``x`` if positive else ``slope * x``."""

    keeps_input: ClassVar[bool] = True
    onnx: ClassVar[Onnx] = Onnx(("LeakyRelu",))
    slope: float = Field(0.01, ge=0)

    def lower(self, ctx: LowerContext, x: Any) -> Any:
        return F.leaky_relu(x, self.slope)


class _SoftmaxBase(_Elementwise):
    autocast: ClassVar[Literal["lower", "float32", "promote"]] = "float32"
    dim: int = -1
    cost: ClassVar[int] = 5

    def infer(self, x: TensorType) -> TensorType:
        need_float(x)
        norm_dim(self.dim, x.rank)
        return x


@op("softmax")
class Softmax(_SoftmaxBase):
    """Softmax along ``dim``."""

    onnx: ClassVar[Onnx] = Onnx(("Softmax",))

    def lower(self, ctx: LowerContext, x: Any) -> Any:
        return torch.softmax(x, self.dim)


@op("log_softmax")
class LogSoftmax(_SoftmaxBase):
    """Log-softmax along ``dim``."""

    onnx: ClassVar[Onnx] = Onnx(("LogSoftmax",))

    def lower(self, ctx: LowerContext, x: Any) -> Any:
        return torch.log_softmax(x, self.dim)
