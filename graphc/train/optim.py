"""Optimizers with decay groups, fine-tuning groups, and the learning-rate schedule.

Weight decay is applied only to matrices and kernels that transform activations.  A
parameter is exempt when it has fewer than two dimensions (biases, norm scales and shifts) or
when its node reads integer ids (an embedding table: the spec's types say so, whatever the
op is called), so the rule needs no list of module types.

Fine-tuning (the recipe's ``param_groups`` and ``unfreeze``) splits the parameters further:
each torch param group carries ``lr_scale`` (its lr is ``lr_scale`` x the scheduled lr),
``unfreeze_at`` (frozen before that step) and a ``name``.  These live in the optimizer's own
param groups, so its ``state_dict`` checkpoints them and a resume restores them exactly; the
frozen state is re-derived from the step by :meth:`Schedule.apply` before every step.
"""

from __future__ import annotations

import math
from fnmatch import fnmatchcase
from typing import Any

import torch
from torch import fx, nn

from graphc.errors import Collector, SpecError, did_you_mean
from graphc.graph.infer import TypedGraph
from graphc.shapes import FLOAT_DTYPES
from graphc.train.recipe import LoadedRecipe, OptimizerCfg, ScheduleCfg


def _reads_ids(tg: TypedGraph, node_path: str) -> bool:
    node = tg.flat.nodes.get(node_path)
    if node is None:
        return False
    return any(t is not None and t.dtype not in FLOAT_DTYPES for t in tg.in_types(node))


def decay_groups(gm: fx.GraphModule, tg: TypedGraph, weight_decay: float) -> list[dict[str, Any]]:
    """Two parameter groups: decayed (weights of ops on activations) and not decayed."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in gm.named_parameters():  # tied parameters appear once, under their owner
        if not p.requires_grad:
            continue
        node = name.rsplit(".", 1)[0]
        (no_decay if p.ndim < 2 or _reads_ids(tg, node) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def finetune_groups(gm: fx.GraphModule, tg: TypedGraph, cfg: OptimizerCfg, loaded: LoadedRecipe) -> list[dict[str, Any]]:
    """Param groups by the recipe's ``param_groups`` x ``unfreeze`` x decay; a glob matching nothing is an error at its line."""
    r = loaded.recipe
    named = [(n, p) for n, p in gm.named_parameters() if p.requires_grad]
    errors = Collector()
    globs = [("param_groups", i, g.match) for i, g in enumerate(r.param_groups)] + [("unfreeze", i, u.match) for i, u in enumerate(r.unfreeze)]
    for field, i, glob in globs:
        if not any(fnmatchcase(n, glob) for n, _ in named):
            errors.error(f"{loaded.where(field, i, 'match')}: '{glob}' matches no trainable parameter"
                         f"{did_you_mean(glob, sorted({n.rsplit('.', 1)[0] + '.*' for n, _ in named}))}",
                         loaded.pos(field, i, "match"))
    errors.raise_if_any(SpecError)
    groups: dict[tuple[int, int, bool], dict[str, Any]] = {}
    for name, p in named:
        g = next((i for i, pg in enumerate(r.param_groups) if fnmatchcase(name, pg.match)), -1)
        at = next((u.at_step for u in r.unfreeze if fnmatchcase(name, u.match)), 0)
        decays = not (p.ndim < 2 or _reads_ids(tg, name.rsplit(".", 1)[0]))
        key = (g, at, decays)
        if key not in groups:
            pg = r.param_groups[g] if g >= 0 else None
            wd = (pg.weight_decay if pg and pg.weight_decay is not None else cfg.weight_decay) if decays else 0.0
            label = (pg.match if pg else "*") + (f" (frozen until step {at})" if at else "") + ("" if decays else " (no decay)")
            groups[key] = {"params": [], "weight_decay": wd, "lr_scale": pg.lr_scale if pg else 1.0, "unfreeze_at": at, "name": label}
        groups[key]["params"].append(p)
    return list(groups.values())


def make_optimizer(gm: fx.GraphModule, tg: TypedGraph, cfg: OptimizerCfg, loaded: LoadedRecipe | None = None) -> torch.optim.Optimizer:
    """The recipe's optimizer over the model's trainable parameters (fine-tuning groups when the recipe has them)."""
    r = loaded.recipe if loaded is not None else None
    if loaded is not None and r is not None and (r.param_groups or r.unfreeze):
        groups = finetune_groups(gm, tg, cfg, loaded)
    else:
        groups = decay_groups(gm, tg, cfg.weight_decay)
    if cfg.type == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    cls = torch.optim.AdamW if cfg.type == "adamw" else torch.optim.Adam
    return cls(groups, lr=cfg.lr, betas=cfg.betas, fused=True if _fusable(groups) else None)  # None: torch's own default (not False: that would also turn off foreach)


# Devices with a fused Adam/AdamW kernel that graphc trains on (torch also has one for mps,
# but not for every dtype there; the for-loop step stays the safe choice on others).
_FUSED_DEVICES = ("cpu", "cuda")


def _fusable(groups: list[dict[str, Any]]) -> bool:
    """Whether Adam/AdamW can take torch's fused kernel: every parameter on CPU or CUDA and
    floating point.  Why: the fused step is one kernel per parameter where the default CPU
    step runs about ten elementwise ops, each a pass over memory; on the d=768 GPT-2
    benchmark (20 M parameters, 2 CPU cores) the step drops from about 40 ms to 11 ms, which
    is 5% of an fp32 train step and 7% of a bf16 one (tools/bench train).  Same update rule,
    same ``state_dict`` (a checkpoint from either kind resumes in the other); on CUDA it also
    avoids foreach's temporaries the size of all gradients."""
    params = [p for g in groups for p in g["params"]]
    return bool(params) and all(p.device.type in _FUSED_DEVICES and p.is_floating_point() for p in params)


class Schedule:
    """Learning-rate factor per optimizer step: linear warmup, then the recipe's shape.

    ``plateau`` lowers the factor by ``gamma`` after ``patience`` evaluations without a
    better validation loss; its state is part of the checkpoint.
    """

    def __init__(self, cfg: ScheduleCfg, base_lr: float, total_steps: int) -> None:
        self.cfg = cfg
        self.base_lr = base_lr
        self.total = max(total_steps, 1)
        self.scale = 1.0
        self.best = math.inf
        self.bad = 0

    def factor(self, step: int) -> float:
        c = self.cfg
        if step < c.warmup:
            return (step + 1) / c.warmup
        frac = min(1.0, (step - c.warmup) / max(1, self.total - c.warmup))
        if c.type == "cosine":
            return c.min_lr + (1 - c.min_lr) * 0.5 * (1 + math.cos(math.pi * frac))
        if c.type == "linear":
            return c.min_lr + (1 - c.min_lr) * (1 - frac)
        if c.type == "step":
            return float(c.gamma ** ((step - c.warmup) // c.step_size))
        return self.scale  # constant (scale stays 1) or plateau

    def apply(self, opt: torch.optim.Optimizer, step: int) -> float:
        """Set each group's lr for ``step`` (x its ``lr_scale``) and (un)freeze it by its ``unfreeze_at``."""
        lr = self.base_lr * self.factor(step)
        for g in opt.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)
            if g.get("unfreeze_at", 0):
                for p in g["params"]:
                    p.requires_grad_(step >= g["unfreeze_at"])
        return lr

    def observe(self, val_loss: float) -> None:
        """Feed an evaluation's loss (plateau only)."""
        if self.cfg.type != "plateau":
            return
        if val_loss < self.best:
            self.best, self.bad = val_loss, 0
        else:
            self.bad += 1
            if self.bad > self.cfg.patience:
                self.scale *= self.cfg.gamma
                self.bad = 0

    def state_dict(self) -> dict[str, float]:
        return {"scale": self.scale, "best": self.best, "bad": float(self.bad)}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.scale, self.best, self.bad = float(state["scale"]), float(state["best"]), int(state["bad"])


def trainable(gm: nn.Module) -> list[nn.Parameter]:
    return [p for p in gm.parameters() if p.requires_grad]
