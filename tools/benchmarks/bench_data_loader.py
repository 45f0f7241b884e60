"""Data loading: is the image-folder loader faster than the model eats? (issue 13)

The digits rendered as 32x32 PNG files (``python -m graphc.data.demo``), loaded the way
specs/train/digits_png.yaml trains on them (decode, RGB conversion, random-resized crop,
normalize; batches of 64 through the DataLoader pipeline of graphc/data/loader.py), against
the train step of that recipe's model (specs/cifar_simplecnn.yaml, eager, AdamW) on batches
of the same shape.  Goal: the loader with 2 workers delivers at least 3x the samples per
second the train step consumes, so data is never the bottleneck for the zoo's small specs.
Both are measured in the same process, one after the other; the step uses torch's default
threads, each loader worker one.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "specs" / "train" / "digits_png.yaml"
SPEC = ROOT / "specs" / "cifar_simplecnn.yaml"
BATCH = 64
BATCHES = 60  # per loader measurement (after one warm-up batch)
STEPS = 30


class _Where:
    def pos(self, *path: object) -> None:
        return None

    def where(self, *path: object) -> str:
        return "data"


def _source(folder: Path):  # type: ignore[no-untyped-def]
    from graphc.data import images
    from graphc.data.demo import render_digits

    root = render_digits(folder / "digits_png")
    recipe = yaml.safe_load(RECIPE.read_text())["train"]["data"]
    cfg = images.ImagesCfg.model_validate({**recipe["images"], "root": str(root)})
    return images.prepare(cfg, root, {"image": None}, tuple(recipe["split"]), 0, _Where()).train  # type: ignore[arg-type]


def _loader_rate(src, workers: int) -> float:  # type: ignore[no-untyped-def]
    """Samples per second of the training loader over BATCHES batches (first one excluded)."""
    import torch

    from graphc.data.loader import StepSampler, make_loader

    sampler = StepSampler(len(src), BATCH, 1, seed=0, start=0, stop=BATCHES + 1)
    it = iter(make_loader(src, sampler, {"image": torch.float32, "label": torch.long}, workers=workers, prefetch=4))
    next(it)  # workers started, first batch in
    t0 = time.perf_counter()
    n = sum(len(b["label"]) for b in it)
    return n / (time.perf_counter() - t0)


def _step_rate() -> float:
    """Samples per second the recipe's model trains at (median of single-step times)."""
    import torch
    import torch.nn.functional as F

    import graphc

    gm = graphc.build(str(SPEC), seed=0)
    opt = torch.optim.AdamW(gm.parameters(), lr=1e-3)
    x, y = torch.randn(BATCH, 3, 32, 32), torch.randint(0, 10, (BATCH,))
    times = []
    for i in range(STEPS + 3):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(gm(x), y).backward()
        opt.step()
        if i >= 3:
            times.append(time.perf_counter() - t0)
    return BATCH / statistics.median(times)


def run() -> list[tuple[str, str, str]]:
    with tempfile.TemporaryDirectory(prefix="graphc-bench-data-") as tmp:
        src = _source(Path(tmp))
        step = _step_rate()
        w0 = _loader_rate(src, 0)
        w2 = _loader_rate(src, 2)
    return [
        ("digits CNN train step (cifar_simplecnn, batch 64, eager)", f"{step:,.0f} samples/s", "what training consumes"),
        ("image-folder loader, 0 workers (digits PNG 32x32, rrc+normalize)", f"{w0:,.0f} samples/s", ""),
        ("image-folder loader, 2 workers", f"{w2:,.0f} samples/s", ""),
        ("loader (2 workers) / train step", f"{w2 / step:.1f}x", "goal >= 3x"),
    ]


if __name__ == "__main__":
    for row in run():
        print(*row, sep="  |  ")
