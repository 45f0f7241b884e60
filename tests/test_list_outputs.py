"""List-form outputs: ``node.port`` is named ``node_port``, so every output of a
multi-output node survives to ``check``, the built module and the exported ONNX file."""

from __future__ import annotations

from pathlib import Path

import onnx
import torch
from conftest import run_cli

import graphc

SPEC = """\
graphc: 1
name: two_parts
inputs:
  x: {shape: [B, 8]}
nodes:
  fc: {op: linear, in: x, out: 6}
  parts: {op: split, in: fc, sizes: [2, 4], dim: 1}
outputs: [parts.0, parts.1, fc]
"""


def _spec(tmp_path: Path) -> Path:
    path = tmp_path / "two_parts.yaml"
    path.write_text(SPEC)
    return path


def test_list_outputs_of_one_node_keep_every_port(tmp_path: Path) -> None:
    built = graphc.lower_spec(_spec(tmp_path), seed=0)
    assert list(built.graph.flat.outputs) == ["parts_0", "parts_1", "fc"]
    x = torch.randn(3, 8)
    got = built.module(x)
    fc = got["fc"]
    assert got["parts_0"].shape == (3, 2) and got["parts_1"].shape == (3, 4)
    torch.testing.assert_close(torch.cat([got["parts_0"], got["parts_1"]], dim=1), fc)


def test_list_outputs_export_both_ports_verified(tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    result = graphc.export_onnx(_spec(tmp_path), out)
    assert result.verify is not None and result.verify.passed
    assert set(result.verify.outputs) == {"parts_0", "parts_1", "fc"}
    model = onnx.load(str(out))
    assert [o.name for o in model.graph.output] == ["parts_0", "parts_1", "fc"]
    dims = [[d.dim_value or d.dim_param for d in o.type.tensor_type.shape.dim] for o in model.graph.output]
    assert dims == [["B", 2], ["B", 4], ["B", 6]]


def test_check_reports_every_list_output(tmp_path: Path) -> None:
    r = run_cli("check", str(_spec(tmp_path)))
    assert r.code == 0, r.err
    assert "outputs parts_0 [B, 2], parts_1 [B, 4], fc [B, 6]" in r.out
