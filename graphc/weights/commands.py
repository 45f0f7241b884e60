"""``graphc weights plan|convert|schema``, and the ``--map``/``--partial`` flags other commands share."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any


def add_transfer_args(p: argparse.ArgumentParser) -> None:
    """``--map`` and ``--partial`` beside a command's ``--init``/``--weights``."""
    p.add_argument("--map", dest="weights_map", metavar="MAP", help="weight map (YAML) renaming the checkpoint's tensors")
    p.add_argument("--partial", action="store_true",
                   help="accept spec tensors the checkpoint lacks (kept as initialised) and unused checkpoint tensors")


def weight_source(path: str | None, args: argparse.Namespace) -> Any:
    """The plain path (old behaviour) or a WeightSource when --map/--partial were given."""
    wanted = getattr(args, "weights_map", None) or getattr(args, "partial", False)
    if path is None and wanted:
        from graphc.errors import WeightsError

        raise WeightsError("--map and --partial apply to a checkpoint: give --init or --weights too")
    if path is None or not wanted:
        return path
    from graphc.weights import WeightSource

    return WeightSource(path, args.weights_map, args.partial)


def _plan(args: argparse.Namespace) -> int:
    import graphc.weights as gw

    p = gw.plan(args.spec, args.checkpoint, args.weights_map, args.overrides)
    if args.json:
        print(json.dumps({"ok": True, **p.to_json()}, indent=2))
        return 0
    print(render_table(p))
    return 0


def render_table(p: Any) -> str:
    """One plain table (fast at thousands of rows), then the counts."""
    head = ("status", "node path / checkpoint name", "from", "shape", "note")
    rows = [head]
    for r in p.rows:
        shape = _shape(r.shape) if r.expected is None or r.shape == r.expected else f"{_shape(r.shape)} vs spec {_shape(r.expected)}"
        if r.shape is None:
            shape = _shape(r.expected)
        note = r.note
        if r.status == "mismatch":
            note = f"spec line {r.where}" + (f"; {note}" if note else "")
        rows.append((r.status, r.name, r.source if r.source != r.name else "", shape, note))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1] for row in rows]
    counts = ", ".join(f"{n} {s}" for s, n in p.count().items() if n)
    lines.append(f"{p.checkpoint} -> {p.spec}: {counts}")
    return "\n".join(line.rstrip() for line in lines)


def _shape(s: Any) -> str:
    return "" if s is None else "[" + ", ".join(str(d) for d in s) + "]"


def _convert(args: argparse.Namespace) -> int:
    import graphc.weights as gw

    r = gw.convert(args.spec, args.checkpoint, args.output, args.weights_map, args.partial, args.overrides)
    for w in r.warnings:
        print(w, file=sys.stderr)
    print(f"wrote {r.output}: {gw.summary_line(r.plan)}")
    return 0


def _schema(args: argparse.Namespace) -> int:
    from graphc.outputs import emit_text, is_graphc_schema
    from graphc.weights.maps import map_schema

    return emit_text(json.dumps(map_schema(), indent=2) + "\n", args.output, args.force, is_ours=is_graphc_schema, what="schema file")


def register(sub: Any, add_spec_args: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``graphc weights plan|convert|schema`` (``add_spec_args``: SPEC and --set, from the CLI)."""
    w = sub.add_parser("weights", help="pretrained weights: plan a transfer, convert a checkpoint, map schema")
    wsub = w.add_subparsers(dest="weights_command", required=True, metavar="ACTION")

    p = wsub.add_parser("plan", help="what a checkpoint carries into a spec (headers only, nothing loaded)")
    add_spec_args(p)
    p.add_argument("--from", dest="checkpoint", required=True, metavar="CKPT", help="checkpoint file or folder")
    p.add_argument("--map", dest="weights_map", metavar="MAP", help="weight map (YAML)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=_plan)

    p = wsub.add_parser("convert", help="write a checkpoint as graphc weights (safetensors keyed by node paths)")
    add_spec_args(p)
    p.add_argument("--from", dest="checkpoint", required=True, metavar="CKPT", help="checkpoint file or folder")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="the .safetensors file to write")
    add_transfer_args(p)
    p.set_defaults(handler=_convert)

    p = wsub.add_parser("schema", help="print the JSON Schema of the weight-map format")
    p.add_argument("-o", "--output", help="write to FILE instead of stdout (an existing file only if graphc wrote it)")
    p.add_argument("--force", action="store_true", help="replace an existing FILE graphc did not write")
    p.set_defaults(handler=_schema)


__all__ = ["add_transfer_args", "register", "render_table", "weight_source"]
