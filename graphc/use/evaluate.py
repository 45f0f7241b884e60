"""``graphc evaluate``: the recipe's loss and metrics on a split or a file.

The model runs in torch (spec + weights) or in onnxruntime (``onnx=`` a compile folder); the
loss and metrics are always the training code's own (graphc/train/objectives.py) over the
same examples, so the two backends report the same figures up to float rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from graphc.errors import DataError, GraphcError

Split = Literal["train", "val", "test"]


def evaluate(spec: str | Path, *, weights: str | Path | None = None, onnx: str | Path | None = None,
             config: str | Path | None = None, overrides: Sequence[str] = (), split: Split = "test",
             data: str | Path | None = None, batch_size: int = 256, vocab: str | Path | None = None) -> dict[str, float]:
    """Loss and metrics of the recipe in ``spec`` (or ``config``) on ``split`` of its data, or
    on every example of ``data`` (a .npz/.csv/.safetensors file with inputs and targets).
    A ``data.table`` recipe applies ``vocab`` (the training run's folder or vocab.json): its
    category ids, fills and classes, so new rows are encoded as training encoded its own.

    Example:
        >>> graphc.evaluate("specs/digits_cnn.yaml", weights="runs/d/best.safetensors")
        {'loss': 0.61, 'accuracy': 0.97, 'f1': 0.97, 'examples': 270}

    Raises:
        GraphcError: no recipe, unreadable data, or data that does not fit the model.
    """
    import torch

    from graphc.graph.check import check
    from graphc.spec.overrides import split_overrides
    from graphc.train.data import load_data
    from graphc.train.objectives import MetricState, total_loss
    from graphc.train.recipe import load_recipe
    from graphc.use.backends import open_backend

    spec_over, recipe_over = split_overrides(list(overrides))
    tg = check(spec, spec_over)
    loaded = load_recipe(tg.flat.spec, config, recipe_over)
    if data is not None or vocab is not None:
        cfg = _data_cfg(loaded.recipe.data, data, vocab)
        loaded = loaded.model_copy(update={"recipe": loaded.recipe.model_copy(update={"data": cfg})})
        if data is not None:
            split = "train"  # the whole file
    data_set = load_data(tg, loaded, seed=loaded.recipe.seed)
    part = getattr(data_set, split)
    if len(part) == 0:
        raise DataError(f"the {split} split is empty (split fractions {list(loaded.recipe.data.split)})")
    backend = open_backend(onnx) if onnx is not None else open_backend(spec, weights, spec_over)
    missing = [n for n in data_set.inputs if n not in backend.inputs]
    if missing:
        raise GraphcError(f"{onnx}: the compiled model has no input '{missing[0]}' of the spec (compiled from another spec?)")
    state = MetricState(loaded.recipe.metric_cfgs)
    loss_sum, n = 0.0, 0
    for idx in torch.arange(len(part)).split(batch_size):
        batch = part.batch(idx)
        outs = backend.run({k: batch[k].numpy() for k in data_set.inputs})
        out_t = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in outs.items()}
        loss_sum += float(total_loss(out_t, batch, loaded.recipe.loss_terms)) * len(idx)
        n += len(idx)
        state.update(out_t, batch)
    return {"loss": loss_sum / n, **state.values(), "examples": float(n)}


def _data_cfg(cfg: Any, data: str | Path | None, vocab: str | Path | None) -> Any:
    """The recipe's data section pointed at ``data`` (all of it one split) and, for a table,
    at the run's ``vocab``: re-fitting categories or classes on the new file would silently
    renumber them."""
    update: dict[str, Any] = {"split": (1.0, 0.0, 0.0)} if data is not None else {}
    if cfg.table is not None:
        if vocab is None:
            raise GraphcError("a data.table recipe evaluated on --data needs --vocab RUN (the training run's folder or vocab.json) "
                              "so that its rows are encoded as training encoded them")
        table = {"vocab": str(Path(vocab).resolve())} | ({"path": str(Path(data).resolve())} if data is not None else {})
        return cfg.model_copy(update={**update, "table": cfg.table.model_copy(update=table)})
    if data is None:
        raise GraphcError("--vocab applies to data.table recipes only")
    return cfg.model_copy(update={**update, "dataset": str(Path(data).resolve())})
