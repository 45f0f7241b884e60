"""ONNX export with the torch.export based exporter (``torch.onnx.export(dynamo=True)``).

Steps: build (and load weights) -> probe (every spec node's value is an extra output, so its
ONNX value is named after the node) -> ``torch.export`` with every symbolic dim dynamic ->
``torch.onnx.export`` -> drop the extra outputs, name dynamic axes after the spec's dims,
add metadata -> ``onnx.checker.check_model(full_check=True)`` -> atomic write.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import fx

from graphc.errors import ExportError
from graphc.export.probe import Probe, make_probe
from graphc.graph.infer import TypedGraph
from graphc.io import atomic_path

TWO_GB = 2**31 - 1  # protobuf's limit: bigger models keep their weights in external data
VALUES_KEY = "graphc.values"  # metadata: {spec node path: ONNX value name}
RANGES_KEY = "graphc.dims"  # metadata: {symbolic dim: [min, max]} as torch.export proved them
WEIGHTS_KEY = "graphc.weights_sha256"  # metadata: weights_digest() of the exported state
WEIGHTS_SOURCE_KEY = "graphc.weights"  # metadata: the weights file given, or "fresh weights ..."


@dataclass
class ExportResult:
    """What :func:`export_onnx` wrote."""

    path: Path
    seconds: float
    opset: int
    dims: dict[str, tuple[int, int]]  # symbolic dim -> allowed [min, max]
    verify: Any = None  # a VerifyResult unless verification was skipped
    extra: dict[str, str] = field(default_factory=dict)


def _quiet() -> None:
    """The exporter logs per-op notes (e.g. optional torchvision ops) that are not ours to show."""
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\..*")


def trace_inputs(tg: TypedGraph) -> tuple[torch.Tensor, ...]:
    """Example inputs for tracing, every symbolic dim at least 2 (0/1 would be specialized)."""
    import graphc

    sizes = {d: max(v, 2) for d, v in tg.example.items()}
    return graphc.example_inputs(tg, 0, None, **sizes)


def _dynamic_shapes(tg: TypedGraph) -> tuple[dict[int, Any], ...]:
    """``Dim.AUTO`` for every symbolic axis: torch.export proves each dim's range itself
    (e.g. ``T <= max_len`` where T indexes a position table) instead of failing on it."""
    out = []
    for inp in tg.flat.spec.doc.inputs.values():
        out.append({i: torch.export.Dim.AUTO for i, d in enumerate(inp.shape) if isinstance(d, str)})
    return tuple(out)


def _export_program(probe: Probe, tg: TypedGraph, args: tuple[torch.Tensor, ...]) -> torch.export.ExportedProgram:
    try:
        return torch.export.export(probe.module, args, dynamic_shapes=_dynamic_shapes(tg), strict=False)
    except Exception as e:
        raise ExportError(f"{tg.flat.spec.file}: torch.export failed: {_first_line(e)}") from e


def dim_ranges(ep: torch.export.ExportedProgram, tg: TypedGraph) -> tuple[dict[str, tuple[int, int]], dict[str, str]]:
    """Each spec dim's proven [min, max] and the exporter's symbol for it (``s0`` -> ``B``)."""
    ranges: dict[str, tuple[int, int]] = {}
    symbols: dict[str, str] = {}
    placeholders = [n for n in ep.graph.nodes if n.op == "placeholder" and n.name in ep.graph_signature.user_inputs]
    for node, inp in zip(placeholders, tg.flat.spec.doc.inputs.values(), strict=True):
        for size, d in zip(node.meta["val"].shape, inp.shape, strict=True):
            if not isinstance(d, str) or d in ranges:
                continue
            if isinstance(size, int):
                ranges[d] = (size, size)
                continue
            sym = size.node.expr
            vr = ep.range_constraints.get(sym)
            hi = _bound(vr.upper) if vr is not None else INT_MAX
            ranges[d] = (1, hi)  # torch.export assumes >= 2 to avoid specializing; 1 is verified
            symbols[str(sym)] = d
    return ranges, symbols


INT_MAX = 2**31 - 1


def _bound(value: Any) -> int:
    """A range bound as an int (torch's symbolic infinity has no int value)."""
    try:
        return min(int(value), INT_MAX)
    except (TypeError, ValueError, AttributeError, OverflowError):
        return INT_MAX


def _to_onnx(ep: torch.export.ExportedProgram, probe: Probe, opset: int | None) -> onnx.ModelProto:
    names = probe.outputs + [f"graphc::{n}" for n in probe.nodes]
    try:
        program = torch.onnx.export(ep, (), dynamo=True, output_names=names, opset_version=opset, optimize=True, verbose=False)
    except Exception as e:
        raise ExportError(f"torch.onnx.export failed: {_first_line(e)}") from e
    if program is None:
        raise ExportError("torch.onnx.export returned no program")
    return program.model_proto


def _finish(model: onnx.ModelProto, probe: Probe, symbols: dict[str, str], meta: dict[str, str]) -> None:
    """Drop the probe outputs (keeping their names in metadata), rename axes, add metadata."""
    graph = model.graph
    alias = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity"}
    values: dict[str, str] = {}
    keep = []
    for out, name in zip(list(graph.output), probe.outputs + probe.nodes, strict=True):
        if out.name.startswith("graphc::"):
            values[name] = _source(out.name, alias, probe.outputs)
            graph.value_info.append(out)
        else:
            keep.append(out)
            values.setdefault(name, out.name)
    del graph.output[:]
    graph.output.extend(keep)
    for vi in [*graph.input, *graph.output, *graph.value_info]:
        for dim in vi.type.tensor_type.shape.dim:
            if dim.dim_param in symbols:
                dim.dim_param = symbols[dim.dim_param]
    _prune(graph)
    produced = {o for n in graph.node for o in n.output} | {i.name for i in graph.input} | {i.name for i in graph.initializer}
    kept_info = [vi for vi in graph.value_info if vi.name in produced]
    del graph.value_info[:]
    graph.value_info.extend(kept_info)
    values = {k: v for k, v in values.items() if v in produced}
    meta = {**meta, VALUES_KEY: json.dumps(values)}
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=v)


def _source(name: str, alias: dict[str, str], outputs: list[str]) -> str:
    """The value a probe output copies: a spec output's name, if it is an Identity of one."""
    while name in alias and not name.startswith(tuple(outputs)):
        name = alias[name]
    return name


def _prune(graph: onnx.GraphProto) -> None:
    """Remove nodes that only fed probe outputs (walking subgraphs for captured names)."""
    needed = {o.name for o in graph.output}
    kept = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(_node_inputs(node))
    if len(kept) != len(graph.node):
        del graph.node[:]
        graph.node.extend(reversed(kept))


def _node_inputs(node: onnx.NodeProto) -> set[str]:
    names = set(node.input)
    for attr in node.attribute:
        for g in [attr.g] if attr.HasField("g") else list(attr.graphs):
            for sub in g.node:
                names.update(_node_inputs(sub))
    return names


def metadata(tg: TypedGraph, ranges: dict[str, tuple[int, int]]) -> dict[str, str]:
    """The graphc version, spec name and sha256 and the proven dim ranges."""
    from graphc.version import __version__

    spec = tg.flat.spec
    return {
        "graphc.version": __version__,
        "graphc.spec_name": spec.name,
        "graphc.spec_sha256": spec.sha256,
        "graphc.overrides": json.dumps({k: str(v) for k, v in spec.overrides.items()}),
        RANGES_KEY: json.dumps(ranges),
    }


def save_model(model: onnx.ModelProto, path: Path) -> None:
    """Check and write atomically; weights go to ``<name>.data`` beside it past 2 GB."""
    external = model.ByteSize() > TWO_GB
    try:
        onnx.checker.check_model(model, full_check=not external)
    except Exception as e:
        raise ExportError(f"{path}: exported model fails onnx.checker: {_first_line(e)}") from e
    if not external:
        with atomic_path(path) as tmp:
            onnx.save_model(model, str(tmp))
        return
    data = path.with_name(path.name + ".data")
    with atomic_path(data) as tmp_data, atomic_path(path) as tmp:
        onnx.save_model(model, str(tmp), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=tmp_data.name, size_threshold=0)
        _relocate(tmp, data.name)
    onnx.checker.check_model(str(path), full_check=True)


def _relocate(model_path: Path, location: str) -> None:
    m = onnx.load(str(model_path), load_external_data=False)
    for t in m.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
    onnx.save_model(m, str(model_path))


def export_model(gm: fx.GraphModule, path: Path, opset: int | None = None) -> ExportResult:
    """Export ``gm`` (built by :func:`graphc.build`) to ``path``; see the module docstring."""
    from graphc.export.weights import check_initialized, weights_digest, weights_source

    check_initialized(gm)  # NaN/inf weights: name them now, not as a baffling verify failure
    _quiet()
    tg: TypedGraph = gm.graphc  # type: ignore[assignment]
    t0 = time.perf_counter()
    gm.eval()
    probe = make_probe(gm)
    with torch.no_grad():
        ep = _export_program(probe, tg, trace_inputs(tg))
    ranges, symbols = dim_ranges(ep, tg)
    model = _to_onnx(ep, probe, opset)
    weights = {WEIGHTS_KEY: weights_digest(gm), WEIGHTS_SOURCE_KEY: weights_source(gm)}
    _finish(model, probe, symbols, {**metadata(tg, ranges), **weights})
    save_model(model, Path(path))
    opset_used = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    extra = {"weights_sha256": weights[WEIGHTS_KEY], "weights_source": weights[WEIGHTS_SOURCE_KEY]}
    return ExportResult(Path(path), time.perf_counter() - t0, opset_used, ranges, extra=extra)


def _first_line(e: BaseException) -> str:
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__
