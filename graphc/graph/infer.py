"""Shape and dtype inference over the DAG, without torch and without weights.

Every op's ``infer`` runs on symbolic :class:`~graphc.shapes.TensorType` s in topological
order; an :class:`~graphc.ops.registry.OpError` becomes a :class:`ShapeError` at the node's
YAML line.  Nodes downstream of a failed node are skipped (no cascade of follow-on errors),
independent ones are still checked, so one run reports every shape mistake.  After an op's
``infer``, its ``check`` hook sees the example sizes and the inputs' declared value ranges
(``Facts``), to prove what would otherwise fail only at compile or run time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx

from graphc.errors import Collector, ShapeError
from graphc.graph.build import build_graph, topo_order
from graphc.ops.registry import Facts, OpError
from graphc.shapes import TensorType, parse_dim
from graphc.spec.early import input_type
from graphc.spec.ir import FlatNode, FlatSpec, Ref, at


@dataclass
class TypedGraph:
    """The checked program: flat spec, DAG, order, and every value's type."""

    flat: FlatSpec
    graph: nx.DiGraph
    order: list[str]
    types: dict[Ref, TensorType]
    params: dict[str, dict[str, tuple[int, ...]]] = field(default_factory=dict)  # node -> param -> shape
    example: dict[str, int] = field(default_factory=dict)  # symbolic dim -> example size
    ties: dict[str, dict[str, tuple[str, str]]] = field(default_factory=dict)  # node -> param -> (owner, param)

    def node(self, name: str) -> FlatNode:
        return self.flat.nodes[name]

    def in_types(self, node: FlatNode) -> list[TensorType | None]:
        return [self.types[r] if r is not None else None for r in node.inputs]

    def out_types(self, node: FlatNode) -> list[TensorType]:
        return [self.types[Ref(node.name, i)] for i in range(len(node.outputs))]

    def spec_input_types(self) -> dict[str, TensorType]:
        return {name: self.types[Ref(name, 0)] for name in self.flat.spec.doc.inputs}

    def output_types(self) -> dict[str, TensorType]:
        return {name: self.types[ref] for name, ref in self.flat.outputs.items()}


def where(node: FlatNode) -> str:
    """A node's spec path for messages: ``nodes.fc1``, or ``blocks.mlp.nodes.fc (in body.1)``."""
    return at(node.path, node.scope)


def input_types(flat: FlatSpec) -> tuple[dict[str, TensorType], dict[str, int]]:
    """Spec inputs as symbolic types, plus each symbolic dim's example size."""
    types: dict[str, TensorType] = {}
    example: dict[str, int] = {}
    for name, inp in flat.spec.doc.inputs.items():
        types[name] = input_type(inp)
        for d in inp.shape:
            if isinstance(d, str):
                sym = (parse_dim(d) or (1, d))[1]  # malformed dims were reported by the expansion
                example.setdefault(sym, inp.example.get(sym, 2))
        for d, v in inp.example.items():
            example[d] = v
    return types, example


def value_ranges(flat: FlatSpec) -> dict[Ref, tuple[float, float]]:
    """The declared ``[low, high)`` of each spec input that has a ``range`` (block ports
    pass theirs on during :func:`infer`), for the ops' check-time proofs."""
    return {Ref(name, 0): inp.range for name, inp in flat.spec.doc.inputs.items() if inp.range is not None}


def infer(flat: FlatSpec) -> TypedGraph:
    """Build the DAG and infer every value's type; raises ShapeError with all mistakes."""
    g = build_graph(flat)
    order = topo_order(g)
    types: dict[Ref, TensorType] = {}
    inputs, example = input_types(flat)
    errors = Collector()
    failed: set[str] = set()
    params: dict[str, dict[str, tuple[int, ...]]] = {}
    ranges = value_ranges(flat)
    for name in order:
        node = flat.nodes[name]
        if any(r is not None and r.node in failed for r in node.inputs):
            failed.add(name)
            continue
        try:
            outs = _infer_node(node, types, inputs)
            if node.kind == "op":
                ins = [types[r] if r is not None else None for r in node.inputs]
                node.args.check(Facts(example, tuple(ranges.get(r) if r is not None else None for r in node.inputs)), *ins)
                params[name] = node.args.params(*ins)  # type: ignore[arg-type]
            elif node.kind == "port" and node.inputs[0] in ranges:
                ranges[Ref(name, 0)] = ranges[node.inputs[0]]  # type: ignore[index]
        except OpError as e:
            errors.error(f"{where(node)}: {e}", node.pos)
            failed.add(name)
            continue
        for i, t in enumerate(outs):
            types[Ref(name, i)] = t
    ties = _resolve_ties(flat, params, errors)
    _check_shares(flat, params, errors)
    errors.raise_if_any(ShapeError)
    return TypedGraph(flat, g, order, types, params, example, ties)


def _infer_node(node: FlatNode, types: dict[Ref, TensorType], inputs: dict[str, TensorType]) -> list[TensorType]:
    if node.kind == "input":
        return [inputs[node.name]]
    if node.kind == "port":
        ref = node.inputs[0]
        assert ref is not None
        return [types[ref]]
    ins = [types[r] if r is not None else None for r in node.inputs]
    result = node.args.infer(*ins)  # type: ignore[arg-type]
    outs = result if isinstance(result, list) else [result]
    if len(outs) != len(node.outputs):
        raise OpError(f"op '{node.op_name}' produced {len(outs)} outputs, expected {len(node.outputs)}")
    return outs


def _resolve_ties(flat: FlatSpec, params: dict[str, dict[str, tuple[int, ...]]], errors: Collector) -> dict[str, dict[str, tuple[str, str]]]:
    """Each node's tied parameters: ``{param: (owner node, owner param)}``, shapes checked.

    ``tie: other`` ties every parameter name the two nodes share; ``{weight: other.weight}``
    ties just the ones named.
    """
    out: dict[str, dict[str, tuple[str, str]]] = {}
    for node in flat.op_nodes():
        if not node.tie:
            continue
        mine = params.get(node.name)
        resolved: dict[str, tuple[str, str]] = {}
        for param, (target, target_param) in node.tie.items():
            theirs = params.get(target)
            if mine is None or theirs is None:
                continue
            if param == "*":
                pairs = [(p, p) for p in mine if p in theirs]
                if not pairs:
                    errors.error(f"{where(node)}.tie: it shares no parameter name with '{target}' ({', '.join(mine) or 'none'} vs {', '.join(theirs) or 'none'})", node.pos)
            else:
                pairs = [(param, target_param)]
            for p, tp in pairs:
                if p not in mine:
                    errors.error(f"{where(node)}.tie: it has no parameter '{p}' (has: {', '.join(mine) or 'none'})", node.pos)
                elif tp not in theirs:
                    errors.error(f"{where(node)}.tie: '{target}' has no parameter '{tp}' (has: {', '.join(theirs) or 'none'})", node.pos)
                elif mine[p] != theirs[tp]:
                    errors.error(f"{where(node)}.tie: '{p}' has shape {list(mine[p])} but '{target}.{tp}' has {list(theirs[tp])}", node.pos)
                else:
                    resolved[p] = (target, tp)
        out[node.name] = resolved
    return out


def _check_shares(flat: FlatSpec, params: dict[str, dict[str, tuple[int, ...]]], errors: Collector) -> None:
    """A node of a block call with ``shares`` runs its owner's module: every parameter must
    have the owner's shape (inputs with another channel count would need other weights)."""
    for node in flat.op_nodes():
        if node.shares is None or node.name not in params or node.shares not in params:
            continue
        mine, theirs = params[node.name], params[node.shares]
        for p, shape in mine.items():
            if theirs.get(p) != shape:
                errors.error(f"{where(node)}: parameter '{p}' would have shape {list(shape)} here but it is"
                             f" {list(theirs.get(p, ()))} in '{node.shares}', whose weights this copy shares; give both calls inputs"
                             " of the same size", node.pos)
                break
