"""Real inputs for quantization: int8-static calibration batches and the task-level data.

Calibration data comes from, in order: ``--calibrate FILE.npz`` (arrays keyed by the spec's
input names, examples along axis 0), the recipe named by ``--data`` (``spec``: the spec's own
``train:`` section), the spec's own recipe when it has one, and otherwise seeded random
example inputs (recorded as such: random inputs calibrate ranges that real data may exceed).
Recipes are read with graphc.train's own loaders, so calibration sees exactly the data that
training and evaluation see.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from graphc.errors import DataError, Pos
from graphc.export.quant_cli import QuantOptions
from graphc.graph.infer import TypedGraph


def load_task_data(tg: TypedGraph, recipe: str, seed: int) -> tuple[Any, Any]:
    """(LoadedRecipe, Data) of ``recipe`` (a YAML path, or ``spec`` for the spec's ``train:``)."""
    from graphc.train.data import load_data
    from graphc.train.recipe import load_recipe

    spec = tg.flat.spec
    lr = load_recipe(spec, None if recipe == "spec" else recipe, {k: str(v) for k, v in spec.overrides.items() if k.startswith("train.")})
    return lr, load_data(tg, lr, seed)


class Batches:
    """onnxruntime's ``CalibrationDataReader`` protocol over a list of feeds (rewindable, so the
    ``--keep-fp32 auto`` loop can calibrate again)."""

    def __init__(self, feeds: list[dict[str, np.ndarray]], source: str) -> None:
        self.feeds = feeds
        self.source = source
        self._i = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._i >= len(self.feeds):
            return None
        self._i += 1
        return self.feeds[self._i - 1]

    def rewind(self) -> None:
        self._i = 0


def _npz(path: Path, tg: TypedGraph, batches: int, batch: int) -> list[dict[str, np.ndarray]]:
    names = list(tg.flat.spec.doc.inputs)
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [n for n in names if n not in z.files]
            if missing:
                raise DataError(f"--calibrate: no array named {', '.join(missing)} (has: {', '.join(z.files) or 'none'})", Pos(str(path)))
            arrays = {n: np.asarray(z[n]) for n in names}
    except (OSError, ValueError) as e:
        raise DataError(f"--calibrate: not a readable .npz file: {e}", Pos(str(path))) from None
    for n, a in arrays.items():
        inp = tg.flat.spec.doc.inputs[n]
        want = getattr(np, inp.dtype, None)
        fixed = all(isinstance(d, str) or d == got for d, got in zip(inp.shape, a.shape, strict=False))
        if a.ndim != len(inp.shape) or not fixed or (want is not None and a.dtype != want):
            raise DataError(f"--calibrate: array '{n}' is {a.dtype} with shape {list(a.shape)}; "
                            f"the spec's input is {inp.dtype} {list(inp.shape)}", Pos(str(path)))
    count = int(min(a.shape[0] for a in arrays.values()))
    if count == 0:
        raise DataError("--calibrate: the arrays hold no examples", Pos(str(path)))
    return [{k: a[i : i + batch] for k, a in arrays.items()} for i in range(0, min(count, batches * batch), batch)]


def reader_for(tg: TypedGraph, opts: QuantOptions, seed: int) -> Batches:
    """``opts.calibration_batches`` batches from the first source that exists (see module doc)."""
    from graphc.lower.inputs import example_inputs

    first = next(iter(tg.flat.spec.doc.inputs.values()))
    batch = tg.example.get(first.shape[0], 1) if first.shape and isinstance(first.shape[0], str) else 1
    if opts.calibrate is not None:
        return Batches(_npz(opts.calibrate, tg, opts.calibration_batches, batch), f"file {opts.calibrate}")
    recipe = opts.data or ("spec" if tg.flat.spec.doc.train is not None else None)
    if recipe is not None:
        lr, data = load_task_data(tg, recipe, seed)
        bs = lr.recipe.batch_size
        split = data.train
        feeds = []
        for i in range(0, min(len(split), opts.calibration_batches * bs), bs):
            part = split.batch(torch.arange(i, min(i + bs, len(split))))
            feeds.append({k: part[k].numpy() for k in data.inputs})
        return Batches(feeds, f"recipe {recipe} (train split)")
    feeds = [{n: t.numpy() for n, t in zip(tg.flat.spec.doc.inputs, example_inputs(tg, seed + 100 + i), strict=True)}
             for i in range(opts.calibration_batches)]
    return Batches(feeds, "random example inputs (no data: pass --calibrate or --data)")
