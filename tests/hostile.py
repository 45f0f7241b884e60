"""Harness for the hostile-input corpus: run ``graphc`` under a time and memory bound and
prove that nothing outside the named output changed.

Each case runs in its own process (``tests/guarded_main.py``), which imports graphc (and
torch when the command needs it) *before* the bound starts, then limits its address space to
what it already maps plus :data:`MEMORY_BOUND` and times only the command itself.  So the
bounds measure what graphc does with the bad input, not interpreter start-up on a busy CI box.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GUARD = Path(__file__).resolve().parent / "guarded_main.py"
TIME_BOUND = 5.0  # seconds for the command itself (after imports)
MEMORY_BOUND = 1 << 30  # bytes of address space on top of what the imports mapped
POSITIONED = re.compile(r"^(?:\S.*?:\d+:\d+|graphc): error: \S")


@dataclass
class Guarded:
    code: int
    out: str
    err: str
    seconds: float  # the command itself, measured inside the child
    timed_out: bool

    def error_lines(self) -> list[str]:
        return [ln for ln in self.err.splitlines() if POSITIONED.match(ln)]


def run_guarded(*args: str, cwd: str | Path | None = None, torch: bool = False, stdin: str | None = None,
                hard_timeout: float = 60.0) -> Guarded:
    """Run ``graphc ARGS`` in a bounded child process.

    ``torch=True`` imports torch before the bound starts (commands that build a model).
    ``hard_timeout`` only stops a hung child; the 5-second bound is checked by :func:`assert_clean`.
    """
    with tempfile.TemporaryDirectory() as side:
        report = Path(side) / "report.json"
        env = {**os.environ, "GRAPHC_GUARD_REPORT": str(report), "GRAPHC_GUARD_TORCH": "1" if torch else "0",
               "GRAPHC_GUARD_MEMORY": str(MEMORY_BOUND), "PYTHONPATH": str(ROOT)}
        try:
            proc = subprocess.run([sys.executable, str(GUARD), *args], cwd=cwd or ROOT, env=env, capture_output=True,
                                  text=True, timeout=hard_timeout, input=stdin)
        except subprocess.TimeoutExpired as e:
            return Guarded(-1, _text(e.stdout), _text(e.stderr), hard_timeout, True)
        seconds = json.loads(report.read_text())["seconds"] if report.exists() else float("nan")
        return Guarded(proc.returncode, proc.stdout, proc.stderr, seconds, False)


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode(errors="replace")


def assert_clean(r: Guarded, codes: tuple[int, ...] = (1,), positioned: bool = True, contains: str | None = None) -> None:
    """Exit ``codes``, no traceback, within the time bound, and (``positioned``) at least one
    ``FILE:LINE:COL: error:`` (or ``graphc: error:``) line; ``contains`` must appear in stderr."""
    where = f"\n--- stdout\n{r.out[-2000:]}\n--- stderr\n{r.err[-3000:]}"
    assert not r.timed_out, f"hung past {r.seconds} s{where}"
    assert r.code in codes, f"exit {r.code}, expected {codes}{where}"
    assert "Traceback" not in r.err and "Traceback" not in r.out, f"traceback{where}"
    assert r.seconds < TIME_BOUND, f"took {r.seconds:.1f} s (bound {TIME_BOUND} s){where}"
    if positioned:
        assert r.error_lines(), f"no positioned error line{where}"
    if contains is not None:
        assert contains in r.err, f"{contains!r} not in stderr{where}"


def snapshot(folder: str | Path) -> dict[str, tuple[str, int, str]]:
    """Every entry under ``folder`` (not following links): kind, mode and content hash."""
    out: dict[str, tuple[str, int, str]] = {}
    folder = Path(folder)
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        for name in [*dirnames, *filenames]:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = str(p.relative_to(folder))
            if stat.S_ISREG(st.st_mode):
                out[rel] = ("file", st.st_mode, hashlib.sha256(p.read_bytes()).hexdigest())
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", st.st_mode, "")
            elif stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", st.st_mode, os.readlink(p))
            else:
                out[rel] = ("special", st.st_mode, str(st.st_rdev))
    return out


def assert_unchanged(before: dict[str, tuple[str, int, str]], after: dict[str, tuple[str, int, str]],
                     allowed: tuple[str, ...] = ()) -> None:
    """Nothing in ``before``/``after`` differs except entries at or under the ``allowed`` paths."""

    def free(rel: str) -> bool:
        return any(rel == a or rel.startswith(a.rstrip("/") + "/") for a in allowed)

    changed = sorted(k for k in before.keys() | after.keys() if not free(k) and before.get(k) != after.get(k))
    assert not changed, f"changed outside the named output: {changed[:20]}"
