"""Layers with parameters: linear, convolutions, norms, embeddings, dropout."""

from __future__ import annotations

import math
from collections.abc import Sequence
from math import prod
from typing import Any, ClassVar, Literal

from pydantic import Field, PositiveInt

from graphc.ops.common import in_type, need_float, need_rank, plain, tup, window_out
from graphc.ops.context import LowerContext
from graphc.ops.lazy import nn, rt
from graphc.ops.registry import Example, Facts, Onnx, OpArgs, OpError, Saved, op
from graphc.shapes import Dim, TensorType

IntOrTuple = int | list[int]


@op("linear")
class Linear(OpArgs):
    """Fully connected layer ``y = x W^T + b`` over the last dim; ``in_features`` is inferred."""

    family: ClassVar[str] = "nn"
    autocast: ClassVar[Literal["lower", "float32", "promote"]] = "lower"
    onnx: ClassVar[Onnx] = Onnx(("Gemm", "MatMul"))
    examples: ClassVar[tuple[Example, ...]] = (
        Example({"out": 5}, ("B,10",)),
        Example({"out": 6, "bias": False}, ("B,T,4",), id="3d-nobias"),
    )

    out: PositiveInt = Field(description="output features")
    bias: bool = True
    in_features: PositiveInt | None = Field(None, description="optional; checked against the input")

    def infer(self, x: TensorType) -> TensorType:
        need_float(x)
        if x.rank < 1:
            raise OpError("input must have at least one dim")
        last = self.static(x.shape[-1], "the input's last dim")
        if self.in_features is not None and self.in_features != last:
            raise OpError(f"input has shape {x} ({last} features) but in_features was declared {self.in_features}")
        return x.with_shape((*x.shape[:-1], self.out))

    def params(self, x: TensorType) -> dict[str, tuple[int, ...]]:
        p: dict[str, tuple[int, ...]] = {"weight": (self.out, self.static(x.shape[-1], "in_features"))}
        return p | {"bias": (self.out,)} if self.bias else p

    def lower(self, ctx: LowerContext, x: Any) -> Any:
        in_f = self.static(in_type(ctx).shape[-1], "in_features")
        return ctx.module(nn.Linear, in_f, self.out, bias=self.bias)(x)

    def flops(self, ins: Sequence[tuple[int, ...]], outs: Sequence[tuple[int, ...]]) -> int:
        return 2 * prod(ins[0]) * self.out

    def saves(self, ins: Sequence[tuple[int, ...] | None], outs: Sequence[tuple[int, ...]], itemsize: int) -> Saved:
        return Saved(inputs=(0,))  # x, for the weight's gradient


class _ConvBase(OpArgs):
    """Shared rules of conv1d/2d/3d (the registered ops set ``ndim``)."""

    ndim: ClassVar[int] = 2
    autocast: ClassVar[Literal["lower", "float32", "promote"]] = "lower"

    def saves(self, ins: Sequence[tuple[int, ...] | None], outs: Sequence[tuple[int, ...]], itemsize: int) -> Saved:
        return Saved(inputs=(0,))  # x, for the kernel's gradient

    def workspace(self, ins: Sequence[tuple[int, ...] | None], outs: Sequence[tuple[int, ...]], itemsize: int) -> int:
        """oneDNN/cuDNN may reorder the input and the output's gradient into their own layout."""
        return (prod(ins[0] or ()) + prod(outs[0])) * itemsize
    family: ClassVar[str] = "nn"
    onnx: ClassVar[Onnx] = Onnx(("Conv",))

    out: PositiveInt = Field(description="output channels")
    kernel: IntOrTuple = Field(description="kernel size")
    stride: IntOrTuple = 1
    padding: IntOrTuple | Literal["same", "valid"] = 0
    dilation: IntOrTuple = 1
    groups: PositiveInt = 1
    bias: bool = True
    padding_mode: Literal["zeros", "reflect", "replicate", "circular"] = "zeros"
    in_channels: PositiveInt | None = None

    def _t(self, v: IntOrTuple) -> tuple[int, ...]:
        t = tup(v, self.ndim)
        if len(t) != self.ndim:
            raise OpError(f"expected {self.ndim} values, got {list(t)}")
        return t

    def _channels(self, x: TensorType) -> int:
        need_rank(x, self.ndim + 2, what=f"conv{self.ndim}d input [N, C, {'D, ' if self.ndim == 3 else ''}{'H, W' if self.ndim >= 2 else 'L'}]")
        need_float(x)
        c = self.static(x.shape[1], "input channels")
        if self.in_channels is not None and self.in_channels != c:
            raise OpError(f"input has {c} channels ({x}) but in_channels was declared {self.in_channels}")
        if c % self.groups or self.out % self.groups:
            raise OpError(f"groups={self.groups} must divide input channels {c} and output channels {self.out}")
        return c

    def infer(self, x: TensorType) -> TensorType:
        self._channels(x)
        k, s, d = self._t(self.kernel), self._t(self.stride), self._t(self.dilation)
        spatial: list[Dim] = []
        for i, size in enumerate(x.shape[2:]):
            if self.padding == "same":
                if s[i] != 1:
                    raise OpError("padding 'same' needs stride 1")
                spatial.append(size)
                continue
            p = 0 if self.padding == "valid" else self._t(self.padding)[i]  # type: ignore[arg-type]
            spatial.append(window_out(size, k[i], s[i], p, d[i], subject=f"input {x}", window=f"kernel {list(k)}"))
        return x.with_shape((x.shape[0], self.out, *spatial))

    def params(self, x: TensorType) -> dict[str, tuple[int, ...]]:
        c = self.static(x.shape[1], "input channels")
        p = {"weight": (self.out, c // self.groups, *self._t(self.kernel))}
        return p | {"bias": (self.out,)} if self.bias else p

    def lower(self, ctx: LowerContext, x: Any) -> Any:
        c = self.static(in_type(ctx).shape[1], "input channels")
        ctor = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[self.ndim]
        pad = self.padding if isinstance(self.padding, str) else self._t(self.padding)
        return ctx.module(
            ctor, c, self.out, self._t(self.kernel), stride=self._t(self.stride), padding=pad,
            dilation=self._t(self.dilation), groups=self.groups, bias=self.bias, padding_mode=self.padding_mode,
        )(x)

    def flops(self, ins: Sequence[tuple[int, ...]], outs: Sequence[tuple[int, ...]]) -> int:
        c = ins[0][1]
        return 2 * prod(outs[0]) * (c // self.groups) * prod(self._t(self.kernel))


@op("conv1d")
class Conv1d(_ConvBase):
    """1-D convolution over ``[N, C, L]``; ``in_channels`` is inferred."""

    ndim: ClassVar[int] = 1
    examples: ClassVar[tuple[Example, ...]] = (Example({"out": 4, "kernel": 3, "padding": 1}, ("B,3,L",)),)


@op("conv2d")
class Conv2d(_ConvBase):
    """2-D convolution over ``[N, C, H, W]`` (groups, dilation, padding 'same')."""

    ndim: ClassVar[int] = 2
    examples: ClassVar[tuple[Example, ...]] = (
        Example({"out": 4, "kernel": 3, "stride": 2, "padding": 1}, ("B,3,H,W",)),
        Example({"out": 6, "kernel": 3, "padding": "same", "groups": 3, "dilation": 2}, ("B,3,H,W",), id="same-groups"),
    )


@op("conv3d")
class Conv3d(_ConvBase):
    """3-D convolution over ``[N, C, D, H, W]``."""

    ndim: ClassVar[int] = 3
    examples: ClassVar[tuple[Example, ...]] = (Example({"out": 2, "kernel": 3, "padding": 1}, ("B,2,4,H,W",)),)


@op("conv_transpose2d")
class ConvTranspose2d(_ConvBase):
    """Transposed 2-D convolution (learned upsampling) over ``[N, C, H, W]``."""

    ndim: ClassVar[int] = 2
    onnx: ClassVar[Onnx] = Onnx(("ConvTranspose",))
    examples: ClassVar[tuple[Example, ...]] = (Example({"out": 4, "kernel": 2, "stride": 2}, ("B,3,H,W",)),)
    output_padding: IntOrTuple = 0

    def _pad(self) -> tuple[int, ...]:
        if isinstance(self.padding, str):
            raise OpError("conv_transpose2d takes numeric padding")
        return self._t(self.padding)

    def infer(self, x: TensorType) -> TensorType:
        self._channels(x)
        k, s, d, p = self._t(self.kernel), self._t(self.stride), self._t(self.dilation), self._pad()
        op_ = self._t(self.output_padding)
        spatial = [(size - 1) * s[i] - 2 * p[i] + d[i] * (k[i] - 1) + op_[i] + 1 for i, size in enumerate(x.shape[2:])]
        return x.with_shape((x.shape[0], self.out, *spatial))

    def params(self, x: TensorType) -> dict[str, tuple[int, ...]]:
        c = self.static(x.shape[1], "input channels")
        p = {"weight": (c, self.out // self.groups, *self._t(self.kernel))}
        return p | {"bias": (self.out,)} if self.bias else p

    def lower(self, ctx: LowerContext, x: Any) -> Any:
        c = self.static(in_type(ctx).shape[1], "input channels")
        return ctx.module(
            nn.ConvTranspose2d, c, self.out, self._t(self.kernel), stride=self._t(self.stride),
            padding=self._pad(), output_padding=self._t(self.output_padding), groups=self.groups,
            bias=self.bias, dilation=self._t(self.dilation),
        )(x)

    def flops(self, ins: Sequence[tuple[int, ...]], outs: Sequence[tuple[int, ...]]) -> int:
        return 2 * prod(ins[0]) * (self.out // self.groups) * prod(self._t(self.kernel))


@op("batch_norm")
class BatchNorm(OpArgs):
    """Batch normalization over channel dim 1 (``[N, C]``, ``[N, C, L]``, ``[N, C, H, W]``, ...)."""

    family: ClassVar[str] = "nn"
    onnx: ClassVar[Onnx] = Onnx(("BatchNormalization",), atol=1e-4)
    examples: ClassVar[tuple[Example, ...]] = (Example({}, ("B,4,H,W",)), Example({"affine": False}, ("B,6",), id="1d"))

    eps: float = Field(1e-5, gt=0)
    momentum: float = Field(0.1, ge=0, le=1)
    affine: bool = True

    def infer(self, x: TensorType) -> TensorType:
        need_float(x)
        if not 2 <= x.rank <= 5:
            raise OpError(f"batch_norm needs rank 2 to 5, got {x}")
        self.static(x.shape[1], "channels")
        return x

    def params(self, x: TensorType) -> dict[str, tuple[int, ...]]:
        c = self.static(x.shape[1], "channels")
        return {"weight": (c,), "bias": (c,)} if self.affine else {}

    def buffers(self, x: TensorType) -> dict[str, tuple[int, ...]]:
        c = self.static(x.shape[1], "channels")
        return {"running_mean": (c,), "running_var": (c,), "num_batches_tracked": ()}

    def lower(self, ctx: LowerContext, x: Any) -> Any:
        t = in_type(ctx)
        ctor = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}[t.rank]
        return ctx.module(ctor, t.shape[1], eps=self.eps, momentum=self.momentum, affine=self.affine)(x)

    def flops(self, ins: Sequence[tuple[int, ...]], outs: Sequence[tuple[int, ...]]) -> int:
        return 2 * prod(ins[0])

    def saves(self, ins: Sequence[tuple[int, ...] | None], outs: Sequence[tuple[int, ...]], itemsize: int) -> Saved:
        x = ins[0] or (1, 1)
        return Saved(inputs=(0,), extra=2 * x[1] * 4)  # x, and the batch's mean and 1/std per channel (fp32)


class _LastDimNorm(OpArgs):
    family: ClassVar[str] = "nn"
    eps: float = Field(1e-5, gt=0)
    affine: bool = True
    dims: PositiveInt = Field(1, description="how many trailing dims are normalized")

    def _shape(self, x: TensorType) -> tuple[int, ...]:
        need_float(x)
        if x.rank < self.dims:
            raise OpError(f"input {x} has fewer than {self.dims} dims")
        return tuple(self.static(d, "normalized dims") for d in x.shape[x.rank - self.dims :])

    def infer(self, x: TensorType) -> TensorType:
        self._shape(x)
        return x

    def flops(self, ins: Sequence[tuple[int, ...]], outs: Sequence[tuple[int, ...]]) -> int:
        return 5 * prod(ins[0])

    def saves(self, ins: Sequence[tuple[int, ...] | None], outs: Sequence[tuple[int, ...]], itemsize: int) -> Saved:
        x = ins[0] or (1,)
        rows = prod(x[: len(x) - self.dims])
        return Saved(inputs=(0,), extra=2 * rows * 4)  # x, and each row's mean and 1/std (fp32)


@op("layer_norm")
class LayerNorm(_LastDimNorm):
    """Layer normalization over the trailing ``dims`` dims (size inferred)."""

    onnx: ClassVar[Onnx] = Onnx(("LayerNormalization",), atol=1e-4)
    autocast: ClassVar[Literal["lower", "float32", "promote"]] = "float32"
    examples: ClassVar[tuple[Example, ...]] = (Example({}, ("B,T,8",)), Example({"dims": 2, "bias": False}, ("B,3,4",), id="2dims"))
    bias: bool = True

    def params(self, x: TensorType) -> dict[str, tuple[int, ...]]:
        s = self._shape(x)
        if not self.affine:
            return {}
        return {"weight": s, "bias": s} if self.bias else {"weight": s}

    def lower(self, ctx: LowerContext, x: Any) -> Any:
        s = self._shape(in_type(ctx))
        return ctx.module(nn.LayerNorm, s, eps=self.eps, elementwise_affine=self.affine, bias=self.bias)(x)


@op("rms_norm")
class RMSNorm(_LastDimNorm):
    """RMS normalization (LLaMA-style) over the trailing ``dims`` dims."""

    onnx: ClassVar[Onnx] = Onnx(("ReduceMean", "RMSNormalization"), atol=1e-4)
    examples: ClassVar[tuple[Example, ...]] = (Example({"eps": 1e-6}, ("B,T,8",)),)
    eps: float = Field(1e-6, gt=0)

    def params(self, x: TensorType) -> dict[str, tuple[int, ...]]:
        return {"weight": self._shape(x)} if self.affine else {}

    def lower(self, ctx: LowerContext, x: Any) -> Any:
        s = self._shape(in_type(ctx))
        return ctx.module(nn.RMSNorm, s, eps=self.eps, elementwise_affine=self.affine)(x)


@op("group_norm")
class GroupNorm(OpArgs):
    """Group normalization over channel dim 1 in ``groups`` groups."""

    family: ClassVar[str] = "nn"
    onnx: ClassVar[Onnx] = Onnx(("GroupNormalization", "InstanceNormalization"), atol=1e-4)
    autocast: ClassVar[Literal["lower", "float32", "promote"]] = "float32"
    examples: ClassVar[tuple[Example, ...]] = (Example({"groups": 2}, ("B,4,H,W",)),)
    groups: PositiveInt
    eps: float = Field(1e-5, gt=0)
    affine: bool = True

    def infer(self, x: TensorType) -> TensorType:
        need_float(x)
        if x.rank < 2:
            raise OpError(f"group_norm needs [N, C, ...], got {x}")
        c = self.static(x.shape[1], "channels")
        if c % self.groups:
            raise OpError(f"groups={self.groups} must divide channels {c}")
        return x

    def params(self, x: TensorType) -> dict[str, tuple[int, ...]]:
        c = self.static(x.shape[1], "channels")
        return {"weight": (c,), "bias": (c,)} if self.affine else {}

    def lower(self, ctx: LowerContext, x: Any) -> Any:
        c = in_type(ctx).shape[1]
        return ctx.module(nn.GroupNorm, self.groups, c, eps=self.eps, affine=self.affine)(x)

    def flops(self, ins: Sequence[tuple[int, ...]], outs: Sequence[tuple[int, ...]]) -> int:
        return 5 * prod(ins[0])

    def saves(self, ins: Sequence[tuple[int, ...] | None], outs: Sequence[tuple[int, ...]], itemsize: int) -> Saved:
        x = ins[0] or (1,)
        return Saved(inputs=(0,), extra=2 * x[0] * self.groups * 4)  # x, and each group's mean and 1/std


@op("dropout")
class Dropout(OpArgs):
    """Dropout with probability ``p`` in training; identity in eval."""

    family: ClassVar[str] = "nn"
    onnx: ClassVar[Onnx] = Onnx(("Identity", "Dropout"))
    examples: ClassVar[tuple[Example, ...]] = (Example({"p": 0.1}, ("B,T,8",)),)
    p: float = Field(0.1, ge=0, lt=1)

    def infer(self, x: TensorType) -> TensorType:
        return x

    def lower(self, ctx: LowerContext, x: Any) -> Any:
        return ctx.module(nn.Dropout, self.p)(x)

    def saves(self, ins: Sequence[tuple[int, ...] | None], outs: Sequence[tuple[int, ...]], itemsize: int) -> Saved:
        return Saved(extra=prod(outs[0]) if self.p > 0 else 0)  # the keep mask, one byte per element

    def view_of(self) -> int | None:
        return 0 if self.p == 0 else None  # p=0 returns its input


def _need_ids(x: TensorType) -> None:
    if x.dtype not in ("int64", "int32"):
        raise OpError(f"expects integer ids, got {x.dtype} {x}")


@op("embedding")
class Embedding(OpArgs):
    """Lookup table: integer ids ``[...]`` -> vectors ``[..., dim]``."""

    family: ClassVar[str] = "nn"
    lookup_table: ClassVar[bool] = True
    onnx: ClassVar[Onnx] = Onnx(("Gather",))
    examples: ClassVar[tuple[Example, ...]] = (Example({"num": 20, "dim": 8}, ("B,T:int64<20",)),)
    num: PositiveInt = Field(description="table size (vocabulary)")
    dim: PositiveInt = Field(description="vector size")
    padding_idx: int | None = None

    def infer(self, x: TensorType) -> TensorType:
        _need_ids(x)
        return TensorType((*x.shape, self.dim), "float32")

    def check(self, facts: Facts, x: TensorType) -> None:
        """Ids declared by the input's ``range`` must index the table: ``[0, num)``."""
        span = facts.range_of(0)
        if span is None:
            return
        low, high = span
        if high > self.num:
            raise OpError(f"its input's range [{plain(low)}, {plain(high)}) holds ids up to {math.ceil(high) - 1}, but num={self.num} rows take ids 0..{self.num - 1}")
        if low < 0:
            raise OpError(f"its input's range [{plain(low)}, {plain(high)}) holds negative ids, but ids index the table from 0")

    def params(self, x: TensorType) -> dict[str, tuple[int, ...]]:
        return {"weight": (self.num, self.dim)}

    def lower(self, ctx: LowerContext, x: Any) -> Any:
        return ctx.module(nn.Embedding, self.num, self.dim, padding_idx=self.padding_idx)(x)

    def saves(self, ins: Sequence[tuple[int, ...] | None], outs: Sequence[tuple[int, ...]], itemsize: int) -> Saved:
        return Saved(inputs=(0,))  # the ids


@op("position_embedding")
class PositionEmbedding(OpArgs):
    """Learned (or fixed sinusoidal) embedding of positions ``0..T-1`` of a ``[B, T, ...]`` input.

    The output is ``[1, T, dim]`` and broadcasts against ``[B, T, dim]`` token embeddings.
    """

    family: ClassVar[str] = "nn"
    lookup_table: ClassVar[bool] = True
    onnx: ClassVar[Onnx] = Onnx(("Gather", "Slice"))
    examples: ClassVar[tuple[Example, ...]] = (
        Example({"max_len": 16, "dim": 8}, ("B,T:int64<20",)),
        Example({"max_len": 16, "dim": 8, "kind": "sinusoidal"}, ("B,T,8",), id="sinusoidal"),
    )
    max_len: PositiveInt
    dim: PositiveInt
    kind: Literal["learned", "sinusoidal"] = "learned"
    axis: int = Field(1, description="the sequence axis of the input")

    def infer(self, x: TensorType) -> TensorType:
        if x.rank <= self.axis:
            raise OpError(f"input {x} has no axis {self.axis}")
        t = x.shape[self.axis]
        if isinstance(t, int) and t > self.max_len:
            raise OpError(f"sequence length {t} exceeds max_len {self.max_len}")
        if self.kind == "sinusoidal" and self.dim % 2:
            raise OpError("sinusoidal embeddings need an even dim")
        return TensorType((1, t, self.dim), "float32")

    def check(self, facts: Facts, x: TensorType) -> None:
        """A symbolic sequence length must fit the table at its example size too."""
        t = x.shape[self.axis]
        if not isinstance(t, int) and facts.size(t) > self.max_len:
            raise OpError(f"sequence length {t} = {facts.size(t)} (its example size) exceeds max_len {self.max_len}")

    def params(self, x: TensorType) -> dict[str, tuple[int, ...]]:
        return {"weight": (self.max_len, self.dim)} if self.kind == "learned" else {}

    def buffers(self, x: TensorType) -> dict[str, tuple[int, ...]]:
        return {"table": (self.max_len, self.dim)} if self.kind == "sinusoidal" else {}

    def lower(self, ctx: LowerContext, x: Any) -> Any:
        return ctx.module(rt.PositionEmbedding, self.max_len, self.dim, self.kind, self.axis)(x)

    def saves(self, ins: Sequence[tuple[int, ...] | None], outs: Sequence[tuple[int, ...]], itemsize: int) -> Saved:
        return Saved()  # the output is a slice of the table: nothing new to keep
