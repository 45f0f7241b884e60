"""``graphc train``'s memory check on CUDA: refuse a run that the memory planner says cannot fit.

The estimate (:mod:`graphc.graph.memory_planner`) comes from the typed graph alone, so the
check runs before the model, the optimizer or a batch touch the device; the refusal prints
the plan and the cheapest change that fits (docs/train.md, "Memory planner").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from graphc.errors import TrainError
from graphc.graph.infer import TypedGraph
from graphc.train.recipe import Recipe

if TYPE_CHECKING:
    import torch


def device_memory(device: torch.device) -> tuple[int, int]:
    """(free, total) bytes of a CUDA device (a function of its own so tests can stand in for it)."""
    import torch

    free, total = torch.cuda.mem_get_info(device)
    return int(free), int(total)


def check_memory(tg: TypedGraph, recipe: Recipe, device: torch.device, world: int = 1, checkpoint: tuple[str, ...] = ()) -> None:
    """Refuse a run the memory planner says cannot fit in the device's free memory: print the
    plan and name the cheapest change that fits (docs/train.md, "Memory planner").

    ``world``: the processes sharing the model; ``checkpoint``: the block instances the
    trainer checkpoints (the recipe's patterns and the spec's ``checkpoint: true`` calls)."""
    import dataclasses
    import sys

    from graphc.graph.memory_planner import TrainSetup, plan_memory, ways_to_fit
    from graphc.summarize import format_plan, human

    free, _ = device_memory(device)
    setup = TrainSetup.from_recipe(recipe, "cuda", world=world)
    if checkpoint:
        setup = dataclasses.replace(setup, checkpoint=checkpoint)
    plan = plan_memory(tg, setup)
    if plan.peak <= free:
        return
    print(format_plan(plan), file=sys.stderr)
    ways = ways_to_fit(tg, setup, free)
    fix = f"cheapest way to fit: {ways[0]}" + (f" (or: {'; '.join(ways[1:])})" if ways[1:] else "") if ways else "no smaller setup found"
    raise TrainError(f"estimated peak memory {human(plan.peak, 'B')} per process exceeds the {human(free, 'B')} free on {device}; {fix}")
