"""Quantization section: int8 onnxruntime vs fp32 onnxruntime vs torch eager, sizes, accuracy.

Rows, for the MLP, the digits CNN, GPT-mini and a 4-layer BERT-shaped encoder
(specs/bert.yaml with ``--set``): latency at batch 1 and 32 (one intra-op thread in every
engine; the best of three interleaved medians, since other jobs on a shared machine only add time), the int8/fp32 onnxruntime latency ratio and
the int8/fp32 file size ratio.  Then the task check: the digits CNN and a character GPT are
trained briefly in eager mode (a few hundred steps), quantized, and their recipe metrics are
compared fp32 torch vs int8 onnxruntime on the validation split (graphc.export.metrics).

Quantization is what ``graphc compile --quantize`` runs: int8-dynamic for the MLP and the
transformers, int8-static (QDQ, per-channel, calibrated on the recipe's data) for the CNN,
whose convolutions dynamic mode leaves in fp32.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
BERT4 = ["layers=4", "d=256", "heads=4", "ff=1024", "vocab=8192", "inputs.input_ids.example.T=128"]
MODELS: list[tuple[str, str, list[str], str]] = [
    ("MLP", "mlp", [], "int8-dynamic"),
    ("digits CNN", "digits_cnn", [], "int8-static"),
    ("GPT-mini", "gpt_mini", [], "int8-dynamic"),
    ("BERT-4 (d=256, T=128)", "bert", BERT4, "int8-dynamic"),
]
ROUNDS = 3
GOALS = {"GPT-mini": "<= 0.6 at batch 32", "BERT-4 (d=256, T=128)": "<= 0.6 at batch 32"}


def _quantized(built: Any, tmp: Path, name: str, overrides: list[str], mode: str, recipe: str | None) -> tuple[Path, Path]:
    import onnx

    import graphc
    from graphc.export.calibrate import reader_for
    from graphc.export.quant_cli import QuantOptions
    from graphc.export.quantize import quantize_file, stamp

    spec = ROOT / "specs" / f"{name}.yaml"
    fp32, int8 = tmp / f"{name}.fp32.onnx", tmp / f"{name}.int8.onnx"
    if built is None:
        graphc.export_onnx(spec, fp32, overrides, verify=False)
    else:  # trained weights: export those
        from graphc.export.onnx_export import export_model

        export_model(built, fp32)
    opts = QuantOptions(mode, data=recipe, calibration_batches=16)
    reader = reader_for(graphc.check(spec, overrides), opts, 0) if mode == "int8-static" else None
    quantize_file(fp32, int8, opts, [], reader)
    stamp(onnx.load(str(fp32)), int8, opts, [])  # as compile ships it: graphc's metadata kept, per-node metadata dropped
    return fp32, int8


def _latency(built: Any, fp32: Path, int8: Path, batch: int) -> tuple[float, float, float]:
    import onnxruntime as ort
    import torch

    import graphc
    from graphc.export.verify import _timeit

    tg = built.graph
    first = next(iter(tg.flat.spec.doc.inputs.values()))
    sizes = {first.shape[0]: batch} if isinstance(first.shape[0], str) else {}
    inputs = graphc.example_inputs(tg, 0, None, **sizes)
    feed = {n: t.numpy() for n, t in zip(tg.flat.spec.doc.inputs, inputs, strict=True)}

    def session(p: Path) -> Any:
        o = ort.SessionOptions()
        o.intra_op_num_threads = 1
        o.log_severity_level = 3
        return ort.InferenceSession(str(p), o, providers=["CPUExecutionProvider"])

    s32, s8 = session(fp32), session(int8)
    torch.set_num_threads(1)
    best = [float("inf")] * 3
    for _ in range(ROUNDS):  # interleaved rounds, best median of each: other jobs on a shared machine only add time
        with torch.no_grad():
            times = (_timeit(lambda: s32.run(None, feed), budget_s=0.5), _timeit(lambda: s8.run(None, feed), budget_s=0.5),
                     _timeit(lambda: built.module(*inputs), budget_s=0.5))
        best = [min(b, t) for b, t in zip(best, times, strict=True)]
    return best[0], best[1], best[2]


def _latency_rows(tmp: Path) -> list[tuple[str, str, str]]:
    import graphc

    rows = []
    for label, name, overrides, mode in MODELS:
        built = graphc.lower_spec(graphc.check(ROOT / "specs" / f"{name}.yaml", overrides), seed=0)
        built.module.eval()
        fp32, int8 = _quantized(None, tmp, name, overrides, mode, "spec" if mode == "int8-static" else None)
        for batch in (1, 32):
            f, q, e = _latency(built, fp32, int8, batch)
            goal = GOALS.get(label, "") if batch == 32 else ""
            rows.append((f"{label} {mode}, batch {batch}: int8/fp32 ORT", f"{q / f:.2f}x",
                         f"fp32 ORT {f:.3f} ms, int8 ORT {q:.3f} ms, torch eager {e:.3f} ms {goal}".rstrip()))
        rows.append(_size_row(label, fp32, int8))
    return rows


def _weight_bytes(path: Path) -> int:
    """Bytes of the initializers (weights, scales, zero points) of an ONNX file."""
    import onnx
    from onnx import numpy_helper

    return sum(numpy_helper.to_array(t).nbytes for t in onnx.load(str(path)).graph.initializer)


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


def _size_row(label: str, fp32: Path, int8: Path) -> tuple[str, str, str]:
    """Whole-file and weights-only int8/fp32 ratios: the files are what compile writes
    (model.fp32.onnx as exported, model.onnx without the exporter's per-node metadata)."""
    a, b = fp32.stat().st_size, int8.stat().st_size
    wa, wb = _weight_bytes(fp32), _weight_bytes(int8)
    return (f"{label}: int8/fp32 file size", f"{b / a:.4f}x",
            f"{_mb(a)} -> {_mb(b)}; weights only {wb / wa:.4f}x ({_mb(wa)} -> {_mb(wb)})"
            + (" (goal <= 0.3)" if label == "GPT-mini" else ""))


def size_rows() -> list[tuple[str, str, str]]:
    """Only the file-size rows (no timing, no training): ``python tools/benchmarks/bench_quant.py --sizes``."""
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for label, name, overrides, mode in MODELS:
            fp32, int8 = _quantized(None, Path(d), name, overrides, mode, "spec" if mode == "int8-static" else None)
            rows.append(_size_row(label, fp32, int8))
    return rows


def _train(spec: Path, overrides: list[str], recipe: str, steps: int) -> Any:
    """A short eager training run (Adam) on the recipe's train split."""
    import torch

    import graphc
    from graphc.export.calibrate import load_task_data
    from graphc.train.objectives import total_loss

    torch.manual_seed(0)
    built = graphc.lower_spec(graphc.check(spec, overrides), seed=0)
    gm = built.module
    loaded, data = load_task_data(built.graph, recipe, 0)
    opt = torch.optim.Adam(gm.parameters(), lr=3e-3)
    names = list(built.graph.flat.outputs)
    gen = torch.Generator().manual_seed(0)
    gm.train()
    for _ in range(steps):
        batch = data.train.batch(torch.randint(0, len(data.train), (loaded.recipe.batch_size,), generator=gen))
        out = gm(*(batch[k] for k in data.inputs))
        out = dict(out) if isinstance(out, dict) else {names[0]: out}
        loss = total_loss(out, batch, loaded.recipe.loss_terms)
        opt.zero_grad()
        loss.backward()
        opt.step()
    gm.eval()
    return built


def _task_rows(tmp: Path) -> list[tuple[str, str, str]]:
    from graphc.export.metrics import compare_metrics

    rows = []
    digits = ROOT / "specs" / "digits_cnn.yaml"
    built = _train(digits, [], "spec", 400)
    _, int8 = _quantized(built, tmp, "digits_cnn", [], "int8-static", "spec")
    m = compare_metrics(built, int8, "spec")
    drop = 100 * (m["fp32"]["accuracy"] - m["quantized"]["accuracy"])
    rows.append(("digits CNN (400 steps) accuracy drop, int8-static", f"{drop:.2f} pt",
                 f"fp32 {100 * m['fp32']['accuracy']:.2f}%, int8 {100 * m['quantized']['accuracy']:.2f}% (goal <= 0.5 pt)"))
    char = str(ROOT / "specs" / "train" / "char_gpt.yaml")
    built = _train(ROOT / "specs" / "gpt_mini.yaml", [], char, 300)
    _, int8 = _quantized(built, tmp, "gpt_mini", [], "int8-dynamic", None)
    m = compare_metrics(built, int8, char)
    rise = 100 * (m["quantized"]["loss"] / m["fp32"]["loss"] - 1)
    rows.append(("char GPT-mini (300 steps) val loss increase, int8-dynamic", f"{rise:.2f}%",
                 f"fp32 {m['fp32']['loss']:.4f}, int8 {m['quantized']['loss']:.4f} (goal <= 2%)"))
    return rows


def run() -> list[tuple[str, str, str]]:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        return _latency_rows(tmp) + _task_rows(tmp)


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["--sizes"]:
        sys.exit("usage: bench_quant.py --sizes   (the whole section: tools/bench quant)")
    sys.path.insert(0, str(ROOT))
    for metric, value, note in size_rows():
        print(f"  {metric:<55} {value:>14}   {note}", flush=True)
