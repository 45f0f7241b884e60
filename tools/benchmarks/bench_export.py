"""ONNX export section: onnxruntime / torch eager latency and export time vs depth.

Rows: the latency ratio (onnxruntime median ms / torch eager median ms, same inputs, CPU, one
intra-op thread each so a busy shared machine does not distort it) at
batch 1 and at the spec's example batch for an MLP, a CNN and GPT-mini, and the time of
``graphc.export_onnx`` (torch.export + ONNX conversion + checker, no verification) for
GPT-mini at two depths.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
CNN = next((s for s in ("cifar_simplecnn", "digits_cnn", "resnet_block") if (ROOT / "specs" / f"{s}.yaml").exists()), None)
LATENCY = [("mlp", []), *([(CNN, [])] if CNN else []), ("gpt_mini", [])]
DEPTHS = (2, 8)


def _latency_rows(tmp: Path) -> list[tuple[str, str, str]]:
    import graphc
    from graphc.export.verify import measure_latency

    rows = []
    for name, overrides in LATENCY:
        spec = ROOT / "specs" / f"{name}.yaml"
        if not spec.exists():
            continue
        path = tmp / f"{name}.onnx"
        graphc.export_onnx(spec, path, overrides, verify=False)
        built = graphc.lower_spec(spec, seed=0, overrides=overrides)
        built.module.eval()
        lat = measure_latency(built, path, threads=1)
        for key in ("batch1", "example"):
            note = f"ort {lat[f'{key}_ort_ms']:.3f} ms / torch {lat[f'{key}_torch_ms']:.3f} ms"
            rows.append((f"{name}: onnxruntime/torch eager latency, {key}", f"{lat[f'{key}_ratio']:.2f}x", note))
    return rows


def _export_time_rows(tmp: Path) -> list[tuple[str, str, str]]:
    import graphc

    rows = []
    for layers in DEPTHS:
        t0 = time.perf_counter()
        graphc.export_onnx(ROOT / "specs" / "gpt_mini.yaml", tmp / f"g{layers}.onnx", [f"layers={layers}"], verify=False)
        rows.append((f"gpt_mini export time, layers={layers}", f"{time.perf_counter() - t0:.1f} s", "d=128, no verify"))
    return rows


def run() -> list[tuple[str, str, str]]:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        return _latency_rows(tmp) + _export_time_rows(tmp)
