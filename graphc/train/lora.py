"""LoRA fine-tuning (Hu et al., 2021): low-rank adapters on chosen linear layers.

Adapters are added in place, without changing the module tree or the names of existing
weights: each targeted ``nn.Linear`` gets two parameters, ``lora_a`` ``[rank, in]`` and
``lora_b`` ``[out, rank]`` (zero-initialized, so training starts from the pretrained model),
and a forward hook that adds ``(alpha / rank) * B @ A @ x``.  Every other parameter is frozen
unless the recipe keeps it trainable.  Checkpoints hold the adapters (so ``--resume`` works);
``best.safetensors`` holds the merged weights under the spec's own names, so it exports and
loads like any other weights file.
"""

from __future__ import annotations

import contextlib
import fnmatch
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.hooks import RemovableHandle

from graphc.errors import TrainError
from graphc.train.recipe import LoadedRecipe, LoraCfg
from graphc.weights.tensors import tied_aliases


@dataclass
class Adapter:
    """One linear layer with a LoRA adapter."""

    path: str
    module: nn.Linear
    scale: float
    dropout: float
    handle: RemovableHandle

    def delta(self) -> torch.Tensor:
        return (self.module.lora_b @ self.module.lora_a) * self.scale  # type: ignore[operator]


def _hook(adapter_scale: float, p: float) -> Any:
    def hook(module: nn.Linear, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> torch.Tensor:
        x = F.dropout(args[0], p, module.training) if p else args[0]
        return out + F.linear(F.linear(x, module.lora_a), module.lora_b) * adapter_scale  # type: ignore[arg-type]

    return hook


def apply_lora(gm: nn.Module, cfg: LoraCfg, loaded: LoadedRecipe) -> list[Adapter]:
    """Freeze the model and add adapters to the linear layers matching ``cfg.targets``."""
    linears = {name: m for name, m in gm.named_modules() if isinstance(m, nn.Linear)}
    chosen = [n for n in linears if any(fnmatch.fnmatchcase(n, pat) for pat in cfg.targets)]
    if not chosen:
        shown = ", ".join(list(linears)[:8]) + (", ..." if len(linears) > 8 else "")
        raise TrainError(f"{loaded.where('lora', 'targets')}: no linear layer matches {cfg.targets} (linear layers: {shown})",
                         loaded.pos("lora", "targets"))
    shared = {k.rsplit(".", 1)[0] for pair in tied_aliases(gm).items() for k in pair}
    for name in chosen:
        if name in shared:
            raise TrainError(f"{loaded.where('lora', 'targets')}: '{name}' shares its weight with another node (tie); "
                             "a LoRA update would change both", loaded.pos("lora", "targets"))
    for name, p in gm.named_parameters():
        p.requires_grad_(any(fnmatch.fnmatchcase(name, pat) for pat in cfg.trainable))
    return [_add(name, linears[name], cfg) for name in chosen]


def _add(path: str, m: nn.Linear, cfg: LoraCfg) -> Adapter:
    a = nn.Parameter(torch.empty(cfg.rank, m.in_features, device=m.weight.device, dtype=m.weight.dtype))
    nn.init.kaiming_uniform_(a, a=math.sqrt(5))
    b = nn.Parameter(torch.zeros(m.out_features, cfg.rank, device=m.weight.device, dtype=m.weight.dtype))
    m.register_parameter("lora_a", a)
    m.register_parameter("lora_b", b)
    scale = cfg.alpha / cfg.rank
    return Adapter(path, m, scale, cfg.dropout, m.register_forward_hook(_hook(scale, cfg.dropout)))


@contextlib.contextmanager
@torch.no_grad()
def merged(adapters: list[Adapter]) -> Iterator[None]:
    """Inside: every adapter is folded into its layer's weight and hidden from ``state_dict``."""
    saved: list[tuple[torch.Tensor, Any, Any]] = []
    for ad in adapters:
        w = ad.module.weight
        a: Any = ad.module._parameters.pop("lora_a")
        b: Any = ad.module._parameters.pop("lora_b")
        saved.append((w.detach().clone(), a, b))
        w.add_((b @ a) * ad.scale)
    try:
        yield
    finally:
        for ad, (w, a, b) in zip(adapters, saved, strict=True):
            ad.module.weight.copy_(w)
            ad.module._parameters["lora_a"] = a
            ad.module._parameters["lora_b"] = b


@torch.no_grad()
def remove(adapters: list[Adapter]) -> None:
    """Fold the adapters into the weights for good and take them off the model."""
    for ad in adapters:
        ad.module.weight.add_(ad.delta())
        ad.handle.remove()
        del ad.module._parameters["lora_a"], ad.module._parameters["lora_b"]
    adapters.clear()
