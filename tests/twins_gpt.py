"""A hand-written twin of specs/gpt_mini.yaml, nanoGPT style, for checking the compiler.

Nothing here is generated: if the spec, the ops or the lowering drift from a plain GPT,
tests/test_gpt_twin.py sees different parameter counts or outputs.  :func:`copy_from_graph`
is also the weight-name mapping of docs/attention.md written as code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class GPTConfig:
    vocab: int = 256  # tokens
    ctx: int = 64  # longest sequence
    d: int = 128  # model width
    heads: int = 4  # attention heads
    layers: int = 4  # decoder blocks


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.c_attn = nn.Linear(cfg.d, 3 * cfg.d)
        self.c_proj = nn.Linear(cfg.d, cfg.d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.c_attn(x).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / (d // self.heads) ** 0.5
        att = att.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
        y = F.softmax(att, dim=-1) @ v
        return self.c_proj(y.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.d)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.d)
        self.c_fc = nn.Linear(cfg.d, 4 * cfg.d)
        self.c_proj = nn.Linear(4 * cfg.d, cfg.d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.c_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.wte = nn.Embedding(cfg.vocab, cfg.d)
        self.wpe = nn.Embedding(cfg.ctx, cfg.d)
        self.h = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.ln_f = nn.LayerNorm(cfg.d)
        self.lm_head = nn.Linear(cfg.d, cfg.vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.wte(tokens) + self.wpe(torch.arange(tokens.shape[1]))
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


def weight_map(cfg: GPTConfig) -> dict[str, str]:
    """Twin parameter name -> graphc state_dict key (the tied head is not listed)."""
    m = {"wte.weight": "tok.weight", "wpe.weight": "pos.weight", "ln_f.weight": "lnf.weight", "ln_f.bias": "lnf.bias"}
    for i in range(cfg.layers):
        names = {"ln_1": "ln1", "attn.c_attn": "attn.qkv", "attn.c_proj": "attn.proj", "ln_2": "ln2", "c_fc": "fc", "c_proj": "proj"}
        for twin, ours in names.items():
            for p in ("weight", "bias"):
                m[f"h.{i}.{twin}.{p}"] = f"body.{i}.{ours}.{p}"
    return m


@torch.no_grad()
def copy_from_graph(twin: GPT, state: dict[str, torch.Tensor], cfg: GPTConfig) -> None:
    """Load a gpt_mini state_dict (graphc names) into the twin."""
    params = dict(twin.named_parameters())
    for twin_name, ours in weight_map(cfg).items():
        params[twin_name].copy_(state[ours])
