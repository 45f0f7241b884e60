"""The ``compile`` flags of optimisation and quantization, and their printed report.

Kept apart from :mod:`graphc.export.quantize` so that building the CLI parser imports neither
torch nor onnx (``graphc check`` stays fast).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graphc.errors import ExportError, VerifyError

MODES = ("int8-dynamic", "int8-static", "fp16")
METHODS = ("minmax", "entropy", "percentile")
SNR_CLAMP = 200.0  # dB: an exact match reads as 200 and JSON never holds inf


class QuantUsageError(ExportError):
    """Flags that contradict each other (exit 2, like argparse's own usage errors)."""

    exit_code = 2


class QuantizeError(VerifyError):
    """The quantized model is outside its budget (exit 3); ``table`` is the node report."""

    def __init__(self, message: str, table: list[str]) -> None:
        super().__init__(message)
        self.table = table


@dataclass
class QuantOptions:
    """What ``--quantize`` and its companion flags ask for (validated by the CLI's types)."""

    mode: str | None = None  # one of MODES; None: no quantization
    optimize: bool = False  # onnxruntime offline optimisation (see graphc.export.optimize)
    keep_fp32: tuple[str, ...] = ()  # globs over spec node paths, or ("auto",)
    min_snr: float = 20.0  # dB every float output must reach
    max_abs_error: float | None = None  # optional absolute ceiling on every output
    calibrate: Path | None = None  # .npz of calibration inputs (int8-static)
    calibration_batches: int = 8
    calibrate_method: str = "minmax"
    max_auto: int = 16  # --keep-fp32 auto gives up after this many excluded spec nodes
    data: str | None = None  # recipe (or "spec") for the task-level metric check
    max_metric_drop: float | None = None

    def __post_init__(self) -> None:
        if self.mode is not None and self.mode not in MODES:
            raise QuantUsageError(f"--quantize {self.mode!r}: expected one of {', '.join(MODES)}")
        if self.calibrate_method not in METHODS:
            raise QuantUsageError(f"--calibrate-method {self.calibrate_method!r}: expected one of {', '.join(METHODS)}")
        if not -SNR_CLAMP <= self.min_snr <= SNR_CLAMP:
            raise QuantUsageError(f"--min-snr {self.min_snr}: expected a value in [-200, 200] dB")


def format_table(q: dict[str, Any], limit: int = 20) -> list[str]:
    """verify.json's ``quantization``: outputs, then the ``limit`` worst nodes by SNR (lowest first)."""
    floor = q["budget"]["min_snr_db"]
    kept = q.get("kept_fp32") or []
    lines = [f"quantize {q['mode']}: {'PASSED' if q['passed'] else 'FAILED'} (budget: every output SNR >= {floor:g} dB)"
             + (f"; kept fp32: {', '.join(kept)}" if kept else "")]
    lines.append(f"  {'node':<32} {'op':<14} {'max abs':>10} {'mean abs':>10} {'SNR dB':>8}")
    rows = [*q["outputs"], *sorted(q["nodes"], key=lambda n: n["snr_db"])[:limit]]
    for i, n in enumerate(rows):
        name = f"[{n['node']}]" if i < len(q["outputs"]) else n["node"]
        mark = " <" if n["snr_db"] < floor else ""
        lines.append(f"  {name:<32} {n['op']:<14} {n['max_abs']:>10.3g} {n['mean_abs']:>10.3g} {n['snr_db']:>8.1f}{mark}")
    if q.get("first_over_budget"):
        lines.append(f"  first node under {floor:g} dB: {q['first_over_budget']}")
    files = q.get("files") or {}
    if files:
        lines.append(f"  size: {files['fp32'] / 1e6:.2f} MB fp32 -> {files['quantized'] / 1e6:.2f} MB "
                     f"({files['quantized'] / max(files['fp32'], 1):.2f}x)")
    metrics = q.get("metrics") or {}
    for name, value in metrics.get("quantized", {}).items():
        lines.append(f"  metric {name}: fp32 {metrics['fp32'][name]:.4g}, quantized {value:.4g}")
    if q.get("optimized"):
        lines.append(f"  optimized: {json.dumps(q['optimized'])}")
    if q.get("calibration"):
        lines.append(f"  calibrated on {q['calibration']}")
    if q.get("detail"):
        lines.append(f"  {q['detail']}")
    return lines


@contextmanager
def report_on_failure() -> Iterator[None]:
    """Print the node table (stderr) before a budget failure's one-line error."""
    try:
        yield
    except QuantizeError as e:
        print("\n".join(e.table), file=sys.stderr)
        raise


def is_quantized(model: str | Path) -> bool:
    """Whether ``model`` is a model.onnx that ``--quantize`` wrote (its metadata says so)."""
    import onnx

    try:
        props = onnx.load(str(model), load_external_data=False).metadata_props
    except Exception:
        return False  # unreadable: the ordinary verify path reports it
    return any(p.key == "graphc.quantization" for p in props)


def summary(out_dir: Path) -> list[str]:
    """The report lines of a finished compile (nothing when it did not quantize or optimise)."""
    ver = json.loads((out_dir / "verify.json").read_text(encoding="utf-8"))
    if "quantization" in ver:
        return [*format_table(ver["quantization"]), "  model.onnx is the quantized model; model.fp32.onnx the verified fp32 export"]
    if "optimized" in ver:
        opt = ver["optimized"]
        worst = ", ".join(f"{k} max abs diff {o['max_abs_diff']:.3g}" for k, o in opt["verify"]["outputs"].items())
        return [f"optimized: level {opt['level']}, fusions {json.dumps(opt['fusions'])}; verify "
                f"{'PASSED' if opt['verify']['passed'] else 'FAILED'} ({worst})"]
    return []


def _snr(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of dB, got {text!r}") from None
    if not math.isfinite(value) or not -SNR_CLAMP <= value <= SNR_CLAMP:
        raise argparse.ArgumentTypeError(f"{text} is outside [-200, 200] dB")
    return value


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text}")
        return value

    return parse


def _drop(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def quant_args(p: Any) -> None:
    """``--optimize``, ``--quantize`` and their budget/calibration flags (on ``compile``)."""
    g = p.add_argument_group("optimise / quantise (see docs/export.md)")
    g.add_argument("--optimize", action="store_true", help="save an onnxruntime-optimised model (level all, transformer fusions)")
    g.add_argument("--quantize", choices=MODES, default=None, help="quantize model.onnx (fp32 kept as model.fp32.onnx)")
    g.add_argument("--keep-fp32", nargs="+", default=[], metavar="GLOB",
                   help="spec nodes to leave in fp32 (globs over node paths), or 'auto'")
    g.add_argument("--min-snr", type=_snr, default=20.0, metavar="DB", help="SNR floor of every output (default 20 dB)")
    g.add_argument("--max-abs-error", type=_positive(float), default=None, metavar="X", help="absolute error ceiling of every output")
    g.add_argument("--calibrate", metavar="FILE.npz", default=None, help="int8-static calibration inputs, keyed by input name")
    g.add_argument("--calibration-batches", type=_positive(int), default=8, metavar="N")
    g.add_argument("--calibrate-method", choices=METHODS, default="minmax")
    g.add_argument("--data", metavar="RECIPE", default=None,
                   help="compare the recipe's metrics fp32 vs quantized ('spec': the spec's own recipe)")
    g.add_argument("--max-metric-drop", type=_drop, default=None, metavar="X", help="fail (exit 3) past this drop of any metric")


def quant_options(args: Any) -> QuantOptions | None:
    """The :class:`QuantOptions` of parsed ``compile`` flags (None when nothing was asked)."""
    if args.quantize is None and (args.keep_fp32 or args.calibrate or args.data):
        raise QuantUsageError("--keep-fp32, --calibrate and --data need --quantize")
    if args.quantize is None and not args.optimize:
        return None
    if args.keep_fp32 and "auto" in args.keep_fp32 and len(args.keep_fp32) > 1:
        raise QuantUsageError("--keep-fp32 auto takes no globs beside it")
    return QuantOptions(args.quantize, args.optimize, tuple(args.keep_fp32), args.min_snr, args.max_abs_error,
                        Path(args.calibrate) if args.calibrate else None, args.calibration_batches,
                        args.calibrate_method, data=args.data, max_metric_drop=args.max_metric_drop)
