"""tools/gpu_check's CPU-side logic: arguments, the no-CUDA refusal, the report and JSON.

The check itself needs a CUDA machine (it is run there by hand); these tests keep the parts
that run anywhere honest, cheaply (no training, no torch.compile).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from conftest import ROOT

SCRIPT = ROOT / "tools" / "gpu_check"


def load() -> ModuleType:
    """The script as a module (it has no .py suffix, so name the loader)."""
    loader = importlib.machinery.SourceFileLoader("gpu_check", str(SCRIPT))
    spec = importlib.util.spec_from_loader("gpu_check", loader)
    assert spec is not None
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def test_is_an_executable_python_script() -> None:
    assert os.access(SCRIPT, os.X_OK)
    assert SCRIPT.read_text().startswith("#!/usr/bin/env python3\n")


def test_arguments_defaults_quick_and_skip(tmp_path: Path) -> None:
    g = load()
    a = g.parse_args([])
    assert (a.json, a.steps, a.ddp_steps, a.skip, a.quick) == (ROOT / "out" / "gpu_check.json", 20, 60, [], False)
    a = g.parse_args(["--json", str(tmp_path / "r.json"), "--quick", "--skip", "ddp", "--skip", "memory", "--steps", "50"])
    assert a.json == tmp_path / "r.json"
    assert (a.steps, a.ddp_steps, a.skip) == (8, 30, ["ddp", "memory"])  # --quick caps the step counts


@pytest.mark.parametrize("argv", [["--steps", "0"], ["--steps", "x"], ["--skip", "everything"], ["--budget", "-5"], ["--bogus"]])
def test_bad_arguments_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        load().parse_args(argv)
    assert e.value.code == 2
    assert "gpu_check: error:" in capsys.readouterr().err


def test_without_cuda_one_error_line_exit_1_nothing_written(tmp_path: Path) -> None:
    """This machine has no CUDA (CUDA_VISIBLE_DEVICES="" hides any): the check refuses at once."""
    out = tmp_path / "r.json"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    r = subprocess.run([sys.executable, str(SCRIPT), "--json", str(out)], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_check: error: no CUDA device is visible (torch "), r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert not out.exists()


def test_report_and_json_from_figures(tmp_path: Path) -> None:
    """The report names every part's figures, a skipped part says why, a failed one says FAILED."""
    g = load()
    res = {
        "device": "NVIDIA H200", "gpus": 1, "torch": "2.13.0", "cuda": "12.8", "wall_s": 300.0,
        "gemm": {"bf16": 7.5e14, "fp32": 5.0e13, "tf32": 4.0e14},
        "steps": [{"batch": [8, 128], "precision": "bf16", "compile": "regional", "step_ms": 12.5, "cold_s": 20.0,
                   "flops": 1.3e11, "mfu": 0.0139, "tokens_per_s": 81920.0}],
        "memory": [{"batch": [8, 128], "planner": 600 * 2**20, "note": "", "measured_eager": 500 * 2**20,
                    "measured_compiled": 450 * 2**20, "planner_over_eager": 1.2},
                   {"batch": [32, 256], "planner": None, "note": "graphc summary --train is unavailable here: x",
                    "measured_eager": 900 * 2**20, "measured_compiled": 800 * 2**20}],
        "ddp": {"skipped": "graphc train has no --nproc here"},
        "errors": {"gemm": "RuntimeError: boom"},
    }
    text = g.report(res)
    assert "GEMM peak: bf16 750 TFLOP/s, fp32 50 TFLOP/s, tf32 400 TFLOP/s" in text
    assert "d768 8x128 bf16 regional" in text and "MFU 1%" in text and "82 k tok/s" in text
    assert "eager 500 MiB, compiled 450 MiB; planner 600 MiB (1.20 x eager)" in text
    assert "graphc summary --train is unavailable here" in text
    assert "DDP: skipped: graphc train has no --nproc here" in text
    assert "gemm: FAILED: RuntimeError: boom" in text
    path = tmp_path / "deep" / "r.json"
    g.write_json(path, res)
    assert json.loads(path.read_text()) == res
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]  # no temporary left behind


def test_ddp_recipe_is_a_valid_graphc_recipe(tmp_path: Path) -> None:
    """The recipe the DDP part writes loads through graphc's own recipe validation (when this
    checkout knows ``distributed``), so the GPU run does not fail on its own input."""
    from graphc.graph.check import as_spec
    from graphc.train.recipe import Recipe, load_recipe

    if "distributed" not in Recipe.model_fields:
        pytest.skip("this checkout has no distributed training yet")
    cfg = tmp_path / "ddp.yaml"
    cfg.write_text(load().RECIPE.format(steps=40))
    r = load_recipe(as_spec(str(ROOT / "specs" / "gpt2.yaml"), ["layers=2", "vocab=8192", "ctx=256"]), cfg, []).recipe
    assert (r.steps, r.precision, r.compile, r.device, r.distributed.strategy) == (40, "bf16", "auto", "cuda", "ddp")
