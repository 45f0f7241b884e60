"""Runs the benchmark sections (``bench_*.py`` beside this file) and prints one table.

Each section module defines ``run() -> list[tuple[str, str, str]]`` returning rows of
(metric, value, goal-or-note).  Sections are independent so they can be added without
touching each other; results are also written to ``out/bench.json``.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(HERE))


def main(argv: list[str]) -> int:
    sections = sorted(HERE.glob("bench_*.py"))
    if argv:
        sections = [s for s in sections if any(w in s.stem for w in argv)]
    results: dict[str, list[tuple[str, str, str]]] = {}
    for path in sections:
        name = path.stem.removeprefix("bench_")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        assert spec and spec.loader
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        t0 = time.perf_counter()
        print(f"== {name}", flush=True)
        rows = mod.run()
        for metric, value, note in rows:
            print(f"  {metric:<55} {value:>14}   {note}", flush=True)
        print(f"  ({time.perf_counter() - t0:.1f} s)", flush=True)
        results[name] = rows
    out = ROOT / "out" / "bench.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
