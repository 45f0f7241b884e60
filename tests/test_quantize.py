"""``graphc compile --quantize/--optimize``: onnxruntime's quantizers, the node-by-node report,
``--keep-fp32`` (auto and globs), calibration, task metrics, and hostile flags."""

from __future__ import annotations

import ast
import json
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import SPECS, run_cli
from hostile import assert_clean, run_guarded, snapshot
from test_compile import _set_args

import graphc
from graphc.export.metrics import metric_drop
from graphc.weights.tensors import load_weights, save_weights

SPIKY = """\
graphc: 1
name: spiky
doc: fc2 reads a concat whose last channel is 10^4 times larger than the rest.
inputs:
  x: {shape: [B, 16], example: {B: 8}}
nodes:
  fc1:   {op: linear, in: x, out: 16}
  first: {op: slice, in: x, dim: 1, start: 0, end: 1}
  spike: {op: scale, in: first, factor: 10000.0}
  mix:   {op: concat, in: [fc1, spike]}
  fc2:   {op: linear, in: mix, out: 8}
outputs: {y: fc2}
"""


@pytest.fixture
def spiky(tmp_path: Path) -> tuple[Path, Path]:
    """A spec whose fc2 is fed by a huge-range activation (one channel ~1e4, the rest ~1).

    fc2's weight for the huge channel is zero, so the fp32 output does not depend on it; but
    int8 activation quantization of fc2's input spends its whole range on that channel and
    rounds the other 16 to zero, so quantizing fc2 (and only fc2) breaks the output.
    """
    spec = tmp_path / "spiky.yaml"
    spec.write_text(SPIKY)
    gm = graphc.build(str(spec), seed=0)
    with torch.no_grad():
        gm.get_submodule("fc2").weight[:, 16] = 0.0
    weights = tmp_path / "spiky.safetensors"
    save_weights(gm, weights)
    return spec, weights


def _quant(out: Path) -> dict:
    return json.loads((out / "verify.json").read_text())["quantization"]


def test_sensitive_node_breaks_the_budget_and_is_named_first(spiky: tuple[Path, Path], tmp_path: Path) -> None:
    spec, weights = spiky
    out = tmp_path / "out"
    r = run_cli("compile", str(spec), "-o", str(out), "--weights", str(weights), "--quantize", "int8-dynamic")
    assert r.code == 3, r.err
    assert "output 'y' is outside the budget" in r.err and "first node under 20 dB: 'fc2'" in r.err
    table = r.err.splitlines()
    rows = [ln.split()[0] for ln in table if ln.startswith("  ") and not ln.strip().startswith(("node", "first", "size"))]
    assert rows[:2] == ["[y]", "fc2"]  # the output, then the worst node
    assert "Traceback" not in r.err and not out.exists()


def test_keep_fp32_auto_excludes_the_sensitive_node_and_passes(spiky: tuple[Path, Path], tmp_path: Path) -> None:
    spec, weights = spiky
    out = tmp_path / "out"
    r = run_cli("compile", str(spec), "-o", str(out), "--weights", str(weights), "--quantize", "int8-dynamic", "--keep-fp32", "auto")
    assert r.code == 0, r.err
    q = _quant(out)
    assert q["passed"] is True and q["kept_fp32"] == ["fc2"] and "kept fp32: fc2" in r.out
    assert q["outputs"][0]["snr_db"] >= 20.0
    nodes = {n["node"]: n for n in q["nodes"]}
    assert nodes["fc1"]["quantized"] is True and nodes["fc2"]["quantized"] is False
    assert "fc2" in q["detail"]
    kinds = {n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node}
    assert "MatMulInteger" in kinds  # fc1 is still int8
    assert json.loads((out / "manifest.json").read_text())["quantization"]["kept_fp32"] == ["fc2"]


@pytest.mark.parametrize(("globs", "kept"), [(["fc2"], ["fc2"]), (["fc*"], ["fc1", "fc2"])])
def test_keep_fp32_globs(spiky: tuple[Path, Path], tmp_path: Path, globs: list[str], kept: list[str]) -> None:
    spec, weights = spiky
    out = tmp_path / "out"
    r = run_cli("compile", str(spec), "-o", str(out), "--weights", str(weights), "--quantize", "int8-dynamic", "--keep-fp32", *globs)
    assert r.code == 0, r.err
    assert _quant(out)["kept_fp32"] == kept


def test_keep_fp32_glob_matching_nothing_names_the_nodes(spiky: tuple[Path, Path], tmp_path: Path) -> None:
    spec, _weights = spiky
    r = run_cli("compile", str(spec), "-o", str(tmp_path / "out"), "--quantize", "int8-dynamic", "--keep-fp32", "conv*")
    assert r.code == 1 and "--keep-fp32 'conv*' matches no spec node" in r.err and "fc1" in r.err
    assert not (tmp_path / "out").exists()


def test_int8_dynamic_mlp_report_manifest_and_model_py(tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = run_cli("compile", "specs/mlp.yaml", "-o", str(out), "--quantize", "int8-dynamic")
    assert r.code == 0, r.err
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["model.py", "weights.safetensors", "model.onnx", "model.fp32.onnx", "verify.json", "summary.json", "manifest.json"])
    ver = json.loads((out / "verify.json").read_text())
    assert ver["passed"] is True  # the fp32 export's own verification is kept
    q = ver["quantization"]
    assert q["mode"] == "int8-dynamic" and q["passed"] is True and q["budget"] == {"min_snr_db": 20.0}
    assert [n["node"] for n in q["nodes"]] == ["fc1", "act", "fc2"]  # topological order
    for n in q["nodes"] + q["outputs"]:
        assert set(n) == {"node", "op", "max_abs", "mean_abs", "snr_db", "quantized"}
        assert 0 < n["max_abs"] < 0.1 and 0 < n["mean_abs"] <= n["max_abs"] and 20 < n["snr_db"] < 200
    assert q["outputs"][0]["node"] == "logits" and len(q["sizes"]) == 3
    assert "quantize int8-dynamic: PASSED" in r.out and "fc1" in r.out
    man = json.loads((out / "manifest.json").read_text())
    assert man["quantization"]["mode"] == "int8-dynamic" and man["quantization"]["fp32_model"] == "model.fp32.onnx"
    assert "model.fp32.onnx" in man["files"]
    model = onnx.load(str(out / "model.onnx"))
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["graphc.quantization"]) == {"mode": "int8-dynamic", "kept_fp32": [], "min_snr_db": 20.0, "max_abs_error": None}
    assert meta["graphc.spec_name"] == "mlp" and "graphc.values" in meta
    assert "MatMulInteger" in {n.op_type for n in model.graph.node}
    tree = ast.parse((out / "model.py").read_text())
    note = [n for n in tree.body if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "ONNX_QUANTIZATION"]
    assert ast.literal_eval(note[0].value) == {"mode": "int8-dynamic", "onnx": "model.onnx", "fp32_onnx": "model.fp32.onnx", "kept_fp32": []}


def test_quantized_model_runs_like_any_export(tmp_path: Path) -> None:
    """model.onnx keeps the fp32 inputs and outputs, so predict/serve feed it unchanged."""
    import onnxruntime as ort

    res = graphc.compile("specs/mlp.yaml", tmp_path / "o", quant=_opts("int8-dynamic"))
    sess = ort.InferenceSession(str(res.out_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).uniform(-1, 1, (7, 10)).astype(np.float32)
    (y,) = sess.run(None, {"x": x})
    gm = graphc.build("specs/mlp.yaml", seed=0).eval()
    with torch.no_grad():
        want = gm(torch.from_numpy(x)).numpy()
    assert y.shape == (7, 3) and y.dtype == np.float32 and np.abs(y - want).max() < 0.05


def _opts(mode: str, **kw: object) -> object:
    from graphc.export.quant_cli import QuantOptions

    return QuantOptions(mode, **kw)  # type: ignore[arg-type]


def test_int8_dynamic_tiny_gpt(tmp_path: Path) -> None:
    spec = Path("specs/gpt_mini.yaml")
    out = tmp_path / "out"
    r = run_cli("compile", str(spec), "-o", str(out), *_set_args(spec), "--quantize", "int8-dynamic")
    assert r.code == 0, r.err
    q = _quant(out)
    assert q["passed"] and q["outputs"][0]["snr_db"] >= 20
    nodes = {n["node"]: n for n in q["nodes"]}
    assert nodes["body.0.attn"]["quantized"] and nodes["head"]["quantized"]
    assert nodes["body.0.ln1"]["quantized"] is False  # layer norms stay fp32 in dynamic mode


def test_int8_static_calibrates_on_a_file(tmp_path: Path) -> None:
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(1).uniform(-1, 1, (64, 10)).astype(np.float32))
    out = tmp_path / "out"
    r = run_cli("compile", "specs/mlp.yaml", "-o", str(out), "--quantize", "int8-static", "--calibrate", str(calib),
                "--calibration-batches", "4", "--calibrate-method", "minmax")
    assert r.code == 0, r.err
    q = _quant(out)
    assert q["passed"] and q["calibration"] == f"file {calib}"
    kinds = {n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= kinds


def test_int8_static_without_data_says_it_used_random_inputs(tmp_path: Path) -> None:
    r = run_cli("compile", "specs/mlp.yaml", "-o", str(tmp_path / "o"), "--quantize", "int8-static", "--calibrate-method", "entropy")
    assert r.code == 0, r.err
    assert _quant(tmp_path / "o")["calibration"].startswith("random example inputs")


@pytest.mark.parametrize(("write", "message"), [
    (lambda p: np.savez(p, y=np.zeros((4, 10), np.float32)), "no array named x"),
    (lambda p: np.savez(p, x=np.zeros((4, 10), np.int64)), "array 'x' is int64"),
    (lambda p: p.write_bytes(b"not a zip"), "not a readable .npz file"),
    (lambda p: np.savez(p, x=np.zeros((4, 7), np.float32)), "array 'x' is float32 with shape [4, 7]"),
    (lambda p: np.savez(p, x=np.zeros((0, 10), np.float32)), "the arrays hold no examples"),
], ids=["missing", "dtype", "corrupt", "shape", "empty"])
def test_bad_calibration_file_is_a_clean_error(tmp_path: Path, write: object, message: str) -> None:
    calib = tmp_path / "calib.npz"
    write(calib)  # type: ignore[operator]
    before = snapshot(tmp_path)
    r = run_cli("compile", "specs/mlp.yaml", "-o", str(tmp_path / "out"), "--quantize", "int8-static", "--calibrate", str(calib))
    assert r.code == 1 and "Traceback" not in r.err, r.err
    assert f"{calib}:1:1: error: --calibrate: {message}" in r.err
    assert snapshot(tmp_path) == before


def test_fp16_keeps_fp32_io_and_is_close(tmp_path: Path) -> None:
    res = graphc.compile("specs/mlp.yaml", tmp_path / "o", quant=_opts("fp16"))
    q = _quant(res.out_dir)
    assert q["passed"] and q["outputs"][0]["snr_db"] > 40
    model = onnx.load(str(res.out_dir / "model.onnx"))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)


def test_optimize_alone_verifies_the_optimised_model(tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = run_cli("compile", "specs/mlp.yaml", "-o", str(out), "--optimize")
    assert r.code == 0, r.err
    ver = json.loads((out / "verify.json").read_text())
    assert ver["optimized"]["level"] == "all" and ver["optimized"]["verify"]["passed"] is True
    assert not (out / "model.fp32.onnx").exists() and "optimized: level all" in r.out
    meta = {p.key for p in onnx.load(str(out / "model.onnx")).metadata_props}
    assert {"graphc.values", "graphc.spec_name"} <= meta


def test_optimize_with_quantize_measures_the_shipped_file(tmp_path: Path) -> None:
    spec = Path("specs/gpt_mini.yaml")
    out = tmp_path / "out"
    r = run_cli("compile", str(spec), "-o", str(out), *_set_args(spec), "--quantize", "int8-dynamic", "--optimize")
    assert r.code == 0, r.err
    q = _quant(out)
    assert q["passed"] and q["optimized"]["level"] == "all" and q["outputs"][0]["snr_db"] >= 20


TRAINED = SPIKY.replace("outputs: {y: fc2}", """outputs: {y: fc2}
train:
  data: {dataset: synthetic_classification, samples: 256, classes: 8}
  loss: {type: cross_entropy, output: y, target: label}
  metrics: [accuracy]
  batch_size: 32
  steps: 1
""").replace("doc: fc2 reads", "doc: (with a recipe) fc2 reads")


def test_task_metrics_side_by_side(tmp_path: Path) -> None:
    spec = tmp_path / "t.yaml"
    spec.write_text(TRAINED)
    out = tmp_path / "out"
    r = run_cli("compile", str(spec), "-o", str(out), "--quantize", "int8-static", "--data", "spec", "--max-metric-drop", "1")
    assert r.code == 0, r.err
    q = _quant(out)
    assert set(q["metrics"]) == {"fp32", "quantized"} and set(q["metrics"]["fp32"]) == {"loss", "accuracy"}
    assert q["calibration"] == "recipe spec (train split)"
    assert "metric accuracy: fp32" in r.out


def test_metric_drop_direction() -> None:
    assert metric_drop("accuracy", 0.9, 0.85) == pytest.approx(0.05)
    assert metric_drop("loss", 1.0, 1.2) == pytest.approx(0.2)
    assert metric_drop("loss", 1.0, 0.9) < 0


@pytest.mark.parametrize(("args", "needle"), [
    (["--quantize", "int4"], "invalid choice: 'int4'"),
    (["--quantize", "int8-static", "--calibrate-method", "magic"], "invalid choice: 'magic'"),
    (["--quantize", "int8-dynamic", "--min-snr", "1e9"], "outside [-200, 200] dB"),
    (["--quantize", "int8-dynamic", "--min-snr", "nan"], "outside [-200, 200] dB"),
    (["--quantize", "int8-dynamic", "--min-snr", "loud"], "expected a number of dB"),
    (["--quantize", "int8-static", "--calibration-batches", "0"], "expected a positive int"),
    (["--quantize", "int8-dynamic", "--max-abs-error", "-1"], "expected a positive float"),
    (["--quantize", "int8-dynamic", "--max-metric-drop", "inf"], "expected a number >= 0"),
    (["--keep-fp32", "fc1"], "--keep-fp32, --calibrate and --data need --quantize"),
    (["--quantize", "int8-dynamic", "--keep-fp32", "auto", "fc1"], "--keep-fp32 auto takes no globs"),
], ids=["mode", "method", "snr-range", "snr-nan", "snr-text", "batches", "abs", "drop", "keep-alone", "auto-plus"])
def test_hostile_flags_are_usage_errors(tmp_path: Path, args: list[str], needle: str) -> None:
    before = snapshot(tmp_path)
    r = run_guarded("compile", "specs/mlp.yaml", "-o", str(tmp_path / "out"), *args)
    assert_clean(r, codes=(2,), positioned=False, contains=needle)
    assert snapshot(tmp_path) == before


def test_quantize_options_api_validates() -> None:
    from graphc.export.quant_cli import QuantOptions, QuantUsageError

    for bad in ({"mode": "int2"}, {"mode": "fp16", "calibrate_method": "x"}, {"mode": "fp16", "min_snr": 500.0}):
        with pytest.raises(QuantUsageError):
            QuantOptions(**bad)  # type: ignore[arg-type]


@pytest.mark.slow  # 15 compiles: ~60 s on 2 quiet cores, ~290 s on busy ones
@pytest.mark.parametrize("spec", SPECS, ids=[s.stem for s in SPECS])
def test_every_spec_quantizes_or_reports(spec: Path, tmp_path: Path) -> None:
    """int8-dynamic on every shipped spec at its CI size: within budget, or the node table
    and exit 3 (never a crash)."""
    out = tmp_path / "out"
    t0 = time.perf_counter()
    r = run_cli("compile", str(spec), "-o", str(out), *_set_args(spec), "--quantize", "int8-dynamic")
    assert r.code in (0, 3), r.err
    assert "Traceback" not in r.err
    if r.code == 0:
        q = _quant(out)
        assert q["passed"] and all(o["snr_db"] >= 20 for o in q["outputs"])
        assert q["nodes"], "no node was measured"
    else:
        assert "node" in r.err and "SNR dB" in r.err and "outside the budget" in r.err
        assert not out.exists()
    print(f"{spec.stem}: exit {r.code} in {time.perf_counter() - t0:.1f} s")


def test_verify_checks_a_quantized_model_against_its_recorded_budget(spiky: tuple[Path, Path], tmp_path: Path) -> None:
    spec, weights = spiky
    out = tmp_path / "out"
    assert run_cli("compile", str(spec), "-o", str(out), "--weights", str(weights), "--quantize", "int8-dynamic",
                   "--keep-fp32", "auto", "--min-snr", "30").code == 0
    r = run_cli("verify", str(out / "model.onnx"), "--spec", str(spec), "--weights", str(weights))
    assert r.code == 0, r.err
    assert "quantize int8-dynamic: PASSED (budget: every output SNR >= 30 dB); kept fp32: fc2" in r.out
    model = onnx.load(str(out / "model.onnx"))  # a stricter budget than the file meets
    for p in model.metadata_props:
        if p.key == "graphc.quantization":
            p.value = json.dumps({**json.loads(p.value), "min_snr_db": 60.0})
    onnx.save(model, str(out / "model.onnx"))
    r = run_cli("verify", str(out / "model.onnx"), "--spec", str(spec), "--weights", str(weights))
    assert r.code == 3 and "output 'y' is outside the budget" in r.err and "first node under 60 dB: 'fc1'" in r.err
    assert "Traceback" not in r.err


def test_predict_runs_a_quantized_compile_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run_cli("compile", "specs/mlp.yaml", "-o", str(out), "--quantize", "int8-dynamic").code == 0
    x = np.random.default_rng(0).uniform(-1, 1, (5, 10)).astype(np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    r = run_cli("predict", str(out), str(tmp_path / "x.npz"), "-o", str(tmp_path / "pred.csv"))
    assert r.code == 0, r.err
    got = np.loadtxt(tmp_path / "pred.csv", delimiter=",", skiprows=1)
    with torch.no_grad():
        want = graphc.build("specs/mlp.yaml", seed=0).eval()(torch.from_numpy(x)).numpy()
    assert got.shape == (5, 3) and np.abs(got - want).max() < 0.05


@pytest.fixture(scope="module")
def quantized_mlp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """specs/mlp.yaml compiled with ``--quantize int8-dynamic`` (once for the module)."""
    out = tmp_path_factory.mktemp("qmlp") / "out"
    assert run_cli("compile", "specs/mlp.yaml", "-o", str(out), "--quantize", "int8-dynamic").code == 0
    return out


def test_serve_answers_with_the_quantized_model(quantized_mlp: Path) -> None:
    """``graphc serve`` on a quantized folder runs model.onnx (int8), not model.fp32.onnx."""
    import onnxruntime as ort
    from test_serve import Running

    x = np.random.default_rng(3).uniform(-1, 1, (6, 10)).astype(np.float32)

    def direct(name: str) -> np.ndarray:
        sess = ort.InferenceSession(str(quantized_mlp / name), providers=["CPUExecutionProvider"])
        return sess.run(None, {"x": x})[0]

    srv = Running(quantized_mlp)
    try:
        assert srv.client.get("/v1/health").json()["status"] == "ok"
        r = srv.client.post("/v1/predict", json={"inputs": {"x": x.tolist()}})
    finally:
        srv.stop()
    assert r.status_code == 200, r.text
    got = np.asarray(r.json()["outputs"]["logits"], dtype=np.float32)
    np.testing.assert_allclose(got, direct("model.onnx"), rtol=1e-5, atol=1e-6)
    assert np.abs(got - direct("model.fp32.onnx")).max() > 1e-6  # int8 rounding shows: it is the quantized file


def test_quantized_file_drops_per_node_metadata_but_fp32_keeps_it(quantized_mlp: Path) -> None:
    """The exporter's per-node metadata (name scopes, stack traces) is left out of the shipped
    int8 file; model.fp32.onnx keeps it, and the node mapping reads it from there."""
    fp32, q = onnx.load(str(quantized_mlp / "model.fp32.onnx")), onnx.load(str(quantized_mlp / "model.onnx"))
    assert any(p.key == "pkg.torch.onnx.name_scopes" for n in fp32.graph.node for p in n.metadata_props)
    assert not any(n.metadata_props for n in q.graph.node)
    assert {"graphc.values", "graphc.quantization", "graphc.spec_sha256"} <= {p.key for p in q.metadata_props}
    nodes = {n["node"]: n for n in _quant(quantized_mlp)["nodes"]}
    assert nodes["fc1"]["quantized"] and nodes["fc2"]["quantized"] and not nodes["act"]["quantized"]


LABELLED = SPIKY.replace("outputs: {y: fc2}", """outputs: {y: fc2}
train:
  data: {dataset: data.npz}
  loss: {type: cross_entropy, output: y, target: label}
  metrics: [accuracy]
  batch_size: 32
  steps: 1
""").replace("doc: fc2 reads", "doc: (labelled by its own fp32 predictions) fc2 reads")


def test_keep_fp32_auto_driven_by_the_metric_budget(spiky: tuple[Path, Path], tmp_path: Path) -> None:
    """With an SNR floor every attempt meets, only ``--max-metric-drop`` can trigger the auto
    fallback.  The data is labelled with the fp32 model's own predictions (fp32 accuracy 1), so
    quantizing fc2, whose input int8 flattens to zero, drops accuracy far past the budget."""
    _spiky, weights = spiky
    spec = tmp_path / "labelled.yaml"
    spec.write_text(LABELLED)
    gm = load_weights(graphc.build(str(spec), seed=0), weights).eval()
    x = np.random.default_rng(5).normal(size=(400, 16)).astype(np.float32)
    with torch.no_grad():
        label = gm(torch.from_numpy(x)).argmax(1).numpy().astype(np.int64)
    np.savez(tmp_path / "data.npz", x=x, label=label)
    args = ["compile", str(spec), "--weights", str(weights), "--quantize", "int8-dynamic", "--min-snr", "-100",
            "--data", "spec", "--max-metric-drop", "0.2"]

    r = run_cli(*args, "-o", str(tmp_path / "plain"))  # without auto: the metric fails it, not the SNR
    assert r.code == 3 and "metric drop past --max-metric-drop 0.2" in r.err and "outside the budget" not in r.err, r.err

    out = tmp_path / "auto"
    r = run_cli(*args, "-o", str(out), "--keep-fp32", "auto")
    assert r.code == 0, r.err
    q = _quant(out)
    assert q["passed"] and q["kept_fp32"] == ["fc2"] and q["detail"].startswith("--keep-fp32 auto kept, in order: fc2 ")
    m = q["metrics"]
    assert set(m["fp32"]) == {"loss", "accuracy"} and m["fp32"]["accuracy"] == 1.0
    assert metric_drop("accuracy", m["fp32"]["accuracy"], m["quantized"]["accuracy"]) <= 0.2
    assert metric_drop("loss", m["fp32"]["loss"], m["quantized"]["loss"]) <= 0.2
    assert "metric accuracy: fp32 1" in r.out
