"""Hostile input for export, compile, verify and train: NaN/inf weights, weights that are not
the ones a model was exported with, example sizes that cannot fit in memory, and training
targets that do not fit the spec's output.

Each case runs ``graphc`` in a bounded child process (tests/hostile.py) and asserts exit 1,
one clear error line, no traceback, the time bound, and that nothing in its folder changed.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hostile import Guarded, assert_clean, assert_unchanged, run_guarded, snapshot
from safetensors.torch import save_file

import graphc
from graphc.export.weights import save_weights

ROOT = Path(__file__).resolve().parent.parent
MLP = str(ROOT / "specs" / "mlp.yaml")
MLP_STATE = {"fc1.weight": (5, 10), "fc1.bias": (5,), "fc2.weight": (3, 5), "fc2.bias": (3,)}


def guarded(folder: Path, *args: str, contains: str) -> Guarded:
    """``graphc ARGS`` in ``folder`` fails cleanly with one error line holding ``contains``
    and changes nothing there."""
    before = snapshot(folder)
    r = run_guarded(*args, cwd=folder, torch=True)
    assert_clean(r, codes=(1,), positioned=True, contains=contains)
    assert len(r.error_lines()) == 1, r.err
    assert_unchanged(before, snapshot(folder))
    return r


def mlp_weights(path: Path, poison: Callable[[dict[str, torch.Tensor]], None] | None = None, seed: int = 3) -> Path:
    gen = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(s, generator=gen) for k, s in MLP_STATE.items()}
    if poison:
        poison(state)
    save_file(state, str(path))
    return path


def write(folder: Path, name: str, text: str) -> Path:
    (folder / name).write_text(text, encoding="utf-8")
    return folder / name


# --- NaN / inf weights --------------------------------------------------------------------


def _nan(s: dict[str, torch.Tensor]) -> None:
    s["fc1.weight"][0, 0] = float("nan")


def _inf(s: dict[str, torch.Tensor]) -> None:
    s["fc2.bias"][:] = float("-inf")


@pytest.mark.parametrize("command", ["export", "compile"])
@pytest.mark.parametrize("poison", [_nan, _inf], ids=["nan", "inf"])
def test_non_finite_weights_are_named(tmp_path: Path, command: str, poison: Callable[[dict[str, torch.Tensor]], None]) -> None:
    weights = mlp_weights(tmp_path / "w.safetensors", poison)
    name = "fc1.weight (1 NaN of 50)" if poison is _nan else "fc2.bias (3 inf of 3)"
    output = "m.onnx" if command == "export" else "out"
    guarded(tmp_path, command, MLP, "--weights", str(weights), "-o", output, contains=name)


INIT_SPEC = """graphc: 1
name: big_init
{global_init}inputs:
  x: {{shape: [B, 4], example: {{B: 2}}}}
nodes:
  fc1: {{op: linear, in: x, out: 3{node_init}}}
outputs: {{y: fc1}}
"""


def test_overflowing_global_init_points_at_init(tmp_path: Path) -> None:
    spec = write(tmp_path, "s.yaml", INIT_SPEC.format(global_init="init: {weight: normal, std: 1.0e300}\n", node_init=""))
    guarded(tmp_path, "compile", str(spec), "-o", "out", contains="s.yaml:3:7: error: weights are not finite")


def test_overflowing_node_init_points_at_the_node(tmp_path: Path) -> None:
    spec = write(tmp_path, "s.yaml", INIT_SPEC.format(global_init="", node_init=", init: {weight: normal, scale: 1.0e300}"))
    guarded(tmp_path, "export", str(spec), "-o", "m.onnx", contains="s.yaml:6:3: error: weights are not finite")


# --- verify against other weights ---------------------------------------------------------


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A compile folder of specs/mlp.yaml built from 'trained' weights (seed 7)."""
    folder = tmp_path_factory.mktemp("verify")
    save_weights(graphc.build(MLP, seed=7), folder / "trained.safetensors")
    graphc.compile(MLP, folder / "out", weights=folder / "trained.safetensors")
    return folder


def test_verify_finds_the_compile_folders_weights(compiled: Path) -> None:
    r = run_guarded("verify", "out/model.onnx", "--spec", MLP, cwd=compiled, torch=True)
    assert r.code == 0 and "PASSED" in r.out, r.err


def test_verify_without_weights_asks_for_them(compiled: Path, tmp_path: Path) -> None:
    shutil.copy(compiled / "out" / "model.onnx", tmp_path / "model.onnx")
    r = guarded(tmp_path, "verify", "model.onnx", "--spec", MLP, contains="exported with weights")
    assert "verify was given fresh weights" in r.err and "pass --weights FILE" in r.err


def test_verify_with_other_weights_names_both(compiled: Path) -> None:
    other = mlp_weights(compiled / "other.safetensors")
    try:
        guarded(compiled, "verify", "out/model.onnx", "--spec", MLP, "--weights", str(other), contains="verify was given weights")
    finally:
        other.unlink()


def test_verify_refuses_a_replaced_weights_file_beside_it(compiled: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(compiled / "out", out)
    mlp_weights(out / "weights.safetensors", seed=11)
    guarded(tmp_path, "verify", "out/model.onnx", "--spec", MLP, contains="out/weights.safetensors (sha256")


def test_verify_with_nan_weights_names_them(compiled: Path, tmp_path: Path) -> None:
    shutil.copy(compiled / "out" / "model.onnx", tmp_path / "model.onnx")
    weights = mlp_weights(tmp_path / "w.safetensors", _nan)
    guarded(tmp_path, "verify", "model.onnx", "--spec", MLP, "--weights", str(weights), contains="non-finite")


# --- example sizes past the memory estimate -------------------------------------------------


def test_huge_example_size_is_refused_before_allocating(tmp_path: Path) -> None:
    guarded(tmp_path, "compile", MLP, "--set", "inputs.x.example.B=1000000000000", "-o", "out",
            contains="inputs.x: example (B=1000000000000) needs an estimated")


def test_huge_example_size_in_verify(compiled: Path) -> None:
    guarded(compiled, "verify", "out/model.onnx", "--spec", MLP, "--set", "inputs.x.example.B=1000000000000",
            contains="mlp.yaml:8:")


def test_huge_input_shape_points_at_the_biggest_layer(tmp_path: Path) -> None:
    spec = write(tmp_path, "wide.yaml", "graphc: 1\nname: wide\ninputs:\n  x: {shape: [B, 100000000]}\n"
                                        "nodes:\n  fc1: {op: linear, in: x, out: 5}\noutputs: {y: fc1}\n")
    guarded(tmp_path, "export", str(spec), "-o", "m.onnx", contains="wide.yaml:6:3: error: nodes.fc1: the model needs")


def test_memory_cap_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRAPHC_MAX_EXAMPLE_BYTES", "1000")
    guarded(tmp_path, "export", MLP, "-o", "m.onnx", contains="GRAPHC_MAX_EXAMPLE_BYTES=1000")


def test_memory_cap_that_is_not_a_number(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRAPHC_MAX_EXAMPLE_BYTES", "lots")
    guarded(tmp_path, "compile", MLP, "-o", "out", contains="is not a number of bytes")


# --- training targets against the spec's output -----------------------------------------------

RECIPE = """train:
  data: {{dataset: {data}}}
  loss: {{type: {loss}, output: logits, target: {target}}}
  optimizer: {{type: adam, lr: 0.01}}
  batch_size: 2
  steps: 1
  metrics: {metrics}
"""


def _xy(label: np.ndarray) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(0).random((len(label), 10)).astype(np.float32), "label": label}


TARGET_CASES = {
    "label_too_big": ("npz", _xy(np.array([0, 1, 2, 3, 0, 1, 2, 1])), "cross_entropy", "[]", "1 label(s) outside [0, 3)"),
    "label_negative": ("npz", _xy(np.array([0, -1, 2, 1, 0, 1, 2, 1])), "cross_entropy", "[]", "(min -1, max 2"),
    "float_labels": ("npz", _xy(np.array([0, 1, 2, 1, 0, 1, 2, 1.5])), "cross_entropy", "[]", "needs integer class ids"),
    "label_shape": ("npz", _xy(np.zeros((8, 2), np.int64)), "cross_entropy", "[]", "needs 1 class id(s) per example"),
    "mse_width": ("npz", _xy(np.zeros((8, 2), np.float32)), "mse", "[]", "needs 3 value(s) per example"),
    "bce_range": ("npz", _xy(np.full((8, 3), 2.0, np.float32)), "bce", "[]", "bce needs targets in [0, 1]"),
    "metric_float": ("npz", {**_xy(np.zeros(8, np.int64)), "soft": np.zeros(8, np.float32)}, "cross_entropy",
                     "[{type: accuracy, target: soft}]", "target 'soft' has dtype float32"),
    "csv_label": ("csv", _xy(np.array([0, 1, 2, 7, 0, 1, 2, 1])), "cross_entropy", "[]", "max 7"),
    "safetensors_label": ("safetensors", _xy(np.array([0, 1, 2, 9, 0, 1, 2, 1])), "cross_entropy", "[]", "max 9"),
}


def _save(folder: Path, kind: str, arrays: dict[str, np.ndarray]) -> str:
    path = folder / f"data.{kind}"
    if kind == "npz":
        np.savez(path, **arrays)
    elif kind == "safetensors":
        from safetensors.numpy import save_file as save_np

        save_np(arrays, str(path))
    else:
        x, label = arrays["x"], arrays["label"]
        header = ",".join([*(f"f{i}" for i in range(x.shape[1])), "label"])
        rows = [",".join([*(f"{v:.4f}" for v in row), str(int(lab))]) for row, lab in zip(x, label, strict=True)]
        path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path.name


@pytest.mark.parametrize("case", list(TARGET_CASES))
def test_bad_training_targets(tmp_path: Path, case: str) -> None:
    kind, arrays, loss, metrics, message = TARGET_CASES[case]
    data = _save(tmp_path, kind, arrays)
    recipe = write(tmp_path, "recipe.yaml", RECIPE.format(data=data, loss=loss, target="label", metrics=metrics))
    line = 7 if case == "metric_float" else 3  # the recipe line of the metric / the loss
    r = guarded(tmp_path, "train", MLP, "--config", str(recipe), "-o", "run", contains=message)
    assert r.error_lines()[0].startswith(f"{recipe}:{line}:") and data in r.error_lines()[0], r.err
