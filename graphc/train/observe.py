"""What a run shows and leaves behind: progress, metrics.csv, curves PNG, TensorBoard.

The metrics history lives in the trainer's state (and so in every checkpoint); metrics.csv
is rewritten from it atomically at each evaluation, which makes a resumed run's file
identical to an uninterrupted one's, with no rows from after the checkpoint it resumed from.
"""

from __future__ import annotations

import csv
import io
import sys
import time
from pathlib import Path
from typing import Any

from graphc.io import write_text, write_with


def write_metrics_csv(path: Path, history: list[dict[str, float]], columns: list[str]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for row in history:
        w.writerow({k: _fmt(row.get(k)) for k in columns})
    write_text(path, buf.getvalue())


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float) and not v.is_integer():
        return f"{v:.6g}"
    return str(int(v)) if isinstance(v, float) else str(v)


def plot_curves(path: Path, history: list[dict[str, float]], columns: list[str]) -> None:
    """Loss curves on the left, validation metrics on the right (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in history]
    metrics = [c for c in columns if c.startswith("val_") and c != "val_loss"]
    fig, axes = plt.subplots(1, 2 if metrics else 1, figsize=(11 if metrics else 6, 4), squeeze=False)
    ax = axes[0][0]
    for c in ("train_loss", "val_loss"):
        ax.plot(steps, [r.get(c, float("nan")) for r in history], label=c, marker=".")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    if metrics:
        ax = axes[0][1]
        for c in metrics:
            ax.plot(steps, [r.get(c, float("nan")) for r in history], label=c, marker=".")
        ax.set_xlabel("step")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


class TensorBoard:
    """Scalars to ``RUN_DIR/tb`` when tensorboard is installed; a no-op otherwise."""

    def __init__(self, run_dir: Path) -> None:
        self.writer: Any = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tb"))
        except Exception:  # tensorboard missing or broken: logging is optional
            self.writer = None

    def log(self, row: dict[str, float], step: int) -> None:
        if self.writer is None:
            return
        for k, v in row.items():
            if k not in ("step", "epoch") and v is not None:
                self.writer.add_scalar(k, v, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class Progress:
    """A rich progress bar (loss, samples/s, data wait, ETA) on a terminal; plain lines otherwise.

    ``data N%`` is the share of the wall time the training loop spent waiting for a batch:
    near 0 the loader keeps up; a high share says to raise ``data.workers``.
    """

    def __init__(self, total: int, start: int, quiet: bool = False) -> None:
        self.total, self.start = total, start
        self.t0 = time.perf_counter()
        self.samples = 0
        self.wait = 0.0  # seconds spent waiting for data since this run (or resume) started
        self.tty = sys.stderr.isatty() and not quiet
        self.quiet = quiet
        self.bar: Any = None
        if self.tty:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(), transient=False,
            )
            self.task = self.bar.add_task("train", total=total, completed=start, info="")
            self.bar.start()

    def rate(self) -> float:
        return self.samples / max(time.perf_counter() - self.t0, 1e-9)

    def data_share(self) -> float:
        """The fraction of the elapsed time spent waiting for batches."""
        return min(1.0, self.wait / max(time.perf_counter() - self.t0, 1e-9))

    def step(self, step: int, loss: float, samples: int, wait: float = 0.0) -> None:
        """Step ``step`` done; ``wait``: the total seconds waited for data so far."""
        self.samples += samples
        self.wait = wait
        if self.bar is not None:
            self.bar.update(self.task, completed=step,
                            info=f"loss {loss:.4f}  {self.rate():,.0f} samples/s  data {self.data_share():.0%}")

    def log(self, row: dict[str, float]) -> None:
        done = row["step"] - self.start
        eta = (self.total - row["step"]) * (time.perf_counter() - self.t0) / max(done, 1)
        parts = [f"{k} {row[k]:.4g}" for k in row if k not in ("step", "epoch", "lr") and row[k] is not None]
        line = f"step {int(row['step'])}/{self.total} epoch {int(row['epoch'])}  " + "  ".join(parts) + f"  {self.rate():,.0f} samples/s  data {self.data_share():.0%}  ETA {eta:.0f}s"
        if self.bar is not None:
            self.bar.console.print(line)
        elif not self.quiet:
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
