"""Losses and metrics as small tables: one function per name, nothing else knows them.

Outputs with a class axis are ``[..., C]`` (the spec's ``logits`` of ``[B, T, vocab]`` or
``[B, C]``); targets are class ids of the leading shape, or values shaped like the output.
Metrics are accumulated as (sum, count) pairs so a whole validation pass gives one exact
figure however it is batched.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F

from graphc.train.recipe import LossTerm, MetricCfg


def _flat(out: torch.Tensor, tgt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return out.reshape(-1, out.shape[-1]).float(), tgt.reshape(-1)


def _like(out: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    return tgt.reshape(out.shape).to(out.dtype) if tgt.numel() == out.numel() else tgt.to(out.dtype)


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor, LossTerm], torch.Tensor]] = {
    "cross_entropy": lambda o, t, c: F.cross_entropy(*_flat(o, t), label_smoothing=c.label_smoothing),
    "mse": lambda o, t, c: F.mse_loss(o.float(), _like(o.float(), t)),
    "mae": lambda o, t, c: F.l1_loss(o.float(), _like(o.float(), t)),
    "bce": lambda o, t, c: F.binary_cross_entropy_with_logits(o.float(), _like(o.float(), t)),
}


def total_loss(outputs: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor], terms: list[LossTerm]) -> torch.Tensor:
    """The weighted sum of the recipe's loss terms."""
    parts = [t.weight * LOSSES[t.type](outputs[t.output], batch[t.target], t) for t in terms]
    return sum(parts[1:], parts[0])


# Each metric returns (sum, count) for one batch; the value is sum / count (perplexity: exp).
Stat = tuple[float, int]


def _accuracy(o: torch.Tensor, t: torch.Tensor, m: MetricCfg) -> Stat:
    o, t = _flat(o, t)
    return float((o.argmax(-1) == t).sum()), t.numel()


def _top_k(o: torch.Tensor, t: torch.Tensor, m: MetricCfg) -> Stat:
    o, t = _flat(o, t)
    k = min(m.k, o.shape[-1])
    return float((o.topk(k, -1).indices == t[:, None]).any(-1).sum()), t.numel()


def _nll(o: torch.Tensor, t: torch.Tensor, m: MetricCfg) -> Stat:
    o, t = _flat(o, t)
    return float(F.cross_entropy(o, t, reduction="sum")), t.numel()


def _mse(o: torch.Tensor, t: torch.Tensor, m: MetricCfg) -> Stat:
    return float(((o.float() - _like(o.float(), t)) ** 2).sum()), o.numel()


def _mae(o: torch.Tensor, t: torch.Tensor, m: MetricCfg) -> Stat:
    return float((o.float() - _like(o.float(), t)).abs().sum()), o.numel()


METRICS: dict[str, Callable[[torch.Tensor, torch.Tensor, MetricCfg], Stat]] = {
    "accuracy": _accuracy,
    "top_k": _top_k,
    "perplexity": _nll,
    "mse": _mse,
    "mae": _mae,
}


class MetricState:
    """Accumulates every metric over a validation pass (f1 keeps a confusion matrix)."""

    def __init__(self, cfgs: list[MetricCfg]) -> None:
        self.cfgs = cfgs
        self.sums = {m.column: [0.0, 0] for m in cfgs}
        self.confusion: dict[str, torch.Tensor] = {}

    def update(self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]) -> None:
        for m in self.cfgs:
            o, t = outputs[m.output or ""], batch[m.target or ""]
            if m.type == "f1":
                self._confuse(m.column, *_flat(o, t))
                continue
            s, n = METRICS[m.type](o, t, m)
            self.sums[m.column][0] += s
            self.sums[m.column][1] += n

    def _confuse(self, col: str, o: torch.Tensor, t: torch.Tensor) -> None:
        c = o.shape[-1]
        cm = torch.bincount(t * c + o.argmax(-1), minlength=c * c).reshape(c, c)
        self.confusion[col] = self.confusion.get(col, torch.zeros_like(cm)) + cm

    def values(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for m in self.cfgs:
            if m.type == "f1":
                out[m.column] = macro_f1(self.confusion[m.column]) if m.column in self.confusion else float("nan")
                continue
            s, n = self.sums[m.column]
            v = s / max(n, 1)
            out[m.column] = math.exp(min(v, 50.0)) if m.type == "perplexity" else v
        return out


def macro_f1(cm: torch.Tensor) -> float:
    """Macro-averaged F1 over the classes that occur (in targets or predictions)."""
    tp = cm.diag().double()
    prec_den, rec_den = cm.sum(0).double(), cm.sum(1).double()
    present = (prec_den + rec_den) > 0
    f1 = 2 * tp / (prec_den + rec_den).clamp(min=1)
    return float(f1[present].mean()) if bool(present.any()) else 0.0
