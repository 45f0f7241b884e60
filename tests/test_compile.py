"""``graphc compile`` on every spec in specs/ (shrunk by its ``# graphc-ci:`` line), and the
standalone model.py reproducing the model in an interpreter where graphc is not importable."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch
from conftest import SPECS, run_cli

import graphc


def ci_overrides(spec: Path) -> list[str]:
    """The ``--set`` values of the spec's ``# graphc-ci:`` header line."""
    for line in spec.read_text().splitlines():
        if line.startswith("# graphc-ci:"):
            words = shlex.split(line.removeprefix("# graphc-ci:"))
            return [w for w in words if w != "--set"]
    return []


def _set_args(spec: Path) -> list[str]:
    return [a for o in ci_overrides(spec) for a in ("--set", o)]


@pytest.mark.parametrize("spec", SPECS, ids=[s.stem for s in SPECS])
def test_every_spec_compiles_and_verifies(spec: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = run_cli("compile", str(spec), "-o", str(out), *_set_args(spec))
    assert r.code == 0, r.err + r.out
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["model.py", "weights.safetensors", "model.onnx", "verify.json", "summary.json", "manifest.json"])
    ver = json.loads((out / "verify.json").read_text())
    assert ver["passed"] is True
    assert len(ver["sizes"]) >= 1 and all(o["max_abs_diff"] <= 1e-2 for o in ver["outputs"].values())
    assert "example_ratio" in ver["latency"]
    man = json.loads((out / "manifest.json").read_text())
    assert man["spec"]["sha256"] == graphc.load_spec(str(spec), ci_overrides(spec)).sha256
    assert set(man["versions"]) >= {"graphc", "torch", "onnx", "onnxruntime"}


def test_verify_json_sizes_include_1_and_odd(tmp_path: Path) -> None:
    r = graphc.compile("specs/mlp.yaml", tmp_path / "o")
    sizes = [s["B"] for s in json.loads((tmp_path / "o" / "verify.json").read_text())["sizes"]]
    assert 1 in sizes and any(s % 2 == 1 and s > 1 for s in sizes) and 4 in sizes
    assert r.verify.passed and r.export.dims["B"][0] == 1


SCRIPT = """
import sys
sys.path.append({site!r})
sys.path.insert(0, ".")
try:
    import graphc
except ImportError:
    pass
else:
    raise SystemExit("graphc must not be importable here")
import torch
import model
m = model.load("weights.safetensors")
inputs = torch.load("inputs.pt")
with torch.no_grad():
    out = m(*inputs)
torch.save(out, "out.pt")
"""


STANDALONE = [s for s in ("gpt_mini", "resnet_block", "mlp") if Path(f"specs/{s}.yaml").exists()]


@pytest.mark.parametrize("name", STANDALONE[:2])
def test_model_py_is_standalone_and_matches(name: str, tmp_path: Path) -> None:
    """Blocks, tied weights, runtime helpers (gpt_mini) and BN buffers (resnet_block)."""
    spec = f"specs/{name}.yaml"
    overrides = ci_overrides(Path(spec))
    res = graphc.compile(spec, tmp_path / "out", overrides)
    gm = graphc.build(graphc.check(spec, overrides), seed=0).eval()
    inputs = graphc.example_inputs(gm.graphc, seed=5)
    torch.save(inputs, tmp_path / "out" / "inputs.pt")
    site = sysconfig.get_paths()["purelib"]
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", SCRIPT.format(site=site)], cwd=res.out_dir,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = torch.load(res.out_dir / "out.pt")
    with torch.no_grad():
        want = gm(*inputs)
    want_d = want if isinstance(want, dict) else {"_": want}
    got_d = got if isinstance(got, dict) else {"_": got}
    assert want_d.keys() == got_d.keys()
    for k in want_d:
        torch.testing.assert_close(got_d[k], want_d[k], rtol=0, atol=0)
    assert "import graphc" not in (res.out_dir / "model.py").read_text()


def test_failed_compile_leaves_no_out_dir(tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = run_cli("compile", "specs/mlp.yaml", "-o", str(out), "--weights", str(tmp_path / "missing.safetensors"))
    assert r.code == 1 and "missing.safetensors" in r.err and "Traceback" not in r.err
    assert list(tmp_path.iterdir()) == []


def test_compile_replaces_its_own_out_dir_and_refuses_others(tmp_path: Path) -> None:
    """graphc replaces its own previous compile folder, never a folder it did not write."""
    from graphc.outputs import OutputError

    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    with pytest.raises(OutputError, match="graphc did not write"):
        graphc.compile("specs/mlp.yaml", out)
    assert [p.name for p in out.iterdir()] == ["stale.txt"]
    (out / "stale.txt").unlink()
    graphc.compile("specs/mlp.yaml", out)
    (out / "model.onnx").write_bytes(b"stale")
    graphc.compile("specs/mlp.yaml", out)
    assert (out / "model.onnx").read_bytes() != b"stale"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_compile_with_weights_ships_those_weights(tmp_path: Path) -> None:
    trained = graphc.build("specs/mlp.yaml", seed=7)
    graphc.save_weights(trained, tmp_path / "w.safetensors")
    r = run_cli("compile", "specs/mlp.yaml", "-o", str(tmp_path / "out"), "--weights", str(tmp_path / "w.safetensors"))
    assert r.code == 0, r.err
    from graphc.export.weights import read_weights

    shipped = read_weights(tmp_path / "out" / "weights.safetensors")
    torch.testing.assert_close(shipped["fc1.weight"], trained.fc1.weight.detach())
