"""LoRA fine-tuning: only adapters (and named extras) train; saved weights are merged."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import graphc
from graphc.errors import TrainError
from graphc.weights.tensors import read_weights

SPEC = """\
graphc: 1
name: iris_mlp
inputs:
  x: {shape: [B, 4], example: {B: 8}}
nodes:
  fc1: {op: linear, in: x, out: 32}
  act: {op: relu}
  fc2: {op: linear, out: 32}
  act2: {op: relu}
  head: {op: linear, out: 3}
outputs: {logits: head}
train:
  data: {dataset: iris}
  loss: {type: cross_entropy, output: logits, target: label}
  metrics: [accuracy]
  optimizer: {type: adamw, lr: 0.01}
  epochs: 3
  batch_size: 16
"""


def _train(tmp_path: Path, name: str, overrides: list[str], init: str | None = None) -> Path:
    spec = tmp_path / "iris.yaml"
    spec.write_text(SPEC)
    run = tmp_path / name
    graphc.train.train(spec, run, overrides=overrides, init=init, quiet=True)
    return run


def test_lora_trains_only_adapters_and_saves_merged_low_rank_updates(tmp_path: Path) -> None:
    base = _train(tmp_path, "base", [])
    lora = _train(tmp_path, "lora", ["train.lora.targets=[fc1, fc2]", "train.lora.rank=2", "train.epochs=4"],
                  init=str(base / "best.safetensors"))
    before, after = read_weights(base / "best.safetensors"), read_weights(lora / "best.safetensors")
    assert set(after) == set(before), "merged weights keep the spec's names, no adapter keys"
    for key in before:
        delta = after[key] - before[key]
        if key in ("fc1.weight", "fc2.weight"):
            assert delta.abs().max() > 0, f"{key} was adapted"
            assert torch.linalg.matrix_rank(delta) <= 2, f"{key}: the update is low rank"
        else:
            assert torch.equal(after[key], before[key]), f"{key} is frozen"
    ckpts = sorted((lora / "checkpoints").iterdir())
    assert "fc1.lora_a" in read_weights(ckpts[-1] / "model.safetensors"), "checkpoints keep the adapters for --resume"
    gm = graphc.build(str(tmp_path / "iris.yaml"))
    graphc.load_weights(gm, lora / "best.safetensors")  # usable as --weights / --init


def test_lora_target_errors(tmp_path: Path) -> None:
    with pytest.raises(TrainError, match="no linear layer matches"):
        _train(tmp_path, "none", ["train.lora.targets=[conv*]"])
    tied = SPEC.replace("head: {op: linear, out: 3}", "head: {op: linear, out: 32, tie: fc2}")
    tied = tied.replace("outputs: {logits: head}", "  out: {op: linear, out: 3}\noutputs: {logits: out}")
    (tmp_path / "iris.yaml").write_text(tied)
    with pytest.raises(TrainError, match="shares its weight"):
        graphc.train.train(tmp_path / "iris.yaml", tmp_path / "tied", overrides=["train.lora.targets=[head]"], quiet=True)
