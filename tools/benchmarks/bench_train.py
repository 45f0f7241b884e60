"""Training speed: fp32 / bf16, eager / compiled, model FLOP utilisation, and bf16's loss curve.

All in one process, on the trainer's own code path (graphc.train.loop.compile_mode,
compiled_forward and _autocast, graphc.train.optim.make_optimizer):

* the machine's GEMM peak, fp32 and bf16 (best of a few large matmuls, measured between the
  step rounds so that a busy moment does not set it);
* steady-state train-step time (forward + backward + AdamW) of fp32 eager, bf16 eager, fp32
  compiled and bf16 compiled for GPT-mini (specs/gpt_mini.yaml, batch 16 x 64) and GPT-2's
  d=768 block (specs/gpt2.yaml --set layers=2 vocab=8192 ctx=256, batch 8 x 128), measured in
  interleaved rounds (ABCD ABCD ...) and reported as medians, so machine noise hits all alike;
* each one's model FLOP utilisation: FLOPs of one step (torch.utils.flop_counter: matmuls and
  attention, forward and backward) / step time / the GEMM peak of its precision;
* cold start (first step, compile included, fresh inductor cache) of whole-model vs regional
  compilation on GPT-mini;
* the loss curves of ``graphc train`` with ``precision: bf16`` vs fp32 on the char corpus
  (specs/train/char_gpt.yaml, 300 steps).

GRAPHC_BENCH_TRAIN_SET="layers=2 d=64" shrinks GPT-mini; GRAPHC_BENCH_TRAIN_SMALL=1 shrinks
everything (a smoke run of this file, figures meaningless).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parents[2]
SMALL = os.environ.get("GRAPHC_BENCH_TRAIN_SMALL") == "1"
ROUNDS = 3 if SMALL else 5
LOSS_STEPS = 20 if SMALL else 300
VARIANTS = (("fp32", "none"), ("bf16", "none"), ("fp32", "auto"), ("bf16", "auto"))  # (precision, compile)


class Config(NamedTuple):  # NamedTuple, not a dataclass: run.py loads this file without registering it in sys.modules
    """One model configuration to time."""

    label: str
    spec: Path
    overrides: list[str]
    batch: int
    seq: int


def configs() -> list[Config]:
    mini = os.environ.get("GRAPHC_BENCH_TRAIN_SET", "").split() or (["layers=1", "d=32"] if SMALL else [])
    d768 = ["layers=2", "vocab=8192", "ctx=256"] + (["d=64", "heads=4"] if SMALL else [])
    return [
        Config(f"GPT-mini {' '.join(mini) or '4 x 128'}, batch 16x64", ROOT / "specs" / "gpt_mini.yaml", mini, 16, 64),
        Config(f"GPT-2 {' '.join(d768)} (d 768), batch 8x128", ROOT / "specs" / "gpt2.yaml", d768, 8, 128),
    ]


# --- GEMM peak ---------------------------------------------------------------------------------

GEMM_SHAPES = ((2048, 2048, 2048), (1024, 768, 3072), (1024, 3072, 768))


def gemm_rate(dtype: Any, m: int, k: int, n: int, reps: int = 5) -> float:
    """FLOP/s of one (m x k) @ (k x n) matmul, the median of ``reps`` after a warm-up."""
    import torch

    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    a @ b
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * m * k * n / statistics.median(times)


def gemm_peak(dtype: Any) -> float:
    """The best GEMM rate over a square and the model's own shapes (MKL/oneDNN reach their peak
    at different shapes per dtype)."""
    return max(gemm_rate(dtype, *s) for s in GEMM_SHAPES)


# --- train steps -------------------------------------------------------------------------------


class Prepared(NamedTuple):
    """A ready train-step function and what it cost to get there."""

    step: Callable[[], float]
    cold: float  # first step, compile included (s)
    mode: str


def prepare(cfg: Config, precision: str, compile: str, device: str = "cpu") -> Prepared:
    """A train step of ``cfg`` the way ``graphc train`` runs it: the trainer's compile mode,
    autocast and optimizer (fused AdamW), loss in fp32 outside the compiled region.  Each step
    returns its loss as a float, which waits for the device as the trainer does."""
    import torch
    import torch.nn.functional as F

    import graphc
    from graphc.train.loop import _autocast, compile_mode, compiled_forward
    from graphc.train.optim import make_optimizer
    from graphc.train.recipe import OptimizerCfg

    torch.manual_seed(0)
    tg = graphc.check(str(cfg.spec), cfg.overrides)
    dev = torch.device(device)
    gm = graphc.build(tg, seed=0, device=dev)
    mode = compile_mode(gm, compile)
    fwd = compiled_forward(gm, mode)
    opt = make_optimizer(gm, tg, OptimizerCfg(type="adamw", lr=3e-4, weight_decay=0.1))
    table = gm.get_submodule("tok").weight  # the token embedding: [vocab, d]
    assert isinstance(table, torch.Tensor)
    vocab = table.shape[0]
    tokens = torch.randint(0, vocab, (cfg.batch, cfg.seq), generator=torch.Generator().manual_seed(0)).to(dev)
    target = torch.roll(tokens, -1, 1)

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        with _autocast(dev, precision):
            logits = fwd(tokens)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
        loss.backward()
        opt.step()
        return loss.item()

    t0 = time.perf_counter()
    step()
    cold = time.perf_counter() - t0
    step()
    return Prepared(step, cold, mode)


def step_flops(cfg: Config, device: str = "cpu") -> float:
    """FLOPs of one fp32 eager train step (forward + backward), counted by torch's
    FlopCounterMode: every matmul and attention, as model FLOP utilisation counts them."""
    from torch.utils.flop_counter import FlopCounterMode

    p = prepare(cfg, "fp32", "none", device=device)
    with FlopCounterMode(display=False) as fc:
        p.step()
    return float(fc.get_total_flops())


def steady(steps: dict[str, Callable[[], float]], peaks: dict[str, list[float]], rounds: int = ROUNDS) -> dict[str, float]:
    """Median step time per variant over interleaved rounds (two steps each), with a GEMM peak
    sample of each dtype taken between rounds."""
    import torch

    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(rounds):
        for key, step in steps.items():
            t0 = time.perf_counter()
            step()
            step()
            times[key].append((time.perf_counter() - t0) / 2)
        peaks["fp32"].append(gemm_peak(torch.float32))
        peaks["bf16"].append(gemm_peak(torch.bfloat16))
    return {k: statistics.median(t) for k, t in times.items()}


def speed_rows(peaks: dict[str, list[float]]) -> tuple[list[tuple[str, str, str]], dict[str, Any]]:
    """Step times and MFU of the four variants for every configuration."""
    rows: list[tuple[str, str, str]] = []
    figures: dict[str, Any] = {}
    for i, cfg in enumerate(configs()):
        flops = step_flops(cfg)
        steps = {f"{p} {c}": prepare(cfg, p, c).step for p, c in VARIANTS}
        t = steady(steps, peaks)
        peak = {k: max(v) for k, v in peaks.items()}
        figures[cfg.label] = {"flops": flops, "times": t}
        rows.append((f"[{cfg.label}] FLOPs per train step", f"{flops / 1e9:.1f} G", "FlopCounterMode, fwd + bwd"))
        for p, c in VARIANTS:
            key = f"{p} {c}"
            mfu = flops / t[key] / peak[p]
            name = f"{p} {'eager' if c == 'none' else 'compiled'}"
            rows.append((f"  train step {name}", f"{t[key] * 1e3:.0f} ms", f"MFU {mfu:.0%} of the {p} GEMM peak"))
        ratio = t["bf16 auto"] / t["fp32 none"]
        goal = i == 1  # the goals are set on the d=768 configuration
        rows.append(("  bf16 compiled / fp32 eager", f"{ratio:.2f}", "goal <= 0.6" if goal else ""))
        rows.append(("  bf16 eager / fp32 eager", f"{t['bf16 none'] / t['fp32 none']:.2f}", ""))
        rows.append(("  fp32 compiled / fp32 eager", f"{t['fp32 auto'] / t['fp32 none']:.2f}", "" if goal else "goal <= 0.85 (GPT-mini)"))
        rows.append(("  bf16 compiled / bf16 eager", f"{t['bf16 auto'] / t['bf16 none']:.2f}", ""))
        fp32_mfu = flops / t["fp32 auto"] / peak["fp32"]
        rows.append(("  fp32 compiled MFU", f"{fp32_mfu:.0%}", "goal >= 50%" if goal else ""))
    return rows, figures


# --- cold start ----------------------------------------------------------------------------------


def cold_rows() -> list[tuple[str, str, str]]:
    """First-step time of whole-model vs regional compilation of GPT-mini, fresh inductor cache.
    Run before anything else is compiled: inductor also keeps compiled kernels in memory."""
    import torch

    cfg = configs()[0]
    cold, before = {}, os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    for mode in ("none", "model", "regional"):
        with tempfile.TemporaryDirectory(prefix="graphc-bench-") as cache:  # a true cold start: no inductor cache hits
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
            torch._dynamo.reset()
            cold[mode] = prepare(cfg, "fp32", mode).cold
    if before is None:
        del os.environ["TORCHINDUCTOR_CACHE_DIR"]
    else:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = before
    return [
        ("cold start whole model (first step, GPT-mini)", f"{cold['model']:.1f} s", ""),
        ("cold start regional (first step)", f"{cold['regional']:.1f} s", ""),
        ("regional / whole-model cold start", f"{(cold['regional'] - cold['none']) / (cold['model'] - cold['none']):.2f}",
         "goal <= 0.4 (compile time only)"),
    ]


# --- loss curves -------------------------------------------------------------------------------


def loss_curves(steps: int = LOSS_STEPS) -> dict[str, list[dict[str, float]]]:
    """``graphc train`` GPT-mini on the char corpus (specs/train/char_gpt.yaml) for ``steps``
    steps in fp32 and in bf16: the metrics.csv rows of each (every steps/6)."""
    from graphc.train.loop import train

    over = [f"train.steps={steps}", f"train.eval_every={max(steps // 6, 1)}", "train.eval_batches=8"]
    if SMALL:
        over += ["layers=1", "d=32", "train.data.max_chars=50000"]
    curves = {}
    for precision in ("fp32", "bf16"):
        with tempfile.TemporaryDirectory(prefix="graphc-bench-") as tmp:
            r = train(ROOT / "specs" / "gpt_mini.yaml", Path(tmp) / "run", ROOT / "specs" / "train" / "char_gpt.yaml",
                      [*over, f"train.precision={precision}"], quiet=True)
            curves[precision] = r.history
    return curves


def loss_rows(curves: dict[str, list[dict[str, float]]]) -> list[tuple[str, str, str]]:
    fp32, bf16 = curves["fp32"], curves["bf16"]
    rows = []
    for a, b in zip(fp32, bf16, strict=True):
        rows.append((f"  char GPT-mini step {int(a['step'])}: val loss fp32 / bf16",
                     f"{a['val_loss']:.3f} / {b['val_loss']:.3f}", f"train loss {a['train_loss']:.3f} / {b['train_loss']:.3f}"))
    last_a, last_b = fp32[-1], bf16[-1]
    rows.append((f"bf16 vs fp32 val loss after {int(last_a['step'])} steps", f"{last_b['val_loss'] / last_a['val_loss'] - 1:+.2%}",
                 "goal within 2%"))
    return rows


def run() -> list[tuple[str, str, str]]:
    import torch

    cold = cold_rows()
    peaks: dict[str, list[float]] = {"fp32": [], "bf16": []}
    speed, _ = speed_rows(peaks)
    peak_rows = [
        ("GEMM peak fp32 (measured in this run)", f"{max(peaks['fp32']) / 1e9:.0f} GFLOP/s", f"{torch.get_num_threads()} threads"),
        ("GEMM peak bf16 (measured in this run)", f"{max(peaks['bf16']) / 1e9:.0f} GFLOP/s",
         f"bf16 / fp32 {max(peaks['bf16']) / max(peaks['fp32']):.2f}x"),
    ]
    return peak_rows + speed + cold + loss_rows(loss_curves())
