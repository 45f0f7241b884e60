"""``graphc check`` wall time on generated specs of 1,000 and 10,000 nodes (goal: 10k well under 2 s).

Each size is run in a fresh subprocess, as a user would run it (so the figure includes
Python start-up and imports); the best of three runs is reported, plus the CPU time of that
run, which is what a busy machine distorts least.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT / "tools"))

from gen_spec import generate  # noqa: E402

SIZES = (1_000, 10_000)
RUNS = 3


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def time_check(path: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of the best of RUNS ``graphc check`` subprocesses."""
    best = (float("inf"), 0.0)
    for _ in range(RUNS):
        cpu0, t0 = _cpu(), time.perf_counter()
        res = subprocess.run([sys.executable, "-m", "graphc", "check", str(path)], capture_output=True, text=True, cwd=ROOT)
        wall, cpu = time.perf_counter() - t0, _cpu() - cpu0
        if res.returncode != 0:
            raise RuntimeError(f"graphc check failed on {path}:\n{res.stderr}")
        best = min(best, (wall, cpu))
    return best


def run() -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in SIZES:
            path = Path(tmp) / f"gen_{n}.yaml"
            path.write_text(generate(n))
            wall, cpu = time_check(path)
            goal = "goal: well under 2 s" if n >= 10_000 else ""
            rows.append((f"graphc check, {n:,} nodes (wall, subprocess)", f"{wall:.2f} s", goal))
            rows.append((f"graphc check, {n:,} nodes (CPU)", f"{cpu:.2f} s", "user+sys of the same run"))
    return rows


if __name__ == "__main__":
    for metric, value, note in run():
        print(f"{metric:<50} {value:>10}   {note}")
