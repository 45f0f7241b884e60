"""The ``graphc`` command line: commands, ``--json`` reports, ``--set`` and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, run_cli

MLP = str(ROOT / "specs" / "mlp.yaml")


def test_check_ok() -> None:
    res = run_cli("check", MLP)
    assert res.code == 0 and res.err == ""
    assert res.out.strip().endswith("ok: 3 nodes, 73 params, outputs logits [B, 3]")


def test_check_json_ok() -> None:
    res = run_cli("check", MLP, "--json")
    out = json.loads(res.out)
    assert res.code == 0
    assert out["ok"] is True and out["nodes"] == 3 and out["total_params"] == 73
    assert out["inputs"] == {"x": "[B, 10]"} and out["outputs"] == {"logits": "[B, 3]"} and out["errors"] == []


def test_check_json_errors_carry_positions() -> None:
    bad = str(ROOT / "tests" / "invalid" / "several_errors.yaml")
    res = run_cli("check", bad, "--json")
    out = json.loads(res.out)
    assert res.code == 1 and out["ok"] is False
    assert [(e["line"], e["col"]) for e in out["errors"]] == [(7, 36), (8, 13), (9, 25)]
    assert all(e["file"] == bad and e["text"].startswith(f"{bad}:") for e in out["errors"])


def test_summary_json() -> None:
    res = run_cli("summary", MLP, "--json")
    out = json.loads(res.out)
    assert res.code == 0
    assert out["total_params"] == 73 and out["trainable_params"] == 73 and out["flops"] == 540
    fc1 = out["nodes"][0]
    assert {k: fc1[k] for k in ("name", "op", "shape", "params", "flops")} == {
        "name": "fc1", "op": "linear", "shape": "[B, 5]", "params": 55, "flops": 2 * 4 * 10 * 5,
    }
    assert [n["name"] for n in out["nodes"]] == ["fc1", "act", "fc2"]


def test_summary_table() -> None:
    res = run_cli("summary", MLP)
    assert res.code == 0
    assert "fc1" in res.out and "linear" in res.out and "total params 73" in res.out


@pytest.mark.parametrize(("fmt", "needle"), [("mermaid", "flowchart"), ("dot", "digraph")])
def test_graph_formats(fmt: str, needle: str) -> None:
    res = run_cli("graph", MLP, "--format", fmt)
    assert res.code == 0 and needle in res.out and "[B, 5]" in res.out


def test_graph_to_file(tmp_path: Path) -> None:
    out = tmp_path / "g.mmd"
    res = run_cli("graph", MLP, "-o", str(out))
    assert res.code == 0 and out.read_text().startswith("flowchart")


def test_schema_to_file(tmp_path: Path) -> None:
    out = tmp_path / "s.json"
    res = run_cli("schema", "-o", str(out))
    assert res.code == 0 and json.loads(out.read_text())["$defs"]["Node"]


@pytest.mark.parametrize(
    ("override", "params"),
    [("hidden=7", 7 * 11 + 3 * 8), ("nodes.fc1.out=7", 7 * 11 + 3 * 8), ("params.classes=4", 55 + 4 * 6)],
)
def test_set_overrides_are_typed(override: str, params: int) -> None:
    res = run_cli("summary", MLP, "--set", override, "--json")
    assert res.code == 0, res.err
    assert json.loads(res.out)["total_params"] == params


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("hidden=abc", "--set hidden=abc: expected int like the value it replaces (5)"),
        ("hiden=4", "'hiden' is neither a param nor a top-level key of the spec (did you mean 'hidden'?)"),
        ("hidden", "--set expects KEY=VALUE"),
    ],
)
def test_set_errors(override: str, message: str) -> None:
    res = run_cli("check", MLP, "--set", override)
    assert res.code == 1 and message in res.err and res.err.endswith("1 error\n")


def test_set_expression_override() -> None:
    res = run_cli("summary", MLP, "--set", "classes=${hidden + 1}", "--json")
    assert res.code == 0, res.err
    assert json.loads(res.out)["nodes"][2]["shape"] == "[B, 6]"


def test_usage_errors_exit_2() -> None:
    assert run_cli().code == 2
    assert run_cli("check").code == 2
    assert run_cli("frobnicate", MLP).code == 2
    assert run_cli("graph", MLP, "--format", "png").code == 2


def test_bad_spec_exits_1_without_traceback() -> None:
    res = run_cli("check", str(ROOT / "tests" / "invalid" / "cycle.yaml"))
    assert res.code == 1 and "Traceback" not in res.err and "cycle:" in res.err


def test_debug_shows_the_exception() -> None:
    from graphc.errors import GraphcError

    with pytest.raises(GraphcError):
        run_cli("--debug", "check", str(ROOT / "tests" / "invalid" / "cycle.yaml"))


def test_warnings_for_dead_nodes(tmp_path: Path) -> None:
    spec = tmp_path / "dead.yaml"
    spec.write_text(
        "graphc: 1\nname: dead\ninputs:\n  x: {shape: [B, 4]}\n  z: {shape: [B, 4]}\nnodes:\n"
        "  a: {op: relu, in: x}\n  b: {op: tanh, in: x}\noutputs: {y: a}\n"
    )
    res = run_cli("check", str(spec))
    assert res.code == 0
    assert f"{spec}:5:3: warning: input 'z' does not contribute to any output" in res.err
    assert f"{spec}:8:3: warning: node 'b' does not contribute to any output" in res.err


def test_python_dash_m_graphc() -> None:
    res = subprocess.run([sys.executable, "-m", "graphc", "check", MLP], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "ok: 3 nodes" in res.stdout
    res = subprocess.run([sys.executable, "-m", "graphc", "--version"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.startswith("graphc ")
