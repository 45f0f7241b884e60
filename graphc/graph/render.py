"""Mermaid and Graphviz DOT renderings of a checked graph.

Block instances are drawn as (nested) subgraphs and edges carry the inferred shapes.
"""

from __future__ import annotations

from graphc.graph.infer import TypedGraph
from graphc.spec.expand import FlatNode


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


def to_mermaid(tg: TypedGraph) -> str:
    lines = ["flowchart TD"]
    kids = _children(tg)

    def emit(scope: str, indent: str) -> None:
        for m in kids.get(scope, []):
            if m.startswith("@"):
                inst = tg.flat.instances[m[1:]]
                lines.append(f'{indent}subgraph {_id(inst.name)}_g["{inst.name} ({inst.block})"]')
                emit(inst.name, indent + "  ")
                lines.append(f"{indent}end")
            else:
                node = tg.flat.nodes[m]
                shape = ("([", "])") if node.kind == "input" else ("[/", "/]") if node.kind == "port" else ("[", "]")
                lines.append(f'{indent}{_id(m)}{shape[0]}"{_label(node)}"{shape[1]}')

    emit("", "  ")
    for oname in tg.flat.outputs:
        lines.append(f'  {_id("out:" + oname).replace(":", "_")}(["{oname}"])')
    for a, b, label in _edges(tg):
        lines.append(f'  {_id(a)} -->|"{label}"| {_id(b).replace(":", "_")}')
    return "\n".join(lines) + "\n"


def to_dot(tg: TypedGraph) -> str:
    lines = [f'digraph "{tg.flat.spec.name}" {{', "  rankdir=TB;", '  node [shape=box, fontname="Helvetica"];']
    kids = _children(tg)

    def emit(scope: str, indent: str) -> None:
        for m in kids.get(scope, []):
            if m.startswith("@"):
                inst = tg.flat.instances[m[1:]]
                lines.append(f'{indent}subgraph "cluster_{inst.name}" {{')
                lines.append(f'{indent}  label="{inst.name} ({inst.block})"; style=rounded;')
                emit(inst.name, indent + "  ")
                lines.append(f"{indent}}}")
            else:
                node = tg.flat.nodes[m]
                shape = "ellipse" if node.kind == "input" else "point" if node.kind == "port" else "box"
                lines.append(f'{indent}"{m}" [label="{_label(node)}", shape={shape}];')

    emit("", "  ")
    for oname in tg.flat.outputs:
        lines.append(f'  "out:{oname}" [label="{oname}", shape=ellipse];')
    for a, b, label in _edges(tg):
        lines.append(f'  "{a}" -> "{b}" [label="{label}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"
