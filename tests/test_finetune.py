"""Fine-tuning a pretrained-style checkpoint: a replaced head, discriminative learning rates,
gradual unfreezing, checked step by step and across a ``kill -9`` + ``--resume``.

The "pretrained" checkpoint is the same spec with a 5-class head (the 1000 -> 10 classes
edit, small); a weight map drops its head, so ``plan`` shows the new head as newly
initialised and ``--init --partial`` loads the rest.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, run_cli

import graphc
import graphc.weights as gw

SPEC = """\
graphc: 1
name: ft
params: {classes: 10}
inputs:
  x: {shape: [B, 64], example: {B: 4}}
blocks:
  layer:
    params: {d: int}
    inputs: [x]
    nodes:
      fc: {op: linear, in: x, out: "${d}"}
      act: {op: relu}
    outputs: [act]
nodes:
  body: {block: layer, in: x, repeat: 2, d: 32}
  head: {op: linear, out: "${classes}"}
outputs: {logits: head}
train:
  data: {dataset: digits}
  loss: {type: cross_entropy, output: logits, target: label}
  optimizer: {type: adamw, lr: 0.01, weight_decay: 0.01}
  steps: 120
  batch_size: 64
  eval_every: 10
  param_groups:
    - {match: "body.*", lr_scale: 0.1}
    - {match: "head.*", lr_scale: 1.0, weight_decay: 0.0}
  unfreeze:
    - {at_step: 60, match: "body.1.*"}
"""
DROP_HEAD = """graphc-weights: 1
spec: ft
rules:
  - {from: "head.{p}", drop: true, doc: the pretrained head (5 classes) is replaced}
"""
UNFREEZE_AT = 60


@pytest.fixture
def setup(tmp_path: Path) -> Path:
    (tmp_path / "ft.yaml").write_text(SPEC)
    (tmp_path / "drop_head.yaml").write_text(DROP_HEAD)
    pre = graphc.build(graphc.load_spec(tmp_path / "ft.yaml", {"classes": 5}), seed=123)
    from graphc.export.weights import save_weights

    save_weights(pre, tmp_path / "pretrained.safetensors")
    return tmp_path


def _trainer(tmp: Path, run: str) -> object:
    from graphc.train.loop import Trainer
    from graphc.train.recipe import load_recipe

    spec = graphc.load_spec(tmp / "ft.yaml")
    source = gw.WeightSource(tmp / "pretrained.safetensors", tmp / "drop_head.yaml", partial=True)
    return Trainer(graphc.check(spec), load_recipe(spec), tmp / run, init=source, quiet=True)  # type: ignore[arg-type]


def test_plan_shows_the_replaced_head_as_new(setup: Path) -> None:
    p = gw.plan(setup / "ft.yaml", setup / "pretrained.safetensors", map=setup / "drop_head.yaml")
    status = {r.name: r.status for r in p.rows if r.status != "dropped"}
    assert status["head.weight"] == status["head.bias"] == "new"
    assert status["body.0.fc.weight"] == status["body.1.fc.bias"] == "carried"
    assert sorted(p.names("dropped")) == ["head.bias", "head.weight"]
    with pytest.raises(graphc.errors.WeightsError, match="newly initialised"):
        gw.require(p, partial=False)


def test_groups_lr_and_unfreezing_step_by_step(setup: Path) -> None:
    t = _trainer(setup, "run")
    pre = graphc.build(graphc.load_spec(setup / "ft.yaml", {"classes": 5}), seed=123).state_dict()
    gm = t.gm  # type: ignore[attr-defined]
    for k in ("body.0.fc.weight", "body.1.fc.bias"):
        assert torch.equal(gm.state_dict()[k], pre[k]), "the backbone starts from the checkpoint"
    assert t.init_plan.to_json()["counts"]["new"] == 2  # type: ignore[attr-defined]  # written to the run folder once run() claims it
    groups = {g["name"]: g for g in t.opt.param_groups}  # type: ignore[attr-defined]
    assert set(groups) >= {"body.*", "body.* (no decay)", "body.* (frozen until step 60)", "head.*"}
    assert groups["head.*"]["weight_decay"] == 0.0 and groups["body.*"]["weight_decay"] == 0.01
    body1 = [p for n, p in gm.named_parameters() if n.startswith("body.1.")]
    while t.step < 80:  # type: ignore[attr-defined]
        before = [p.detach().clone() for p in body1]
        t.train_step()  # type: ignore[attr-defined]
        step = t.step  # type: ignore[attr-defined]
        lrs = {g["name"]: g["lr"] for g in t.opt.param_groups}  # type: ignore[attr-defined]
        assert lrs["head.*"] == pytest.approx(0.01)
        assert lrs["body.*"] == lrs["body.* (no decay)"] == pytest.approx(0.001), "backbone at 0.1x the head's lr"
        frozen = step < UNFREEZE_AT
        assert all(p.requires_grad is not frozen for p in body1), step
        moved = any(not torch.equal(a, p) for a, p in zip(before, body1, strict=True))
        assert moved is not frozen, f"step {step}: body.1 {'moved while frozen' if frozen else 'did not move'}"
        t.step += 1  # type: ignore[attr-defined]


def test_glob_matching_nothing_is_an_error_at_its_line(setup: Path) -> None:
    bad = SPEC.replace('match: "body.1.*"', 'match: "bdy.1.*"')
    (setup / "bad.yaml").write_text(bad)
    r = run_cli("train", str(setup / "bad.yaml"), "-o", str(setup / "run"), "-q")
    line = bad.splitlines().index('    - {at_step: 60, match: "bdy.1.*"}') + 1
    assert r.code == 1 and f"bad.yaml:{line}:" in r.err and "train.unfreeze.0.match: 'bdy.1.*' matches no trainable parameter" in r.err


def _read(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_kill_9_then_resume_keeps_groups_and_unfreezing(setup: Path) -> None:
    """SIGKILL after a checkpoint (before the unfreeze step); --resume ends exactly where an uninterrupted run does."""
    args = ["train", str(setup / "ft.yaml"), "--init", str(setup / "pretrained.safetensors"), "--map", str(setup / "drop_head.yaml"), "--partial", "-q"]
    full, killed = setup / "full", setup / "killed"
    r = run_cli(*args, "-o", str(full))
    assert r.code == 0, r.err
    proc = subprocess.Popen([sys.executable, "-m", "graphc", *args, "-o", str(killed)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.time() + 120
    while time.time() < deadline and not list((killed / "checkpoints").glob("step_*/manifest.json")):
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    done = [int(row["step"]) for row in _read(killed / "metrics.csv")] if (killed / "metrics.csv").exists() else []
    assert not done or max(done) < 120
    r = run_cli(*args, "-o", str(killed), "--resume")
    assert r.code == 0, r.err
    assert _read(killed / "metrics.csv") == _read(full / "metrics.csv")
    assert json.loads((full / gw.PLAN_FILE).read_text())["counts"]["new"] == 2, "a partial --init records its plan in the run folder"
    from safetensors.torch import load_file

    a, b = load_file(str(killed / "best.safetensors")), load_file(str(full / "best.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the groups' scales and unfreeze steps travel in the optimizer's own state
    state = torch.load(sorted((killed / "checkpoints").glob("step_*"))[-1] / "state.pt", weights_only=True)
    saved = {g["name"]: (g["lr_scale"], g["unfreeze_at"]) for g in state["optimizer"]["param_groups"]}
    assert saved["body.* (frozen until step 60)"] == (0.1, UNFREEZE_AT) and saved["head.*"] == (1.0, 0)
