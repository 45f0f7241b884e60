"""load_weights / save_weights: round trips, tied weights, and clear errors for bad files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import run_cli

import graphc
from graphc.errors import WeightsError
from graphc.weights.tensors import load_weights, read_weights, save_weights, tied_aliases

TIED = {
    "graphc": 1, "name": "tied", "params": {"v": 11, "d": 4},
    "inputs": {"ids": {"shape": ["B", "T"], "dtype": "int64", "example": {"B": 2, "T": 3}}},
    "nodes": {
        "tok": {"op": "embedding", "in": "ids", "num": "${v}", "dim": "${d}"},
        "head": {"op": "linear", "in": "tok", "out": "${v}", "bias": False, "tie": "tok"},
    },
    "outputs": {"logits": "head"},
}


def test_round_trip_restores_outputs(tmp_path: Path) -> None:
    a, b = graphc.build("specs/mlp.yaml", seed=0), graphc.build("specs/mlp.yaml", seed=1)
    x = graphc.example_inputs("specs/mlp.yaml")
    assert not torch.equal(a(*x), b(*x))
    save_weights(a, tmp_path / "w.safetensors")
    load_weights(b, tmp_path / "w.safetensors")
    assert torch.equal(a(*x), b(*x))
    assert set(read_weights(tmp_path / "w.safetensors")) == set(a.state_dict())


def test_tied_weights_stored_once_and_retied(tmp_path: Path) -> None:
    a, b = graphc.build(TIED, seed=0), graphc.build(TIED, seed=1)
    assert tied_aliases(a) == {"head.weight": "tok.weight"}
    save_weights(a, tmp_path / "w.safetensors")
    assert set(read_weights(tmp_path / "w.safetensors")) == {"tok.weight"}
    load_weights(b, tmp_path / "w.safetensors")
    assert b.head.weight is b.tok.weight
    torch.testing.assert_close(b.head.weight, a.tok.weight)


def test_torch_file_loaded_weights_only(tmp_path: Path) -> None:
    a, b = graphc.build("specs/mlp.yaml", seed=0), graphc.build("specs/mlp.yaml", seed=1)
    torch.save(a.state_dict(), tmp_path / "w.pt")
    load_weights(b, tmp_path / "w.pt")
    torch.testing.assert_close(b.fc1.weight, a.fc1.weight)


def test_missing_unexpected_and_misshaped_keys_named(tmp_path: Path) -> None:
    sd = graphc.build("specs/mlp.yaml", seed=0).state_dict()
    del sd["fc2.bias"]
    sd["extra.weight"] = torch.zeros(1)
    sd["fc1.weight"] = torch.zeros(7, 10)
    torch.save(sd, tmp_path / "w.pt")
    with pytest.raises(WeightsError) as e:
        load_weights(graphc.build("specs/mlp.yaml"), tmp_path / "w.pt")
    msg = str(e.value)
    assert "missing fc2.bias" in msg and "unexpected extra.weight" in msg and "fc1.weight [7, 10] (model has [5, 10])" in msg


@pytest.mark.parametrize("content", [b"", b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\":", b"not a weights file at all"])
def test_corrupt_file_is_one_line_error_exit_1(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "w.safetensors"
    bad.write_bytes(content)
    r = run_cli("export", "specs/mlp.yaml", "-o", str(tmp_path / "m.onnx"), "--weights", str(bad), "--no-verify")
    assert r.code == 1 and str(bad) in r.err and "Traceback" not in r.err
    assert r.err.count("error:") == 1
    assert not (tmp_path / "m.onnx").exists()


def test_truncated_safetensors(tmp_path: Path) -> None:
    save_weights(graphc.build("specs/mlp.yaml"), tmp_path / "w.safetensors")
    data = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "w.safetensors").write_bytes(data[: len(data) - 20])
    with pytest.raises(WeightsError, match=r"w\.safetensors: cannot read weights"):
        read_weights(tmp_path / "w.safetensors")


def test_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import safetensors.torch

    target = tmp_path / "w.safetensors"
    target.write_bytes(b"previous")

    def boom(*a: object, **k: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", boom)
    with pytest.raises(OSError):
        save_weights(graphc.build("specs/mlp.yaml"), target)
    assert target.read_bytes() == b"previous" and [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]
