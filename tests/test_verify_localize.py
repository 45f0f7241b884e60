"""A perturbed ONNX graph (one op, or one weight) fails verification with exit 3, naming the node."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import run_cli
from onnx import numpy_helper

import graphc


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("loc") / "mlp.onnx"
    graphc.export_onnx("specs/mlp.yaml", path, verify=False)
    return path


def _perturbed(src: Path, dst: Path, edit: object) -> Path:
    model = onnx.load(str(src))
    edit(model)  # type: ignore[operator]
    onnx.save(model, str(dst))
    return dst


def test_clean_file_verifies(exported: Path) -> None:
    r = run_cli("verify", str(exported), "--spec", "specs/mlp.yaml")
    assert r.code == 0 and "PASSED" in r.out


def test_perturbed_op_is_named(exported: Path, tmp_path: Path) -> None:
    def relu_to_sigmoid(m: onnx.ModelProto) -> None:
        node = next(n for n in m.graph.node if n.op_type == "Relu")
        node.op_type = "Sigmoid"

    bad = _perturbed(exported, tmp_path / "bad.onnx", relu_to_sigmoid)
    r = run_cli("verify", str(bad), "--spec", "specs/mlp.yaml")
    assert r.code == 3
    assert "first divergent node 'act'" in r.err and "specs/mlp.yaml:11" in r.err


def test_perturbed_weight_is_named(exported: Path, tmp_path: Path) -> None:
    def bump_fc2_bias(m: onnx.ModelProto) -> None:
        init = next(t for t in m.graph.initializer if t.name == "fc2.bias")
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) + np.float32(0.01), "fc2.bias"))

    bad = _perturbed(exported, tmp_path / "bad.onnx", bump_fc2_bias)
    res = graphc.verify_onnx(bad, "specs/mlp.yaml")
    assert not res.passed and res.first_divergent == "fc2"
    assert res.outputs["logits"].max_abs_diff == pytest.approx(0.01, rel=1e-3)


def test_tiny_drift_within_tolerance_passes(exported: Path, tmp_path: Path) -> None:
    def nudge(m: onnx.ModelProto) -> None:
        init = next(t for t in m.graph.initializer if t.name == "fc2.bias")
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) + np.float32(1e-7), "fc2.bias"))

    assert graphc.verify_onnx(_perturbed(exported, tmp_path / "ok.onnx", nudge), "specs/mlp.yaml").passed


def test_export_removes_file_when_verification_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Perturb the lowering itself: the torch model the ONNX file is checked against differs."""
    import graphc.export.api as api

    real = api.verify_model

    def against_perturbed(built, path, **kw):  # type: ignore[no-untyped-def]
        built.module.fc1.bias.data += 1.0
        return real(built, path, **kw)

    monkeypatch.setattr(api, "verify_model", against_perturbed)
    out = tmp_path / "m.onnx"
    r = run_cli("export", "specs/mlp.yaml", "-o", str(out))
    assert r.code == 3 and "first divergent node 'fc1'" in r.err
    assert list(tmp_path.iterdir()) == []


def _scale_value(m: onnx.ModelProto, value: str, factor: float) -> None:
    """Insert ``value = value * factor`` right after the node producing ``value``."""
    from onnx import helper

    for i, n in enumerate(m.graph.node):
        if value in n.output:
            n.output[list(n.output).index(value)] = value + "_orig"
            m.graph.initializer.append(numpy_helper.from_array(np.array(factor, np.float32), "perturb_k"))
            m.graph.node.insert(i + 1, helper.make_node("Mul", [value + "_orig", "perturb_k"], [value]))
            return
    raise AssertionError(f"no node produces {value}")


@pytest.mark.skipif(not Path("specs/gpt_mini.yaml").exists(), reason="specs/gpt_mini.yaml not present")
def test_node_inside_repeated_block_is_named(tmp_path: Path) -> None:
    import json

    overrides = ["layers=2", "d=32", "heads=2", "ctx=16"]
    good = tmp_path / "g.onnx"
    graphc.export_onnx("specs/gpt_mini.yaml", good, overrides, verify=False)
    values = json.loads({p.key: p.value for p in onnx.load(str(good)).metadata_props}["graphc.values"])
    bad = _perturbed(good, tmp_path / "bad.onnx", lambda m: _scale_value(m, values["body.1.ln2"], 1.01))
    r = run_cli("verify", str(bad), "--spec", "specs/gpt_mini.yaml", *[a for o in overrides for a in ("--set", o)])
    assert r.code == 3 and "first divergent node 'body.1.ln2'" in r.err


def test_perturbed_lowering_is_named(exported: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Change one op's lowering (relu gains an offset): verification names the relu node."""
    import torch

    from graphc.ops.registry import REGISTRY

    relu = REGISTRY["relu"].cls
    monkeypatch.setattr(relu, "lower", lambda self, ctx, x: torch.relu(x) + 0.5)
    r = run_cli("verify", str(exported), "--spec", "specs/mlp.yaml")
    assert r.code == 3 and "first divergent node 'act' (op 'relu'" in r.err


@pytest.mark.parametrize(("content", "message"), [(b"garbage", "not a readable ONNX model"), (None, "exported from another spec")])
def test_unusable_file_is_one_line_error(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "m.onnx"
    if content is None:
        graphc.export_onnx("specs/mlp.yaml", path, verify=False)
        spec = tmp_path / "other.yaml"
        spec.write_text(Path("specs/mlp.yaml").read_text().replace("x: {shape", "inp: {shape").replace("in: x", "in: inp"))
    else:
        path.write_bytes(content)
        spec = Path("specs/mlp.yaml")
    r = run_cli("verify", str(path), "--spec", str(spec))
    assert r.code == 1 and message in r.err and str(path) in r.err and "Traceback" not in r.err
