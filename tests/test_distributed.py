"""Training on two processes (gloo, CPU): DDP and FSDP2 match one process with the same global
batch step for step, checkpoints resume across process counts (2 -> 1, 1 -> 2), and a killed
worker ends the run with one line naming its rank.

The multi-process runs are few and tiny: one module fixture starts each configuration once
(a 2-layer, d=16 decoder on 256 synthetic sequences, 6 steps) and the tests read its results.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import ROOT

SPEC = """\
graphc: 1
name: tiny_gpt
params: {vocab: 16, ctx: 8, d: 16, heads: 2, layers: 2}
inputs:
  tokens: {shape: [B, T], dtype: int64, example: {B: 2, T: 8}, range: [0, 16]}
blocks:
  decoder:
    params: {d: int, heads: int}
    inputs: [x]
    nodes:
      ln1:  {op: layer_norm, in: x}
      attn: {op: attention, in: ln1, heads: "${heads}", causal: true}
      res1: {op: add, in: [x, attn]}
      ln2:  {op: layer_norm, in: res1}
      fc:   {op: linear, in: ln2, out: "${2 * d}"}
      act:  {op: gelu, in: fc}
      proj: {op: linear, in: act, out: "${d}"}
      res2: {op: add, in: [res1, proj]}
    outputs: [res2]
nodes:
  tok:  {op: embedding, in: tokens, num: "${vocab}", dim: "${d}"}
  pos:  {op: position_embedding, in: tokens, max_len: "${ctx}", dim: "${d}"}
  h:    {op: add, in: [tok, pos]}
  body: {block: decoder, in: h, repeat: "${layers}", d: "${d}", heads: "${heads}"}
  lnf:  {op: layer_norm, in: body}
  head: {op: linear, in: lnf, out: "${vocab}", bias: false, tie: tok}
outputs: {logits: head}
train:
  data: {dataset: synthetic_sequence, samples: 256}
  loss: {type: cross_entropy, output: logits, target: target}
  metrics: [accuracy]
  optimizer: {lr: 0.01}
  batch_size: 8
  grad_accum: 2
  steps: 6
  eval_every: 1
  eval_batches: 1
  checkpoint: {keep: 10}
"""
ONE = ["--set", "train.batch_size=16"]  # one process, the two ranks' batches together
RESUME_AT = 3  # resume tests drop the checkpoints after this step


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _graphc(*args: str, launcher: tuple[str, ...] = ("-m", "graphc"), timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *launcher, *args], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)


def _ok(r: subprocess.CompletedProcess[str]) -> None:
    assert r.returncode == 0, r.stderr[-3000:]


def _in_process(*args: str) -> None:
    from conftest import run_cli

    r = run_cli(*args)
    assert r.code == 0, r.err


def _history(run: Path) -> list[dict[str, float]]:
    """Per-step rows at full precision: the newest checkpoint's state (metrics.csv rounds)."""
    last = sorted((run / "checkpoints").glob("step_*"))[-1]
    state: dict[str, Any] = torch.load(last / "state.pt", weights_only=True)
    return list(state["history"])


def _cut(src: Path, dst: Path) -> None:
    """A copy of run ``src`` as if stopped after step RESUME_AT."""
    shutil.copytree(src, dst)
    for ckpt in (dst / "checkpoints").glob("step_*"):
        if int(ckpt.name[5:]) > RESUME_AT:
            shutil.rmtree(ckpt)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each configuration once: one process; DDP under an outside torchrun; FSDP (with
    activation checkpointing) through --nproc; FSDP -> one process; one process -> FSDP."""
    work = tmp_path_factory.mktemp("dist")
    spec = work / "gpt.yaml"
    spec.write_text(SPEC)
    out = {name: work / name for name in ("one", "ddp", "fsdp", "fsdp_to_one", "one_to_fsdp")}
    _in_process("train", str(spec), "-o", str(out["one"]), "-q", *ONE)
    _ok(_graphc("--nproc-per-node", "2", "-m", "graphc", "train", str(spec), "-o", str(out["ddp"]), "-q",
                launcher=("-m", "torch.distributed.run")))
    fsdp = ("--set", "train.distributed.strategy=fsdp")
    _ok(_graphc("train", str(spec), "-o", str(out["fsdp"]), "-q", "--nproc", "2", *fsdp, "--set", "train.activation_checkpointing=[body]"))
    _cut(out["fsdp"], out["fsdp_to_one"])
    _in_process("train", str(spec), "-o", str(out["fsdp_to_one"]), "-q", "--resume", *ONE)
    _cut(out["one"], out["one_to_fsdp"])
    _ok(_graphc("train", str(spec), "-o", str(out["one_to_fsdp"]), "-q", "--resume", "--nproc", "2", *fsdp))
    return out


def _same_losses(a: list[dict[str, float]], b: list[dict[str, float]], tol: float = 1e-5) -> None:
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 3, 4, 5, 6]
    for ra, rb in zip(a, b, strict=True):
        for col in ("train_loss", "val_loss", "val_accuracy"):
            assert abs(ra[col] - rb[col]) <= tol * max(1.0, abs(ra[col])), (ra["step"], col, ra[col], rb[col])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ddp", "fsdp"])
def test_two_processes_match_one_with_the_same_global_batch(runs: dict[str, Path], name: str) -> None:
    one = _history(runs["one"])
    assert one[-1]["train_loss"] < one[0]["train_loss"] - 0.5, "the model learns: the comparison is not between constants"
    _same_losses(one, _history(runs[name]))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fsdp_to_one", "one_to_fsdp"])
def test_resume_on_another_number_of_processes_continues_the_curve(runs: dict[str, Path], name: str) -> None:
    _same_losses(_history(runs["one"]), _history(runs[name]))


@pytest.mark.slow
def test_rank_zero_alone_writes_one_ordinary_run_folder(runs: dict[str, Path]) -> None:
    from safetensors.torch import load_file

    for name in ("ddp", "fsdp"):
        assert sorted(p.name for p in runs[name].iterdir()) == sorted(p.name for p in runs["one"].iterdir())
        assert (runs[name] / "metrics.csv").read_text().splitlines()[0] == (runs["one"] / "metrics.csv").read_text().splitlines()[0]
        best, ref = load_file(str(runs[name] / "best.safetensors")), load_file(str(runs["one"] / "best.safetensors"))
        assert best.keys() == ref.keys(), "the spec's names, tied table once, whatever the strategy"
        # the key third of attn.qkv.bias has no gradient in exact arithmetic (softmax ignores a shift
        # along the key axis): Adam scales its rounding noise up to lr-sized steps, so it is left out
        assert all(torch.allclose(best[k], ref[k], atol=1e-4) for k in ref if not k.endswith("qkv.bias"))
        ckpt = sorted((runs[name] / "checkpoints").glob("step_*"))[-1]
        assert (ckpt / "dcp" / ".metadata").is_file() and not (ckpt / "model.safetensors").exists()
    assert not list((runs["one"] / "checkpoints").glob("step_*/dcp")), "one process keeps the one-file checkpoint"


def _workers(launcher: int) -> list[int]:
    """The pids of the launcher's worker processes (multiprocessing spawn children)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmd = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == launcher and b"spawn_main" in cmd:
            found.append(int(stat.parent.name))
    return sorted(found)


@pytest.mark.slow
def test_killed_worker_ends_the_run_naming_its_rank_then_resume(tmp_path: Path) -> None:
    spec = tmp_path / "gpt.yaml"
    spec.write_text(SPEC)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "graphc", "train", str(spec), "-o", str(run), "-q", "--nproc", "2", "--set", "train.steps=100000"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not list(run.glob("checkpoints/step_*/manifest.json")):
            assert proc.poll() is None, proc.communicate()[1]
            time.sleep(0.1)
        workers = _workers(proc.pid)
        assert len(workers) == 2, workers
        os.kill(workers[-1], signal.SIGKILL)
        _, err = proc.communicate(timeout=60)  # bounded: the agent stops the other worker
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err
    line = re.fullmatch(r"graphc: error: rank (\d) \(pid (\d+)\) (died|was killed by SIGKILL); the other workers were stopped "
                        r"\(continue with --resume\)\n1 error\n", err)
    assert line is not None, err  # whether the agent saw the signal or only the loss depends on who noticed first
    assert int(line[2]) == workers[-1]
    assert not _workers(proc.pid)
    r = _graphc("train", str(spec), "-o", str(run), "-q", "--resume", "--set", "train.steps=4", *ONE)
    _ok(r)
    assert [row["step"] for row in _history(run)][-1] == 4


# --- no processes: the environment, the shards, the recipe -----------------------------------------


def test_world_from_torchrun_slurm_or_nothing() -> None:
    from graphc.train.distributed import World, world_from_env

    assert world_from_env({}) == World()
    w = world_from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "h", "MASTER_PORT": "1"})
    assert (w.rank, w.size, w.local_rank, w.source, w.main) == (3, 4, 1, "torchrun", False)
    w = world_from_env({"SLURM_PROCID": "2", "SLURM_STEP_NUM_TASKS": "8", "SLURM_LOCALID": "0", "SLURM_JOB_ID": "12345",
                        "MASTER_ADDR": "node1"})
    assert (w.rank, w.size, w.source, w.master) == (2, 8, "slurm", ("node1", 20000 + 12345 % 20000))
    assert world_from_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "8"}) == World(), "an sbatch shell is not a job step"


def test_rank_slices_cover_the_global_batch_exactly() -> None:
    from graphc.data.loader import shard

    idx = torch.randperm(48)
    for world in (1, 2, 3, 4):
        parts = [shard(idx, r, world) for r in range(world)]
        assert torch.equal(torch.cat(parts), idx) and len({len(p) for p in parts}) == 1


def test_recipe_distributed_section_is_validated(tmp_path: Path) -> None:
    from conftest import run_cli

    spec = tmp_path / "gpt.yaml"
    spec.write_text(SPEC.replace("  steps: 6\n", "  steps: 6\n  distributed: {strategy: zero, timout: 5}\n"))
    r = run_cli("train", str(spec), "-o", str(tmp_path / "run"))
    assert r.code == 1
    assert f"{spec}:36:27: error: train.distributed.strategy:" in r.err and "'ddp' or 'fsdp'" in r.err
    assert f"{spec}:36:33: error: train.distributed.timout: unknown field 'timout' (did you mean 'timeout'?)" in r.err
    assert "Traceback" not in r.err
    r = run_cli("train", str(spec), "-o", str(tmp_path / "run"), "--nproc", "0")
    assert r.code == 2 and "expected a positive number of processes" in r.err
    assert not (tmp_path / "run").exists()


def test_nproc_under_torchrun_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import run_cli

    spec = tmp_path / "gpt.yaml"
    spec.write_text(SPEC)
    for k, v in {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(k, v)
    r = run_cli("train", str(spec), "-o", str(tmp_path / "run"), "--nproc", "2")
    assert (r.code, r.err) == (1, "graphc: error: --nproc starts its own workers; under torchrun or srun leave it out\n1 error\n")
    assert not (tmp_path / "run").exists()


def _manifest(folder: Path) -> None:
    import hashlib
    import json

    files = sorted(str(f.relative_to(folder)) for f in folder.rglob("*") if f.is_file() and f.name != "manifest.json")
    digests = {f: hashlib.sha256((folder / f).read_bytes()).hexdigest() for f in files}
    (folder / "manifest.json").write_text(json.dumps({"step": 1, "format": "dcp", "files": digests}))


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.write_text, (self.marker, "ran"))


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_sharded_checkpoint_metadata_never_unpickles_code(tmp_path: Path) -> None:
    """DCP itself unpickles .metadata without restriction; graphc reads data types only."""
    import pickle

    import torch.distributed.checkpoint as dcp

    from graphc.errors import WeightsError
    from graphc.train.checkpoint import restore
    from graphc.train.distributed import Strategy, World

    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    step = tmp_path / "step_00000001"
    dcp.save({"model": model.state_dict()}, checkpoint_id=step / "dcp")
    torch.save({"step": 1}, step / "state.pt")
    marker = tmp_path / "pwned"
    (step / "dcp" / ".metadata").write_bytes(pickle.dumps(_Payload(marker)))
    _manifest(step)
    with pytest.raises(WeightsError, match=r"cannot load the sharded checkpoint: .*is not a checkpoint metadata type"):
        restore(step, model, opt, Strategy(World(), torch.device("cpu")))
    assert not marker.exists()


def test_manifest_naming_a_file_outside_the_checkpoint_is_refused(tmp_path: Path) -> None:
    import json

    from graphc.errors import WeightsError
    from graphc.train.checkpoint import verify_checkpoint

    (tmp_path / "secret").write_text("x")
    step = tmp_path / "ck" / "step_00000001"
    step.mkdir(parents=True)
    (step / "manifest.json").write_text(json.dumps({"step": 1, "files": {"../../secret": "0" * 64}}))
    with pytest.raises(WeightsError, match=r"corrupt manifest.json: file name '../../secret' is outside the checkpoint"):
        verify_checkpoint(step)
