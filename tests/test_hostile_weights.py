"""Hostile checkpoints and weight maps: one clear line each, exit 1, nothing written, no code run.

Each case runs ``graphc weights plan|convert`` in a bounded child process (tests/hostile.py).
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.hostile import assert_clean, assert_unchanged, run_guarded, snapshot

ROOT = Path(__file__).resolve().parent.parent
SPEC = """graphc: 1
name: tiny
inputs: {x: {shape: [B, 100]}}
nodes:
  fc: {op: linear, in: x, out: 4}
outputs: {y: fc}
"""


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "tiny.yaml").write_text(SPEC)
    save_file({"fc.weight": torch.randn(4, 100), "fc.bias": torch.randn(4)}, str(tmp_path / "good.safetensors"))
    return tmp_path


def _convert(work: Path, ckpt: str, *extra: str, torch_: bool = True) -> None:
    """convert must fail cleanly and leave the folder exactly as it was."""
    before = snapshot(work)
    r = run_guarded("weights", "convert", "tiny.yaml", "--from", ckpt, "-o", "out.safetensors", *extra, cwd=work, torch=torch_)
    assert_clean(r)
    assert len(r.error_lines()) >= 1
    assert_unchanged(before, snapshot(work))
    return None


def test_truncated_safetensors(work: Path) -> None:
    data = (work / "good.safetensors").read_bytes()
    (work / "cut.safetensors").write_bytes(data[:-100])
    r = run_guarded("weights", "plan", "tiny.yaml", "--from", "cut.safetensors", cwd=work)
    assert_clean(r, contains="truncated")
    _convert(work, "cut.safetensors")


def test_header_claims_more_bytes_than_the_file(work: Path) -> None:
    (work / "big.safetensors").write_bytes(struct.pack("<Q", 1 << 40) + b'{"a": 1}')
    r = run_guarded("weights", "plan", "tiny.yaml", "--from", "big.safetensors", cwd=work)
    assert_clean(r, contains="claims 1099511627776 header bytes")
    _convert(work, "big.safetensors")


class Payload:
    """Unpickling this would create the marker file; weights_only must refuse it unrun."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("container", ["pickle", "torch_zip"])
def test_pickle_with_code_is_refused_not_run(work: Path, container: str) -> None:
    """A bare pickle renamed .pt, and the same payload inside torch.save's zip format."""
    marker = work / "PWNED"
    payload = {"fc.weight": Payload(marker)}
    if container == "pickle":
        (work / "evil.pt").write_bytes(pickle.dumps(payload, protocol=2))
    else:
        torch.save(payload, work / "evil.pt")
    assert not marker.exists()
    r = run_guarded("weights", "plan", "tiny.yaml", "--from", "evil.pt", cwd=work, torch=True)
    assert_clean(r, contains="needs code")
    assert not marker.exists()
    _convert(work, "evil.pt")
    assert not marker.exists()


def _map(work: Path, rules: str) -> str:
    (work / "m.yaml").write_text(f"graphc-weights: 1\nspec: tiny\nrules:\n{rules}")
    return "m.yaml"


def test_rule_matching_nothing_is_positioned(work: Path) -> None:
    m = _map(work, "  - {from: fc.weight, to: fc.weight}\n  - {from: \"nothing.{i}\", to: \"fc.{i}\"}\n")
    r = run_guarded("weights", "plan", "tiny.yaml", "--from", "good.safetensors", "--map", m, cwd=work)
    assert_clean(r, contains="m.yaml:5:5: error: rules[1]: 'nothing.{i}' matches no tensor")
    _convert(work, "good.safetensors", "--map", m)


def test_two_rules_writing_one_target(work: Path) -> None:
    m = _map(work, "  - {from: fc.weight, to: fc.bias}\n  - {from: fc.bias, to: fc.bias}\n")
    r = run_guarded("weights", "plan", "tiny.yaml", "--from", "good.safetensors", "--map", m, cwd=work)
    assert_clean(r, contains="m.yaml:5:5: error: 'fc.bias' is written twice")
    _convert(work, "good.safetensors", "--map", m)


def test_split_that_cannot_work(work: Path) -> None:
    m = _map(work, "  - {from: fc.weight, to: [a, b, c], split: 1}\n")
    r = run_guarded("weights", "plan", "tiny.yaml", "--from", "good.safetensors", "--map", m, cwd=work)
    assert_clean(r, contains="m.yaml:4:5: error: rules[0]: fc.weight: cannot split axis 1 of size 100")
    _convert(work, "good.safetensors", "--map", m)


def test_invalid_map_reports_every_error_with_positions(work: Path) -> None:
    m = _map(work, "  - {from: fc.weight, too: x}\n  - {from: [a, b], to: c}\n  - {from: 3, to: y, transpose: maybe}\n")
    r = run_guarded("weights", "plan", "tiny.yaml", "--from", "good.safetensors", "--map", m, cwd=work)
    assert_clean(r)
    assert len(r.error_lines()) >= 3 and all(ln.startswith("m.yaml:") for ln in r.error_lines())


def test_nan_is_a_warning_naming_the_tensor(work: Path) -> None:
    w = torch.randn(4, 100)
    w[1, 2] = float("nan")
    save_file({"fc.weight": w, "fc.bias": torch.randn(4)}, str(work / "nan.safetensors"))
    r = run_guarded("weights", "convert", "tiny.yaml", "--from", "nan.safetensors", "-o", "out.safetensors", cwd=work, torch=True)
    assert_clean(r, codes=(0,), positioned=False, contains="warning: ")
    assert "'fc.weight' has NaN values" in r.err and (work / "out.safetensors").is_file()


def test_shard_outside_the_folder_is_refused(work: Path) -> None:
    (work / "ck").mkdir()
    (work / "ck" / "model.safetensors.index.json").write_text('{"weight_map": {"fc.weight": "../good.safetensors"}}')
    r = run_guarded("weights", "plan", "tiny.yaml", "--from", "ck", cwd=work)
    assert_clean(r, contains="outside the checkpoint's folder")
