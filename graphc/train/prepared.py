"""Tables and text (graphc.data.tables / graphc.data.text) as the trainer's :class:`Data`.

A stand-in until the shared DataLoader pipeline (graphc.data.loader) joins: each split's
:class:`~graphc.data.source.Source` is batched by stacking its examples, and the run
folder's artifacts (vocab.json, classes.json, tokenizer.json) ride on :class:`PreparedData`.
Before any training the data are checked against the spec: id bounds (the spec's line),
each input's shape and dtype, and the targets against the outputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from graphc.data.bounds import check_value_bounds
from graphc.data.source import Prepared, Source
from graphc.graph.infer import TypedGraph
from graphc.train.data import Data, Split, _check_input, _target, check_targets
from graphc.train.recipe import LoadedRecipe

SAMPLE = 256  # examples stacked to check shapes and targets of a source that is not in memory


@dataclass
class SourceSplit(Split):
    """A :class:`Split` over a Source: ``batch(idx)`` stacks examples ``idx`` (names mapped
    onto the spec's through ``data.map``), converted to each input's dtype."""

    source: Any = None
    names: dict[str, str] = field(default_factory=dict)  # run name (spec input / target) -> source array name
    dtypes: dict[str, torch.dtype | None] = field(default_factory=dict)  # None: a target (long or float as it comes)

    def __len__(self) -> int:
        return len(self.source)

    def batch(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        arrays = getattr(self.source, "arrays", None)
        if arrays is not None:
            got = {k: arrays[k][idx.numpy()] for k in self.names.values()}
        else:
            examples = [self.source[int(i)] for i in idx]
            got = {k: np.stack([e[k] for e in examples]) for k in self.names.values()}
        return {name: self._tensor(got[src], self.dtypes[name]) for name, src in self.names.items()}

    @staticmethod
    def _tensor(arr: np.ndarray, dtype: torch.dtype | None) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(arr))
        return t.to(dtype) if dtype is not None else _target(arr)


@dataclass
class PreparedData(Data):
    """:class:`Data` plus what the run folder keeps and the baselines to beat."""

    artifacts: dict[str, bytes] = field(default_factory=dict)
    baselines: dict[str, float] = field(default_factory=dict)


def _sample(src: Source, names: set[str]) -> dict[str, np.ndarray]:
    arrays = getattr(src, "arrays", None)
    if arrays is not None:
        return {k: v for k, v in arrays.items() if k in names}
    examples = [src[i] for i in range(min(len(src), SAMPLE))]
    return {k: np.stack([e[k] for e in examples]) for k in names if examples and k in examples[0]}


def load_prepared(tg: TypedGraph, loaded: LoadedRecipe, seed: int) -> PreparedData:
    """The recipe's ``data.table`` / ``data.text`` prepared, checked and split."""
    from graphc.data import tables, text
    from graphc.errors import DataError

    cfg = loaded.recipe.data
    inputs = dict(tg.flat.spec.doc.inputs)
    base = Path(loaded.file).parent if not loaded.file.startswith("<") else Path.cwd()
    split_seed = cfg.seed if cfg.seed is not None else seed
    kind = "table" if cfg.table is not None else "text"
    prepared: Prepared = (tables.prepare(cfg.table, base, inputs, cfg.split, split_seed, loaded) if cfg.table is not None
                          else text.prepare(cfg.text, base, inputs, cfg.split, split_seed, loaded))  # type: ignore[arg-type]
    targets = {t.target for t in loaded.recipe.loss_terms} | {m.target for m in loaded.recipe.metric_cfgs if m.target}
    names = {n: cfg.map.get(n, n) for n in [*inputs, *sorted(targets)]}
    check_value_bounds(tg, {n: prepared.value_bounds[s] for n, s in names.items() if s in prepared.value_bounds},
                       f"{loaded.where('data', kind)}'s vocabulary")
    sample = _sample(prepared.train, set(names.values()))
    pos = loaded.pos("data", kind)
    missing = [n for n, s in names.items() if s not in sample]
    if missing:
        raise DataError(f"{loaded.where('data', kind)}: no array '{names[missing[0]]}' for '{missing[0]}' (it gives: "
                        f"{', '.join(sorted(sample))}); map it with data.map", pos)
    arrays = {n: sample[s] for n, s in names.items()}
    check_targets(tg, loaded, arrays, f"data.{kind}")
    for n, inp in inputs.items():
        _check_input(n, arrays[n], inp, pos, tg.flat.spec.pos("inputs", n))
    dtypes = {n: (getattr(torch, inputs[n].dtype) if n in inputs else None) for n in names}
    splits = [SourceSplit({}, source=s, names=names, dtypes=dtypes) for s in (prepared.train, prepared.val, prepared.test)]
    return PreparedData(splits[0], splits[1], splits[2], inputs=list(inputs), unigram_loss=prepared.baselines.get("unigram_val_loss"),
                        artifacts=prepared.artifacts, baselines=prepared.baselines)
