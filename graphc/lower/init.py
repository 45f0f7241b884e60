"""Declarable, deterministic weight initialization.

The spec's top-level ``init`` and a node's ``init`` (applied after it) pick a scheme for matrix/kernel
weights (every parameter of two or more dims whose name ends in ``weight``) and for biases;
1-D weights (norm scales) keep PyTorch's defaults.  ``scale`` multiplies the result (GPT-2's
residual projections use ``scale: ${1 / sqrt(2 * layers)}``).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable

import torch
from torch import nn

from graphc.spec.model import InitSpec

_SCHEMES: dict[str, Callable[[torch.Tensor, InitSpec], object]] = {
    "xavier_uniform": lambda w, s: nn.init.xavier_uniform_(w),
    "xavier_normal": lambda w, s: nn.init.xavier_normal_(w),
    "kaiming_uniform": lambda w, s: nn.init.kaiming_uniform_(w, nonlinearity="relu"),
    "kaiming_normal": lambda w, s: nn.init.kaiming_normal_(w, nonlinearity="relu"),
    "normal": lambda w, s: nn.init.normal_(w, 0.0, s.std),
    "trunc_normal": lambda w, s: nn.init.trunc_normal_(w, 0.0, s.std, -2 * s.std, 2 * s.std),
    "zeros": lambda w, s: nn.init.zeros_(w),
    "ones": lambda w, s: nn.init.ones_(w),
}

def _resolve(spec: InitSpec | str | None) -> InitSpec | None:
    if spec is None:
        return None
    return InitSpec(weight=spec) if isinstance(spec, str) else spec  # type: ignore[arg-type]


@torch.no_grad()
def apply_init(module: nn.Module, node_init: InitSpec | str | None, global_init: InitSpec | None, table: bool) -> None:
    """Initialize ``module`` in place: the spec's global init, then the node's own on top.

    ``table`` says the module's weight is a lookup table (the op's ``lookup_table``), which
    takes the global init's ``embedding`` scheme.  A node init with ``only`` touches just the matching parameters (GPT-2 scales the
    attention's output projection ``proj.weight`` but not its ``qkv``).
    """
    if global_init is not None:
        scheme = global_init.embedding if table else global_init.weight
        _apply(module, global_init, scheme, None)
    spec = _resolve(node_init)
    if spec is not None:
        _apply(module, spec, spec.weight, spec.only)


def _apply(module: nn.Module, spec: InitSpec, scheme: str, only: list[str] | None) -> None:
    for name, p in module.named_parameters():
        if only is not None and not any(fnmatch.fnmatchcase(name, pat) for pat in only):
            continue
        leaf = name.rsplit(".", 1)[-1]
        if leaf.endswith("weight") and p.dim() >= 2:
            if scheme != "default":
                _SCHEMES[scheme](p, spec)
            if spec.scale != 1.0:
                p.mul_(spec.scale)
        elif leaf.endswith("bias") and spec.bias == "zeros":
            nn.init.zeros_(p)
