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


def reshape_like(x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """``x.reshape(sizes)``; kept as a named helper so generated code reads clearly."""
    return x.reshape(sizes)


_ = F  # F is part of model.py's namespace for ops that call it
