"""Recurrent layers (LSTM, GRU) with their state outputs.

Both are ``torch.nn.LSTM`` / ``torch.nn.GRU`` as they are (so weights load from any PyTorch
checkpoint under the same names), with three things made explicit for specs: the outputs
are named (``lstm`` / ``lstm.out`` is the sequence, ``lstm.h`` and ``lstm.c`` the final
states), the initial state is an optional input, and the layout defaults to batch-first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from pydantic import Field, PositiveInt

from graphc.ops.common import in_type, need_float, need_rank
from graphc.ops.context import LowerContext
from graphc.ops.lazy import nn
from graphc.ops.registry import Example, Onnx, OpArgs, OpError, Saved, op
from graphc.shapes import TensorType


class _Recurrent(OpArgs):
    """Rules shared by lstm and gru (the registered ops set ``gates`` and ``ctor``)."""

    family: ClassVar[str] = "recurrent"
    autocast: ClassVar[Literal["lower", "float32", "promote"]] = "lower"
    gates: ClassVar[int] = 4
    kept_per_step: ClassVar[int] = 16  # x hidden fp32 values kept per step, layer and direction (memory planner)
    bidir_upper: ClassVar[float] = 1.4
    ctor: ClassVar[str] = "LSTM"
    states: ClassVar[tuple[str, ...]] = ("h", "c")

    hidden: PositiveInt = Field(description="hidden size per direction")
    layers: PositiveInt = Field(1, description="stacked layers")
    bidirectional: bool = False
    batch_first: bool = Field(True, description="input and output are [B, T, F] (else [T, B, F])")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout between layers (needs layers > 1)")
    bias: bool = True

    def output_names(self) -> list[str]:
        return ["out", *self.states]

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    def _state_type(self, x: TensorType) -> TensorType:
        batch = x.shape[0] if self.batch_first else x.shape[1]
        return x.with_shape((self.layers * self.directions, batch, self.hidden))

    def infer(self, x: TensorType, *state: TensorType | None) -> list[TensorType]:
        need_rank(x, 3, what="input [B, T, F]" if self.batch_first else "input [T, B, F]")
        need_float(x)
        self.static(x.shape[2], "the input's feature dim")
        if self.dropout and self.layers == 1:
            raise OpError("dropout is applied between layers; it needs layers > 1")
        st = self._state_type(x)
        given = [s for s in state if s is not None]
        if given and len(given) != len(self.states):
            raise OpError(f"give all initial states ({', '.join(n + '0' for n in self.states)}) or none")
        for name, s in zip(self.states, given, strict=False):
            if s.shape != st.shape:
                raise OpError(f"initial state {name}0 must be {st} [layers * directions, B, hidden], got {s}")
        seq = (*x.shape[:2], self.hidden * self.directions)
        return [x.with_shape(seq), *(st for _ in self.states)]

    def params(self, x: TensorType, *state: TensorType | None) -> dict[str, tuple[int, ...]]:
        feat = self.static(x.shape[2], "the input's feature dim")
        g, h = self.gates * self.hidden, self.hidden
        p: dict[str, tuple[int, ...]] = {}
        for layer in range(self.layers):
            size = feat if layer == 0 else h * self.directions
            for sfx in ("", "_reverse")[: self.directions]:
                p[f"weight_ih_l{layer}{sfx}"] = (g, size)
                p[f"weight_hh_l{layer}{sfx}"] = (g, h)
                if self.bias:
                    p[f"bias_ih_l{layer}{sfx}"] = (g,)
                    p[f"bias_hh_l{layer}{sfx}"] = (g,)
        return p

    def lower(self, ctx: LowerContext, x: Any, *state: Any) -> Any:
        feat = self.static(in_type(ctx).shape[2], "the input's feature dim")
        mod = ctx.module(
            getattr(nn, self.ctor), feat, self.hidden, num_layers=self.layers, bias=self.bias,
            batch_first=True, dropout=self.dropout, bidirectional=self.bidirectional,
        )
        given = [s for s in state if s is not None]
        init = None if not given else given[0] if len(given) == 1 else tuple(given)
        # time-first runs as batch-first between two transposes: torch's ONNX export of a
        # time-first LSTM fixes the batch size of its zero state to the export example's
        res = mod(x if self.batch_first else x.transpose(0, 1), init)
        out, last = res[0] if self.batch_first else res[0].transpose(0, 1), res[1]
        return [out, last] if len(self.states) == 1 else [out, *(last[i] for i in range(len(self.states)))]

    def saves(self, ins: Sequence[tuple[int, ...] | None], outs: Sequence[tuple[int, ...]], itemsize: int) -> Saved:
        """The input, each upper layer's input sequence, and what the kernel keeps per step,
        layer and direction: ``kept_per_step`` x hidden fp32 values, measured on CPU (the LSTM's
        oneDNN workspace, ``bidir_upper`` times more for the upper layers of a bidirectional
        stack; the GRU's native kernel); cuDNN keeps less."""
        x = ins[0] or (1, 1, 1)
        steps = x[0] * x[1]
        per_step = self.kept_per_step * self.hidden * 4
        work = sum(steps * per_step * self.directions * (self.bidir_upper if layer and self.bidirectional else 1.0) for layer in range(self.layers))
        upper = steps * self.hidden * self.directions * (self.layers - 1) * (itemsize + (1 if self.dropout else 0))
        return Saved(inputs=(0,), extra=int(work) + upper)

    def flops(self, ins: Sequence[tuple[int, ...]], outs: Sequence[tuple[int, ...]]) -> int:
        """Gate matmuls: per step, layer and direction ``2 * gates * hidden * (in + hidden)``."""
        b, t = (ins[0][0], ins[0][1]) if self.batch_first else (ins[0][1], ins[0][0])
        total = 0
        for layer in range(self.layers):
            size = ins[0][2] if layer == 0 else self.hidden * self.directions
            total += 2 * self.gates * self.hidden * (size + self.hidden) * self.directions
        return total * b * t


@op("lstm")
class LSTM(_Recurrent):
    """Multi-layer (bi)LSTM; outputs ``out`` [B, T, D*hidden], ``h`` and ``c`` [layers*D, B, hidden].

    Optional inputs ``h0`` and ``c0`` (both or neither) set the initial state.
    """

    inputs: ClassVar[tuple[str, ...]] = ("x", "h0?", "c0?")
    onnx: ClassVar[Onnx] = Onnx(("LSTM",), atol=1e-5)
    examples: ClassVar[tuple[Example, ...]] = (
        Example({"hidden": 6}, ("B,T,4",)),
        Example({"hidden": 5, "layers": 2, "bidirectional": True, "dropout": 0.2}, ("B,T,4",), id="bi-2layer"),
        Example({"hidden": 3, "batch_first": False, "bias": False}, ("T,B,4", "1,B,3", "1,B,3"), id="time-first-h0"),
    )


@op("gru")
class GRU(_Recurrent):
    """Multi-layer (bi)GRU; outputs ``out`` [B, T, D*hidden] and ``h`` [layers*D, B, hidden].

    Optional input ``h0`` sets the initial state.
    """

    inputs: ClassVar[tuple[str, ...]] = ("x", "h0?")
    onnx: ClassVar[Onnx] = Onnx(("GRU",), atol=1e-5)
    gates: ClassVar[int] = 3
    kept_per_step: ClassVar[int] = 8
    bidir_upper: ClassVar[float] = 1.0
    ctor: ClassVar[str] = "GRU"
    states: ClassVar[tuple[str, ...]] = ("h",)
    examples: ClassVar[tuple[Example, ...]] = (
        Example({"hidden": 6, "bidirectional": True}, ("B,T,4",)),
        Example({"hidden": 4, "layers": 2}, ("B,T,4", "2,B,4"), id="2layer-h0"),
    )
