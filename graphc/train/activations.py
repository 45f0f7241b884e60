"""Activation checkpointing per block call: its activations are recomputed in backward.

A block call says ``checkpoint: true`` in the spec, or the recipe lists calls in
``train.activation_checkpointing`` (names or globs over block instances: ``body`` or
``body.*`` select every repetition of ``body``).  The chosen instances keep their place and
names in the module tree (state dict keys, optimizer groups and FSDP units are unchanged):
only their ``forward`` is replaced by one that runs under ``torch.utils.checkpoint``
(non-reentrant, RNG state preserved, so dropout masks and gradients are identical).  A call
with ``shares`` runs another call's module: checkpointing it checkpoints that module, so every
call of it.
"""

from __future__ import annotations

from collections.abc import Callable
from fnmatch import fnmatchcase
from typing import Any

from torch import fx
from torch.utils.checkpoint import checkpoint

from graphc.errors import Collector, SpecError, did_you_mean
from graphc.graph.infer import TypedGraph
from graphc.train.recipe import LoadedRecipe


def _selects(pattern: str, instance: str) -> bool:
    return fnmatchcase(instance, pattern) or fnmatchcase(instance, f"{pattern}.*")


def chosen(tg: TypedGraph, loaded: LoadedRecipe) -> list[str]:
    """Instances to checkpoint, outermost only (an instance inside a checkpointed one is
    recomputed with it already); a recipe pattern that selects nothing is an error at its line."""
    instances = tg.flat.instances
    patterns = loaded.recipe.activation_checkpointing
    errors = Collector()
    for i, pat in enumerate(patterns):
        if not any(_selects(pat, name) for name in instances):
            calls = sorted({name.rsplit(".", 1)[0] if name.rsplit(".", 1)[-1].isdigit() else name for name in instances})
            errors.error(f"{loaded.where('activation_checkpointing', i)}: '{pat}' matches no block call"
                         f"{did_you_mean(pat, calls) if calls else ' (the spec has no block calls)'}", loaded.pos("activation_checkpointing", i))
    errors.raise_if_any(SpecError)
    picked = {n for n, inst in instances.items() if inst.checkpoint or any(_selects(p, n) for p in patterns)}

    def inside_picked(name: str) -> bool:
        scope = instances[name].scope
        while scope:
            if scope in picked:
                return True
            scope = instances[scope].scope
        return False

    outermost = [n for n in instances if n in picked and not inside_picked(n)]
    return list(dict.fromkeys(instances[n].shares or n for n in outermost))  # a sharing call runs (and recomputes) its owner's module


def _checkpointed(forward: Callable[..., Any]) -> Callable[..., Any]:
    def run(*args: Any) -> Any:
        return checkpoint(forward, *args, use_reentrant=False)

    return run


def apply(gm: fx.GraphModule, names: list[str]) -> None:
    """Make each named block instance recompute its activations in backward."""
    for name in names:
        block = gm.get_submodule(name)
        block.forward = _checkpointed(block.forward)  # type: ignore[method-assign]  # the instance's own, shadowing the class's
