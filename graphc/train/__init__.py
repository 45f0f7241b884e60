"""Training graphc models: recipes, data, the loop, checkpoints (see docs/train.md).

``graphc.train.train(spec, run_dir, ...)`` is the Python entry point of ``graphc train``.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    """``train``, ``Trainer`` and ``TrainResult`` import torch only when first used."""
    if name in ("train", "Trainer", "TrainResult"):
        from graphc.train import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'graphc.train' has no attribute {name!r}")
