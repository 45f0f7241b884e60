"""Static rejection: is a sampled configuration worth training?  (No torch, no allocation.)

A configuration is loaded and checked exactly as ``graphc check`` would (spec, shapes, the
recipe), then its size is compared with the space's budget.  This takes milliseconds where
training the same configuration takes seconds to hours, so a sweep never spends a trial on
a model that cannot be built or would not fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from graphc.errors import GraphcError
from graphc.graph.infer import TypedGraph
from graphc.graph.memory_planner import TrainSetup, plan_memory
from graphc.spec.load import Spec
from graphc.summarize import human
from graphc.train.recipe import LoadedRecipe, Recipe, load_recipe


@dataclass
class Verdict:
    """What the static check says about one configuration."""

    kind: Literal["ok", "invalid", "budget"]
    reason: str = ""
    params: int | None = None
    flops: int | None = None  # forward FLOPs at the spec's example sizes
    memory: int | None = None  # estimated training bytes
    train_flops: float | None = None  # estimated FLOPs of the whole trial's training

    @property
    def ok(self) -> bool:
        return self.kind == "ok"


def split_values(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Spec overrides and recipe overrides (``train.`` prefix removed) of one configuration."""
    spec = {k: v for k, v in values.items() if not k.startswith("train.")}
    recipe = {k.removeprefix("train."): v for k, v in values.items() if k.startswith("train.")}
    return spec, recipe


def memory_estimate(tg: TypedGraph, recipe: Recipe) -> int:
    """Peak bytes of one training process under ``recipe``: the memory planner's estimate
    (:mod:`graphc.graph.memory_planner`: parameters, gradients, optimizer state, saved
    activations and transients, at the recipe's batch size and precision)."""
    return plan_memory(tg, TrainSetup.from_recipe(recipe, device="cpu" if recipe.device == "cpu" else "cuda")).peak


def example_batch(spec: Spec, example: dict[str, int]) -> int:
    """The example size of the first input's leading dim (the batch), 1 when it is fixed."""
    first = next(iter(spec.doc.inputs.values()), None)
    if first is None or not first.shape:
        return 1
    lead = first.shape[0]
    return example.get(lead, 1) if isinstance(lead, str) else 1


def static_check(spec: Spec, config: str | Path | None, values: dict[str, Any], budget: dict[str, float | None]) -> Verdict:
    """Check one configuration like ``graphc check`` and compare it with ``budget``.

    Args:
        spec: the loaded base spec (re-loaded here with the configuration's spec values).
        config: the recipe file, or None for the spec's ``train:`` section.
        values: dotted ``--set`` keys -> values (spec params, spec paths, ``train.*``).
        budget: ``params``, ``flops`` and ``memory`` limits (None: no limit).
    """
    from graphc.graph.check import check
    from graphc.summarize import summarize

    spec_over, recipe_over = split_values(values)
    try:
        s = spec.with_overrides(spec_over)
        tg = check(s)
        loaded = load_recipe(s, config, recipe_over)
    except GraphcError as e:
        return Verdict("invalid", "; ".join(d.message for d in e.diagnostics[:3]))
    summ = summarize(tg)
    batch0 = example_batch(s, tg.example)
    r = loaded.recipe
    memory = memory_estimate(tg, r)
    v = Verdict("ok", params=summ.total_params, flops=summ.flops, memory=memory,
                train_flops=3.0 * summ.flops / batch0 * r.batch_size * r.grad_accum * _steps(loaded, s))
    over = [f"{name} {human(got, unit)} > {human(limit, unit)}"
            for name, got, unit in (("params", v.params, ""), ("flops", v.flops, ""), ("memory", v.memory, "B"))
            if (limit := budget.get(name)) is not None and got is not None and got > limit]
    if over:
        v.kind, v.reason = "budget", "over budget: " + ", ".join(over)
    return v


def _steps(loaded: LoadedRecipe, spec: Spec) -> int:
    """Optimizer steps of a trial: ``steps``, or ``epochs`` x steps per epoch from the data size."""
    r = loaded.recipe
    if r.steps is not None:
        return r.steps
    samples = _dataset_size(r.data.dataset or "", r.data.samples)
    per_epoch = max(1, int(samples * r.data.split[0]) // (r.batch_size * r.grad_accum))
    return (r.epochs or 1) * per_epoch


_BUILTIN_SIZES = {"digits": 1797, "wine": 178, "iris": 150, "breast_cancer": 569}


def _dataset_size(name: str, synthetic: int) -> int:
    """Examples in a dataset, known without loading it (files: a guess of ``synthetic``)."""
    return _BUILTIN_SIZES.get(name, synthetic)
