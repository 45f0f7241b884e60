"""``graphc export``: dynamic axes named after the spec's dims, metadata, checker, atomic
writes, and GPT-mini matching torch over batch 1..8 x sequence 1..context."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import run_cli
from test_compile import ci_overrides

import graphc
from graphc.export.verify import TOLERANCES, tolerance


def _meta(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def test_export_cli_names_dims_inputs_outputs_and_metadata(tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    r = run_cli("export", "specs/mlp.yaml", "-o", str(out), "--opset", "18")
    assert r.code == 0, r.err
    assert "PASSED" in r.out and "latency batch1" in r.out
    m = onnx.load(str(out))
    onnx.checker.check_model(m, full_check=True)
    assert [i.name for i in m.graph.input] == ["x"] and [o.name for o in m.graph.output] == ["logits"]
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "B"
    assert m.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "B"
    meta = _meta(m)
    assert meta["graphc.spec_name"] == "mlp" and meta["graphc.version"] == graphc.__version__
    assert meta["graphc.spec_sha256"] == graphc.load_spec("specs/mlp.yaml").sha256
    assert json.loads(meta["graphc.values"])["fc1"] in {n.output[0] for n in m.graph.node}
    assert next(o.version for o in m.opset_import if o.domain == "") == 18
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # no temp files left


def test_export_failure_leaves_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import graphc.export.onnx_export as ox

    out = tmp_path / "m.onnx"
    out.write_bytes(b"previous")

    def broken(model: onnx.ModelProto, path: str, *a: object, **k: object) -> None:
        Path(path).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(ox.onnx, "save_model", broken)
    with pytest.raises(OSError):
        graphc.export_onnx("specs/mlp.yaml", out, verify=False, force=True)
    assert out.read_bytes() == b"previous" and [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def test_tolerance_takes_loosest_declared_by_ops(monkeypatch: pytest.MonkeyPatch) -> None:
    from graphc.ops.registry import REGISTRY, Onnx

    tg = graphc.check("specs/mlp.yaml")
    assert tolerance(tg, "float32") == TOLERANCES["float32"]
    assert tolerance(tg, "int64") == (0.0, 0.0)
    monkeypatch.setattr(REGISTRY["relu"].cls, "onnx", Onnx(ops=("Relu",), atol=1e-3))
    assert tolerance(tg, "float32") == (1e-3, TOLERANCES["float32"][1])


def test_missing_spec_is_one_line_error(tmp_path: Path) -> None:
    r = run_cli("export", str(tmp_path / "nope.yaml"), "-o", str(tmp_path / "m.onnx"))
    assert r.code == 1 and "nope.yaml" in r.err and "Traceback" not in r.err
    r = run_cli("verify", str(tmp_path / "nope.onnx"), "--spec", "specs/mlp.yaml")
    assert r.code == 1 and "nope.onnx" in r.err


@pytest.mark.skipif(not Path("specs/gpt_mini.yaml").exists(), reason="specs/gpt_mini.yaml not present")
def test_gpt_mini_grid_batch_1_to_8_seq_1_to_ctx(tmp_path: Path) -> None:
    import onnxruntime as ort

    overrides = ci_overrides(Path("specs/gpt_mini.yaml"))
    res = graphc.export_onnx("specs/gpt_mini.yaml", tmp_path / "g.onnx", overrides)
    assert res.verify is not None and res.verify.passed
    tg = graphc.check("specs/gpt_mini.yaml", overrides)
    ctx = tg.flat.spec.params["ctx"]
    assert res.dims["T"] == (1, ctx)  # the position table bounds T; proven by torch.export
    gm = graphc.build(tg, seed=0).eval()
    sess = ort.InferenceSession(str(tmp_path / "g.onnx"), providers=["CPUExecutionProvider"])
    atol, rtol = tolerance(tg, "float32")
    for b, t in [(1, 1), (8, ctx), (1, ctx), (8, 1), (3, 5), (5, ctx - 1), (2, 2)]:
        (tokens,) = graphc.example_inputs(tg, seed=b * 100 + t, B=b, T=t)
        (got,) = sess.run(None, {"tokens": tokens.numpy()})
        with torch.no_grad():
            want = gm(tokens).numpy()
        assert got.shape == (b, t, tg.flat.spec.params["vocab"])
        np.testing.assert_allclose(got, want, atol=atol, rtol=rtol, err_msg=f"B={b} T={t}")


def test_large_models_use_external_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import graphc.export.onnx_export as ox

    monkeypatch.setattr(ox, "TWO_GB", 100)  # pretend the MLP is over protobuf's 2 GB limit
    out = tmp_path / "m.onnx"
    res = graphc.export_onnx("specs/mlp.yaml", out)
    assert res.verify is not None and res.verify.passed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.data"]
    m = onnx.load(str(out), load_external_data=False)
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in m.graph.initializer)
