"""Pretrained weights in and out: checkpoint readers, weight maps, a transfer plan, convert/load.

    >>> import graphc.weights as gw
    >>> p = gw.plan("specs/gpt2.yaml", "hf/gpt2", map="specs/maps/gpt2_hf.yaml")   # headers only
    >>> gm = gw.load("specs/gpt2.yaml", "hf/gpt2", map="specs/maps/gpt2_hf.yaml")  # a built model

``plan`` never imports torch for safetensors checkpoints and allocates no model; ``convert``
and ``load`` stream tensors one at a time.  See docs/weights.md.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from graphc.errors import NO_FILE, Diagnostic, Pos, WeightsError
from graphc.weights.maps import WeightMap, load_map, map_schema
from graphc.weights.planner import Plan, Row, expected_tensors, make_plan
from graphc.weights.readers import Checkpoint, open_checkpoint

if TYPE_CHECKING:
    from torch import fx, nn

    from graphc.api import SpecLike
    from graphc.graph.infer import TypedGraph

Overrides = Mapping[str, Any] | Sequence[str] | None
PLAN_FILE = "weights_plan.json"  # what a partial --init / --weights load records in the run folder


@dataclass(frozen=True)
class WeightSource:
    """A checkpoint plus how to read it: what ``--init``/``--weights`` with ``--map``/``--partial`` mean."""

    path: str | Path
    map: str | Path | WeightMap | None = None
    partial: bool = False


@dataclass
class Converted:
    plan: Plan
    output: Path
    warnings: list[Diagnostic] = field(default_factory=list)


def _typed(spec: SpecLike | TypedGraph, overrides: Overrides) -> TypedGraph:
    from graphc.graph.infer import TypedGraph

    if isinstance(spec, TypedGraph):
        return spec
    from graphc.api import check

    return check(spec, overrides)


def _map(wmap: str | Path | WeightMap | None) -> WeightMap | None:
    return wmap if isinstance(wmap, WeightMap) or wmap is None else load_map(wmap)


def plan(spec: SpecLike | TypedGraph, ckpt: str | Path | Checkpoint, map: str | Path | WeightMap | None = None,
         overrides: Overrides = None) -> Plan:
    """What loading ``ckpt`` into ``spec`` would do, from headers and inferred shapes only."""
    tg = _typed(spec, overrides)
    c = ckpt if isinstance(ckpt, Checkpoint) else open_checkpoint(ckpt)
    return make_plan(tg, c, _map(map))


def require(p: Plan, partial: bool) -> None:
    """Raise a WeightsError listing every problem that stops this load."""
    problems = p.problems(partial)
    if problems:
        raise WeightsError.many([Diagnostic(Pos(NO_FILE), f"{p.checkpoint}: {m}") for m in problems])


def convert(spec: SpecLike | TypedGraph, ckpt: str | Path, output: str | Path, map: str | Path | WeightMap | None = None,
            partial: bool = False, overrides: Overrides = None) -> Converted:
    """Write ``ckpt`` as a graphc weights file for ``spec`` (safetensors keyed by node paths)."""
    from graphc.weights.transfer import write_converted

    tg = _typed(spec, overrides)
    c = open_checkpoint(ckpt)
    p = make_plan(tg, c, _map(map))
    require(p, partial)
    out = Path(output)
    warnings = write_converted(p, tg, c, out)
    return Converted(p, out, warnings)


def load_into(model: nn.Module, source: WeightSource | str | Path, tg: TypedGraph | None = None,
              report_dir: str | Path | None = None) -> Plan:
    """Load ``source`` into ``model`` (built from ``tg``) in place, through the plan.

    With ``partial``, newly initialised tensors keep the model's own initialisation, and the
    plan is written to ``report_dir/weights_plan.json`` when given.
    """
    from graphc.weights.transfer import load_plan_into

    src = source if isinstance(source, WeightSource) else WeightSource(source)
    tg = tg or getattr(model, "graphc", None)
    if tg is None:
        raise WeightsError("load_into needs the model's TypedGraph (models from graphc.build carry it)")
    c = open_checkpoint(src.path)
    p = make_plan(tg, c, _map(src.map))
    require(p, src.partial)
    for w in load_plan_into(p, c, model):
        print(w, file=sys.stderr)
    if report_dir is not None:
        from graphc.io import write_text

        write_text(Path(report_dir) / PLAN_FILE, json.dumps(p.to_json(), indent=2) + "\n")
    if src.partial and (p.names("new") or p.names("unused")):
        print(f"weights: {summary_line(p)}", file=sys.stderr)
    return p


def load_weights_from(model: nn.Module, source: WeightSource | str | Path, report_dir: str | Path | None = None) -> nn.Module:
    """The hook of ``--init``/``--weights``: a plain path loads strictly as before (all keys, same
    names); a :class:`WeightSource` (``--map``/``--partial`` given) goes through the plan."""
    if isinstance(source, WeightSource):
        load_into(model, source, report_dir=report_dir)
        return model
    from graphc.export.weights import load_weights

    return load_weights(model, source)


def load(spec: SpecLike | TypedGraph, ckpt: str | Path, map: str | Path | WeightMap | None = None,
         partial: bool = False, overrides: Overrides = None, seed: int = 0) -> fx.GraphModule:
    """Build ``spec`` and load ``ckpt`` into it (``partial``: keep the initialisation of new tensors)."""
    from graphc.api import build

    tg = _typed(spec, overrides)
    gm = build(tg, seed=seed)
    load_into(gm, WeightSource(ckpt, map, partial), tg)
    return gm


def summary_line(p: Plan) -> str:
    counts = p.count()
    text = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    new, unused = p.names("new"), p.names("unused")
    if new:
        text += f"; newly initialised: {', '.join(new[:20])}{' ...' if len(new) > 20 else ''}"
    if unused:
        text += f"; unused: {', '.join(unused[:20])}{' ...' if len(unused) > 20 else ''}"
    return text


__all__ = ["Checkpoint", "Converted", "Plan", "Row", "WeightMap", "WeightSource", "convert", "expected_tensors", "load",
           "load_into", "load_map", "load_weights_from", "map_schema", "open_checkpoint", "plan", "require", "summary_line"]
