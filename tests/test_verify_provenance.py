"""`graphc verify` refuses a file exported from another spec or other --set values."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from conftest import ROOT, CliResult

MLP = str(ROOT / "specs" / "mlp.yaml")


def test_verify_checks_spec_name_and_overrides(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    onnx_path = str(tmp_path / "m.onnx")
    assert cli("export", MLP, "--set", "hidden=7", "-o", onnx_path).code == 0

    same = cli("verify", onnx_path, "--spec", MLP, "--set", "hidden=7")
    assert same.code == 0, same.err

    other_set = cli("verify", onnx_path, "--spec", MLP)
    assert other_set.code == 1
    assert "exported with --set hidden=7, but verified with no --set" in other_set.err

    other_spec = cli("verify", onnx_path, "--spec", str(ROOT / "specs" / "cifar_simplecnn.yaml"))
    assert other_spec.code == 1
    assert "exported from spec 'mlp', not 'cifar_simplecnn'" in other_spec.err
