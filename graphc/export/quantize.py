"""Quantization of a verified export, checked spec node by spec node.

``graphc compile SPEC -o OUT --quantize int8-dynamic|int8-static|fp16`` runs after the fp32
export has verified: the fp32 file is kept as ``OUT/model.fp32.onnx`` and the quantized one
becomes ``OUT/model.onnx`` (so ``predict``/``serve`` run it like any other export).  The
quantizers are onnxruntime's (``quantize_dynamic``, ``quantize_static`` in QDQ format with
per-channel weights, and ``onnxruntime.transformers.float16``), not graphc's own.

Every spec node's ONNX value keeps its ``graphc::<path>`` name through quantization, so the
quantized model can be asked for each node's value on the verification inputs and compared
with the fp32 torch model: max abs error, mean abs error and SNR in dB (``10 log10(sum ref^2 /
sum (ref - got)^2)``, clamped to [-200, 200]; 200 means exact).  The budget is an SNR floor on
every float output (``--min-snr``, default 20 dB: error power at most 1% of signal power),
optionally a max abs error (``--max-abs-error``) and, with data, a metric drop.  The first spec
node in topological order under the SNR floor is named, as verification names the first
divergent node of an export.

``--keep-fp32 auto`` leaves the most sensitive spec nodes in fp32 (onnxruntime's
``nodes_to_exclude``), one at a time: the first node under the floor that still has quantized
ONNX nodes, else the one with the lowest SNR, until the outputs are within budget.  ONNX nodes
belong to a spec node through the exporter's ``pkg.torch.onnx.name_scopes`` (the torch module
path, which is the spec node path) or, for ops without a module, by producing its value.
"""

from __future__ import annotations

import ast
import fnmatch
import json
import logging
import math
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from graphc.errors import ExportError
from graphc.export.onnx_export import RANGES_KEY, VALUES_KEY
from graphc.export.probe import make_probe, node_values
from graphc.export.quant_cli import SNR_CLAMP, QuantizeError, QuantOptions, format_table
from graphc.graph.infer import TypedGraph
from graphc.lower.built import Built

QUANT_KEY = "graphc.quantization"  # metadata of the quantized model.onnx
FP32_FILE = "model.fp32.onnx"


@dataclass
class NodeError:
    """One spec node's quantized value against the fp32 torch value, over all sizes."""

    node: str
    op: str
    max_abs: float
    mean_abs: float
    snr_db: float
    quantized: bool  # owns ONNX nodes that the quantizer rewrote (candidates for --keep-fp32)


@dataclass
class QuantReport:
    """The outcome; ``to_json()`` goes into verify.json under ``quantization``."""

    mode: str
    passed: bool
    min_snr: float
    outputs: list[NodeError]
    nodes: list[NodeError]
    first_over_budget: str | None
    kept_fp32: list[str]
    sizes: list[dict[str, int]]
    files: dict[str, int] = field(default_factory=dict)  # bytes of model.fp32.onnx / model.onnx
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # {"fp32": {...}, "quantized": {...}}
    optimized: dict[str, Any] = field(default_factory=dict)
    detail: str = ""
    calibration: str = ""  # int8-static: where the calibration batches came from

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "passed": self.passed, "budget": {"min_snr_db": self.min_snr},
                "outputs": [asdict(o) for o in self.outputs], "nodes": [asdict(n) for n in self.nodes],
                "first_over_budget": self.first_over_budget, "kept_fp32": self.kept_fp32, "sizes": self.sizes,
                "files": self.files, "metrics": self.metrics, "optimized": self.optimized, "detail": self.detail,
                "calibration": self.calibration}

    def table(self) -> list[str]:
        return format_table(self.to_json())


# --- ONNX nodes of a spec node ------------------------------------------------------------


def owners(model: onnx.ModelProto, tg: TypedGraph) -> dict[str, str]:
    """ONNX node name -> the spec node path it computes (deepest match), where one is known."""
    paths = {n for n in tg.order if tg.flat.nodes[n].kind == "op"}
    values: dict[str, str] = _meta(model, VALUES_KEY) or {}
    produced_by = {v: k for k, v in reversed(list(values.items())) if k in paths}
    out: dict[str, str] = {}
    for node in model.graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        scopes = _scopes(meta.get("pkg.torch.onnx.name_scopes", ""))
        hits = [s for s in scopes if s in paths]
        if hits:
            out[node.name] = max(hits, key=len)
            continue
        for o in node.output:
            if o in produced_by:
                out[node.name] = produced_by[o]
                break
    return out


def _scopes(text: str) -> list[str]:
    try:
        value = ast.literal_eval(text) if text else []
    except (ValueError, SyntaxError):
        return []
    return [s for s in value if isinstance(s, str)] if isinstance(value, list) else []


def _meta(model: onnx.ModelProto, key: str) -> Any:
    for p in model.metadata_props:
        if p.key == key:
            return json.loads(p.value)
    return None


def select_nodes(patterns: tuple[str, ...], tg: TypedGraph) -> list[str]:
    """Spec node paths matching the ``--keep-fp32`` globs; a glob matching nothing is an error."""
    paths = [n for n in tg.order if tg.flat.nodes[n].kind == "op"]
    picked: list[str] = []
    for pat in patterns:
        hits = [p for p in paths if fnmatch.fnmatchcase(p, pat)]
        if not hits:
            shown = ", ".join(paths[:8]) + (" ..." if len(paths) > 8 else "")
            raise ExportError(f"--keep-fp32 {pat!r} matches no spec node (nodes: {shown})")
        picked += [h for h in hits if h not in picked]
    return picked


def onnx_nodes_of(spec_nodes: list[str], own: dict[str, str]) -> list[str]:
    """The ONNX node names owned by ``spec_nodes`` (what ``nodes_to_exclude`` takes).

    Dynamic quantization first rewrites each Gemm into ``<name>_MatMul`` + ``<name>_Add``
    (onnxruntime's ``ONNXModel.replace_gemm_with_matmul``) and only then applies the
    exclusions, so those derived names are excluded too.
    """
    wanted = set(spec_nodes)
    names = [name for name, path in own.items() if path in wanted]
    return [*names, *(f"{n}_{suffix}" for n in names for suffix in ("MatMul", "Add"))]


# --- running onnxruntime's quantizers -----------------------------------------------------


def quantize_file(src: Path, dst: Path, opts: QuantOptions, exclude: list[str], reader: Any = None) -> None:
    """Quantize ``src`` into ``dst`` with onnxruntime, leaving the ``exclude`` ONNX nodes in fp32."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs "run pre-processing" advice on the root logger
    try:
        if opts.mode == "int8-dynamic":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            # ConvInteger has no int8-weight kernel on CPU, so convolutions stay fp32 in dynamic mode
            quantize_dynamic(src, dst, weight_type=QuantType.QInt8, nodes_to_exclude=exclude,
                             op_types_to_quantize=["MatMul", "Gemm", "Attention", "LSTM", "GRU", "Gather"])
        elif opts.mode == "int8-static":
            from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

            method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                      "percentile": CalibrationMethod.Percentile}[opts.calibrate_method]
            quantize_static(src, dst, reader, quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            nodes_to_exclude=exclude, calibrate_method=method,
                            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
        else:
            from onnxruntime.transformers.float16 import convert_float_to_float16

            model = onnx.load(str(src))
            # keep_io_types: callers keep feeding and reading fp32, like the fp32 export
            half = convert_float_to_float16(model, keep_io_types=True, node_block_list=exclude)
            onnx.save_model(half, str(dst))
    except Exception as e:
        lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
        raise ExportError(f"onnxruntime {opts.mode} quantization failed: {lines[0] if lines else type(e).__name__}") from e
    finally:
        root.setLevel(level)


def changed_nodes(before: onnx.ModelProto, after: onnx.ModelProto, mode: str, excluded: list[str]) -> set[str]:
    """Names of ``before``'s nodes that the quantizer rewrote (fp16: every node it did not skip)."""
    skip = set(excluded)
    if mode == "fp16":
        return {n.name for n in before.graph.node if n.name not in skip}
    kept = {(n.name, n.op_type, tuple(n.input)) for n in after.graph.node}
    return {n.name for n in before.graph.node if (n.name, n.op_type, tuple(n.input)) not in kept and n.name not in skip}


# --- the node report ------------------------------------------------------------------------


def as_seen(model: onnx.ModelProto, values: dict[str, str]) -> dict[str, str]:
    """``values`` with each QDQ-quantized value replaced by its DequantizeLinear output: what
    the next layer really reads.  (The QDQ quantizer also drops a Relu after a Conv/MatMul and
    lets the quantization range clamp instead, so the Relu's name then holds the pre-Relu value
    and only the dequantized one is the node's value.)"""
    q_of = {n.input[0]: n.output[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    dq_of = {n.input[0]: n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    return {k: dq_of.get(q_of.get(v, ""), v) for k, v in values.items()}


def _with_value_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of ``model`` that also returns the named values (those still computed)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    produced = {o for n in out.graph.node for o in n.output}
    have = {o.name for o in out.graph.output}
    for name in dict.fromkeys(names):
        if name in produced and name not in have:
            out.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
            have.add(name)
    return out


class _Acc:
    """Error sums of one value over all verification sizes."""

    def __init__(self) -> None:
        self.max_abs = 0.0
        self.abs_sum = 0.0
        self.count = 0
        self.signal = 0.0
        self.noise = 0.0

    def add(self, got: np.ndarray, ref: torch.Tensor) -> None:
        b = ref.detach().float().numpy().astype(np.float64)
        if got.shape != b.shape:
            self.max_abs, self.noise, self.count = math.inf, math.inf, self.count + 1
            return
        err = np.abs(got.astype(np.float64) - b)
        if err.size:
            self.max_abs = max(self.max_abs, float(err.max()))
        self.abs_sum += float(err.sum())
        self.count += err.size
        self.signal += float(np.square(b).sum())
        self.noise += float(np.square(err).sum())

    def row(self, node: str, op: str, quantized: bool) -> NodeError:
        if self.noise == 0:
            snr = SNR_CLAMP
        elif self.signal == 0 or math.isinf(self.noise):
            snr = -SNR_CLAMP
        else:
            snr = max(-SNR_CLAMP, min(SNR_CLAMP, 10 * math.log10(self.signal / self.noise)))
        max_abs = self.max_abs if math.isfinite(self.max_abs) else 3.4e38
        return NodeError(node, op, max_abs, self.abs_sum / max(self.count, 1), round(snr, 2), quantized)


def sizes_of(model: onnx.ModelProto, tg: TypedGraph) -> list[dict[str, int]]:
    from graphc.export.verify import verification_sizes

    ranges = {k: tuple(v) for k, v in (_meta(model, RANGES_KEY) or {}).items()}
    return verification_sizes(tg, ranges)  # type: ignore[arg-type]


def measure(built: Built, model_path: Path, own: dict[str, str], changed: set[str], seed: int = 0,
            ) -> tuple[list[NodeError], list[NodeError], list[dict[str, int]]]:
    """(outputs, spec nodes in topological order, sizes): each value's error against fp32 torch."""
    import onnxruntime as ort

    from graphc.lower.inputs import example_inputs

    tg: TypedGraph = built.graph
    model = onnx.load(str(model_path))
    values = as_seen(model, _meta(model, VALUES_KEY) or {})
    sizes = sizes_of(model, tg)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(_with_value_outputs(model, list(values.values())).SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    probe = make_probe(built)
    accs: dict[str, _Acc] = {}
    for i, s in enumerate(sizes):
        inputs = example_inputs(tg, seed + i, None, **s)
        feed = {n: t.numpy() for n, t in zip(tg.flat.spec.doc.inputs, inputs, strict=True)}
        got = dict(zip(names, sess.run(None, feed), strict=True))
        ref = node_values(probe, inputs)
        for key, value in ref.items():
            onnx_name = values.get(key, key)
            if onnx_name in got and value.dtype != torch.bool:
                accs.setdefault(key, _Acc()).add(got[onnx_name], value)
    quantized_paths = {own[n] for n in changed if n in own}
    outs = [accs[o].row(o, "output", False) for o in tg.flat.outputs if o in accs]
    nodes = [accs[n].row(n, tg.flat.nodes[n].op_name or "", n in quantized_paths) for n in tg.order
             if n in accs and n not in tg.flat.outputs]
    return outs, nodes, sizes


def within_budget(outputs: list[NodeError], opts: QuantOptions) -> bool:
    return all(o.snr_db >= opts.min_snr and (opts.max_abs_error is None or o.max_abs <= opts.max_abs_error)
               for o in outputs)


def first_over(nodes: list[NodeError], opts: QuantOptions) -> str | None:
    return next((n.node for n in nodes if n.snr_db < opts.min_snr), None)


def next_to_keep(nodes: list[NodeError], opts: QuantOptions, kept: list[str]) -> str | None:
    """The most sensitive quantized spec node: the first under the floor (errors flow
    downstream, so the first one is where they start), else the lowest SNR."""
    cands = [n for n in nodes if n.quantized and n.node not in kept]
    under = [n for n in cands if n.snr_db < opts.min_snr]
    if under:
        return under[0].node
    return min(cands, key=lambda n: n.snr_db).node if cands else None


# --- compile's step ------------------------------------------------------------------------


def apply(built: Built, folder: Path, opts: QuantOptions, seed: int = 0) -> dict[str, Any]:
    """compile's step after the fp32 export verified: quantize and/or optimise ``folder/model.onnx``.

    Returns what verify.json records under ``quantization`` (or ``optimized``).
    """
    if opts.mode is not None:
        return quantize_into(built, folder, opts, seed).to_json()
    from graphc.export.optimize import optimize_verified

    return optimize_verified(built, folder)


@dataclass
class _Attempt:
    """One quantization with a given set of fp32 spec nodes, measured."""

    outputs: list[NodeError]
    nodes: list[NodeError]
    sizes: list[dict[str, int]]
    changed: set[str]
    metrics: dict[str, dict[str, float]]
    passed: bool
    optimized: dict[str, Any]


def _attempt(built: Built, fp32: Path, dst: Path, base: onnx.ModelProto, own: dict[str, str], opts: QuantOptions,
             kept: list[str], reader: Any, seed: int) -> _Attempt:
    assert opts.mode is not None
    if reader is not None:
        reader.rewind()
    exclude = onnx_nodes_of(kept, own)
    quantize_file(fp32, dst, opts, exclude, reader)
    stamp(base, dst, opts, kept)
    changed = changed_nodes(base, onnx.load(str(dst)), opts.mode, exclude)
    optimized: dict[str, Any] = {}
    if opts.optimize:  # the shipped file is the optimised one: measure that
        from graphc.export.optimize import optimize_file

        optimized = optimize_file(dst, dst, built.graph)  # type: ignore[arg-type]
    outs, nodes, sizes = measure(built, dst, own, changed, seed)
    passed = within_budget(outs, opts)
    metrics: dict[str, dict[str, float]] = {}
    if opts.data is not None:
        from graphc.export.metrics import compare_metrics

        metrics = compare_metrics(built, dst, opts.data, seed)
        passed = passed and _metric_ok(metrics, opts)
    return _Attempt(outs, nodes, sizes, changed, metrics, passed, optimized)


def quantize_into(built: Built, folder: Path, opts: QuantOptions, seed: int = 0) -> QuantReport:
    """Quantize ``folder/model.onnx`` (verified fp32) in place, keeping fp32 as model.fp32.onnx,
    and record the report in verify.json, manifest.json and model.py.

    ``--keep-fp32 auto`` repeats the attempt with one more fp32 node until the outputs (and,
    with ``--data``, the metrics) are within budget.

    Raises:
        QuantizeError: the quantized model is outside the budget (after the ``auto`` fallback).
    """
    tg: TypedGraph = built.graph
    assert opts.mode is not None
    fp32, dst = folder / FP32_FILE, folder / "model.onnx"
    shutil.move(dst, fp32)
    base = onnx.load(str(fp32))
    own = owners(base, tg)
    auto = opts.keep_fp32 == ("auto",)
    kept = [] if auto else select_nodes(opts.keep_fp32, tg)
    reader = None
    if opts.mode == "int8-static":
        from graphc.export.calibrate import reader_for

        reader = reader_for(tg, opts, seed)
    steps: list[str] = []
    while True:
        got = _attempt(built, fp32, dst, base, own, opts, kept, reader, seed)
        pick = None if got.passed or not auto or len(kept) >= opts.max_auto else next_to_keep(got.nodes, opts, kept)
        if pick is None:
            break
        steps.append(f"{pick} (output SNR {min(o.snr_db for o in got.outputs):.1f} dB before)")
        kept.append(pick)
    report = QuantReport(opts.mode, got.passed, opts.min_snr, got.outputs, got.nodes, first_over(got.nodes, opts), kept,
                         got.sizes, {"fp32": fp32.stat().st_size, "quantized": dst.stat().st_size}, got.metrics,
                         detail=f"--keep-fp32 auto kept, in order: {'; '.join(steps)}" if steps else "",
                         optimized=got.optimized, calibration=reader.source if reader is not None else "")
    _record(folder, report)
    if not report.passed:
        raise QuantizeError(_failure(report, opts), report.table())
    return report


def _metric_ok(metrics: dict[str, dict[str, float]], opts: QuantOptions) -> bool:
    if opts.max_metric_drop is None:
        return True
    from graphc.export.metrics import metric_drop

    return all(metric_drop(name, metrics["fp32"][name], q) <= opts.max_metric_drop for name, q in metrics["quantized"].items())


def _failure(report: QuantReport, opts: QuantOptions) -> str:
    bad = [o for o in report.outputs if o.snr_db < opts.min_snr or (opts.max_abs_error is not None and o.max_abs > opts.max_abs_error)]
    if bad:
        o = bad[0]
        where = f"; first node under {opts.min_snr:g} dB: '{report.first_over_budget}'" if report.first_over_budget else ""
        kept = f" (kept fp32: {', '.join(report.kept_fp32)})" if report.kept_fp32 else ""
        return (f"{report.mode} output '{o.node}' is outside the budget: SNR {o.snr_db:.1f} dB (min {opts.min_snr:g}), "
                f"max abs error {o.max_abs:.3g}{where}{kept}")
    drops = ", ".join(f"{k} {report.metrics['fp32'][k]:.4g} -> {v:.4g}" for k, v in report.metrics.get("quantized", {}).items())
    return f"{report.mode} metric drop past --max-metric-drop {opts.max_metric_drop:g}: {drops}"


def stamp(base: onnx.ModelProto, dst: Path, opts: QuantOptions, kept: list[str]) -> None:
    """Make ``dst`` the file compile ships: the quantizers may drop model metadata, and graphc's
    (values, dims, provenance, the budget) must stay; the exporter's per-node metadata goes."""
    model = onnx.load(str(dst))
    keep = {p.key: p.value for p in base.metadata_props if p.key.startswith("graphc.")}
    keep[QUANT_KEY] = json.dumps({"mode": opts.mode, "kept_fp32": kept, "min_snr_db": opts.min_snr,
                                  "max_abs_error": opts.max_abs_error})
    rest = [(p.key, p.value) for p in model.metadata_props if p.key not in keep]
    del model.metadata_props[:]
    for k, v in [*rest, *keep.items()]:
        model.metadata_props.add(key=k, value=v)
    strip_node_metadata(model.graph)
    onnx.save_model(model, str(dst))


def strip_node_metadata(graph: onnx.GraphProto) -> None:
    """Drop the exporter's per-node ``metadata_props`` (``pkg.torch.onnx.*`` name scopes, stack
    traces, class hierarchy, fx node: ~0.15 MB of GPT-mini) from a quantized graph.

    Only the shipped quantized file loses them: :func:`owners` reads the name scopes from
    model.fp32.onnx, which keeps them (verification localisation uses that file too), and
    nothing that runs the model (predict, serve, onnxruntime) reads node metadata.
    """
    for node in graph.node:
        del node.metadata_props[:]
        for attr in node.attribute:  # If/Loop/Scan bodies
            subs = [attr.g] if attr.HasField("g") else []
            for sub in [*subs, *attr.graphs]:
                strip_node_metadata(sub)


def _record(folder: Path, report: QuantReport) -> None:
    """verify.json gains ``quantization``; manifest.json lists it; model.py notes it as a literal."""
    ver = json.loads((folder / "verify.json").read_text(encoding="utf-8"))
    ver["quantization"] = report.to_json()
    (folder / "verify.json").write_text(json.dumps(ver, indent=2) + "\n", encoding="utf-8")
    man = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    man["quantization"] = {"mode": report.mode, "model": "model.onnx", "fp32_model": FP32_FILE,
                           "kept_fp32": report.kept_fp32, "passed": report.passed, "min_snr_db": report.min_snr,
                           "optimized": bool(report.optimized)}
    if FP32_FILE not in man.get("files", []):
        man.setdefault("files", []).insert(3, FP32_FILE)
    (folder / "manifest.json").write_text(json.dumps(man, indent=2) + "\n", encoding="utf-8")
    note = {"mode": report.mode, "onnx": "model.onnx", "fp32_onnx": FP32_FILE, "kept_fp32": report.kept_fp32}
    with (folder / "model.py").open("a", encoding="utf-8") as f:
        f.write("\n\n# This file is the fp32 torch model; model.onnx beside it is quantized as recorded here.\n")
        f.write(f"ONNX_QUANTIZATION = {note!r}\n")


def verify_quantized(model_path: Path, built: Built, seed: int = 0) -> QuantReport:
    """``graphc verify`` of a quantized model.onnx: the node report against the fp32 torch
    model, with the budget recorded in the file (its ``graphc.quantization`` metadata).

    Raises:
        QuantizeError: an output is outside that budget (exit 3).
    """
    tg: TypedGraph = built.graph
    model = onnx.load(str(model_path))
    info = _meta(model, QUANT_KEY)
    opts = QuantOptions(info["mode"], min_snr=float(info.get("min_snr_db", 20.0)), max_abs_error=info.get("max_abs_error"))
    fp32 = model_path.with_name(FP32_FILE)
    base = onnx.load(str(fp32)) if fp32.is_file() else model
    own = owners(base, tg)
    changed = changed_nodes(base, model, info["mode"], onnx_nodes_of(info.get("kept_fp32", []), own)) if fp32.is_file() else set()
    outs, nodes, sizes = measure(built, model_path, own, changed, seed)
    report = QuantReport(info["mode"], within_budget(outs, opts), opts.min_snr, outs, nodes, first_over(nodes, opts),
                         list(info.get("kept_fp32", [])), sizes)
    if not report.passed:
        raise QuantizeError(f"{model_path}: {_failure(report, opts)}", report.table())
    return report
