"""Carrying out a plan with torch: one tensor at a time, into a file or into a model.

:func:`write_converted` streams a safetensors file: its header is known from the plan before
any tensor is read, so each tensor is read, transformed, written and freed in turn (the
``safetensors`` library's ``save_file`` needs every tensor in memory at once, which would
hold a second copy of the checkpoint).  :func:`load_plan_into` copies each tensor straight
into the model's own parameter.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from graphc.errors import NO_FILE, Diagnostic, Pos, WeightsError
from graphc.io import atomic_path
from graphc.weights.planner import Expected, Plan, Transfer, expected_tensors
from graphc.weights.readers import ST_DTYPES, TORCH_TO_ST, Checkpoint

if TYPE_CHECKING:
    from torch import nn

    from graphc.graph.infer import TypedGraph

TIES_KEY = "graphc.ties"  # the same metadata key graphc.export.weights writes


def apply(t: Transfer, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """``t``'s rule on the source tensors (shapes were checked by the plan)."""
    if t.rule is None:
        return tensors
    r = t.rule.rule
    x = torch.cat(tensors, dim=r.concat) if r.concat is not None else tensors[0]
    if r.transpose:
        n = x.dim()
        perm = [*range(n - 2), n - 1, n - 2] if r.transpose is True else list(r.transpose)  # type: ignore[arg-type]
        x = x.permute(perm)
    if r.reshape is not None:
        x = x.reshape(r.reshape)
    outs = list(torch.chunk(x, len(t.targets), dim=r.split)) if r.split is not None else [x]
    if r.dtype is not None:
        outs = [o.to(getattr(torch, r.dtype)) for o in outs]
    return [o.contiguous() for o in outs]


def stream(plan: Plan, ckpt: Checkpoint, keep: set[str]) -> Iterator[tuple[str, torch.Tensor]]:
    """``(node path, tensor)`` for every planned target in ``keep``, reading sources lazily."""
    for t in plan.transfers:
        if not any(name in keep for name in t.targets):
            continue
        outs = apply(t, [ckpt.tensor(s) for s in t.sources])
        for name, out in zip(t.targets, outs, strict=True):
            if name in keep:
                yield name, out


def nan_warnings(name: str, t: torch.Tensor, source: str) -> list[Diagnostic]:
    if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
        what = "NaN" if bool(torch.isnan(t).any()) else "infinite"
        return [Diagnostic(Pos(NO_FILE), f"{source}: tensor '{name}' has {what} values", "warning")]
    return []


def written(plan: Plan, tg: TypedGraph) -> dict[str, Expected]:
    """Targets a converted file holds: fed, fitting, not a tied alias (its owner is stored)."""
    expected = expected_tensors(tg)
    ok = {r.name for r in plan.rows if r.status in ("carried", "renamed", "transformed")}
    return {k: v for k, v in expected.items() if k in ok and v.owner is None}


def write_converted(plan: Plan, tg: TypedGraph, ckpt: Checkpoint, output: Path) -> list[Diagnostic]:
    """Write the planned tensors to ``output`` as safetensors, atomically; returns NaN warnings.

    Tensors are laid out in the order the checkpoint gives them, so they stream straight
    through: the header (all shapes and offsets) is written first, from the plan.
    """
    keep = written(plan, tg)
    order: list[tuple[str, tuple[int, ...], str]] = [
        (name, shape, t.dtype) for t in plan.transfers for name, shape in zip(t.targets, t.shapes, strict=True) if name in keep
    ]
    header: dict[str, object] = {}
    offset = 0
    for name, shape, dtype in order:
        if dtype not in TORCH_TO_ST:
            raise WeightsError(f"{ckpt.path}: '{name}' is {dtype}, which graphc does not write (cast it with a map rule's dtype)")
        size = math.prod(shape) * ST_DTYPES[TORCH_TO_ST[dtype]][0]
        header[name] = {"dtype": TORCH_TO_ST[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    aliases = {k: v.owner for k, v in expected_tensors(tg).items() if v.owner}
    header["__metadata__"] = {TIES_KEY: json.dumps(aliases), "graphc.converted_from": str(ckpt.path)}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    warnings: list[Diagnostic] = []
    with atomic_path(output) as tmp, open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for (name, tensor), (want, _, _) in zip(stream(plan, ckpt, set(keep)), order, strict=True):
            assert name == want, (name, want)
            warnings += nan_warnings(name, tensor, str(ckpt.path))
            if tensor.numel():
                f.write(tensor.reshape(-1).view(torch.uint8).numpy().data)
    return warnings


def load_plan_into(plan: Plan, ckpt: Checkpoint, model: nn.Module) -> list[Diagnostic]:
    """Copy each planned tensor into ``model``'s own parameters and buffers; returns NaN warnings."""
    state = model.state_dict()
    # a tied alias is the owner's tensor: the owner's value is loaded, the alias's copy is not re-applied
    keep = {r.name for r in plan.rows if r.status in ("carried", "renamed", "transformed")}
    warnings: list[Diagnostic] = []
    with torch.no_grad():
        for name, tensor in stream(plan, ckpt, keep & set(state)):
            warnings += nan_warnings(name, tensor, str(ckpt.path))
            state[name].copy_(tensor)
    return warnings
