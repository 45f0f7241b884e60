"""Types of flat nodes while the spec is still being expanded, for ``${x.shape[i]}``.

A block that reads its input's shape (``expand: ${x.shape[1] * 6}``) needs that type before
its own nodes exist, while the graph phase (:mod:`graphc.graph.infer`) infers types only
after the whole expansion.  Everything a block input reads from is already expanded when
the block is (references expand on demand), so its type follows from the ops' own ``infer``
rules, the same registry rules the graph phase runs, applied here to the ancestors of that
one input, once each.  The graph phase later infers (and checks) everything again; a failure
here is only reported as "cannot know the shape" and left to it to explain.
"""

from __future__ import annotations

from collections.abc import Mapping, Set

from graphc.ops.registry import OpError
from graphc.shapes import Dim, Sym, TensorType, parse_dim
from graphc.spec.expr import ExprError, ShapeUnknownError
from graphc.spec.ir import FlatNode, Ref
from graphc.spec.model import InputDef


def input_type(inp: InputDef) -> TensorType:
    """A spec input's symbolic type (``8*H`` is the symbol ``H`` times 8)."""
    dims: list[Dim] = []
    for d in inp.shape:
        if isinstance(d, int):
            dims.append(d)
        else:
            k, sym = parse_dim(d) or (1, d)  # malformed dims are reported by the expansion
            dims.append(k * Sym.var(sym))
    return TensorType(tuple(dims), inp.dtype)


class EarlyTypes:
    """The types of the flat nodes made so far, inferred on demand and remembered."""

    def __init__(self, nodes: Mapping[str, FlatNode], inputs: Mapping[str, InputDef], broken: Set[str]) -> None:
        self.nodes = nodes
        self.inputs = inputs
        self.broken = broken  # nodes made with a failed input reference (a None where one is needed)
        self.types: dict[Ref, TensorType] = {}

    def dims(self, ref: Ref, what: str) -> list[int | str]:
        """``ref``'s shape as expressions see it: ints, and symbolic dims as their text."""
        return [d if isinstance(d, int) else str(d) for d in self.type_of(ref, what).shape]

    def type_of(self, ref: Ref, what: str) -> TensorType:
        """The type of ``ref`` (``what`` names it in messages), inferring unknown ancestors
        first, with an explicit stack: a deep spec must not hit Python's recursion limit."""
        stack = [ref.node]
        while stack:
            name = stack[-1]
            if Ref(name, 0) in self.types:
                stack.pop()
                continue
            node = self.nodes.get(name)
            if node is None or name in self.broken or any(r is not None and r.node not in self.nodes for r in node.inputs):
                raise ShapeUnknownError(f"the shape of {what} is unknown: what feeds it failed")
            missing = [r.node for r in node.inputs if r is not None and Ref(r.node, 0) not in self.types]
            if missing:
                stack.extend(missing)
                continue
            stack.pop()
            self.infer_node(node, what)
        return self.types[ref]

    def infer_node(self, node: FlatNode, what: str) -> None:
        if node.kind == "input":
            outs = [input_type(self.inputs[node.name])]
        elif node.kind == "port":
            assert node.inputs[0] is not None
            outs = [self.types[node.inputs[0]]]
        else:
            try:
                result = node.args.infer(*[self.types[r] if r is not None else None for r in node.inputs])
            except OpError:
                raise ExprError(f"the shape of {what} is unknown: node '{node.name}' fails shape inference (reported at its line {node.pos.line})") from None
            outs = result if isinstance(result, list) else [result]
        if not outs:
            raise ExprError(f"the shape of {what} is unknown: node '{node.name}' has no output")
        for i, t in enumerate(outs):
            self.types[Ref(node.name, i)] = t
