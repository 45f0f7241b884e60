"""Mermaid and Graphviz DOT renderings of a checked graph.

Block instances are drawn as (nested) subgraphs and edges carry the inferred shapes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from graphc.graph.infer import TypedGraph
from graphc.spec.ir import FlatNode, Instance


def _id(name: str) -> str:
    return "n_" + name.replace(".", "__")


def _label(node: FlatNode) -> str:
    if node.kind == "op":
        return f"{node.local_name}: {node.op_name}"
    return node.local_name


def _children(tg: TypedGraph) -> dict[str, list[str]]:
    """scope -> direct members (node names and child instance names), in order."""
    kids: dict[str, list[str]] = {}
    for inst in tg.flat.instances.values():
        kids.setdefault(inst.scope, []).append("@" + inst.name)
    for name in tg.order:
        kids.setdefault(tg.flat.nodes[name].scope, []).append(name)
    return kids


def _edges(tg: TypedGraph) -> list[tuple[str, str, str]]:
    out = []
    for name in tg.order:
        node = tg.flat.nodes[name]
        for ref in node.inputs:
            if ref is not None:
                out.append((ref.node, name, str(tg.types[ref])))
    for oname, ref in tg.flat.outputs.items():
        out.append((ref.node, "out:" + oname, str(tg.types[ref])))
    return out


@dataclass(frozen=True)
class _Style:
    """How one format writes a block instance's box and a node."""

    open: Callable[[Instance], list[str]]
    close: str
    node: Callable[[str, FlatNode], str]


def _body(tg: TypedGraph, style: _Style) -> list[str]:
    """Nodes, nested in their block instances' subgraphs, two spaces per level."""
    kids = _children(tg)
    lines: list[str] = []

    def emit(scope: str, indent: str) -> None:
        for m in kids.get(scope, []):
            if m.startswith("@"):
                inst = tg.flat.instances[m[1:]]
                lines.extend(indent + line for line in style.open(inst))
                emit(inst.name, indent + "  ")
                lines.append(indent + style.close)
            else:
                lines.append(indent + style.node(m, tg.flat.nodes[m]))

    emit("", "  ")
    return lines


def _mermaid_node(name: str, node: FlatNode) -> str:
    left, right = {"input": ("([", "])"), "port": ("[/", "/]")}.get(node.kind, ("[", "]"))
    return f'{_id(name)}{left}"{_label(node)}"{right}'


_MERMAID = _Style(lambda inst: [f'subgraph {_id(inst.name)}_g["{inst.name} ({inst.block})"]'], "end", _mermaid_node)
_DOT = _Style(
    lambda inst: [f'subgraph "cluster_{inst.name}" {{', f'  label="{inst.name} ({inst.block})"; style=rounded;'],
    "}",
    lambda name, node: f'"{name}" [label="{_label(node)}", shape={ {"input": "ellipse", "port": "point"}.get(node.kind, "box")}];',
)


def to_mermaid(tg: TypedGraph) -> str:
    """A Mermaid flowchart: block instances as subgraphs, edges labelled with shapes."""
    lines = ["flowchart TD", *_body(tg, _MERMAID)]
    for oname in tg.flat.outputs:
        lines.append(f'  {_id("out_" + oname)}(["{oname}"])')
    for a, b, label in _edges(tg):
        lines.append(f'  {_id(a)} -->|"{label}"| {_id(b.replace(":", "_"))}')
    return "\n".join(lines) + "\n"


def to_dot(tg: TypedGraph) -> str:
    """Graphviz DOT: block instances as clusters, edges labelled with shapes."""
    lines = [f'digraph "{tg.flat.spec.name}" {{', "  rankdir=TB;", '  node [shape=box, fontname="Helvetica"];']
    lines += _body(tg, _DOT)
    for oname in tg.flat.outputs:
        lines.append(f'  "out:{oname}" [label="{oname}", shape=ellipse];')
    for a, b, label in _edges(tg):
        lines.append(f'  "{a}" -> "{b}" [label="{label}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"
