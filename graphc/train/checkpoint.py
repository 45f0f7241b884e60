"""Crash-safe checkpoints: a folder per step whose manifest is written last.

``RUN_DIR/checkpoints/step_00000120/`` holds ``model.safetensors`` (keys = the spec's node
paths, like ``best.safetensors``), ``state.pt`` (optimizer, schedule, RNG, data position and
trainer state) and ``manifest.json`` with the sha256 of both.  The folder is assembled under
a temporary name and renamed into place after the manifest, so a checkpoint either exists
whole or not at all; a file truncated later (disk full, copy cut short) fails its checksum
and is refused with a one-line error.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from graphc.errors import TrainError, WeightsError
from graphc.weights.tensors import load_weights, save_weights

MANIFEST = "manifest.json"
FILES = ("model.safetensors", "state.pt")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def assert_finite(model: nn.Module, step: int) -> None:
    """Refuse to checkpoint weights holding NaN or inf (they would overwrite good ones)."""
    for name, p in model.state_dict().items():
        if p.is_floating_point() and not bool(torch.isfinite(p).all()):
            raise TrainError(f"step {step}: parameter '{name}' is not finite; no checkpoint written")


def save_checkpoint(ckpt_dir: Path, step: int, model: nn.Module, state: dict[str, Any]) -> Path:
    """Write checkpoint ``step`` atomically and return its folder."""
    assert_finite(model, step)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    final = ckpt_dir / f"step_{step:08d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=ckpt_dir))
    try:
        save_weights(model, tmp / "model.safetensors")
        torch.save(state, tmp / "state.pt")
        _fsync(tmp / "state.pt")
        manifest = {"step": step, "files": {f: _sha256(tmp / f) for f in FILES}}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        _fsync(tmp / MANIFEST)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def verify_checkpoint(path: Path) -> None:
    """Raise :class:`WeightsError` unless ``path`` is a complete, uncorrupted checkpoint."""
    man = path / MANIFEST
    if not man.is_file():
        raise WeightsError(f"{path}: incomplete checkpoint (no {MANIFEST})")
    try:
        files = json.loads(man.read_text())["files"]
    except (ValueError, KeyError, TypeError) as e:
        raise WeightsError(f"{path}: corrupt {MANIFEST}: {e}") from None
    for name, digest in files.items():
        f = path / name
        if not f.is_file():
            raise WeightsError(f"{path}: checkpoint file {name} is missing")
        if _sha256(f) != digest:
            raise WeightsError(f"{path}: checkpoint file {name} is corrupt or truncated (checksum mismatch)")


def load_checkpoint(path: Path, model: nn.Module) -> dict[str, Any]:
    """Verify ``path``, load its weights into ``model`` and return its training state."""
    verify_checkpoint(path)
    load_weights(model, path / "model.safetensors")
    try:
        state: dict[str, Any] = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"{path}: cannot read state.pt: {str(e).splitlines()[0]}") from None
    return state


def list_checkpoints(ckpt_dir: Path) -> list[Path]:
    """Checkpoint folders (complete or not), oldest first."""
    if not ckpt_dir.is_dir():
        return []
    return sorted(p for p in ckpt_dir.iterdir() if p.is_dir() and p.name.startswith("step_"))


def latest_valid(ckpt_dir: Path) -> tuple[Path | None, list[str]]:
    """The newest checkpoint that verifies, and a warning for each newer one that did not."""
    warnings: list[str] = []
    for path in reversed(list_checkpoints(ckpt_dir)):
        try:
            verify_checkpoint(path)
            return path, warnings
        except WeightsError as e:
            warnings.append(f"{e.message}; skipped")
    return None, warnings


def prune(ckpt_dir: Path, keep: int, protect: set[str]) -> None:
    """Delete all but the newest ``keep`` checkpoints (and those named in ``protect``)."""
    ckpts = list_checkpoints(ckpt_dir)
    for path in ckpts[: max(0, len(ckpts) - keep)]:
        if path.name not in protect:
            shutil.rmtree(path, ignore_errors=True)
