"""Modules and functions that lowered graphs call, for ops torch has no single layer for.

This file imports only torch and the standard library: ``graphc compile`` copies it into the
standalone ``model.py``.  Keep every helper here self-contained.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class PositionEmbedding(nn.Module):
    """Embedding of positions ``0..T-1`` along ``axis``; output ``[1, T, dim]``."""

    table: torch.Tensor

    def __init__(self, max_len: int, dim: int, kind: str = "learned", axis: int = 1) -> None:
        super().__init__()
        self.kind = kind
        self.axis = axis
        if kind == "learned":
            self.weight = nn.Parameter(torch.empty(max_len, dim))
            nn.init.normal_(self.weight)
        else:
            pos = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
            freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
            table = torch.zeros(max_len, dim)
            table[:, 0::2] = torch.sin(pos * freq)
            table[:, 1::2] = torch.cos(pos * freq)
            self.register_buffer("table", table, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[self.axis]
        table = self.weight if self.kind == "learned" else self.table
        return table[:t].unsqueeze(0)


class Constant(nn.Module):
    """A fixed tensor, held as the buffer ``value`` (the ``constant`` op)."""

    value: torch.Tensor

    def __init__(self, value: float | list[object], shape: tuple[int, ...], dtype: str = "float32") -> None:
        super().__init__()
        t = torch.tensor(value, dtype=getattr(torch, dtype))
        self.register_buffer("value", t.expand(shape).clone() if t.dim() == 0 else t)

    def forward(self) -> torch.Tensor:
        return self.value


class Parameter(nn.Module):
    """A learned tensor, held as the parameter ``weight`` (the ``parameter`` op)."""

    def __init__(self, shape: tuple[int, ...], std: float = 0.02, fill: float | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(shape))
        if fill is None:
            nn.init.normal_(self.weight, std=std)
        else:
            nn.init.constant_(self.weight, fill)

    def forward(self) -> torch.Tensor:
        return self.weight


# --- attention & sequence ops (graphc/ops/attention.py) -----------------------------------


def rotary(x: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotary position embedding (RoPE) of ``x [..., T, D]``, positions along dim -2.

    The "rotate half" layout of GPT-NeoX / HF LLaMA: feature ``i`` pairs with ``i + D/2``.
    Angles are computed from the sequence length on every call (no buffer, so nothing
    extra in the state dict, and any length works, also after ONNX export).
    """
    t, d = x.shape[-2], x.shape[-1]
    inv = torch.pow(base, -torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d)
    ang = torch.arange(t, device=x.device, dtype=torch.float32)[:, None] * inv[None, :]
    ang = torch.cat([ang, ang], dim=-1)
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return x * ang.cos().to(x.dtype) + torch.cat([-x2, x1], dim=-1) * ang.sin().to(x.dtype)


class Rotary(nn.Module):
    """RoPE over ``[..., T, heads * head_dim]`` (each head rotated on its own)."""

    def __init__(self, heads: int = 1, base: float = 10000.0) -> None:
        super().__init__()
        self.heads = heads
        self.base = base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.unflatten(-1, (self.heads, -1)).transpose(-2, -3)  # [..., H, T, Dh]
        return rotary(h, self.base).transpose(-2, -3).flatten(-2)


class Attention(nn.Module):
    """Multi-head attention through ``F.scaled_dot_product_attention``.

    Parameter names (the weight mapping to HF models is in docs/attention.md):
    self-attention ``qkv`` (fused, rows = [q; k; v]) or ``q``/``k``/``v``; cross-attention
    ``q`` + ``kv`` (fused, rows = [k; v]) or ``q``/``k``/``v``; output ``proj``.
    ``kind`` picks the layout once, in ``__init__``, so ``forward`` has no data-dependent
    branches and exports to ONNX.  Masks: ``key_padding_mask`` is bool ``[B, S]``, True =
    ignore that key; a bool ``attn_mask`` (``[T, S]``, ``[B, T, S]`` or ``[B, H, T, S]``) also
    means True = ignore, a float one is added to the scores.
    """

    def __init__(
        self, q_dim: int, k_dim: int, v_dim: int, heads: int, kv_heads: int, head_dim: int, out: int,
        kind: str = "qkv", causal: bool = False, dropout: float = 0.0, bias: bool = True, rope_base: float = 0.0,
    ) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        self.kind, self.causal, self.dropout, self.rope_base = kind, causal, dropout, rope_base
        inner, kv_inner = heads * head_dim, kv_heads * head_dim
        if kind == "qkv":
            self.qkv = nn.Linear(q_dim, inner + 2 * kv_inner, bias=bias)
        else:
            self.q = nn.Linear(q_dim, inner, bias=bias)
            if kind == "q_kv":
                self.kv = nn.Linear(k_dim, 2 * kv_inner, bias=bias)
            else:
                self.k = nn.Linear(k_dim, kv_inner, bias=bias)
                self.v = nn.Linear(v_dim, kv_inner, bias=bias)
        self.proj = nn.Linear(inner, out, bias=bias)

    def project(self, query: torch.Tensor, key: torch.Tensor | None, value: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Query, key and value projections, each still ``[B, T, heads * head_dim]``."""
        inner, kv_inner = self.heads * self.head_dim, self.kv_heads * self.head_dim
        if self.kind == "qkv":
            q, k, v = self.qkv(query).split([inner, kv_inner, kv_inner], dim=-1)
            return q, k, v
        src = query if key is None else key
        if self.kind == "q_kv":
            k, v = self.kv(src).split([kv_inner, kv_inner], dim=-1)
            return self.q(query), k, v
        return self.q(query), self.k(src), self.v(src if value is None else value)

    def split_heads(self, x: torch.Tensor, heads: int) -> torch.Tensor:
        """``[B, T, heads * Dh]`` -> ``[B, heads, T, Dh]``; grouped k/v heads are repeated."""
        x = x.unflatten(-1, (heads, self.head_dim)).transpose(1, 2)
        if heads != self.heads:
            x = x.repeat_interleave(self.heads // heads, dim=1)
        return x

    def mask(self, q: torch.Tensor, k: torch.Tensor, key_padding_mask: torch.Tensor | None, attn_mask: torch.Tensor | None) -> torch.Tensor:
        """One additive float mask ``[B?, H?, T, S]`` from the causal flag and both masks."""
        t, s = q.shape[-2], k.shape[-2]
        ignore = torch.zeros(t, s, dtype=torch.bool, device=q.device)
        if self.causal:
            ignore = torch.ones(t, s, dtype=torch.bool, device=q.device).triu(1)
        add = torch.zeros((), dtype=q.dtype, device=q.device)
        if attn_mask is not None:
            m = attn_mask if attn_mask.dim() != 3 else attn_mask.unsqueeze(1)
            if m.dtype == torch.bool:
                ignore = ignore | m
            else:
                add = add + m.to(q.dtype)
        if key_padding_mask is not None:
            ignore = ignore | key_padding_mask[:, None, None, :].to(torch.bool)
        # a large finite value (not -inf): a row with every key masked gives uniform weights, not NaN
        return ignore.to(q.dtype) * torch.finfo(q.dtype).min + add

    def forward(
        self, query: torch.Tensor, key: torch.Tensor | None = None, value: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None, attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        q, k, v = self.project(query, key, value)
        q, k, v = self.split_heads(q, self.heads), self.split_heads(k, self.kv_heads), self.split_heads(v, self.kv_heads)
        if self.rope_base > 0:
            q, k = rotary(q, self.rope_base), rotary(k, self.rope_base)
        p = self.dropout if self.training else 0.0
        if key_padding_mask is None and attn_mask is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=self.causal)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask(q, k, key_padding_mask, attn_mask), dropout_p=p)
        return self.proj(y.transpose(1, 2).flatten(-2))
