"""The data's id ranges against the spec, before training: ids beyond a table fail at step 0
deep inside torch (an index error on some device) instead of here, with the spec's line.

A source reports each integer array's exclusive upper bound (``Prepared.value_bounds``: a
tokenizer's or a category vocabulary's size).  An input's declared ``range`` must hold it, and
every op that reads the input checks it with its own rule (``OpArgs.check`` given the range,
as ``graphc check`` does for a declared range): one op, one definition.
"""

from __future__ import annotations

from collections.abc import Mapping

from graphc.errors import DataError
from graphc.graph.infer import TypedGraph, where
from graphc.ops.registry import Facts, OpError
from graphc.spec.ir import Ref


def check_value_bounds(tg: TypedGraph, bounds: Mapping[str, int], source: str) -> None:
    """Raise :class:`DataError` at the spec's line if ids ``[0, bound)`` do not fit.

    ``source`` says where the bound comes from (e.g. ``data.text: the tokenizer's 1024 ids``).
    """
    spec = tg.flat.spec
    ranges: dict[Ref, tuple[float, float]] = {}
    for name, bound in bounds.items():
        inp = spec.doc.inputs.get(name)
        if inp is None:
            continue
        if inp.range is not None and inp.range[1] < bound:
            raise DataError(f"inputs.{name}: declares range [{inp.range[0]:g}, {inp.range[1]:g}) but {source} "
                            f"gives ids up to {bound - 1}", spec.pos("inputs", name, "range"))
        ranges[Ref(name, 0)] = (0.0, float(bound))
    for node_name in tg.order:
        node = tg.flat.nodes[node_name]
        if not any(r in ranges for r in node.inputs if r is not None):
            continue
        if node.kind == "port":
            ranges[Ref(node_name, 0)] = ranges[node.inputs[0]]  # type: ignore[index]
        elif node.kind == "op":
            facts = Facts(tg.example, tuple(ranges.get(r) if r is not None else None for r in node.inputs))
            try:
                node.args.check(facts, *tg.in_types(node))
            except OpError as e:
                raise DataError(f"{where(node)}: with {source}: {e}", node.pos) from None
