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


def _mm(text: str) -> str:
    """Text inside a Mermaid ``"..."`` label: quotes, ``#``, angle brackets and line breaks
    as Mermaid entity codes, so a spec name cannot end the label or the statement."""
    return "".join(_MM_ESC.get(ch, ch) if ch.isprintable() else f"#{ord(ch)};" for ch in text)


_MM_ESC = {'"': "#quot;", "#": "#35;", "<": "#lt;", ">": "#gt;"}


def _dq(text: str) -> str:
    """Text inside a DOT ``"..."`` string: backslash and quote escaped, no raw line breaks."""
    out = text.replace("\\", "\\\\").replace('"', '\\"')
    return "".join(ch if ch.isprintable() else f"&#{ord(ch)};" for ch in out)


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
    return f'{_id(name)}{left}"{_mm(_label(node))}"{right}'


def _box(inst: Instance) -> str:
    return f"{inst.name} ({inst.block}, shares {inst.shares})" if inst.shares else f"{inst.name} ({inst.block})"


_MERMAID = _Style(lambda inst: [f'subgraph {_id(inst.name)}_g["{_mm(_box(inst))}"]'], "end", _mermaid_node)
_DOT = _Style(
    lambda inst: [f'subgraph "cluster_{_dq(inst.name)}" {{', f'  label="{_dq(_box(inst))}"; style=rounded;'],
    "}",
    lambda name, node: f'"{_dq(name)}" [label="{_dq(_label(node))}", shape={ {"input": "ellipse", "port": "point"}.get(node.kind, "box")}];',
)


def to_mermaid(tg: TypedGraph) -> str:
    """A Mermaid flowchart: block instances as subgraphs, edges labelled with shapes."""
    lines = ["flowchart TD", *_body(tg, _MERMAID)]
    for oname in tg.flat.outputs:
        lines.append(f'  {_id("out_" + oname)}(["{_mm(oname)}"])')
    for a, b, label in _edges(tg):
        lines.append(f'  {_id(a)} -->|"{_mm(label)}"| {_id(b.replace(":", "_"))}')
    return "\n".join(lines) + "\n"


def to_dot(tg: TypedGraph) -> str:
    """Graphviz DOT: block instances as clusters, edges labelled with shapes."""
    lines = [f'digraph "{_dq(tg.flat.spec.name)}" {{', "  rankdir=TB;", '  node [shape=box, fontname="Helvetica"];']
    lines += _body(tg, _DOT)
    for oname in tg.flat.outputs:
        lines.append(f'  "out:{_dq(oname)}" [label="{_dq(oname)}", shape=ellipse];')
    for a, b, label in _edges(tg):
        lines.append(f'  "{_dq(a)}" -> "{_dq(b)}" [label="{_dq(label)}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"
