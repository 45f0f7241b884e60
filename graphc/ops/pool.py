"""Spatial ops without parameters: pooling, adaptive pooling, upsampling, padding.

They share conv arithmetic (:func:`~graphc.ops.common.window_out`) and accept
``[N, C, *spatial]`` or unbatched ``[C, *spatial]``; sizes stay symbolic.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import prod
from typing import Any, ClassVar, Literal

from pydantic import Field, PositiveFloat, PositiveInt

from graphc.ops.common import in_type, need_float, spatial_rank, tup, window_out
from graphc.ops.context import LowerContext
from graphc.ops.lazy import F
from graphc.ops.registry import Example, Onnx, OpArgs, OpError, Saved, op
from graphc.shapes import Dim, TensorType

IntOrList = int | list[int]


def _n(v: IntOrList, n: int, what: str) -> tuple[int, ...]:
    t = tup(v, n)
    if len(t) != n:
        raise OpError(f"{what} needs {n} value(s), got {list(t)}")
    return t


class _Pool(OpArgs):
    """Shared rules of max/avg pooling (the registered ops set ``ndim`` and ``kind``)."""

    family: ClassVar[str] = "pool"
    ndim: ClassVar[int] = 2
    kind: ClassVar[str] = "max"

    kernel: IntOrList = Field(description="window size")
    stride: IntOrList | None = Field(None, description="step; default: the kernel size")
    padding: IntOrList = Field(0, description="implicit padding on both sides (at most half the kernel)")
    ceil_mode: bool = Field(False, description="round output sizes up instead of down")

    def _k(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        k = _n(self.kernel, self.ndim, "kernel")
        s = _n(self.stride if self.stride is not None else self.kernel, self.ndim, "stride")
        p = _n(self.padding, self.ndim, "padding")
        if any(2 * pi > ki for pi, ki in zip(p, k, strict=True)):
            raise OpError(f"padding {list(p)} must be at most half the kernel {list(k)}")
        return k, s, p

    def _dilation(self) -> tuple[int, ...]:
        return (1,) * self.ndim

    def infer(self, x: TensorType) -> TensorType:
        spatial_rank(x, self.ndim, self.op_name)
        need_float(x)
        k, s, p = self._k()
        lead = x.shape[: x.rank - self.ndim]
        sizes = x.shape[x.rank - self.ndim :]
        d = self._dilation()
        out = [window_out(n, k[i], s[i], p[i], d[i], self.ceil_mode) for i, n in enumerate(sizes)]
        return x.with_shape((*lead, *out))

    def flops(self, ins: Sequence[tuple[int, ...]], outs: Sequence[tuple[int, ...]]) -> int:
        return prod(outs[0]) * prod(self._k()[0])


class _MaxPool(_Pool):
    onnx: ClassVar[Onnx] = Onnx(("MaxPool",))
    dilation: IntOrList = Field(1, description="spacing between window elements")

    def _dilation(self) -> tuple[int, ...]:
        return _n(self.dilation, self.ndim, "dilation")

    def saves(self, ins: Sequence[tuple[int, ...] | None], outs: Sequence[tuple[int, ...]], itemsize: int) -> Saved:
        return Saved(inputs=(0,), extra=8 * prod(outs[0]))  # x and where each maximum was (int64)

    def lower(self, ctx: LowerContext, x: Any) -> Any:
        k, s, p = self._k()
        fn = F.max_pool1d if self.ndim == 1 else F.max_pool2d
        return fn(x, k, s, p, self._dilation(), ceil_mode=self.ceil_mode)


class _AvgPool(_Pool):
    onnx: ClassVar[Onnx] = Onnx(("AveragePool",))
    count_include_pad: bool = Field(True, description="padding zeros count in the average")

    def saves(self, ins: Sequence[tuple[int, ...] | None], outs: Sequence[tuple[int, ...]], itemsize: int) -> Saved:
        return Saved(inputs=(0,))

    def lower(self, ctx: LowerContext, x: Any) -> Any:
        k, s, p = self._k()
        fn = F.avg_pool1d if self.ndim == 1 else F.avg_pool2d
        return fn(x, k, s, p, ceil_mode=self.ceil_mode, count_include_pad=self.count_include_pad)


@op("max_pool1d")
class MaxPool1d(_MaxPool):
    """Max over sliding windows of ``[N, C, L]``."""

    ndim: ClassVar[int] = 1
    examples: ClassVar[tuple[Example, ...]] = (
        Example({"kernel": 2}, ("B,3,L",)),
        Example({"kernel": 3, "stride": 2, "padding": 1, "ceil_mode": True}, ("B,3,L",), id="ceil"),
    )


@op("max_pool2d")
class MaxPool2d(_MaxPool):
    """Max over sliding windows of ``[N, C, H, W]`` (``stride`` defaults to ``kernel``)."""

    examples: ClassVar[tuple[Example, ...]] = (
        Example({"kernel": 2}, ("B,3,H,W",)),
        Example({"kernel": 3, "stride": 2, "padding": 1, "ceil_mode": True}, ("B,2,H,W",), id="ceil"),
        Example({"kernel": [2, 3], "stride": 1, "dilation": 2}, ("2,H,W",), id="dilated-unbatched"),
    )


@op("avg_pool1d")
class AvgPool1d(_AvgPool):
    """Average over sliding windows of ``[N, C, L]``."""

    ndim: ClassVar[int] = 1
    examples: ClassVar[tuple[Example, ...]] = (Example({"kernel": 3, "stride": 2, "padding": 1, "ceil_mode": True}, ("B,3,L",)),)


@op("avg_pool2d")
class AvgPool2d(_AvgPool):
    """Average over sliding windows of ``[N, C, H, W]``."""

    examples: ClassVar[tuple[Example, ...]] = (
        Example({"kernel": 2}, ("B,3,H,W",)),
        Example({"kernel": 3, "stride": 2, "padding": 1, "count_include_pad": False}, ("B,2,H,W",), id="pad"),
    )


class _Adaptive(OpArgs):
    """Pool to a fixed output size, whatever the input size (global pooling with size 1)."""

    family: ClassVar[str] = "pool"
    ndim: ClassVar[int] = 2
    fn: ClassVar[str] = "adaptive_avg_pool2d"

    size: IntOrList = Field(1, description="output size per spatial dim")

    def infer(self, x: TensorType) -> TensorType:
        spatial_rank(x, self.ndim, self.op_name)
        need_float(x)
        out = _n(self.size, self.ndim, "size")
        if any(o < 1 for o in out):
            raise OpError(f"size {list(out)} must be positive")
        return x.with_shape((*x.shape[: x.rank - self.ndim], *out))

    def saves(self, ins: Sequence[tuple[int, ...] | None], outs: Sequence[tuple[int, ...]], itemsize: int) -> Saved:
        return Saved(inputs=(0,), extra=8 * prod(outs[0]) if "max" in self.fn else 0)  # max: the argmax indices too

    def lower(self, ctx: LowerContext, x: Any) -> Any:
        return getattr(F, self.fn)(x, _n(self.size, self.ndim, "size"))

    def flops(self, ins: Sequence[tuple[int, ...]], outs: Sequence[tuple[int, ...]]) -> int:
        return prod(ins[0])


_AEX2 = (Example({"size": 1}, ("B,3,H,W",)), Example({"size": [2, 3]}, ("B,2,H,W",), id="2x3"))
_AEX1 = (Example({"size": 1}, ("B,3,L",)), Example({"size": 4}, ("B,2,L",), id="4"))


@op("adaptive_avg_pool1d")
class AdaptiveAvgPool1d(_Adaptive):
    """Average-pool ``[N, C, L]`` to ``[N, C, size]``."""

    ndim: ClassVar[int] = 1
    fn: ClassVar[str] = "adaptive_avg_pool1d"
    onnx: ClassVar[Onnx] = Onnx(("GlobalAveragePool", "AveragePool", "ReduceMean"))
    examples: ClassVar[tuple[Example, ...]] = _AEX1


@op("adaptive_avg_pool2d")
class AdaptiveAvgPool2d(_Adaptive):
    """Average-pool ``[N, C, H, W]`` to ``[N, C, *size]`` (``size: 1`` is global average pooling)."""

    onnx: ClassVar[Onnx] = Onnx(("GlobalAveragePool", "AveragePool", "ReduceMean"))
    examples: ClassVar[tuple[Example, ...]] = _AEX2


@op("adaptive_max_pool1d")
class AdaptiveMaxPool1d(_Adaptive):
    """Max-pool ``[N, C, L]`` to ``[N, C, size]``."""

    ndim: ClassVar[int] = 1
    fn: ClassVar[str] = "adaptive_max_pool1d"
    onnx: ClassVar[Onnx] = Onnx(("GlobalMaxPool", "MaxPool", "ReduceMax"))
    examples: ClassVar[tuple[Example, ...]] = _AEX1


@op("adaptive_max_pool2d")
class AdaptiveMaxPool2d(_Adaptive):
    """Max-pool ``[N, C, H, W]`` to ``[N, C, *size]``."""

    fn: ClassVar[str] = "adaptive_max_pool2d"
    onnx: ClassVar[Onnx] = Onnx(("GlobalMaxPool", "MaxPool", "ReduceMax"))
    examples: ClassVar[tuple[Example, ...]] = _AEX2


_MODES = {"nearest": (1, 2, 3), "linear": (1,), "bilinear": (2,), "bicubic": (2,)}


@op("upsample")
class Upsample(OpArgs):
    """Resize the trailing spatial dims by ``scale`` or to ``size`` (F.interpolate).

    ``mode`` fixes how many spatial dims there are: ``linear`` 1 (``[N, C, L]``),
    ``bilinear``/``bicubic`` 2, ``nearest`` 1 to 3 (from the input's rank).  A fractional
    ``scale`` needs fixed input sizes; an integer one keeps them symbolic (``2*H``).
    """

    family: ClassVar[str] = "pool"
    onnx: ClassVar[Onnx] = Onnx(("Resize",), atol=1e-5)
    examples: ClassVar[tuple[Example, ...]] = (
        Example({"scale": 2}, ("B,3,H,W",)),
        Example({"size": [5, 6], "mode": "bilinear"}, ("B,2,H,W",), id="bilinear-size"),
        Example({"scale": 2, "mode": "linear", "align_corners": True}, ("B,2,L",), id="linear"),
    )

    scale: PositiveFloat | list[PositiveFloat] | None = Field(None, description="size multiplier (one per spatial dim, or one for all)")
    size: PositiveInt | list[PositiveInt] | None = Field(None, description="output size instead of a scale")
    mode: Literal["nearest", "linear", "bilinear", "bicubic"] = "nearest"
    align_corners: bool | None = Field(None, description="linear modes only: align the corner pixels")

    def _ndim(self, x: TensorType) -> int:
        allowed = _MODES[self.mode]
        nd = x.rank - 2
        if nd not in allowed:
            dims = " or ".join(str(a + 2) for a in allowed)
            raise OpError(f"mode '{self.mode}' needs an input of rank {dims} ([N, C, *spatial]), got {x}")
        if (self.scale is None) == (self.size is None):
            raise OpError("give exactly one of 'scale' and 'size'")
        if self.align_corners is not None and self.mode == "nearest":
            raise OpError("align_corners only applies to the linear modes")
        return nd

    def _resized(self, n: Dim, scale: float) -> Dim:
        if float(scale).is_integer():
            return n * int(scale)
        if not isinstance(n, int):
            raise OpError(f"a fractional scale {scale} needs a fixed size, got symbolic '{n}' (use an integer scale or 'size')")
        return int(n * scale)

    def infer(self, x: TensorType) -> TensorType:
        need_float(x)
        nd = self._ndim(x)
        lead = x.shape[:2]
        if self.size is not None:
            return x.with_shape((*lead, *_n(self.size, nd, "size")))
        scales = self.scale if isinstance(self.scale, list) else [self.scale] * nd
        if len(scales) != nd:
            raise OpError(f"scale needs {nd} value(s), got {scales}")
        return x.with_shape((*lead, *(self._resized(n, float(s)) for n, s in zip(x.shape[2:], scales, strict=True))))  # type: ignore[arg-type]

    def saves(self, ins: Sequence[tuple[int, ...] | None], outs: Sequence[tuple[int, ...]], itemsize: int) -> Saved:
        return Saved()  # the gradient needs only the sizes

    def lower(self, ctx: LowerContext, x: Any) -> Any:
        nd = self._ndim(in_type(ctx))
        if self.size is not None:
            return F.interpolate(x, size=_n(self.size, nd, "size"), mode=self.mode, align_corners=self.align_corners)
        scale = tuple(float(s) for s in self.scale) if isinstance(self.scale, list) else float(self.scale)  # type: ignore[arg-type]
        return F.interpolate(x, scale_factor=scale, mode=self.mode, align_corners=self.align_corners)

    def flops(self, ins: Sequence[tuple[int, ...]], outs: Sequence[tuple[int, ...]]) -> int:
        return prod(outs[0]) * (1 if self.mode == "nearest" else 4)


@op("pad")
class Pad(OpArgs):
    """Pad the trailing dims; ``pad`` lists (before, after) pairs from the LAST dim backwards, as in F.pad.

    ``[1, 1]`` pads the last dim by one on each side; ``[1, 1, 2, 2]`` also the one before.
    ``reflect`` needs each pad smaller than the size it reflects.
    """

    family: ClassVar[str] = "pool"
    onnx: ClassVar[Onnx] = Onnx(("Pad",))
    examples: ClassVar[tuple[Example, ...]] = (
        Example({"pad": [1, 2]}, ("B,T,4",)),
        Example({"pad": [1, 1, 2, 0], "mode": "reflect"}, ("B,3,H,W",), id="reflect"),
        Example({"pad": [2, 1], "mode": "replicate", "value": 0.0}, ("B,3,L",), id="replicate"),
    )

    pad: list[int] = Field(description="(before, after) amounts, last dim first; even length")
    mode: Literal["constant", "reflect", "replicate", "circular"] = "constant"
    value: float = Field(0.0, description="fill value for mode 'constant'")

    def infer(self, x: TensorType) -> TensorType:
        if len(self.pad) % 2 or len(self.pad) // 2 > x.rank:
            raise OpError(f"pad {self.pad} must have an even length of at most 2x the rank of {x}")
        if self.mode != "constant":
            if min(self.pad) < 0:
                raise OpError(f"mode '{self.mode}' cannot take negative pads {self.pad}")
            k = len(self.pad) // 2
            if k == 0 or x.rank not in (k + 1, k + 2):
                raise OpError(f"mode '{self.mode}' padding {k} dim(s) needs an input of rank {k + 1} or {k + 2} ([N, C, *spatial]), got {x}")
        shape = list(x.shape)
        for i in range(len(self.pad) // 2):
            before, after = self.pad[2 * i], self.pad[2 * i + 1]
            n = shape[x.rank - 1 - i]
            if self.mode == "reflect" and isinstance(n, int) and max(before, after) >= n:
                raise OpError(f"reflect pad {max(before, after)} must be smaller than dim {x.rank - 1 - i} of {x}")
            shape[x.rank - 1 - i] = n + before + after
        return x.with_shape(shape)

    def saves(self, ins: Sequence[tuple[int, ...] | None], outs: Sequence[tuple[int, ...]], itemsize: int) -> Saved:
        return Saved()  # the gradient is a slice

    def lower(self, ctx: LowerContext, x: Any) -> Any:
        if self.mode == "constant":
            return F.pad(x, tuple(self.pad), mode="constant", value=self.value)
        return F.pad(x, tuple(self.pad), mode=self.mode)
