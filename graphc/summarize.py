"""``graphc summary``: per-node shapes, parameters and FLOPs, with totals and memory.

Everything is computed from the registry's ``params``/``flops`` rules on the typed graph,
so a summary of a billion-parameter spec allocates nothing.  FLOPs are counted at the
inputs' example sizes (a multiply-add is 2 FLOPs).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from math import prod
from typing import Any

from graphc.graph.infer import TypedGraph
from graphc.graph.memory_planner import MemoryPlan, iter_parts, plan_memory
from graphc.shapes import DTYPE_BYTES


@dataclass
class NodeSummary:
    name: str
    op: str
    shape: str
    params: int
    trainable: int
    flops: int
    doc: str | None = None


@dataclass
class Summary:
    name: str
    nodes: list[NodeSummary]
    total_params: int
    trainable_params: int
    frozen_params: int
    buffers: int
    flops: int
    example: dict[str, int]
    inputs: dict[str, str]
    outputs: dict[str, str]
    memory: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def grouped(self, depth: int | None) -> list[NodeSummary]:
        """Rows aggregated to ``depth`` levels of the node path (``body.0`` at depth 2)."""
        if depth is None:
            return self.nodes
        rows: dict[str, NodeSummary] = {}
        for n in self.nodes:
            parts = n.name.split(".")
            key = ".".join(parts[:depth])
            if key == n.name:
                rows[key] = NodeSummary(**asdict(n))
                continue
            row = rows.setdefault(key, NodeSummary(key, "block", n.shape, 0, 0, 0))
            row.params += n.params
            row.trainable += n.trainable
            row.flops += n.flops
            row.shape = n.shape
        return list(rows.values())


def _tied(tg: TypedGraph) -> set[tuple[str, str]]:
    return {(n, p) for n, ties in tg.ties.items() for p in ties}


def own_params(tg: TypedGraph, name: str, tied: set[tuple[str, str]]) -> int:
    """Parameters node ``name`` owns (a tied parameter is counted at its owner only, and a
    node of a block call with ``shares`` owns none: it runs its owner's module)."""
    if tg.flat.nodes[name].shares:
        return 0
    return sum(prod(s) for p, s in tg.params.get(name, {}).items() if (name, p) not in tied)


def total_params(tg: TypedGraph) -> int:
    """All parameters, tied ones once: what ``check`` reports, without the FLOP work."""
    tied = _tied(tg)
    return sum(own_params(tg, n.name, tied) for n in tg.flat.op_nodes())


def summarize(tg: TypedGraph) -> Summary:
    """Summarize a checked graph (no torch)."""
    sizes = tg.example
    tied = _tied(tg)
    rows: list[NodeSummary] = []
    total = trainable = buffers = flops = act_bytes = 0
    for name in tg.order:
        node = tg.flat.nodes[name]
        if node.kind != "op":
            continue
        count = own_params(tg, name, tied)
        ins = [t.concrete(sizes) for t in tg.in_types(node) if t is not None]
        outs_t = tg.out_types(node)
        outs = [t.concrete(sizes) for t in outs_t]
        f = node.args.flops(ins, outs)
        if not node.shares:
            buffers += sum(prod(s) for s in node.args.buffers(*tg.in_types(node)).values())  # type: ignore[arg-type]
        act_bytes += sum(prod(o) * DTYPE_BYTES[t.dtype] for o, t in zip(outs, outs_t, strict=True))
        train = 0 if node.freeze else count
        rows.append(NodeSummary(name, node.op_name, " ".join(str(t) for t in outs_t), count, train, f, node.doc))
        total += count
        trainable += train
        flops += f
    memory = {
        "params_fp32_bytes": total * 4,
        "params_bf16_bytes": total * 2,
        "activations_bytes": act_bytes,
        "train_fp32_bytes_estimate": plan_memory(tg).peak,  # the memory planner at the example batch (fp32, AdamW)
    }
    return Summary(
        tg.flat.spec.name,
        rows,
        total,
        trainable,
        total - trainable,
        buffers,
        flops,
        dict(sizes),
        {k: str(v) for k, v in tg.spec_input_types().items()},
        {n: str(t) for n, t in tg.output_types().items()},
        memory,
    )


def plan_rows(plan: MemoryPlan) -> list[tuple[str, str, str]]:
    """The memory plan as table rows (part, full size, live at the peak), totals last."""
    rows = [(label, human(size, "B"), human(live, "B")) for label, size, live in iter_parts(plan)]
    return [*rows, ("peak", "", human(plan.peak, "B"))]


def format_plan(plan: MemoryPlan) -> str:
    """The memory plan as plain text (for messages that cannot use rich)."""
    lines = [f"training memory per process ({plan.setup.describe()}):", f"  {'part':<24} {'size':>10} {'at peak':>10}"]
    lines += [f"  {a:<24} {b:>10} {c:>10}" for a, b, c in plan_rows(plan)]
    lines.append(f"  peak at: {plan.phase}")
    return "\n".join(lines)


def human(n: float, unit: str = "") -> str:
    """1234567 -> '1.23M'."""
    for suffix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{suffix}{unit}"
    return f"{int(n)}{unit}"
