"""One trial = one normal ``graphc train`` run, in a child process of the worker.

A child process keeps a crash (or a pruner's kill) of one trial from taking the study down.
Children are forked from a multiprocessing *forkserver* that has imported torch and the
training loop once, so a trial starts in milliseconds instead of paying torch's import each
time.  The worker follows the run through its ``metrics.csv`` (rewritten at every
evaluation) and hands each new row to a ``report`` callback, which may stop the run.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_PRELOAD = ["graphc.sweep.preload"]
_POLL_S = 0.2


@dataclass
class TrialRun:
    """How a trial's training ended."""

    exit_code: int
    stopped: bool  # the report callback asked to stop (pruned)
    rows: list[dict[str, float]]
    results: dict[str, Any] | None
    error: str | None


def _context() -> Any:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(_PRELOAD)
    return ctx


def set_text(value: Any) -> str:
    """A ``--set`` value as text that graphc parses back to the same value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def set_args(values: dict[str, Any]) -> list[str]:
    return [f"{k}={set_text(v)}" for k, v in values.items()]


def _die_with_parent() -> None:
    """Linux: the kernel kills this process when its parent, the forkserver, dies; the
    forkserver exits when its worker does (kill -9 included), so no trial outlives its worker."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _child(spec: str, run_dir: str, config: str | None, overrides: list[str], threads: int) -> None:
    """The trial process: train quietly, output into RUN_DIR/train.log, errors into error.txt."""
    _die_with_parent()
    if os.getppid() == 1:
        os._exit(137)  # the forkserver (and so the worker) died before the line above
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    log = os.open(os.path.join(run_dir, "train.log"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    import torch

    from graphc.errors import GraphcError
    from graphc.io import write_text
    from graphc.train.loop import train

    torch.set_num_threads(threads)
    try:
        # force: the folder is this trial's own (new trial number), made above for train.log
        train(spec, run_dir, config=config, overrides=overrides, quiet=True, force=True)
    except GraphcError as e:
        write_text(os.path.join(run_dir, "error.txt"), str(e) + "\n")
        os._exit(1)
    except BaseException as e:  # a bug, not bad input: keep the traceback in train.log
        import traceback

        traceback.print_exc()
        write_text(os.path.join(run_dir, "error.txt"), f"{type(e).__name__}: {e}\n")
        os._exit(2)
    sys.stdout.flush()
    os._exit(0)


def read_metrics(path: Path) -> list[dict[str, float]]:
    """Rows of a metrics.csv (empty when it does not exist yet)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return []
    rows = []
    for r in csv.DictReader(text.splitlines()):
        try:
            rows.append({k: float(v) if v not in ("", None) else math.nan for k, v in r.items()})
        except ValueError:
            continue
    return rows


def run_trial(
    spec: str,
    run_dir: Path,
    config: str | None,
    overrides: list[str],
    report: Callable[[dict[str, float]], bool],
    threads: int = 1,
) -> TrialRun:
    """Train in a child process; ``report(row)`` is called per new metrics row and returns
    True to stop (kill) the run."""
    proc = _context().Process(target=_child, args=(spec, str(run_dir), config, overrides, threads), daemon=True)
    proc.start()
    seen: list[dict[str, float]] = []
    stopped = False
    try:
        while True:
            proc.join(_POLL_S)
            alive = proc.is_alive()
            rows = read_metrics(run_dir / "metrics.csv")
            for row in rows[len(seen):]:
                seen.append(row)
                if report(row):
                    stopped = True
                    break
            if stopped or not alive:
                break
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()
    return TrialRun(proc.exitcode or 0, stopped, seen, _json(run_dir / "results.json"), _text(run_dir / "error.txt"))


def _json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None
