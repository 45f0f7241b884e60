"""The loading pipeline: sampler purity and sharding, workers, run-folder records, exact resume."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, run_cli

from graphc.data.loader import ArraySource, InOrder, StepSampler, epoch_order, make_loader, shard


def _keys(sampler: StepSampler) -> list[tuple[int, list[int]]]:
    return [(k.epoch, k.indices.tolist()) for k in sampler]


def test_batch_order_is_a_pure_function_of_seed_epoch_step() -> None:
    full = _keys(StepSampler(50, 8, 2, seed=3, start=0, stop=9))
    assert len(full) == 18  # 9 steps x 2 micro-batches
    steps_per_epoch = (50 // 8) // 2
    assert [e for e, _ in full] == [s // steps_per_epoch for s in range(9) for _ in range(2)]
    # resuming at step 4 sees exactly the rest
    assert _keys(StepSampler(50, 8, 2, seed=3, start=4, stop=9)) == full[8:]
    # each micro-batch is a slice of its epoch's permutation: no example twice in an epoch
    epoch0 = [i for e, b in full if e == 0 for i in b]
    assert len(epoch0) == len(set(epoch0)) == steps_per_epoch * 16
    assert full[0][1] == epoch_order(50, 3, 0)[:8].tolist()
    assert _keys(StepSampler(50, 8, 2, seed=4, start=0, stop=9)) != full


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_shard_each_global_batch_exactly(world: int) -> None:
    whole = _keys(StepSampler(64, 10, 1, seed=0, start=0, stop=5))
    parts = [_keys(StepSampler(64, 10, 1, seed=0, start=0, stop=5, rank=r, world=world)) for r in range(world)]
    for j, (epoch, batch) in enumerate(whole):
        pieces = [p[j][1] for p in parts]
        assert all(p[j][0] == epoch for p in parts)
        assert [i for p in pieces for i in p] == batch  # disjoint, in order, together exactly the global batch
        assert max(map(len, pieces)) - min(map(len, pieces)) <= 1
    assert shard(torch.arange(6), 1, 2).tolist() == [3, 4, 5]
    with pytest.raises(ValueError, match="rank 2 is not in"):
        StepSampler(64, 10, 1, seed=0, start=0, stop=5, rank=2, world=2)


def test_workers_give_the_same_batches_as_the_main_process(tmp_path: Path) -> None:
    from PIL import Image

    from graphc.data import images as gi

    for c in ("a", "b"):
        for i in range(6):
            p = tmp_path / "imgs" / c / f"{i}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.random.default_rng(10 * i + len(c)).integers(0, 255, (10, 10), dtype=np.uint8), mode="L").save(p)
    cfg = gi.ImagesCfg.model_validate({"root": str(tmp_path / "imgs"), "color": "grayscale", "train_transforms": [
        {"type": "random_resized_crop", "size": 6}, {"type": "horizontal_flip"}]})

    class Where:
        def pos(self, *path: object) -> object:
            return None

        def where(self, *path: object) -> str:
            return "data"

    src = gi.prepare(cfg, tmp_path, {"image": None}, (1.0, 0.0, 0.0), 5, Where()).train  # type: ignore[arg-type]
    dtypes = {"image": torch.float32, "label": torch.long}
    runs = [list(make_loader(src, StepSampler(len(src), 4, 1, 5, 0, 7), dtypes, workers=w, prefetch=2)) for w in (0, 2)]
    assert len(runs[0]) == 7 and runs[0][0]["image"].shape == (4, 1, 6, 6)
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    assert not torch.equal(runs[0][0]["image"], runs[0][3]["image"])  # epochs differ (3 steps per epoch)


@pytest.mark.parametrize("workers", [0, 2])
def test_in_memory_fast_path_and_eval_order(workers: int) -> None:
    src = ArraySource({"x": torch.arange(10.0)[:, None], "label": torch.arange(10) % 3})
    batches = list(make_loader(src, InOrder(10, 4), {}, workers=workers))
    assert [b["x"].shape[0] for b in batches] == [4, 4, 2]
    assert torch.equal(torch.cat([b["label"] for b in batches]), src.tensors["label"])
    assert len(InOrder(10, 4, limit=2)) == 2


NPZ_SPEC = """\
graphc: 1
name: npz_mlp
inputs:
  x: {shape: [B, 4], example: {B: 4}}
nodes:
  fc1: {op: linear, in: x, out: 8}
  act: {op: relu}
  fc2: {op: linear, out: 3}
outputs: {logits: fc2}
train:
  data: {dataset: data.npz}
  loss: {type: cross_entropy, output: logits, target: label}
  metrics: [accuracy]
  steps: 10
  batch_size: 16
  eval_every: 5
"""


def test_run_folder_records_and_changed_data_warns_on_resume(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "data.npz", x=rng.standard_normal((120, 4)).astype(np.float32), label=rng.integers(0, 3, 120))
    spec = tmp_path / "spec.yaml"
    spec.write_text(NPZ_SPEC)
    run = tmp_path / "run"
    r = run_cli("train", str(spec), "-o", str(run), "--set", "train.optimizer.lr=0.01")
    assert r.code == 0, r.err
    assert re.search(r"^step 5/10 epoch 1 .* samples/s  data \d+%  ETA", r.err, re.M), r.err  # share of time waiting for data
    cfg = (run / "config.yaml").read_text()
    assert "train.optimizer.lr=0.01" in cfg and "lr: 0.01" in cfg
    # config.yaml is itself a recipe: the same run again from the run folder's own files
    from graphc.spec.load import load_spec
    from graphc.train.recipe import load_recipe

    again = load_recipe(load_spec(run / "spec.yaml"), run / "config.yaml")
    assert again.recipe.optimizer.lr == 0.01 and again.recipe.data.dataset == str((tmp_path / "data.npz").resolve())
    fp = json.loads((run / "data.json").read_text())
    assert fp["kind"] == "dataset" and fp["entries"][0]["size"] == (tmp_path / "data.npz").stat().st_size
    manifest = json.loads((run / "manifest.json").read_text())
    assert {"config.yaml", "spec.yaml", "data.json"} <= set(manifest["files"])
    r = run_cli("train", str(spec), "-o", str(run), "--resume", "--set", "train.steps=15")
    assert r.code == 0 and "data changed" not in r.err, r.err
    np.savez(tmp_path / "data.npz", x=rng.standard_normal((120, 4)).astype(np.float32), label=rng.integers(0, 3, 120))
    r = run_cli("train", str(spec), "-o", str(run), "--resume", "--set", "train.steps=20")
    assert r.code == 0, r.err
    assert f"warning: {run / 'data.json'}: the data changed since this run started" in r.err
    assert json.loads((run / "data.json").read_text()) == fp  # the first fingerprint is kept


IMAGE_SPEC = """\
graphc: 1
name: img_resume
inputs:
  image: {shape: [B, 1, 8, 8], example: {B: 4}}
nodes:
  conv: {op: conv2d, in: image, out: 8, kernel: 3, padding: 1}
  act: {op: relu}
  flat: {op: flatten}
  drop: {op: dropout, p: 0.2}
  fc: {op: linear, out: 10}
outputs: {logits: fc}
train:
  data:
    images:
      root: digits
      color: grayscale
      train_transforms:
        - {type: random_resized_crop, size: 8, scale: [0.7, 1.0]}
        - {type: normalize, mean: [0.5], std: [0.5]}
      eval_transforms: [{type: normalize, mean: [0.5], std: [0.5]}]
    split: [0.5, 0.25, 0.25]
    workers: 2
  loss: {type: cross_entropy, output: logits, target: label}
  metrics: [accuracy]
  steps: 56
  batch_size: 32
  eval_every: 7
"""


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_kill_9_then_resume_matches_with_workers_on_an_image_folder(tmp_path: Path) -> None:
    """SIGKILL after a checkpoint; --resume with 2 workers and random crops ends identical."""
    from graphc.data.demo import render_digits

    render_digits(tmp_path / "digits", size=8)
    spec = tmp_path / "spec.yaml"
    spec.write_text(IMAGE_SPEC)
    full, killed = tmp_path / "full", tmp_path / "killed"
    r = run_cli("train", str(spec), "-o", str(full), "-q")
    assert r.code == 0, r.err
    # the killed run's threads as this process's (the uninterrupted and the resumed runs are in
    # process): a different thread count sums in another order and moves the 8th digit
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen([sys.executable, "-m", "graphc", "train", str(spec), "-o", str(killed), "-q"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list((killed / "checkpoints").glob("step_*/manifest.json")):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert 0 < len(_csv(killed / "metrics.csv")) < 8
    r = run_cli("train", str(spec), "-o", str(killed), "--resume")
    assert r.code == 0, r.err
    assert _csv(killed / "metrics.csv") == _csv(full / "metrics.csv")
    assert (killed / "results.json").read_text() == (full / "results.json").read_text()
    assert (killed / "classes.json").read_text() == (full / "classes.json").read_text()


@pytest.mark.parametrize("workers", [0, 2])
def test_a_file_broken_after_preparing_is_one_clean_error(tmp_path: Path, workers: int) -> None:
    from PIL import Image

    from graphc.data import images as gi
    from graphc.errors import DataError

    for c in ("a", "b"):
        for i in range(3):
            p = tmp_path / "imgs" / c / f"{i}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.new("L", (4, 4), 30 * i).save(p)

    class Where:
        def pos(self, *path: object) -> object:
            return None

        def where(self, *path: object) -> str:
            return "data"

    cfg = gi.ImagesCfg.model_validate({"root": str(tmp_path / "imgs"), "color": "grayscale"})
    src = gi.prepare(cfg, tmp_path, {"image": None}, (1.0, 0.0, 0.0), 0, Where()).train  # type: ignore[arg-type]
    for f in src.files:  # type: ignore[attr-defined]
        Path(f).write_bytes(b"gone")
    with pytest.raises(DataError) as e:
        list(make_loader(src, InOrder(len(src), 3), {}, workers=workers))
    assert "cannot decode image: not a format Pillow recognises" in str(e.value) and "Traceback" not in str(e.value)
