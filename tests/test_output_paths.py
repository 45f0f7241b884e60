"""Output paths: graphc replaces only what graphc wrote (graphc/outputs.py, issue 9).

Each hostile case runs ``graphc`` in a bounded child process (tests/hostile.py) against an
output path holding something of the user's, and checks the exit code, the one-line message
and that nothing in the user's temp folder changed.  Positive cases check that graphc's own
previous outputs are replaced and what ``--force`` does.
"""

from __future__ import annotations

import json
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ROOT, run_cli
from hostile import assert_clean, assert_unchanged, run_guarded, snapshot

TRAIN_SPEC = """\
graphc: 1
name: tiny
inputs:
  x: {shape: [B, 4], example: {B: 4}}
nodes:
  fc1: {op: linear, in: x, out: 8}
  act: {op: relu}
  fc2: {op: linear, out: 3}
outputs: {logits: fc2}
train:
  data: {dataset: iris}
  loss: {type: cross_entropy, output: logits, target: label}
  optimizer: {type: adamw, lr: 0.02}
  steps: 2
  batch_size: 16
  eval_every: 1
"""

FOLDER_COMMANDS = ("compile", "train")
FILE_COMMANDS = ("export", "graph", "schema")
TORCH = {"compile": True, "train": True, "export": True, "graph": False, "schema": False}


def command(name: str, spec: Path, out: str) -> list[str]:
    """``graphc NAME SPEC -o OUT`` (schema takes no spec)."""
    return ["schema", "-o", out] if name == "schema" else [name, str(spec), "-o", out]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A user's folder: ``proj/spec.yaml`` with notes, and an empty ``work/`` for outputs."""
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "spec.yaml").write_text(TRAIN_SPEC)
    (proj / "notes.txt").write_text("my notes\n")
    (tmp_path / "work").mkdir()
    return tmp_path


def refused(home: Path, name: str, out: str, contains: str, cwd: Path | None = None, extra: tuple[str, ...] = ()) -> None:
    """Run ``graphc NAME ... -o OUT``: exit 1, one clean line with ``contains``, nothing changed."""
    before = snapshot(home)
    r = run_guarded(*command(name, home / "proj" / "spec.yaml", out), *extra, cwd=cwd, torch=TORCH[name])
    assert_clean(r, codes=(1,), contains=contains)
    assert len(r.error_lines()) == 1, r.err
    assert_unchanged(before, snapshot(home))


def foreign_folder(home: Path) -> Path:
    out = home / "work" / "out"
    out.mkdir()
    (out / "mine.txt").write_text("the user's\n")
    (out / "model.py").write_text("# the user's own model.py\n")
    return out


def foreign_file(home: Path) -> Path:
    out = home / "work" / "out.bin"
    out.write_bytes(b"the user's file\n")
    return out


def fifo(home: Path) -> Path:
    out = home / "work" / "pipe"
    os.mkfifo(out)
    return out


def null_device(home: Path) -> Path:
    """A private character device like /dev/null (major 1, minor 3); root only."""
    if os.geteuid() != 0:
        pytest.skip("mknod needs root")
    out = home / "work" / "null"
    try:
        os.mknod(out, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("mknod is not permitted here")
    return out


# --- folder outputs: compile and train ----------------------------------------------------------

FOLDER_CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "foreign_folder": (foreign_folder, "is a folder graphc did not write"),
    "foreign_file": (foreign_file, "exists and is a file; a {kind} folder never replaces it"),
    "fifo": (fifo, "exists and is a FIFO"),
    "device": (null_device, "exists and is a character device"),
}
KIND = {"compile": "compile", "train": "run"}


@pytest.mark.parametrize("case", FOLDER_CASES)
@pytest.mark.parametrize("name", FOLDER_COMMANDS)
def test_folder_output_refuses_what_graphc_did_not_write(home: Path, name: str, case: str) -> None:
    make, message = FOLDER_CASES[case]
    refused(home, name, str(make(home)), message.format(kind=KIND[name]))


@pytest.mark.parametrize("name", FOLDER_COMMANDS)
def test_folder_output_refuses_current_folder_even_with_force(home: Path, name: str) -> None:
    refused(home, name, ".", "into the current folder", cwd=home / "proj", extra=("--force",))


@pytest.mark.parametrize("name", FOLDER_COMMANDS)
@pytest.mark.parametrize("where", ["proj", "."])
def test_folder_output_refuses_spec_folder_and_its_parents_even_with_force(home: Path, name: str, where: str) -> None:
    refused(home, name, str(home / where), "into the folder holding the spec", extra=("--force",))


@pytest.mark.parametrize("name", FOLDER_COMMANDS)
def test_folder_output_refuses_root_and_home(home: Path, name: str) -> None:
    refused(home, name, "/", "into the root folder", extra=("--force",))
    refused(home, name, str(Path.home()), "into your home folder", extra=("--force",))


def finished_run(home: Path) -> Path:
    """A run folder as graphc leaves it (marker manifest, results.json, weights, metrics)."""
    run = home / "work" / "run"
    (run / "checkpoints" / "step_00000002").mkdir(parents=True)
    (run / "manifest.json").write_text(json.dumps({"graphc_output": "run", "files": ["results.json"]}))
    for f in ("results.json", "best.safetensors", "metrics.csv"):
        (run / f).write_text(f"old {f}\n")
    return run


def test_train_refuses_finished_run_folder(home: Path) -> None:
    refused(home, "train", str(finished_run(home)), "holds a finished run; use --resume to continue it or --force")


def test_compile_refuses_a_run_folder(home: Path) -> None:
    refused(home, "compile", str(finished_run(home)), "is a graphc run output")


# --- single-file outputs: export, graph, schema -------------------------------------------------

FILE_CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "foreign_folder": (foreign_folder, "exists and is a folder; name a file"),
    "foreign_file": (foreign_file, "exists and graphc did not write it"),
    "fifo": (fifo, "is a FIFO with no reader"),
}


@pytest.mark.parametrize("case", FILE_CASES)
@pytest.mark.parametrize("name", FILE_COMMANDS)
def test_file_output_refuses_what_graphc_did_not_write(home: Path, name: str, case: str) -> None:
    make, message = FILE_CASES[case]
    refused(home, name, str(make(home)), message)


@pytest.mark.parametrize("name", FILE_COMMANDS)
def test_file_output_refuses_current_folder(home: Path, name: str) -> None:
    refused(home, name, ".", "exists and is a folder", cwd=home / "proj", extra=("--force",))


@pytest.mark.parametrize("name", ("export", "graph"))
def test_file_output_refuses_spec_folder(home: Path, name: str) -> None:
    refused(home, name, str(home / "proj"), "exists and is a folder", extra=("--force",))


@pytest.mark.parametrize("name", ("graph", "schema"))
def test_file_output_writes_into_device(home: Path, name: str) -> None:
    dev = null_device(home)
    before = snapshot(home)
    r = run_guarded(*command(name, home / "proj" / "spec.yaml", str(dev)), torch=False)
    assert_clean(r, codes=(0,), positioned=False)
    assert stat.S_ISCHR(dev.lstat().st_mode) and dev.lstat().st_rdev == os.makedev(1, 3)
    assert_unchanged(before, snapshot(home))


def test_export_writes_into_device(home: Path) -> None:
    """``export -o /dev/null`` is a way to check a spec exports: the device stays a device."""
    dev = null_device(home)
    before = snapshot(home)
    r = run_cli("export", str(home / "proj" / "spec.yaml"), "-o", str(dev))
    assert r.code == 0, r.err
    assert stat.S_ISCHR(dev.lstat().st_mode) and dev.lstat().st_rdev == os.makedev(1, 3)
    assert_unchanged(before, snapshot(home))


def test_schema_writes_into_fifo_with_reader(home: Path) -> None:
    pipe = fifo(home)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(pipe.read_bytes()))
    reader.start()
    try:
        r = run_cli("schema", "-o", str(pipe))
    finally:
        if reader.is_alive() and not got:  # unblock the reader if graphc never opened the pipe
            with open(pipe, "wb", buffering=0):
                pass
        reader.join(10)
    assert r.code == 0, r.err
    assert json.loads(got[0])["$id"].startswith("https://graphc.dev/schema/")
    assert stat.S_ISFIFO(pipe.lstat().st_mode)


@pytest.mark.parametrize(("name", "opset"), [("export", "999"), ("export", "1"), ("export", "-5"), ("compile", "999")])
def test_opset_out_of_range_is_usage_error(home: Path, name: str, opset: str) -> None:
    before = snapshot(home)
    r = run_guarded(name, "specs/mlp.yaml", "-o", str(home / "work" / "x"), "--opset", opset, torch=True)
    assert_clean(r, codes=(2,), contains=f"--opset {opset}: this exporter writes opsets 18 to")
    assert_unchanged(before, snapshot(home))


# --- positive cases ---------------------------------------------------------------------------


def test_recompile_replaces_own_folder_keeps_users_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run_cli("compile", "specs/mlp.yaml", "-o", str(out)).code == 0
    (out / "notes.txt").write_text("mine\n")
    old = (out / "weights.safetensors").read_bytes()
    r = run_cli("compile", "specs/mlp.yaml", "-o", str(out), "--set", "hidden=7")
    assert r.code == 0, r.err
    assert (out / "weights.safetensors").read_bytes() != old
    assert (out / "notes.txt").read_text() == "mine\n"
    assert json.loads((out / "manifest.json").read_text())["graphc_output"] == "compile"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_compile_force_writes_into_foreign_folder_replacing_only_its_names(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("the user's\n")
    (out / "model.py").write_text("# the user's\n")
    r = run_cli("compile", "specs/mlp.yaml", "-o", str(out), "--force")
    assert r.code == 0, r.err
    assert (out / "mine.txt").read_text() == "the user's\n"
    assert "def build" in (out / "model.py").read_text()
    assert (out / "model.onnx").is_file()


def test_export_replaces_own_file_and_force_replaces_foreign(tmp_path: Path) -> None:
    import graphc
    from graphc.export.api import is_graphc_onnx

    own, foreign = tmp_path / "own.onnx", tmp_path / "foreign.onnx"
    graphc.export_onnx("specs/mlp.yaml", own, verify=False)
    graphc.export_onnx("specs/mlp.yaml", own, overrides=["hidden=7"], verify=False)
    foreign.write_bytes(b"not graphc's")
    assert run_cli("export", "specs/mlp.yaml", "-o", str(foreign), "--no-verify").code == 1
    assert foreign.read_bytes() == b"not graphc's"
    assert run_cli("export", "specs/mlp.yaml", "-o", str(foreign), "--no-verify", "--force").code == 0
    assert is_graphc_onnx(own) and is_graphc_onnx(foreign)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign.onnx", "own.onnx"]


def test_failed_verify_leaves_previous_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import graphc
    import graphc.export.api as api
    from graphc.errors import VerifyError

    out = tmp_path / "m.onnx"
    graphc.export_onnx("specs/mlp.yaml", out, verify=False)
    previous = out.read_bytes()
    real = api.verify_model

    def failing(gm: object, path: object) -> object:
        r = real(gm, path, latency=False)  # type: ignore[arg-type]
        r.passed = False
        next(iter(r.outputs.values())).passed = False
        return r

    monkeypatch.setattr(api, "verify_model", failing)
    with pytest.raises(VerifyError):
        graphc.export_onnx("specs/mlp.yaml", out, overrides=["hidden=7"])
    assert out.read_bytes() == previous
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_graph_replaces_own_file_and_force_replaces_foreign(tmp_path: Path) -> None:
    out = tmp_path / "g.mmd"
    assert run_cli("graph", "specs/mlp.yaml", "-o", str(out)).code == 0
    assert run_cli("graph", "specs/mlp.yaml", "-o", str(out), "--set", "hidden=7").code == 0
    assert "[B, 7]" in out.read_text()
    out.write_text("flowchart TD\n  hand --> written\n")
    r = run_cli("graph", "specs/mlp.yaml", "-o", str(out))
    assert r.code == 1 and "graphc did not write it" in r.err
    assert run_cli("graph", "specs/mlp.yaml", "-o", str(out), "--force").code == 0
    assert out.read_text().startswith("flowchart") and "[B, 5]" in out.read_text()


def test_train_refuses_rerun_then_force_starts_afresh(home: Path) -> None:
    spec, run = home / "proj" / "spec.yaml", home / "work" / "run"
    r = run_cli("train", str(spec), "-o", str(run), "-q", "--set", "train.steps=3")
    assert r.code == 0, r.err
    (run / "mine.txt").write_text("the user's\n")
    results = (run / "results.json").read_text()
    r = run_cli("train", str(spec), "-o", str(run), "-q")
    assert r.code == 1 and "holds a finished run" in r.err
    assert (run / "results.json").read_text() == results
    r = run_cli("train", str(spec), "-o", str(run), "-q", "--force")
    assert r.code == 0, r.err
    assert json.loads((run / "results.json").read_text())["steps"] == 2
    assert "step_00000003" not in {p.name for p in (run / "checkpoints").iterdir()}  # the old run's are gone
    assert (run / "mine.txt").read_text() == "the user's\n"
    r = run_cli("train", str(spec), "-o", str(run), "-q", "--resume", "--set", "train.steps=3")
    assert r.code == 0, r.err
    assert json.loads((run / "results.json").read_text())["steps"] == 3


def test_outputs_module_needs_no_torch() -> None:
    src = (ROOT / "graphc" / "outputs.py").read_text()
    assert "import torch" not in src and "import onnx" not in src


# --- graphc.outputs unit cases (no torch) ----------------------------------------------------------


def test_manifest_cannot_name_files_outside_its_folder(tmp_path: Path) -> None:
    """A hostile manifest.json listing ``../victim`` or an absolute path removes nothing outside."""
    from graphc.outputs import check_folder, clear_owned

    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"graphc_output": "run", "files": ["../victim", str(victim), "..", "."]}))
    folder = check_folder(run, "run", force=True)
    assert not any("/" in n or n in (".", "..") for n in folder.owned)
    clear_owned(folder)
    assert victim.read_text() == "keep\n" and run.is_dir()


def test_owned_link_is_removed_not_followed(tmp_path: Path) -> None:
    """``checkpoints`` as a link to the user's folder: --force removes the link, not their files."""
    from graphc.outputs import check_folder, clear_owned

    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "data.bin").write_bytes(b"1")
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoints").symlink_to(theirs)
    clear_owned(check_folder(run, "run", force=True))
    assert not (run / "checkpoints").is_symlink() and (theirs / "data.bin").read_bytes() == b"1"


def test_folder_output_refuses_a_symbolic_link(tmp_path: Path) -> None:
    from graphc.outputs import OutputError, check_folder

    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(OutputError, match="is a symbolic link"):
        check_folder(tmp_path / "link", "compile", force=True)
