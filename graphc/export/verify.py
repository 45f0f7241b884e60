"""Numerical verification: onnxruntime against the torch model, and where they diverge.

The torch model runs in eval mode on seeded :func:`graphc.example_inputs` at three or more
sizes of every symbolic dim (1, an odd size, the example size; never past the range
torch.export proved, e.g. a position table's length).  Each output must satisfy
``|onnx - torch| <= atol + rtol * |torch|`` with the tolerance of its dtype, loosened by the
loosest ``Onnx(atol=, rtol=)`` among the ops in the graph (declared in the op's registry
class).  On failure every spec node's value (named in the model's ``graphc.values``
metadata) is fetched from onnxruntime and compared in topological order; the first node
outside tolerance is named in the error.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import fx

from graphc.errors import ExportError, VerifyError
from graphc.export.onnx_export import RANGES_KEY, VALUES_KEY, WEIGHTS_KEY, WEIGHTS_SOURCE_KEY
from graphc.export.probe import make_probe, node_values
from graphc.graph.infer import TypedGraph

# dtype -> (atol, rtol); integer and bool outputs must match exactly
TOLERANCES: dict[str, tuple[float, float]] = {
    "float64": (1e-8, 1e-6),
    "float32": (1e-5, 1e-4),
    "float16": (1e-3, 1e-3),
    "bfloat16": (1e-2, 1e-2),
}


@dataclass
class OutputDiff:
    """The worst difference of one output over all sizes tried."""

    name: str
    dtype: str
    max_abs_diff: float
    max_rel_diff: float
    atol: float
    rtol: float
    passed: bool


@dataclass
class VerifyResult:
    """The outcome of :func:`verify_model`; ``to_json()`` is what verify.json holds."""

    passed: bool
    outputs: dict[str, OutputDiff]
    sizes: list[dict[str, int]]
    latency: dict[str, float] = field(default_factory=dict)  # ort_ms / torch_ms / ratio at batch 1 and example
    first_divergent: str | None = None
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "outputs": {k: asdict(v) for k, v in self.outputs.items()},
            "sizes": self.sizes,
            "latency": self.latency,
            "first_divergent_node": self.first_divergent,
            "detail": self.detail,
        }

    def lines(self) -> list[str]:
        """A short human summary, one line per output plus latency."""
        out = [f"verify: {'PASSED' if self.passed else 'FAILED'} at {len(self.sizes)} sizes "
               f"({'; '.join(', '.join(f'{k}={v}' for k, v in s.items()) or 'static' for s in self.sizes)})"]
        for o in self.outputs.values():
            out.append(f"  {o.name} ({o.dtype}): max abs diff {o.max_abs_diff:.3g}, max rel diff {o.max_rel_diff:.3g} "
                       f"(atol {o.atol:g}, rtol {o.rtol:g}) {'ok' if o.passed else 'FAIL'}")
        for key in ("batch1", "example"):
            if f"{key}_ratio" in self.latency:
                # .3g, not fixed decimals: sub-microsecond runs and 100x ratios both stay readable
                out.append(f"  latency {key}: onnxruntime {self.latency[f'{key}_ort_ms']:.3g} ms / torch eager "
                           f"{self.latency[f'{key}_torch_ms']:.3g} ms per run (onnxruntime time = "
                           f"{self.latency[f'{key}_ratio']:.3g}x torch's)")
        if self.first_divergent:
            out.append(f"  first divergent node: {self.first_divergent} ({self.detail})")
        return out


def tolerance(tg: TypedGraph, dtype: str) -> tuple[float, float]:
    """The dtype's default, loosened by the loosest tolerance any op in the graph declares."""
    if dtype not in TOLERANCES:
        return (0.0, 0.0)
    atol, rtol = TOLERANCES[dtype]
    for node in tg.flat.op_nodes():
        declared = type(node.args).onnx
        atol = max(atol, declared.atol or 0.0)
        rtol = max(rtol, declared.rtol or 0.0)
    return atol, rtol


def verification_sizes(tg: TypedGraph, ranges: dict[str, tuple[int, int]]) -> list[dict[str, int]]:
    """1, an odd size and the example size of every symbolic dim (clamped to its range)."""
    picks: list[dict[str, int]] = [{}, {}, {}]
    for d, example in tg.example.items():
        lo, hi = ranges.get(d, (1, 2**31 - 1))
        odd = example // 2 | 1 if example > 2 else 3
        for i, v in enumerate((1, odd, example)):
            picks[i][d] = min(max(v, lo), hi)
    unique: list[dict[str, int]] = []
    for p in picks:
        if p not in unique:
            unique.append(p)
    return unique


def diff(onnx_value: np.ndarray, torch_value: torch.Tensor, atol: float, rtol: float) -> tuple[float, float, bool]:
    """(max abs diff, max rel diff, within ``atol + rtol * |torch|`` everywhere)."""
    ref = torch_value.detach().cpu()
    ref_np = ref.float().numpy() if ref.dtype == torch.bfloat16 else ref.numpy()
    if onnx_value.shape != ref_np.shape:
        return float("inf"), float("inf"), False
    a = onnx_value.astype(np.float64)
    b = ref_np.astype(np.float64)
    err = np.abs(a - b)
    if err.size == 0:
        return 0.0, 0.0, True
    nan_ok = bool(np.array_equal(np.isnan(a), np.isnan(b)))
    err = np.where(np.isnan(a) & np.isnan(b), 0.0, err)
    rel = err / np.maximum(np.abs(b), np.finfo(np.float32).tiny)
    ok = nan_ok and bool(np.all(err <= atol + rtol * np.abs(b)))
    return float(np.nanmax(err)), float(np.nanmax(rel)), ok


def _session(model: onnx.ModelProto | str, threads: int | None = None) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    data = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def _run(sess: Any, tg: TypedGraph, inputs: tuple[torch.Tensor, ...]) -> dict[str, np.ndarray]:
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, _feed(tg, inputs)), strict=True))


def _load(path: str | Path, external: bool) -> onnx.ModelProto:
    return _guard(path, lambda: onnx.load(str(path), load_external_data=external), "not a readable ONNX model")  # type: ignore[no-any-return]


def _guard(path: str | Path, fn: Any, what: str = "onnxruntime cannot run it on the spec's inputs (exported from another spec?)") -> Any:
    """Run ``fn``; a file onnx/onnxruntime cannot read or run (corrupt, or exported from
    another spec) becomes a one-line error naming the file (exit 1)."""
    try:
        return fn()
    except Exception as e:
        lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
        raise ExportError(f"{path}: {what}: {lines[0] if lines else type(e).__name__}") from e


def _feed(tg: TypedGraph, inputs: tuple[torch.Tensor, ...]) -> dict[str, np.ndarray]:
    return {name: t.numpy() for name, t in zip(tg.flat.spec.doc.inputs, inputs, strict=True)}


def _torch_outputs(gm: fx.GraphModule, inputs: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
    tg: TypedGraph = gm.graphc  # type: ignore[assignment]
    with torch.no_grad():
        got = gm(*inputs)
    return dict(got) if isinstance(got, dict) else {next(iter(tg.flat.outputs)): got}


def check_provenance(gm: fx.GraphModule, model_path: str | Path) -> None:
    """Refuse to compare a file against a different spec or different ``--set`` values.

    Without this, a mismatch shows up as a baffling numeric failure deep in the graph.
    """
    model = _load(model_path, external=False)
    tg: TypedGraph = gm.graphc  # type: ignore[assignment]
    spec = tg.flat.spec
    name: str | None = None
    overrides: dict[str, str] | None = None
    for p in model.metadata_props:
        if p.key == "graphc.spec_name":
            name = p.value
        elif p.key == "graphc.overrides":
            stored = json.loads(p.value)
            overrides = stored if isinstance(stored, dict) else None  # older files stored only the keys
    mine = {k: str(v) for k, v in spec.overrides.items()}
    if name is not None and name != spec.name:
        raise ExportError(f"{model_path}: exported from spec '{name}', not '{spec.name}'")
    if overrides is not None and overrides != mine:
        def shown(o: dict[str, str]) -> str:
            return " ".join(f"--set {k}={v}" for k, v in sorted(o.items())) or "no --set"

        raise ExportError(f"{model_path}: exported with {shown(overrides)}, but verified with {shown(mine)}; pass the same values")
    check_weights(gm, model_path, {p.key: p.value for p in model.metadata_props})


def check_weights(gm: fx.GraphModule, model_path: str | Path, meta: dict[str, str]) -> None:
    """Refuse to compare against weights other than those the file was exported with.

    Without ``--weights``, a compile folder's ``weights.safetensors`` beside the ONNX file
    (with its ``manifest.json``) is loaded into ``gm`` when its hash is the recorded one, so
    ``graphc verify OUT_DIR/model.onnx --spec SPEC`` checks the compiled weights.
    """
    from graphc.export.weights import FRESH, SOURCE_ATTR, load_weights, weights_digest, weights_source

    recorded = meta.get(WEIGHTS_KEY)
    if recorded is None or weights_digest(gm) == recorded:  # older files recorded no hash
        return
    given = weights_source(gm)
    beside = Path(model_path).with_name("weights.safetensors")
    if getattr(gm, SOURCE_ATTR, None) is None and beside.is_file() and beside.with_name("manifest.json").is_file():
        load_weights(gm, beside)
        if weights_digest(gm) == recorded:
            return
        given = str(beside)
    source = meta.get(WEIGHTS_SOURCE_KEY) or "other weights"
    exported = "fresh weights from the spec's init" if source == FRESH else f"weights {source}"
    hint = "pass --weights FILE with the weights it was exported with" if given == FRESH or source != FRESH else "leave out --weights"
    raise ExportError(f"{model_path}: exported with {exported} (sha256 {recorded[:12]}), but verify was given "
                      f"{given if given == FRESH else 'weights ' + given} (sha256 {weights_digest(gm)[:12]}); {hint}")


def _read_meta(model: onnx.ModelProto, key: str) -> Any:
    for p in model.metadata_props:
        if p.key == key:
            return json.loads(p.value)
    return None


def verify_model(gm: fx.GraphModule, model_path: str | Path, seed: int = 0, latency: bool = True,
                 threads: int | None = None) -> VerifyResult:
    """Compare the ONNX file at ``model_path`` with ``gm`` (a graphc-built module).

    Latency is timed with ``threads`` intra-op threads in both engines (default: torch's).
    """
    from graphc.export.weights import check_initialized

    check_initialized(gm)
    tg: TypedGraph = gm.graphc  # type: ignore[assignment]
    gm.eval()
    model = _load(model_path, external=False)
    ranges = {k: tuple(v) for k, v in (_read_meta(model, RANGES_KEY) or {}).items()}
    sizes = verification_sizes(tg, ranges)  # type: ignore[arg-type]
    sess = _guard(model_path, lambda: _session(str(model_path)), "onnxruntime cannot load it")
    worst: dict[str, OutputDiff] = {}
    failing: dict[str, int] | None = None
    for i, s in enumerate(sizes):
        inputs = _inputs(tg, seed + i, s)
        got = _guard(model_path, lambda inputs=inputs: _run(sess, tg, inputs))
        for name, ref in _torch_outputs(gm, inputs).items():
            dtype = str(ref.dtype).removeprefix("torch.")
            atol, rtol = tolerance(tg, dtype)
            mabs, mrel, ok = diff(got[name], ref, atol, rtol)
            prev = worst.get(name)
            worst[name] = OutputDiff(name, dtype, max(mabs, prev.max_abs_diff if prev else 0.0),
                                     max(mrel, prev.max_rel_diff if prev else 0.0), atol, rtol, ok and (prev is None or prev.passed))
            if not ok and failing is None:
                failing = s
    passed = all(o.passed for o in worst.values())
    result = VerifyResult(passed, worst, sizes)
    if not passed and failing is not None:
        result.first_divergent, result.detail = localize(gm, model_path, _inputs(tg, seed + sizes.index(failing), failing))
    if latency:
        result.latency = measure_latency(gm, model_path, threads or torch.get_num_threads())
    return result


def _inputs(tg: TypedGraph, seed: int, sizes: dict[str, int]) -> tuple[torch.Tensor, ...]:
    import graphc

    return graphc.example_inputs(tg, seed, None, **sizes)


def localize(gm: fx.GraphModule, model_path: str | Path, inputs: tuple[torch.Tensor, ...]) -> tuple[str | None, str]:
    """The first spec node (topological order) whose ONNX value is out of tolerance."""
    tg: TypedGraph = gm.graphc  # type: ignore[assignment]
    model = _load(model_path, external=True)
    values: dict[str, str] = _read_meta(model, VALUES_KEY) or {}
    if not values:
        return None, "the model has no graphc.values metadata (not exported by graphc)"
    have = {o.name for o in model.graph.output}
    infos = {vi.name: vi for vi in model.graph.value_info}
    for onnx_name in dict.fromkeys(values.values()):
        if onnx_name not in have:
            model.graph.output.append(infos.get(onnx_name) or onnx.helper.make_empty_tensor_value_info(onnx_name))
            have.add(onnx_name)
    sess = _session(model)
    got = _run(sess, tg, inputs)
    ref = node_values(make_probe(gm), inputs)
    for node in tg.order:
        if node not in values or node not in ref:
            continue
        dtype = str(ref[node].dtype).removeprefix("torch.")
        atol, rtol = tolerance(tg, dtype)
        mabs, mrel, ok = diff(got[values[node]], ref[node], atol, rtol)
        if not ok:
            op = tg.flat.nodes[node].op_name
            return node, f"op '{op}' at {tg.flat.nodes[node].pos}: max abs diff {mabs:.3g}, max rel diff {mrel:.3g}"
    return None, "every node is within tolerance at the failing size; the divergence is in how outputs are assembled"


def _timeit(fn: Any, budget_s: float = 0.3, cap_s: float = 3.0, max_runs: int = 200) -> float:
    """Median milliseconds of ``fn()`` after one warm-up: runs for ``budget_s`` (at least 3
    runs, but never past ``cap_s`` so a slow model does not stall verification)."""
    fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_runs:
        elapsed = time.perf_counter() - start
        if (elapsed >= budget_s and len(times) >= 3) or (elapsed >= cap_s and times):
            break
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000)


def measure_latency(gm: fx.GraphModule, model_path: str | Path, threads: int) -> dict[str, float]:
    """onnxruntime and torch eager latency at batch 1 and the example batch, and their ratio.

    Both engines get the same number of intra-op threads, so the ratio compares engines, not
    thread pools.  The batch dim is the first axis of the first input when it is symbolic.
    """
    tg: TypedGraph = gm.graphc  # type: ignore[assignment]
    first = next(iter(tg.flat.spec.doc.inputs.values()))
    batch = first.shape[0] if first.shape and isinstance(first.shape[0], str) else None
    sess = _session(str(model_path), threads)
    out: dict[str, float] = {"threads": threads}
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for key, sizes in (("batch1", {batch: 1} if batch else {}), ("example", {})):
            inputs = _inputs(tg, 0, {k: v for k, v in sizes.items() if k})
            feed = _feed(tg, inputs)
            ort_ms = _timeit(lambda feed=feed: sess.run(None, feed))
            with torch.no_grad():
                torch_ms = _timeit(lambda inputs=inputs: gm(*inputs))
            out.update({f"{key}_ort_ms": ort_ms, f"{key}_torch_ms": torch_ms, f"{key}_ratio": ort_ms / torch_ms})
    finally:
        torch.set_num_threads(before)
    return out


def raise_if_failed(result: VerifyResult, path: str | Path) -> None:
    """VerifyError (exit 3) naming the worst output and the first divergent node."""
    if result.passed:
        return
    bad = [o for o in result.outputs.values() if not o.passed]
    where = f"; first divergent node '{result.first_divergent}' ({result.detail})" if result.first_divergent else f"; {result.detail}"
    raise VerifyError(f"{path}: onnxruntime output '{bad[0].name}' differs from torch: max abs diff {bad[0].max_abs_diff:.3g} "
                      f"(atol {bad[0].atol:g}, rtol {bad[0].rtol:g}){where}")
