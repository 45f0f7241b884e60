"""Training speed on the GPT-style spec: torch.compile vs eager, regional vs whole-model.

Measured in one process on specs/gpt_mini.yaml (defaults: 4 layers, d=128, batch 16 x 64):
steady-state train-step time (forward + backward + AdamW) eager and compiled, and the cold
start (first step, compile included) of whole-model vs regional compilation.  The compiled
forward is built by graphc.train.loop.compiled_forward, the very code `graphc train` runs.
Set GRAPHC_BENCH_TRAIN_SET="layers=2 d=64" to shrink it.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "specs" / "gpt_mini.yaml"
STEPS = 8


def _model(overrides: list[str]) -> tuple[object, object]:
    import graphc

    tg = graphc.check(str(SPEC), overrides)
    return tg, graphc.build(tg, seed=0)


def _step_fn(fwd, gm, opt, tokens, target):  # type: ignore[no-untyped-def]
    import torch.nn.functional as F

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        logits = fwd(tokens)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
        loss.backward()
        opt.step()

    return step


def _prepare(mode: str, overrides: list[str]):  # type: ignore[no-untyped-def]
    """A train-step function for one compile mode, and its first-step (cold start) time."""
    import torch

    from graphc.train.loop import compiled_forward

    torch._dynamo.reset()
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="graphc-bench-")  # a true cold start: no cache hits
    torch.manual_seed(0)
    _, gm = _model(overrides)
    fwd = compiled_forward(gm, mode)  # type: ignore[arg-type]
    opt = torch.optim.AdamW(gm.parameters(), lr=1e-3)  # type: ignore[attr-defined]
    tokens = torch.randint(0, 256, (16, 64))
    step = _step_fn(fwd, gm, opt, tokens, torch.roll(tokens, -1, 1))
    t0 = time.perf_counter()
    step()
    cold = time.perf_counter() - t0
    for _ in range(2):
        step()
    return step, cold


def _steady(steps: dict[str, object], rounds: int = 6) -> dict[str, float]:
    """Median step time per mode, measured in interleaved rounds so machine noise hits all alike."""
    times: dict[str, list[float]] = {m: [] for m in steps}
    for _ in range(rounds):
        for mode, step in steps.items():
            t0 = time.perf_counter()
            for _ in range(STEPS // 2):
                step()  # type: ignore[operator]
            times[mode].append((time.perf_counter() - t0) / (STEPS // 2))
    return {m: statistics.median(t) for m, t in times.items()}


def run() -> list[tuple[str, str, str]]:
    overrides = os.environ.get("GRAPHC_BENCH_TRAIN_SET", "").split()
    label = f"gpt_mini {' '.join(overrides) or '(defaults)'}, batch 16x64"
    steps, cold = {}, {}
    for mode in ("none", "model", "regional"):
        steps[mode], cold[mode] = _prepare(mode, overrides)
    t = _steady(steps)
    eager, model, regional = t["none"], t["model"], t["regional"]
    best = min(model, regional)
    return [
        (f"train step eager ({label})", f"{eager * 1e3:.1f} ms", "median of interleaved rounds"),
        ("train step compiled whole model", f"{model * 1e3:.1f} ms", ""),
        ("train step compiled regional (per block)", f"{regional * 1e3:.1f} ms", ""),
        ("compiled / eager step time (best compiled)", f"{best / eager:.2f}", "goal <= 0.85"),
        ("regional / eager step time", f"{regional / eager:.2f}", ""),
        ("cold start whole model (first step)", f"{cold['model']:.1f} s", ""),
        ("cold start regional (first step)", f"{cold['regional']:.1f} s", ""),
        ("regional / whole-model cold start", f"{(cold['regional'] - cold['none']) / (cold['model'] - cold['none']):.2f}", "goal <= 0.4 (compile time only)"),
    ]
