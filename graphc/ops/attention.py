"""Attention ops (multi-head self/cross attention, rotary embeddings).

Both lower to modules of :mod:`graphc.lower.runtime` (``Attention``, ``Rotary``), which share
one RoPE function: ``attention`` with ``rotary: true`` rotates q and k inside the layer
(what a LLaMA-style spec wants), ``rotary_embedding`` applies the same rotation to any
``[..., T, heads * head_dim]`` tensor (for attention built from primitives).
"""

from __future__ import annotations

from collections.abc import Sequence
from math import prod
from typing import Any, ClassVar, Literal

from pydantic import Field, PositiveInt

from graphc.ops.common import in_type, need_float, need_rank
from graphc.ops.context import LowerContext
from graphc.ops.lazy import rt
from graphc.ops.registry import Example, Onnx, OpArgs, OpError, Saved, op
from graphc.shapes import TensorType

_SEQ = {"B": 2, "T": 5, "L": 3}, {"B": 3, "T": 7, "L": 6}


@op("attention")
class Attention(OpArgs):
    """Multi-head attention (self or cross) via ``scaled_dot_product_attention``.

    Without ``key`` it is self-attention with one fused ``qkv`` linear (or ``q``/``k``/``v``
    with ``fused: false``); with ``key`` it attends from ``query [B, T, Dq]`` to
    ``key [B, S, Dk]`` through ``q`` + fused ``kv`` (``value`` given, or ``fused: false``:
    ``q``/``k``/``v``).  ``proj`` maps the heads back to ``out`` (default: Dq).
    ``key_padding_mask`` is bool ``[B, S]``, True = ignore that key; a bool ``attn_mask``
    (``[T, S]``, ``[B, T, S]``, ``[B, H, T, S]``) also means True = ignore, a float one is added
    to the scores.  Like ``nn.MultiheadAttention`` it also takes unbatched inputs: query
    ``[T, Dq]``, key/value ``[S, D]``, ``key_padding_mask`` ``[S]``, ``attn_mask`` ``[T, S]`` or
    ``[H, T, S]``.  ``kv_heads`` < ``heads`` gives grouped-query attention; ``rotary`` applies
    RoPE to q and k.
    """

    family: ClassVar[str] = "attention"
    autocast: ClassVar[Literal["lower", "float32", "promote"]] = "lower"
    inputs: ClassVar[tuple[str, ...]] = ("query", "key?", "value?", "key_padding_mask?", "attn_mask?")
    onnx: ClassVar[Onnx] = Onnx(("MatMul", "Softmax"), atol=1e-4)
    examples: ClassVar[tuple[Example, ...]] = (
        Example({"heads": 2, "causal": True}, ("B,T,16",), sizes=_SEQ, id="causal-self"),
        Example({"heads": 4, "fused": False, "bias": False, "out": 6}, ("B,T,8",), sizes=_SEQ, id="self-separate"),
        Example({"heads": 2}, ("B,T,8", "B,L,12"), sizes=_SEQ, id="cross"),
        Example({"heads": 2, "head_dim": 3}, ("B,T,8", "B,L,12", "B,L,4", "B,L:bool"), sizes=_SEQ, id="cross-kv-mask"),
        Example({"heads": 4, "kv_heads": 2, "rotary": True, "causal": True, "bias": False}, ("B,T,16",), sizes=_SEQ, id="gqa-rope"),
        Example({"heads": 2, "dropout": 0.1}, ("B,T,8", "B,L,8", "B,L,8", "B,L:bool", "T,L:bool"), sizes=_SEQ, id="both-masks"),
        Example({"heads": 2, "causal": True}, ("T,16",), sizes=_SEQ, id="unbatched-self"),
        Example({"heads": 2, "head_dim": 3}, ("T,8", "L,12", "L,4", "L:bool", "2,T,L:bool"), sizes=_SEQ, id="unbatched-cross-masks"),
    )

    heads: PositiveInt = Field(description="number of attention heads")
    kv_heads: PositiveInt | None = Field(None, description="key/value heads (grouped-query attention); default: heads")
    head_dim: PositiveInt | None = Field(None, description="size of one head; default: query dim / heads")
    out: PositiveInt | None = Field(None, description="output features; default: the query's")
    causal: bool = Field(False, description="query i sees keys 0..i only")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the attention weights (training only)")
    bias: bool = Field(True, description="biases in the projections")
    fused: bool = Field(True, description="one fused qkv (self) / kv (cross) linear instead of separate q, k, v")
    rotary: bool = Field(False, description="rotary position embedding (RoPE) on q and k")
    rope_base: float = Field(10000.0, gt=0, description="RoPE frequency base")

    def _dims(self, query: TensorType) -> tuple[int, int, int]:
        """(query dim, head_dim, kv_heads), checked."""
        dq = self.static(query.shape[-1], "the query's feature dim")
        kvh = self.kv_heads or self.heads
        if self.heads % kvh:
            raise OpError(f"kv_heads={kvh} must divide heads={self.heads}")
        if self.head_dim is None and dq % self.heads:
            raise OpError(f"query dim {dq} is not divisible by heads={self.heads} (set head_dim to choose the head size)")
        hd = self.head_dim or dq // self.heads
        if self.rotary and hd % 2:
            raise OpError(f"rotary needs an even head_dim, got {hd}")
        return dq, hd, kvh

    def _kind(self, key: TensorType | None, value: TensorType | None) -> str:
        if key is None:
            if value is not None:
                raise OpError("'value' needs 'key' (self-attention projects both from the query)")
            return "qkv" if self.fused else "q_k_v"
        return "q_kv" if self.fused and value is None else "q_k_v"

    def infer(
        self, query: TensorType, key: TensorType | None = None, value: TensorType | None = None,
        key_padding_mask: TensorType | None = None, attn_mask: TensorType | None = None,
    ) -> TensorType:
        need_rank(query, 2, 3, what="query [B, T, D] (or unbatched [T, D])")
        need_float(query, "query")
        self._dims(query)
        self._kind(key, value)
        kv = key if key is not None else query
        for name, t in (("key", key), ("value", value)):
            if t is not None:
                need_rank(t, query.rank, what=f"{name} [B, S, D]" if query.rank == 3 else f"{name} [S, D] (the query is unbatched)")
                need_float(t, name)
                self.static(t.shape[-1], f"the {name}'s feature dim")
        if value is not None and key is not None and value.shape[-2] != key.shape[-2]:
            raise OpError(f"key {key} and value {value} have different lengths")
        self._check_masks(query, kv, key_padding_mask, attn_mask)
        return query.with_shape((*query.shape[:-1], self.out or query.shape[-1]))

    @staticmethod
    def _check_masks(query: TensorType, kv: TensorType, kpm: TensorType | None, am: TensorType | None) -> None:
        """Mask shapes, with the batch dim left out when the query is unbatched ``[T, D]``."""
        t, s, batched = query.shape[-2], kv.shape[-2], query.rank == 3
        if kpm is not None:
            want = "[B, S]" if batched else "[S]"
            if kpm.dtype != "bool" or kpm.rank != query.rank - 1:
                raise OpError(f"key_padding_mask must be bool {want} (True = ignore), got {kpm.dtype} {kpm}")
            if kpm.shape[-1] != s:
                raise OpError(f"key_padding_mask {kpm} does not match {s} keys")
        ranks = (2, 3, 4) if batched else (2, 3)
        if am is not None and (am.rank not in ranks or am.shape[-2:] != (t, s)):
            forms = "[T, S], [B, T, S] or [B, H, T, S]" if batched else "[T, S] or [H, T, S] (the query is unbatched)"
            raise OpError(f"attn_mask must be {forms} with T={t}, S={s}; got {am}")

    def params(
        self, query: TensorType, key: TensorType | None = None, value: TensorType | None = None,
        key_padding_mask: TensorType | None = None, attn_mask: TensorType | None = None,
    ) -> dict[str, tuple[int, ...]]:
        dq, hd, kvh = self._dims(query)
        inner, kv_inner = self.heads * hd, kvh * hd
        dk = self.static(key.shape[-1], "key dim") if key is not None else dq
        dv = self.static(value.shape[-1], "value dim") if value is not None else dk
        layers = {
            "qkv": {"qkv": (dq, inner + 2 * kv_inner)},
            "q_kv": {"q": (dq, inner), "kv": (dk, 2 * kv_inner)},
            "q_k_v": {"q": (dq, inner), "k": (dk, kv_inner), "v": (dv, kv_inner)},
        }[self._kind(key, value)] | {"proj": (inner, self.out or dq)}
        p: dict[str, tuple[int, ...]] = {}
        for name, (i, o) in layers.items():
            p[f"{name}.weight"] = (o, i)
            if self.bias:
                p[f"{name}.bias"] = (o,)
        return p

    def lower(self, ctx: LowerContext, query: Any, *rest: Any) -> Any:
        types = [*ctx.in_types, None, None, None, None][:5]
        k_t, v_t = types[1], types[2]
        dq, hd, kvh = self._dims(in_type(ctx))
        dk = k_t.shape[-1] if k_t is not None else dq
        dv = v_t.shape[-1] if v_t is not None else dk
        mod = ctx.module(
            rt.Attention, dq, dk, dv, self.heads, kvh, hd, self.out or dq, kind=self._kind(k_t, v_t),
            causal=self.causal, dropout=self.dropout, bias=self.bias, rope_base=self.rope_base if self.rotary else 0.0,
        )
        if in_type(ctx).rank == 3:
            return mod(query, *rest)
        # unbatched [T, D] (as nn.MultiheadAttention takes it): run as a batch of one; an
        # attn_mask [T, S] already broadcasts over the batch, [H, T, S] gains the batch dim
        batched = [x if x is None or (i == 3 and t is not None and t.rank == 2) else x.unsqueeze(0)
                   for i, (x, t) in enumerate(zip(rest, types[1:], strict=False))]
        return mod(query.unsqueeze(0), *batched).squeeze(0)

    def saves(self, ins: Sequence[tuple[int, ...] | None], outs: Sequence[tuple[int, ...]], itemsize: int) -> Saved:
        """The inputs (for the projections' weight gradients), the projected q, k, v, the
        attention output (``proj``'s input) and its log-sum-exp; a mask, and with dropout
        the attention weights themselves ([B, H, T, S]: the math kernel keeps them)."""
        query = ins[0] or (1, 1)
        key = ins[1] if len(ins) > 1 and ins[1] is not None else query
        b, t, s = (query[0], query[-2], key[-2]) if len(query) == 3 else (1, query[-2], key[-2])
        hd = self.head_dim or query[-1] // self.heads
        kvh = self.kv_heads or self.heads
        inner, kv_inner = self.heads * hd, kvh * hd
        elems = b * t * inner * 2 + b * s * kv_inner * 2  # q and the output; k and v
        if kvh != self.heads:
            elems += 2 * b * s * inner  # k and v repeated to every head
        if self.rotary:
            elems += b * (t + s) * inner  # rotated q and k
        masks = any(m is not None for m in ins[3:5])
        elems += (b * t * s if masks else 0) + (2 * b * self.heads * t * s if self.dropout else 0)
        lse = 4 * b * self.heads * t
        kept = tuple(i for i in range(3) if i < len(ins) and ins[i] is not None)
        return Saved(inputs=kept, extra=elems * itemsize + lse + (b * self.heads * t * s if self.dropout else 0))

    def flops(self, ins: Sequence[tuple[int, ...]], outs: Sequence[tuple[int, ...]]) -> int:
        """Projections plus the two attention matmuls (scores and weighted sum).

        ``ins`` lists only the inputs given, so a second input of the query's rank is taken as
        the key (a self-attention with a ``[B, T, S]`` mask is then estimated as cross-attention).
        """
        rank = len(ins[0])
        b, t, dq = ins[0] if rank == 3 else (1, *ins[0])
        key = ins[1] if len(ins) > 1 and len(ins[1]) == rank else None
        s, dk = (key[-2], key[-1]) if key is not None else (t, dq)
        hd = self.head_dim or dq // self.heads
        inner, kv_inner = self.heads * hd, (self.kv_heads or self.heads) * hd
        proj = 2 * b * (t * dq * inner + 2 * s * dk * kv_inner + t * inner * outs[0][-1])
        return proj + 2 * 2 * b * self.heads * t * s * hd


@op("rotary_embedding")
class RotaryEmbedding(OpArgs):
    """Rotary position embedding (RoPE) of ``[..., T, heads * head_dim]``; positions along dim -2.

    Rotates feature pairs ``(i, i + head_dim/2)`` of every head by angle
    ``pos * base^(-2i/head_dim)`` (the GPT-NeoX / HF LLaMA layout).  For a whole attention
    layer use ``attention`` with ``rotary: true`` instead; this op serves attention written
    from primitives (apply it to q and k before the scores).
    """

    family: ClassVar[str] = "attention"
    onnx: ClassVar[Onnx] = Onnx(("Cos", "Sin", "Mul"), atol=1e-5)
    examples: ClassVar[tuple[Example, ...]] = (
        Example({"heads": 2}, ("B,T,8",)),
        Example({"base": 500.0}, ("B,3,T,4",), id="per-head-layout"),
    )
    heads: PositiveInt = Field(1, description="heads packed in the last dim (each rotated separately)")
    base: float = Field(10000.0, gt=0, description="frequency base (LLaMA: 10000, LLaMA 3: 500000)")

    def infer(self, x: TensorType) -> TensorType:
        need_float(x)
        if x.rank < 2:
            raise OpError(f"rotary_embedding needs [..., T, D], got {x}")
        d = self.static(x.shape[-1], "the feature dim")
        if d % self.heads or (d // self.heads) % 2:
            raise OpError(f"feature dim {d} must split into {self.heads} head(s) of even size")
        return x

    def lower(self, ctx: LowerContext, x: Any) -> Any:
        return ctx.module(rt.Rotary, self.heads, self.base)(x)

    def flops(self, ins: Sequence[tuple[int, ...]], outs: Sequence[tuple[int, ...]]) -> int:
        return 3 * prod(ins[0])
