"""The expanded spec as a ``networkx.DiGraph``, with the graph-level checks.

Nodes are flat node names (spec inputs, block ports, ops); an edge ``a -> b`` means a tensor
flows from ``a`` to ``b``.  Checked here: cycles (reported with the nodes and lines on the
cycle), names that collide once dots become underscores (fx and ONNX names), and, as
warnings, nodes and inputs that no output depends on.
"""

from __future__ import annotations

import networkx as nx

from graphc.errors import Collector, GraphError, merge_copies, scope_label
from graphc.spec.ir import FlatSpec


def build_graph(flat: FlatSpec) -> nx.DiGraph:
    """Build the DAG of ``flat``; raises :class:`GraphError` for cycles and name clashes."""
    g = nx.DiGraph()
    for i, node in enumerate(flat.nodes.values()):
        g.add_node(node.name, node=node, order=i)
    for node in flat.nodes.values():
        for ref in node.inputs:
            if ref is not None:
                g.add_edge(ref.node, node.name)
    errors = Collector()
    _check_cycles(g, errors)
    _check_name_clashes(flat, errors)
    errors.raise_if_any(GraphError)
    _warn_dead(g, flat, errors)
    flat.warnings.extend(merge_copies(errors.warnings))
    return g


def topo_order(g: nx.DiGraph) -> list[str]:
    """A topological order that follows the spec's own order wherever it can."""
    order = nx.get_node_attributes(g, "order")
    return list(nx.lexicographical_topological_sort(g, key=lambda n: order[n]))


def _check_cycles(g: nx.DiGraph, errors: Collector) -> None:
    if nx.is_directed_acyclic_graph(g):
        return
    for component in nx.strongly_connected_components(g):
        if len(component) < 2 and not any(g.has_edge(n, n) for n in component):
            continue
        cycle = [u for u, _ in nx.find_cycle(g.subgraph(component))]
        nodes = [g.nodes[n]["node"] for n in cycle]
        path = " -> ".join(f"{n.name} (line {n.pos.line})" for n in [*nodes, nodes[0]])
        first = min(nodes, key=lambda n: n.pos)
        errors.error(f"cycle: {path}", first.pos)


def _check_name_clashes(flat: FlatSpec, errors: Collector) -> None:
    seen: dict[str, str] = {}
    for node in flat.nodes.values():
        key = node.name.replace(".", "_")
        other = seen.get(key)
        if other is not None and other != node.name:
            errors.error(f"{node.path}: name '{node.name}' collides with '{other}' after expansion (both become '{key}' in torch and ONNX)", node.pos)
        seen.setdefault(key, node.name)


def _warn_dead(g: nx.DiGraph, flat: FlatSpec, errors: Collector) -> None:
    live: set[str] = set()
    for ref in flat.outputs.values():
        live.add(ref.node)
        live |= nx.ancestors(g, ref.node)
    for node in flat.nodes.values():
        if node.name in live or node.kind == "port":
            continue
        what = "input" if node.kind == "input" else "node"
        name = f"'{node.local_name}'{scope_label(node.scope)}" if node.scope else f"'{node.name}'"  # copies merge into one line
        errors.warn(f"{what} {name} does not contribute to any output", node.pos)
