"""``graphc evaluate``: the recipe's loss and metrics on a split or a file.

The model runs in torch (spec + weights) or in onnxruntime (``onnx=`` a compile folder); the
loss and metrics are always the training code's own (graphc/train/objectives.py) over the
same examples, so the two backends report the same figures up to float rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from graphc.errors import DataError, GraphcError

Split = Literal["train", "val", "test"]


def evaluate(spec: str | Path, *, weights: str | Path | None = None, onnx: str | Path | None = None,
             config: str | Path | None = None, overrides: Sequence[str] = (), split: Split = "test",
             data: str | Path | None = None, batch_size: int = 256) -> dict[str, float]:
    """Loss and metrics of the recipe in ``spec`` (or ``config``) on ``split`` of its data, or
    on every example of ``data`` (a .npz/.csv/.safetensors file with inputs and targets).

    Example:
        >>> graphc.evaluate("specs/digits_cnn.yaml", weights="runs/d/best.safetensors")
        {'loss': 0.61, 'accuracy': 0.97, 'f1': 0.97, 'examples': 270}

    Raises:
        GraphcError: no recipe, unreadable data, or data that does not fit the model.
    """
    import torch

    import graphc
    from graphc.train.data import load_data
    from graphc.train.loop import split_overrides
    from graphc.train.objectives import MetricState, total_loss
    from graphc.train.recipe import load_recipe
    from graphc.use.backends import open_backend

    spec_over, recipe_over = split_overrides(list(overrides))
    tg = graphc.check(spec, spec_over)
    lr = load_recipe(tg.flat.spec, config, recipe_over)
    if data is not None:
        path = Path(data).resolve()
        cfg = lr.recipe.data.model_copy(update={"dataset": str(path), "split": (1.0, 0.0, 0.0)})
        lr = lr.model_copy(update={"recipe": lr.recipe.model_copy(update={"data": cfg})})
        split = "train"  # the whole file
    loaded = load_data(tg, lr, seed=lr.recipe.seed)
    part = getattr(loaded, split)
    if len(part) == 0:
        raise DataError(f"the {split} split is empty (split fractions {list(lr.recipe.data.split)})")
    backend = open_backend(onnx) if onnx is not None else open_backend(spec, weights, spec_over)
    missing = [n for n in loaded.inputs if n not in backend.inputs]
    if missing:
        raise GraphcError(f"{onnx}: the compiled model has no input '{missing[0]}' of the spec (compiled from another spec?)")
    state = MetricState(lr.recipe.metric_cfgs)
    loss_sum, n = 0.0, 0
    for idx in torch.arange(len(part)).split(batch_size):
        batch = part.batch(idx)
        outs = backend.run({k: batch[k].numpy() for k in loaded.inputs})
        out_t = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in outs.items()}
        loss_sum += float(total_loss(out_t, batch, lr.recipe.loss_terms)) * len(idx)
        n += len(idx)
        state.update(out_t, batch)
    return {"loss": loss_sum / n, **state.values(), "examples": float(n)}
