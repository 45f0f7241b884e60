"""Lowering: the typed DAG becomes a ``torch.fx.GraphModule``.

The module hierarchy mirrors the spec: a block instance is a submodule (``body.0``), a layer
is a submodule named after its node, so ``state_dict`` keys are the spec's node paths.  Each
scope (the top level, every block instance) is one fx graph built from the ops' ``lower``
methods on proxies; fx node names are the spec's names, so ``gm.code`` reads like the spec.

Repeated instances of a block share one generated class (:class:`BlockModule`), so
``torch.compile`` of a block compiles once for all of them.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator, Sequence
from typing import Any

import networkx as nx
import torch
from torch import fx, nn

from graphc.errors import LowerError
from graphc.graph.infer import TypedGraph
from graphc.lower.built import Built
from graphc.lower.context import LowerCtx, ModuleRecord
from graphc.lower.init import apply_init
from graphc.ops.registry import OpError
from graphc.spec.ir import FlatNode, Instance, Ref


class BlockModule(fx.GraphModule):
    """Base of generated block classes: instances share their class and ``forward``.

    ``fx.GraphModule`` makes a fresh class per instance; here one class is made per block
    and generated source, so every repetition runs the very same code object.
    """

    _graphc_src: str | None = None

    def __new__(cls, *args: Any, **kwargs: Any) -> BlockModule:
        return nn.Module.__new__(cls)  # type: ignore[no-any-return]

    def recompile(self) -> Any:
        cls = type(self)
        code = self._graph.__dict__.pop("_graphc_code", None) or self._graph.python_code(root_module="self")
        if cls._graphc_src == code.src and "forward" in vars(cls):
            self._code = code.src
            self._lineno_map = code._lineno_map
            self._prologue_start = code._prologue_start
            return code
        result = super().recompile()
        cls._graphc_src = self._code
        return result


_BLOCK_CLASSES: dict[tuple[str, str], type[BlockModule]] = {}


def _block_class(block: str, src: str) -> type[BlockModule]:
    key = (block, src)
    cls = _BLOCK_CLASSES.get(key)
    if cls is None:
        name = "".join(p.capitalize() for p in block.split("_")) or "Block"
        cls = type(name, (BlockModule,), {"__module__": "graphc.generated"})
        _BLOCK_CLASSES[key] = cls
    return cls


def _set_submodule(root: nn.Module, path: str, mod: nn.Module) -> None:
    parts = path.split(".")
    for p in parts[:-1]:
        child = root._modules.get(p)
        if child is None:
            child = nn.Module()
            root.add_module(p, child)
        root = child
    root.add_module(parts[-1], mod)


class _ScopeLowering:
    """Builds the fx graph of one scope (the top level or one block instance)."""

    def __init__(self, lowering: Lowering, prefix: str) -> None:
        self.lw = lowering
        self.tg = lowering.tg
        self.prefix = prefix
        self.graph = fx.Graph()
        self.tracer = fx.proxy.GraphAppendingTracer(self.graph)
        self.root = nn.Module()
        self.values: dict[Ref, Any] = {}

    def local(self, name: str) -> str:
        return name[len(self.prefix) + 1 :] if self.prefix else name

    def member_of(self, node: FlatNode) -> str:
        """The node itself if it is in this scope, else the child instance holding it."""
        if node.scope == self.prefix:
            return node.name
        rest = self.local(node.scope)
        instances = self.lw.tg.flat.instances
        parts = rest.split(".")
        for i in range(1, len(parts) + 1):
            cand = ".".join(parts[:i])
            full = f"{self.prefix}.{cand}" if self.prefix else cand
            if full in instances and instances[full].scope == self.prefix:
                return full
        raise LowerError(f"node '{node.name}' is outside scope '{self.prefix}'", node.pos)

    def member_order(self, names: Sequence[str]) -> list[str]:
        flat = self.tg.flat
        members = {n: self.member_of(flat.nodes[n]) for n in names}
        dg = nx.DiGraph()
        rank: dict[str, int] = {}
        for n in names:
            m = members[n]
            rank.setdefault(m, len(rank))
            dg.add_node(m)
        for n in names:
            for r in flat.nodes[n].inputs:
                if r is not None and r.node in members and members[r.node] != members[n]:
                    dg.add_edge(members[r.node], members[n])
        try:
            return list(nx.lexicographical_topological_sort(dg, key=lambda m: rank[m]))
        except nx.NetworkXUnfeasible:
            cyc = " -> ".join(u for u, _ in nx.find_cycle(dg))
            node = flat.nodes[names[0]]
            raise LowerError(f"block instances and nodes depend on each other in a cycle: {cyc}", node.pos) from None

    def build(self, names: Sequence[str], placeholders: Sequence[str], outputs: Sequence[tuple[str, Ref]], single: bool) -> tuple[fx.Graph, nn.Module]:
        flat = self.tg.flat
        for p in placeholders:
            proxy = self.tracer.create_proxy("placeholder", self.local(p), (), {})
            self.values[Ref(p, 0)] = proxy
        for member in self.member_order([n for n in names if n not in placeholders]):
            if member in flat.instances and member not in flat.nodes:
                self.lower_instance(flat.instances[member])
            else:
                self.lower_node(flat.nodes[member])
        vals = [self.values[r].node for _, r in outputs]
        if single:
            self.graph.output(vals[0])
        elif self.prefix:
            self.graph.output(tuple(vals))
        else:
            self.graph.output({name: v for (name, _), v in zip(outputs, vals, strict=True)})
        self.graph.lint()
        return self.graph, self.root

    def lower_node(self, node: FlatNode) -> None:
        if node.kind != "op":
            raise LowerError(f"unexpected {node.kind} '{node.name}' in scope '{self.prefix}'", node.pos)
        ins = [self.values[r] if r is not None else None for r in node.inputs]
        before = len(self.graph.nodes)
        local = self.local(node.name)
        ctx = LowerCtx(self.tracer, self.root, local, self.tg.in_types(node), self.tg.out_types(node))
        try:
            result = node.args.lower(ctx, *ins)
        except (OpError, ValueError, TypeError, RuntimeError) as e:
            raise LowerError(f"node '{node.name}': cannot lower op '{node.op_name}': {e}", node.pos) from e
        outs = list(result) if isinstance(result, list | tuple) else [result]
        if len(outs) != len(node.outputs):
            raise LowerError(f"node '{node.name}': lowering gave {len(outs)} outputs, expected {len(node.outputs)}", node.pos)
        if ctx.made is not None:
            self.lw.made[node.name] = ctx.made
            if ctx.record is not None:
                self.lw.records[node.name] = ctx.record
            apply_init(ctx.made, node.init, self.tg.flat.spec.doc.init, node.args.lookup_table)
        new_nodes = list(self.graph.nodes)[before:]
        self._rename(new_nodes, [o.node for o in outs], local, node.outputs)
        for i, o in enumerate(outs):
            self.values[Ref(node.name, i)] = o

    def _rename(self, created: list[fx.Node], outs: list[fx.Node], local: str, out_names: list[str]) -> None:
        base = local.replace(".", "_")
        for n in created:
            if n not in outs:
                n._rename(f"{base}_{n.name}")
        for n, oname in zip(outs, out_names, strict=True):
            if n in created:
                n._rename(base if len(outs) == 1 else f"{base}_{oname}")

    def lower_instance(self, inst: Instance) -> None:
        """A submodule for the copy and a call of it; a copy that ``shares`` another makes no
        module and calls the owner's (same scope, so its local path is a sibling's)."""
        if inst.shares is None:
            _set_submodule(self.root, self.local(inst.name), self.lw.lower_scope(inst))
        else:
            self.lw.shared.append(inst)
        target = self.local(inst.shares or inst.name)
        base = self.local(inst.name).replace(".", "_")
        args = tuple(self.values[self.tg.flat.nodes[p].inputs[0]] for p in inst.inputs)  # type: ignore[index]
        call = self.tracer.create_proxy("call_module", target, args, {})
        call.node._rename(base)
        call.node.meta["graphc_instance"] = inst.name  # whose nodes the call computes (the probe names them)
        if len(inst.outputs) == 1:
            self.values[inst.outputs[0][1]] = call
            return
        for i, (oname, ref) in enumerate(inst.outputs):
            item = call[i]  # type: ignore[index]
            item.node._rename(f"{base}_{oname}")
            self.values[ref] = item


class Lowering:
    """Lowers a :class:`TypedGraph`; keeps what ``compile`` needs to write model.py."""

    def __init__(self, tg: TypedGraph) -> None:
        self.tg = tg
        self.records: dict[str, ModuleRecord] = {}
        self.made: dict[str, nn.Module] = {}
        self.shared: list[Instance] = []  # copies lowered as calls of another copy's module
        self.by_scope = self._members_by_scope()

    def _members_by_scope(self) -> dict[str, list[str]]:
        """Every scope's nodes (its own and those of nested instances), in topological order."""
        instances = self.tg.flat.instances
        out: dict[str, list[str]] = {}
        for name in self.tg.order:
            scope = self.tg.flat.nodes[name].scope
            while scope:
                out.setdefault(scope, []).append(name)
                scope = instances[scope].scope
        return out

    def names_in(self, prefix: str) -> list[str]:
        return list(self.tg.order) if not prefix else self.by_scope.get(prefix, [])

    def lower_scope(self, inst: Instance) -> BlockModule:
        sl = _ScopeLowering(self, inst.name)
        graph, root = sl.build(self.names_in(inst.name), inst.inputs, inst.outputs, single=len(inst.outputs) == 1)
        code = graph.python_code(root_module="self")
        graph._graphc_code = code  # type: ignore[attr-defined]  # reused by recompile(): generate once
        cls = _block_class(inst.block, code.src)
        return cls(root, graph, cls.__name__)

    def check_shared(self, gm: fx.GraphModule) -> None:
        """A copy that runs another copy's module must lower to the very same code.

        Same block and params make the same parameters (checked before), but an op may
        lower differently for inputs of another rank or static size; when the inputs' types
        differ, the copy is lowered on the meta device (no memory, no random draws) and its
        code compared with the owner's.
        """
        types = self.tg.types
        for inst in list(self.shared):  # a meta lowering below may add the copy's own sharing calls: not the model's
            assert inst.shares is not None
            owner = self.tg.flat.instances[inst.shares]
            mine = [types[Ref(p, 0)] for p in inst.inputs]
            theirs = [types[Ref(p, 0)] for p in owner.inputs]
            if mine == theirs:
                continue
            made, records, shared = dict(self.made), dict(self.records), list(self.shared)
            with torch.device("meta"), torch.random.fork_rng():
                codes = _block_codes(self.lower_scope(inst))
            self.made, self.records, self.shared = made, records, shared
            if codes != _block_codes(gm.get_submodule(inst.shares)):
                shapes = ", ".join(map(str, mine)), ", ".join(map(str, theirs))
                raise LowerError(f"block call '{inst.name}' shares '{inst.shares}', but its inputs ({shapes[0]}) lower to other"
                                 f" code than those of '{inst.shares}' ({shapes[1]}); give both calls inputs of the same shape", inst.pos)

    def lower_top(self) -> fx.GraphModule:
        flat = self.tg.flat
        inputs = [n for n, node in flat.nodes.items() if node.kind == "input"]
        names = [n for n in self.tg.order if not flat.nodes[n].scope]
        names += [n for n in self.tg.order if flat.nodes[n].scope]
        sl = _ScopeLowering(self, "")
        graph, root = sl.build(names, inputs, list(flat.outputs.items()), single=len(flat.outputs) == 1)
        cls_name = "".join(p.capitalize() for p in flat.spec.name.replace("-", "_").split("_")) or "Model"
        return fx.GraphModule(root, graph, cls_name)


def _block_codes(module: nn.Module) -> dict[str, str]:
    """The generated code of a block copy and of every block copy inside it, by path."""
    return {name: m.code for name, m in module.named_modules() if isinstance(m, BlockModule)}


def lower(tg: TypedGraph, seed: int | None = None) -> Built:
    """Lower ``tg`` to a GraphModule (parameters initialized deterministically from ``seed``),
    handed on with ``tg`` and the constructor records as one :class:`Built`."""
    lw = Lowering(tg)
    with torch.random.fork_rng(enabled=seed is not None), _no_gc():
        if seed is not None:
            torch.manual_seed(seed)
        gm = lw.lower_top()
        lw.check_shared(gm)
    _apply_ties_and_freeze(gm, tg)
    return Built(gm, tg, lw.records)


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """Pause the cyclic GC while building: lowering allocates many long-lived objects, and
    generational collections over a growing heap would make build time super-linear."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _apply_ties_and_freeze(gm: fx.GraphModule, tg: TypedGraph) -> None:
    for name, ties in tg.ties.items():
        owner = gm.get_submodule(name)
        for param, (target, target_param) in ties.items():
            setattr(owner, param, getattr(gm.get_submodule(target), target_param))
    modules = dict(gm.named_modules())
    for node in tg.flat.op_nodes():
        if node.freeze and node.name in modules:
            for p in modules[node.name].parameters():
                p.requires_grad_(False)
