"""``graphc sweep`` with static rejection against the same sweep without it (goal: <= 0.6x),
and the acceptance run: the best configuration, trained at full length, against the shipped
digits recipe.

The space (``SPACE`` below, on specs/sweep/digits_cnn_deep.yaml) makes about half of its
configurations invalid (``groups`` not dividing ``c2``) or over the parameter budget.  Both
sweeps use the random sampler with the same seed and trial count, so they sample the same
configurations; without the static check the invalid ones fail in their training process and
the over-budget ones train.  Each sweep is a ``graphc sweep`` subprocess, timed whole.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
SPEC = ROOT / "specs" / "sweep" / "digits_cnn_deep.yaml"
SHIPPED = ROOT / "specs" / "digits_cnn.yaml"
TRIALS = 12
ROUNDS = 2

# ~15% invalid (groups 3 or 4 not dividing c2, with depth > 0), ~40% over the FLOP budget
# (measured on 200 random samples), and the over-budget ones are the wide, slow-to-train ones.
SPACE = """\
objective: {metric: val_accuracy, mode: max}
trial: {steps: 600, eval_every: 200}
fixed: {train.compile: none}
budget: {flops: 6.0e6}
pruner: none
space:
  c1: {type: choice, choices: [8, 16, 32, 64]}
  c2: {type: choice, choices: [16, 32, 64, 128]}
  depth: {type: int, low: 0, high: 2}
  groups: {type: choice, choices: [1, 2, 4, 3]}
  hidden: {type: int, low: 32, high: 256, log: true}
  drop: {type: float, low: 0.0, high: 0.4}
  train.optimizer.lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}
"""
ACCEPTANCE_SPACE = ROOT / "specs" / "sweep" / "digits_cnn.sweep.yaml"


def _graphc(*args: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "graphc", *args], capture_output=True, text=True, cwd=ROOT, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"graphc {' '.join(args)} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return time.perf_counter() - t0


def _sweep(tmp: Path, name: str, *extra: str) -> tuple[float, dict[str, object]]:
    out = tmp / name
    wall = _graphc("sweep", str(SPEC), "--sweep", str(tmp / "space.yaml"), "-o", str(out), "--trials", str(TRIALS),
                   "--sampler", "random", "--seed", "0", *extra)
    return wall, json.loads((out / "summary.json").read_text())


def _test_accuracy(run: Path) -> float:
    return float(json.loads((run / "results.json").read_text())["test"]["test_accuracy"])


def run() -> list[tuple[str, str, str]]:
    with tempfile.TemporaryDirectory() as d:
        return speed_rows(Path(d)) + acceptance_rows(Path(d))


def speed_rows(tmp: Path) -> list[tuple[str, str, str]]:
    """The same random-sampler sweep with static rejection on and off, interleaved."""
    rows: list[tuple[str, str, str]] = []
    (tmp / "space.yaml").write_text(SPACE)
    walls: dict[str, list[float]] = {"on": [], "off": []}
    for i in range(ROUNDS):  # interleaved, best of each: the machine's load drifts between runs
        with_wall_i, s = _sweep(tmp, f"static{i}")
        without_wall_i, s2 = _sweep(tmp, f"nostatic{i}", "--no-static-check")
        walls["on"].append(with_wall_i)
        walls["off"].append(without_wall_i)
    with_wall, without_wall = min(walls["on"]), min(walls["off"])
    rejected = int(s["rejected_invalid"]) + int(s["rejected_budget"])  # type: ignore[call-overload]
    rows += [
        (f"trials rejected statically (of {TRIALS}): invalid / over budget", f"{s['rejected_invalid']} / {s['rejected_budget']}",
         f"{rejected / TRIALS:.0%} of the sampled configurations"),
        ("training FLOPs not spent (estimate)", f"{float(s['saved_flops']):.3g}", "3 x forward x batch x steps"),  # type: ignore[arg-type]
        ("sweep wall, static rejection on", f"{with_wall:.1f} s", f"best of {ROUNDS}: " + ", ".join(f"{w:.1f}" for w in walls["on"])),
        ("sweep wall, static rejection off", f"{without_wall:.1f} s",
         f"best of {ROUNDS}: " + ", ".join(f"{w:.1f}" for w in walls["off"]) + f"; {s2['failed']} failed in training"),
        ("sweep wall on / off", f"{with_wall / without_wall:.2f}", "goal <= 0.6"),
    ]
    return rows


def acceptance_rows(tmp: Path) -> list[tuple[str, str, str]]:
    """A TPE sweep of the example space; its best configuration trained at the recipe's full
    length against the shipped recipe (both without torch.compile)."""
    rows: list[tuple[str, str, str]] = []
    t0 = time.perf_counter()
    _graphc("sweep", str(SPEC), "--sweep", str(ACCEPTANCE_SPACE), "-o", str(tmp / "acceptance"))
    acc = json.loads((tmp / "acceptance" / "summary.json").read_text())
    rows.append((f"acceptance sweep ({ACCEPTANCE_SPACE.name}, TPE)", f"{time.perf_counter() - t0:.0f} s",
                 f"{acc['trials']} trials: {acc['complete']} complete, {acc['pruned']} pruned, "
                 f"{acc['rejected_invalid']} invalid, {acc['rejected_budget']} over budget"))
    best = tmp / "acceptance" / "best"
    _graphc("train", str(best / "spec.yaml"), "--config", str(best / "recipe.yaml"), "-o", str(tmp / "best_run"), "-q")
    _graphc("train", str(SHIPPED), "--set", "train.compile=none", "-o", str(tmp / "shipped_run"), "-q")
    got, ref = _test_accuracy(tmp / "best_run"), _test_accuracy(tmp / "shipped_run")
    rows += [
        ("test accuracy, best configuration (full length)", f"{got:.4f}", f"shipped recipe {ref:.4f}; goal >= shipped"),
    ]
    return rows


if __name__ == "__main__":
    for metric, value, note in run():
        print(f"{metric:<60} {value:>12}   {note}")
