"""What every data source hands the loader: map-style splits of numpy examples."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

Example = dict[str, np.ndarray]


class Source(Protocol):
    """One split: ``len`` examples, example ``i`` as named numpy arrays (no batch axis).

    Must be picklable (DataLoader workers) and deterministic: ``src[i]`` for a given ``i``
    is the same in every process, except for declared random train transforms, which draw
    from ``np.random.default_rng((seed, epoch, i))`` passed through ``set_epoch``.
    """

    def __len__(self) -> int: ...
    def __getitem__(self, i: int) -> Example: ...


@dataclass
class Prepared:
    """A source kind's result: three splits plus what the run folder keeps."""

    train: Source
    val: Source
    test: Source
    artifacts: dict[str, bytes] = field(default_factory=dict)   # file name -> bytes saved in the run folder (classes.json, vocab.json, tokenizer.json)
    fingerprint: dict[str, Any] = field(default_factory=dict)   # JSON-able: files, sizes, hashes of small files
    baselines: dict[str, float] = field(default_factory=dict)   # e.g. {"unigram_val_loss": ...}, {"majority_val_accuracy": ...}
    value_bounds: dict[str, int] = field(default_factory=dict)  # integer array name -> exclusive upper bound of its ids (vocab size), checked against the spec before training
