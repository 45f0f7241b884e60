"""Measured peak memory of ``graphc train``'s own training step on CPU (for the planner's checks).

The step measured is :meth:`graphc.train.loop.Trainer.train_step` itself (eager, so the
numbers are the graph's and not inductor's), after one warm-up step has created the
optimizer state.  Two measurements, which agree within a few percent:

* ``profiler``: torch's profiler with ``profile_memory=True`` records every allocation and
  free of the CPU allocator during the step (kernel workspaces included); the peak is the
  bytes live when the step starts (parameters, buffers, optimizer state: the gradients are
  freed first, as the step's ``zero_grad`` would) plus the largest running sum of the
  allocations and frees after it.
* ``tensors``: a ``TorchDispatchMode`` that, after every op, adds up the storages of all
  live tensors it has seen (outputs of ops, plus the parameters, buffers and optimizer state):
  what a tensor-level tracker sees, without allocator-internal buffers.
"""

from __future__ import annotations

import gc
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from graphc.graph.check import as_spec, check
from graphc.graph.infer import TypedGraph
from graphc.train.loop import Trainer
from graphc.train.recipe import load_recipe


@dataclass
class Measured:
    profiler: int  # bytes: allocator-level peak
    tensors: int  # bytes: tensor-level peak


def make_trainer(spec: str, spec_set: dict[str, str], config: str | None, recipe_set: dict[str, str], run_dir: Path) -> tuple[TypedGraph, Trainer]:
    """A Trainer for ``spec`` (eager, quiet) as ``graphc train`` would build it."""
    s = as_spec(spec, [f"{k}={v}" for k, v in spec_set.items()])
    tg = check(s)
    loaded = load_recipe(s, config, {"compile": "none", "device": "cpu", **recipe_set})
    return tg, Trainer(tg, loaded, run_dir, quiet=True)


def _storages(tensors: Any) -> dict[int, int]:
    out: dict[int, int] = {}
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.device.type == "cpu":
            s = t.untyped_storage()
            out[s.data_ptr()] = s.nbytes()
    return out


def resident(trainer: Trainer) -> dict[int, int]:
    """Storages live between steps that the step keeps: parameters, buffers, optimizer state."""
    state = [v for st in trainer.opt.state.values() for v in st.values()]
    return _storages([*trainer.gm.parameters(), *trainer.gm.buffers(), *state])


def profiler_peak(trainer: Trainer) -> int:
    """Peak bytes of one ``train_step`` from the CPU allocator's own records."""
    from torch.profiler import ProfilerActivity, profile

    trainer.opt.zero_grad(set_to_none=True)
    gc.collect()
    start = sum(resident(trainer).values())
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        trainer.train_step()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"), key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return start + peak


class _LiveTensors(TorchDispatchMode):
    """Sums the storages of every live tensor it has seen after each op."""

    def __init__(self, seed: dict[int, int], keep: list[torch.Tensor]) -> None:
        super().__init__()
        self.refs = {k: (StorageWeakRef(t.untyped_storage()), n) for (k, n), t in zip(seed.items(), keep, strict=True)}
        self.peak = sum(seed.values())

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type == "cpu":
                s = t.untyped_storage()
                if s.data_ptr() and s.data_ptr() not in self.refs:
                    self.refs[s.data_ptr()] = (StorageWeakRef(s), s.nbytes())
        for k in [k for k, (r, _) in self.refs.items() if r.expired()]:
            del self.refs[k]
        self.peak = max(self.peak, sum(n for _, n in self.refs.values()))
        return out


def tensor_peak(trainer: Trainer) -> int:
    """Peak bytes of one ``train_step`` seen as live tensor storages."""
    trainer.opt.zero_grad(set_to_none=True)
    gc.collect()
    state = [v for st in trainer.opt.state.values() for v in st.values() if isinstance(v, torch.Tensor)]
    keep = {t.untyped_storage().data_ptr(): t for t in [*trainer.gm.parameters(), *trainer.gm.buffers(), *state]}
    seed = {k: t.untyped_storage().nbytes() for k, t in keep.items()}
    mode = _LiveTensors(seed, list(keep.values()))
    with mode:
        trainer.train_step()
    return mode.peak


def array_recipe(folder: Path, arrays: dict[str, Any]) -> Path:
    """A recipe training on ``arrays`` (numpy, by input and target name; ``label`` is the
    cross-entropy target), written with its ``.npz`` into ``folder``: fixed sizes where the
    synthetic datasets would make symbolic ones 8."""
    import numpy as np

    np.savez(folder / "arrays.npz", **arrays)
    recipe = folder / "recipe.yaml"
    recipe.write_text(f"train:\n  data: {{dataset: {folder / 'arrays.npz'}, split: [1.0, 0.0, 0.0]}}\n"
                      "  loss: {type: cross_entropy, output: logits, target: label}\n  steps: 10\n")
    return recipe


def random_images(shape: tuple[int, ...], classes: int = 10, samples: int = 64) -> dict[str, Any]:
    """``image`` [samples, *shape] and ``label`` arrays."""
    import numpy as np

    rng = np.random.default_rng(0)
    return {"image": rng.standard_normal((samples, *shape)).astype(np.float32), "label": rng.integers(0, classes, samples).astype(np.int64)}


def checkpoint_blocks(trainer: Trainer) -> int:
    """Wrap every top-level block instance in ``torch.utils.checkpoint`` (non-reentrant): the
    planner's ``checkpoint=True``.  Returns how many were wrapped."""
    from functools import partial

    from torch.utils.checkpoint import checkpoint

    from graphc.lower.fx_lower import BlockModule

    blocks = [m for name, m in trainer.gm.named_modules() if isinstance(m, BlockModule) and name.count(".") <= 1]
    for m in blocks:
        m.forward = partial(checkpoint, m.forward, use_reentrant=False)  # type: ignore[method-assign]
    return len(blocks)


def measure(spec: str, spec_set: dict[str, str], config: str | None, recipe_set: dict[str, str], steps: int = 2,
            arrays: dict[str, Any] | None = None, checkpoint: bool = False) -> tuple[TypedGraph, Measured]:
    """Build the trainer, warm it up one step, then measure ``steps`` steps each way (max).
    ``arrays``: train on them (:func:`array_recipe`) instead of ``config``;
    ``checkpoint``: checkpoint every top-level block instance (:func:`checkpoint_blocks`)."""
    with tempfile.TemporaryDirectory() as tmp:
        if arrays is not None:
            config = str(array_recipe(Path(tmp), arrays))
        tg, trainer = make_trainer(spec, spec_set, config, recipe_set, Path(tmp) / "run")
        if checkpoint:
            checkpoint_blocks(trainer)
        trainer.train_step()  # creates the optimizer state
        prof = max(profiler_peak(trainer) for _ in range(steps))
        tens = max(tensor_peak(trainer) for _ in range(steps))
    return tg, Measured(prof, tens)
