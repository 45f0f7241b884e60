"""The task-level check: the recipe's loss and metrics, fp32 torch vs the quantized ONNX model.

Both models see the same batches of the recipe's validation split (the test split when there
is no validation split), at most ``MAX_EXAMPLES`` examples so compile stays bounded.  The
metrics are graphc.train's own (:class:`~graphc.train.objectives.MetricState`), so the figures
are comparable with training's ``metrics.csv``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from graphc.graph.infer import TypedGraph
from graphc.lower.built import Built

MAX_EXAMPLES = 2048
LOWER_IS_BETTER = ("loss", "perplexity", "mse", "mae")


def metric_drop(name: str, fp32: float, quantized: float) -> float:
    """How much worse the quantized figure is, in the metric's own units (negative: better)."""
    return quantized - fp32 if name in LOWER_IS_BETTER else fp32 - quantized


def _evaluate(run: Any, batches: list[dict[str, torch.Tensor]], lr: Any) -> dict[str, float]:
    from graphc.train.objectives import MetricState, total_loss

    ms = MetricState(lr.recipe.metric_cfgs)
    loss, n = 0.0, 0
    for batch in batches:
        out = run(batch)
        loss += float(total_loss(out, batch, lr.recipe.loss_terms)) * len(next(iter(batch.values())))
        n += len(next(iter(batch.values())))
        ms.update(out, batch)
    return {"loss": loss / max(n, 1), **ms.values()}


def compare_metrics(built: Built, model_path: Path, recipe: str, seed: int = 0) -> dict[str, dict[str, float]]:
    """``{"fp32": {...}, "quantized": {...}}`` over the same validation batches."""
    import onnxruntime as ort

    from graphc.export.calibrate import load_task_data

    tg: TypedGraph = built.graph
    lr, data = load_task_data(tg, recipe, seed)
    split = data.val if len(data.val) else data.test
    bs = lr.recipe.eval_batch_size or 4 * lr.recipe.batch_size
    idx = torch.arange(min(len(split), MAX_EXAMPLES))
    batches = [split.batch(b) for b in idx.split(bs)]
    names = list(tg.flat.outputs)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])

    @torch.no_grad()
    def torch_run(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        got = built.module(*(batch[k] for k in data.inputs))
        return dict(got) if isinstance(got, dict) else {names[0]: got}

    def ort_run(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        outs = sess.run(names, {k: batch[k].numpy() for k in data.inputs})
        return {n: torch.from_numpy(o) for n, o in zip(names, outs, strict=True)}

    return {"fp32": _evaluate(torch_run, batches, lr), "quantized": _evaluate(ort_run, batches, lr)}
