"""A "probe" of a built model: one flat fx graph that also returns every spec node's value.

Export goes through the probe so that each spec node's output becomes a named ONNX value
(named after the node's path).  The extra outputs are then dropped from the shipped model,
but the names stay (and are listed in its metadata), so verification can later ask
onnxruntime for any node's value and name the first node where ONNX and torch diverge.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import fx

from graphc.lower.built import Built
from graphc.lower.fx_lower import BlockModule


@dataclass
class Probe:
    """The flat module and the names of its outputs: real outputs first, then spec nodes."""

    module: fx.GraphModule
    outputs: list[str]  # the spec's output names
    nodes: list[str]  # spec node paths returned after the outputs, in topological order


def _fx_name(local: str, out_names: list[str], i: int) -> str:
    base = local.replace(".", "_")
    return base if len(out_names) == 1 else f"{base}_{out_names[i]}"


def _inline(graph: fx.Graph, gm: fx.GraphModule, prefix: str, args: list[fx.Node], found: dict[str, fx.Node], scope: str = "") -> Any:
    """Copy ``gm``'s graph into ``graph`` (module targets prefixed), recursing into blocks;
    values are found under the block copy a call computes (``scope``), which differs from
    the module's path when the call ``shares`` another copy's module."""
    env: dict[fx.Node, Any] = {}
    placeholders = iter(args)
    result: Any = None
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            env[node] = next(placeholders)
            continue
        if node.op == "output":
            result = fx.node.map_arg(node.args[0], lambda n: env[n])
            break
        target = f"{prefix}.{node.target}" if prefix and node.op in ("call_module", "get_attr") else node.target
        sub = gm.get_submodule(str(node.target)) if node.op == "call_module" else None
        if isinstance(sub, BlockModule):
            inner = [fx.node.map_arg(a, lambda n: env[n]) for a in node.args]
            env[node] = _inline(graph, sub, str(target), inner, found, node.meta.get("graphc_instance", str(target)))
            continue
        new = graph.create_node(node.op, target, fx.node.map_arg(node.args, lambda n: env[n]),
                                fx.node.map_arg(node.kwargs, lambda n: env[n]), name=node.name)
        new.meta = dict(node.meta)
        env[node] = new
        found[f"{scope}:{node.name}"] = new
    return result


def make_probe(built: Built) -> Probe:
    """The probe of a lowered model."""
    gm, tg = built.module, built.graph
    graph = fx.Graph()
    inputs = [graph.placeholder(n) for n in tg.flat.spec.doc.inputs]
    found: dict[str, fx.Node] = {}
    result = _inline(graph, gm, "", inputs, found)
    outs = list(result.values()) if isinstance(result, dict) else [result]
    names = list(tg.flat.outputs)
    nodes: list[str] = []
    values: list[fx.Node] = []
    for name in tg.order:
        node = tg.flat.nodes[name]
        if node.kind != "op":
            continue
        local = name[len(node.scope) + 1 :] if node.scope else name
        fx_node = found.get(f"{node.scope}:{_fx_name(local, node.outputs, 0)}")
        if fx_node is not None:
            nodes.append(name)
            values.append(fx_node)
    graph.output((*outs, *values))
    graph.lint()
    return Probe(fx.GraphModule(gm, graph, "GraphcProbe"), names, nodes)


@torch.no_grad()
def node_values(probe: Probe, inputs: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
    """Every spec output and probed node value of the torch model on ``inputs``."""
    got = probe.module(*inputs)
    return dict(zip(probe.outputs + probe.nodes, got, strict=True))
