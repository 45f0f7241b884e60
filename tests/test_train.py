"""graphc train: recipe validation, data, metrics.csv, faults, checkpoints and exact resume."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, run_cli

MLP = """\
graphc: 1
name: tiny
params: {hidden: 16}
inputs:
  x: {shape: [B, 4], example: {B: 4}}
nodes:
  fc1: {op: linear, in: x, out: "${hidden}"}
  act: {op: relu}
  fc2: {op: linear, out: 3}
outputs: {logits: fc2}
train:
  data: {dataset: iris}
  loss: {type: cross_entropy, output: logits, target: label}
  metrics: [accuracy, f1, {type: top_k, k: 2}]
  optimizer: {type: adamw, lr: 0.02}
  steps: 30
  batch_size: 16
  eval_every: 10
"""


def write(tmp: Path, text: str, name: str = "spec.yaml") -> Path:
    p = tmp / name
    p.write_text(text)
    return p


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_trains_iris_and_writes_run_dir(tmp_path: Path) -> None:
    spec = write(tmp_path, MLP)
    r = run_cli("train", str(spec), "-o", str(tmp_path / "run"), "-q")
    assert r.code == 0, r.err
    run = tmp_path / "run"
    rows = read_csv(run / "metrics.csv")
    assert list(rows[0]) == ["epoch", "step", "lr", "train_loss", "val_loss", "val_accuracy", "val_f1", "val_top2"]
    assert [int(r["step"]) for r in rows] == [10, 20, 30]
    assert float(rows[-1]["val_accuracy"]) >= 0.8
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "test_accuracy" in r.out
    # best.safetensors loads into a fresh model with the export engineer's loader
    import graphc
    from graphc.weights.tensors import load_weights

    gm = graphc.build(str(spec), seed=123)
    load_weights(gm, run / "best.safetensors")


def test_recipe_error_is_positioned(tmp_path: Path) -> None:
    spec = write(tmp_path, MLP.replace("lr: 0.02", "lr: -1").replace("batch_size: 16", "batch_sise: 16"))
    r = run_cli("train", str(spec), "-o", str(tmp_path / "run"))
    assert r.code == 1
    assert f"{spec}:15:32: error: train.optimizer.lr: " in r.err and "greater than 0" in r.err
    assert "train.batch_sise: unknown field 'batch_sise' (did you mean 'batch_size'?)" in r.err
    assert "Traceback" not in r.err


def test_separate_recipe_file_and_set_override(tmp_path: Path) -> None:
    spec = write(tmp_path, MLP.split("train:")[0])
    recipe = write(tmp_path, "train:\n" + MLP.split("train:\n")[1], "recipe.yaml")
    r = run_cli("train", str(spec), "--config", str(recipe), "-o", str(tmp_path / "run"), "-q", "--set", "train.steps=20", "--set", "hidden=8")
    assert r.code == 0, r.err
    assert [int(r["step"]) for r in read_csv(tmp_path / "run" / "metrics.csv")] == [10, 20]


def test_missing_recipe_and_unknown_output(tmp_path: Path) -> None:
    spec = write(tmp_path, MLP.split("train:")[0])
    r = run_cli("train", str(spec), "-o", str(tmp_path / "run"))
    assert r.code == 1 and "no training recipe" in r.err
    spec = write(tmp_path, MLP.replace("output: logits", "output: logit"))
    r = run_cli("train", str(spec), "-o", str(tmp_path / "run"))
    assert r.code == 1 and "train.loss.output: the spec has no output 'logit' (outputs: logits)" in r.err


def test_user_files_shape_mismatch_missing_and_corrupt(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "good.npz", x=rng.standard_normal((64, 4)).astype(np.float32), label=rng.integers(0, 3, 64))
    np.savez(tmp_path / "bad.npz", x=rng.standard_normal((64, 5)).astype(np.float32), label=rng.integers(0, 3, 64))
    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04 not really a zip")
    ok = write(tmp_path, MLP.replace("dataset: iris", "dataset: good.npz"))
    assert run_cli("train", str(ok), "-o", str(tmp_path / "r0"), "-q").code == 0
    bad = write(tmp_path, MLP.replace("dataset: iris", "dataset: bad.npz"))
    r = run_cli("train", str(bad), "-o", str(tmp_path / "r1"))
    assert r.code == 1
    assert "data for input 'x' has shape [64, 5] float32 but the spec declares [B, 4] float32" in r.err
    assert r.err.count("\n") == 2  # one error line + the count
    missing = write(tmp_path, MLP.replace("dataset: iris", "dataset: nowhere.npz"))
    r = run_cli("train", str(missing), "-o", str(tmp_path / "r2"))
    assert r.code == 1 and "data file not found" in r.err and f"{missing}:12:" in r.err
    corrupt = write(tmp_path, MLP.replace("dataset: iris", "dataset: corrupt.npz"))
    r = run_cli("train", str(corrupt), "-o", str(tmp_path / "r3"))
    assert r.code == 1 and "cannot read data file" in r.err and "Traceback" not in r.err


def test_csv_columns_become_the_input(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 4))
    lines = ["a,b,c,d,label"] + [",".join(f"{v:.4f}" for v in row) + f",{i % 3}" for i, row in enumerate(x)]
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    spec = write(tmp_path, MLP.replace("dataset: iris", "dataset: t.csv"))
    r = run_cli("train", str(spec), "-o", str(tmp_path / "run"), "-q")
    assert r.code == 0, r.err


def test_stdlib_chars_is_deterministic_bytes() -> None:
    from graphc.train.data import stdlib_corpus

    a, b = stdlib_corpus(50_000), stdlib_corpus(50_000)
    assert a == b and len(a) == 50_000
    assert max(a) < 256


def test_no_weight_decay_on_norms_biases_embeddings() -> None:
    import graphc
    from graphc.train.optim import decay_groups

    spec = ROOT / "specs" / "gpt_mini.yaml"
    tg = graphc.check(str(spec), ["layers=1", "d=32", "heads=2", "ctx=16"])
    gm = graphc.build(tg, seed=0)
    decay, no_decay = decay_groups(gm, tg, 0.1)
    names = {id(p): n for n, p in gm.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert not any(n.startswith(("tok.", "pos.")) or n.endswith(".bias") or ".ln" in n for n in decayed)
    assert any(n.endswith("fc.weight") for n in decayed)


def test_nan_losses_skipped_then_stop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import graphc.train.loop as loop

    real = loop.total_loss
    calls = {"n": 0}

    def sometimes_nan(*a: object) -> torch.Tensor:
        calls["n"] += 1
        loss = real(*a)  # type: ignore[arg-type]
        return loss * float("nan") if calls["n"] in (3, 4) else loss

    monkeypatch.setattr(loop, "total_loss", sometimes_nan)
    spec = write(tmp_path, MLP)
    r = run_cli("train", str(spec), "-o", str(tmp_path / "run"))
    assert r.code == 0, r.err  # two non-finite steps: skipped, training finished
    assert "step 2: loss is nan; step skipped (1/10)" in r.err

    monkeypatch.setattr(loop, "total_loss", lambda *a: real(*a) * float("nan"))  # type: ignore[arg-type]
    r = run_cli("train", str(spec), "-o", str(tmp_path / "run2"), "--set", "train.max_bad_steps=3")
    assert r.code == 1
    assert "step 3: loss is nan (4 non-finite losses, limit train.max_bad_steps=3); stopped" in r.err
    assert "Traceback" not in r.err
    assert not (tmp_path / "run2" / "checkpoints").exists()


def test_non_finite_weights_are_never_checkpointed(tmp_path: Path) -> None:
    from graphc.errors import TrainError
    from graphc.train.checkpoint import list_checkpoints, save_checkpoint

    model = torch.nn.Linear(2, 2)
    save_checkpoint(tmp_path, 1, model, {"step": 1})
    with torch.no_grad():
        model.weight[0, 0] = float("inf")
    with pytest.raises(TrainError, match="step 2: parameter 'weight' is not finite"):
        save_checkpoint(tmp_path, 2, model, {"step": 2})
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000001"]


def test_truncated_checkpoint_refused_previous_loads(tmp_path: Path) -> None:
    spec = write(tmp_path, MLP.replace("steps: 30", "steps: 20"))
    run = tmp_path / "run"
    assert run_cli("train", str(spec), "-o", str(run), "-q").code == 0
    from graphc.errors import WeightsError
    from graphc.train.checkpoint import list_checkpoints, load_checkpoint

    first, last = list_checkpoints(run / "checkpoints")
    weights = last / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-7])
    import graphc

    gm = graphc.build(str(spec), seed=0)
    with pytest.raises(WeightsError, match=r"model.safetensors is corrupt or truncated \(checksum mismatch\)"):
        load_checkpoint(last, gm)
    assert load_checkpoint(first, gm)["step"] == 10
    r = run_cli("train", str(spec), "-o", str(run), "--resume", "--set", "train.steps=30")
    assert r.code == 0, r.err
    assert "step_00000020: checkpoint file model.safetensors is corrupt or truncated (checksum mismatch); skipped" in r.err
    assert "resumed from" in r.err and "(step 10)" in r.err


RESUME_SPEC = MLP.replace("dataset: iris", "dataset: digits").replace("shape: [B, 4]", "shape: [B, 64]").replace(
    "out: 3", "out: 10").replace("hidden: 16", "hidden: 256").replace("steps: 30", "steps: 240").replace(
    "eval_every: 10", "eval_every: 20").replace("batch_size: 16", "batch_size: 128").replace(
    "fc2:", "drop: {op: dropout, p: 0.2}\n  fc2:")


@pytest.mark.slow
def test_kill_9_then_resume_matches_uninterrupted(tmp_path: Path) -> None:
    """SIGKILL mid-run after a checkpoint exists; --resume ends with identical metrics."""
    spec = write(tmp_path, RESUME_SPEC)
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert run_cli("train", str(spec), "-o", str(full), "-q").code == 0
    cmd = [sys.executable, "-m", "graphc", "train", str(spec), "-o", str(killed), "-q"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list((killed / "checkpoints").glob("step_*/manifest.json")):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    rows_before = read_csv(killed / "metrics.csv")
    assert 0 < len(rows_before) < 12
    r = run_cli("train", str(spec), "-o", str(killed), "--resume")
    assert r.code == 0, r.err
    assert read_csv(killed / "metrics.csv") == read_csv(full / "metrics.csv")
    assert (killed / "results.json").read_text() == (full / "results.json").read_text()


def test_schedule_warmup_cosine_and_plateau() -> None:
    from graphc.train.optim import Schedule
    from graphc.train.recipe import ScheduleCfg

    s = Schedule(ScheduleCfg(type="cosine", warmup=10, min_lr=0.1), base_lr=1.0, total_steps=110)
    assert s.factor(0) == pytest.approx(0.1) and s.factor(9) == pytest.approx(1.0)
    assert s.factor(60) == pytest.approx(0.55) and s.factor(110) == pytest.approx(0.1)
    p = Schedule(ScheduleCfg(type="plateau", patience=1, gamma=0.5), base_lr=1.0, total_steps=10)
    for loss in (1.0, 1.0, 1.0):
        p.observe(loss)
    assert p.factor(5) == 0.5


def test_metrics_accumulate_exactly() -> None:
    from graphc.train.objectives import MetricState
    from graphc.train.recipe import MetricCfg

    cfgs = [MetricCfg(type=t, output="y", target="t") for t in ("accuracy", "f1", "perplexity")]
    ms = MetricState(cfgs)
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [2.0, 0.0]])
    target = torch.tensor([0, 1, 1, 0])
    ms.update({"y": logits[:2]}, {"t": target[:2]})
    ms.update({"y": logits[2:]}, {"t": target[2:]})
    v = ms.values()
    assert v["accuracy"] == 0.75
    assert v["f1"] == pytest.approx((0.8 + 2 / 3) / 2)
    assert v["perplexity"] == pytest.approx(float(torch.nn.functional.cross_entropy(logits, target).exp()))
