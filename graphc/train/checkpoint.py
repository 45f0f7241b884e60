"""Crash-safe checkpoints: a folder per step whose manifest is written last.

``RUN_DIR/checkpoints/step_00000120/`` holds ``model.safetensors`` (keys = the spec's node
paths, like ``best.safetensors``), ``state.pt`` (optimizer, schedule, RNG, data position and
trainer state) and ``manifest.json`` with the sha256 of both.  The folder is assembled under
a temporary name and renamed into place after the manifest, so a checkpoint either exists
whole or not at all; a file truncated later (disk full, copy cut short) fails its checksum
and is refused with a one-line error.

A run on more than one process writes the same folder with ``dcp/`` (model and optimizer
through ``torch.distributed.checkpoint``: each rank writes its own shards, in parallel)
instead of ``model.safetensors``, and ``state.pt`` without the optimizer; the manifest
(``"format": "dcp"``) lists every file.  Either format resumes on any number of processes:
DCP reshards on load, and a one-process checkpoint is read whole and sharded as it loads.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from graphc.errors import TrainError, WeightsError, first_line
from graphc.train.distributed import Strategy, World, local, on_main, sharded
from graphc.weights.tensors import load_weights, read_weights, save_weights, tied_aliases

MANIFEST = "manifest.json"
FILES = ("model.safetensors", "state.pt")
SHARDED = "dcp"  # the torch.distributed.checkpoint folder of a multi-process run's checkpoint


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
    assert_finite_state(model.state_dict(), step)


def assert_finite_state(state: dict[str, torch.Tensor], step: int) -> None:
    for name, p in state.items():
        if p.is_floating_point() and not bool(torch.isfinite(p).all()):
            raise TrainError(f"step {step}: parameter '{name}' is not finite; no checkpoint written")


def read_full(path: Path, model: nn.Module) -> dict[str, torch.Tensor]:
    """A weights file as a whole state dict of ``model`` (tied names filled from their owner)."""
    tensors, aliases = read_weights(path), tied_aliases(model)
    missing = sorted(k for k in model.state_dict() if aliases.get(k, k) not in tensors)
    if missing:
        raise WeightsError(f"{path}: weights do not match the model: missing {', '.join(missing[:5])}")
    return {k: tensors[aliases.get(k, k)] for k in model.state_dict()}


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
        if not isinstance(name, str) or Path(name).is_absolute() or ".." in Path(name).parts:
            raise WeightsError(f"{path}: corrupt {MANIFEST}: file name {name!r} is outside the checkpoint")
        f = path / name
        if not f.is_file():
            raise WeightsError(f"{path}: checkpoint file {name} is missing")
        if _sha256(f) != digest:
            raise WeightsError(f"{path}: checkpoint file {name} is corrupt or truncated (checksum mismatch)")


def _first_non_finite(model: nn.Module) -> str | None:
    for name, p in model.state_dict().items():
        t = local(p)
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return name
    return None


def save_sharded(ckpt_dir: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any], world: World) -> Path:
    """Write checkpoint ``step`` of a multi-process run (collective: every rank calls it).

    Rank 0 makes the temporary folder, every rank writes its shards into ``dcp/``, then rank 0
    writes ``state.pt`` and the manifest and renames the folder into place, as
    :func:`save_checkpoint` does.
    """
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    bad: list[str | None] = [None] * world.size
    dist.all_gather_object(bad, _first_non_finite(model))
    if any(bad):
        raise TrainError(f"step {step}: parameter '{next(b for b in bad if b)}' is not finite; no checkpoint written")
    final = ckpt_dir / f"step_{step:08d}"
    tmp = ckpt_dir / f".{final.name}.partial"

    def prepare() -> None:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()

    def finish() -> None:
        torch.save(state, tmp / "state.pt")
        _fsync(tmp / "state.pt")
        files = sorted(str(f.relative_to(tmp)) for f in tmp.rglob("*") if f.is_file())
        manifest = {"step": step, "format": SHARDED, "world": world.size, "files": {f: _sha256(tmp / f) for f in files}}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        _fsync(tmp / MANIFEST)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)

    on_main(world, prepare)
    try:
        msd, osd = get_state_dict(model, optimizer)
        dcp.save({"model": msd, "optim": osd}, checkpoint_id=tmp / SHARDED)
        on_main(world, finish)
    except BaseException:
        if world.main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def restore(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, strategy: Strategy) -> dict[str, Any]:
    """Verify ``path``, load model and optimizer state (either format, any number of processes)
    and return the rest of the training state."""
    if (path / SHARDED).is_dir():
        verify_checkpoint(path)
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        msd, osd = get_state_dict(model, optimizer)
        both: dict[str, Any] = {"model": msd, "optim": osd}
        try:
            with warnings.catch_warnings():  # "assuming ... a single process": yes, that is a 2 -> 1 resume
                warnings.filterwarnings("ignore", message="torch.distributed is disabled")
                dcp.load(both, storage_reader=_safe_reader(path / SHARDED), planner=_safe_planner())
        except (Exception, dcp.api.CheckpointException) as e:  # (a BaseException) wraps each rank's failure
            raise WeightsError(f"{path}: cannot load the sharded checkpoint: {_cause(e)}") from None
        set_state_dict(model, optimizer, model_state_dict=both["model"], optim_state_dict=both["optim"])
        return _read_state(path)
    if not sharded(model):
        state = load_checkpoint(path, model)
        optimizer.load_state_dict(state["optimizer"])
        return state
    verify_checkpoint(path)  # a one-process checkpoint into sharded parameters: whole tensors, sharded as they load
    strategy.load_full(model, read_full(path / "model.safetensors", model))
    state = _read_state(path)
    _load_full_optimizer(model, optimizer, state["optimizer"])
    return state


# torch.distributed.checkpoint unpickles its .metadata file and its non-tensor values with no
# restriction; a checkpoint folder can come from anyone, so graphc reads both the way it reads
# every torch file: data types only (graphc never unpickles code).
_METADATA_GLOBALS = {("torch", "Size"), ("torch.serialization", "_get_layout"), ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
                     ("pathlib", "PosixPath"), ("pathlib", "WindowsPath"), ("collections", "OrderedDict")}


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        dtype = module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)
        if dtype or (module, name) in _METADATA_GLOBALS or module == "torch.distributed.checkpoint.metadata":
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not a checkpoint metadata type")


def _safe_reader(path: Path) -> Any:
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import Metadata, StorageMeta

    class Reader(FileSystemReader):
        def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
            with open(path / ".metadata", "rb") as f:
                metadata = _MetadataUnpickler(f).load()
            if not isinstance(metadata, Metadata):
                raise pickle.UnpicklingError(f"{type(metadata).__name__} is not checkpoint metadata")
            meta = metadata.storage_meta or StorageMeta()
            meta.load_id = self.load_id
            metadata.storage_meta = meta
            return metadata

    return Reader(path)


def _safe_planner() -> Any:
    import io

    from torch.distributed.checkpoint import DefaultLoadPlanner
    from torch.distributed.checkpoint.planner import ReadItem

    class Planner(DefaultLoadPlanner):
        def load_bytes(self, read_item: ReadItem, value: io.BytesIO) -> None:
            obj = torch.load(value, weights_only=True)
            if self.flatten_state_dict:
                from torch.distributed.checkpoint._traverse import set_element

                set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], obj)
            else:
                self.state_dict[read_item.dest_index.fqn] = obj

    return Planner()


def _cause(e: BaseException) -> str:
    """The first rank's own error out of DCP's CheckpointException (whose text is every rank's traceback)."""
    failures = getattr(e, "failures", None)
    if isinstance(failures, dict) and failures:
        first = failures[min(failures)]
        first = first[0] if isinstance(first, tuple) else first  # (exception, traceback) per rank
        return first_line(first) if isinstance(first, BaseException) else str(first)
    return first_line(e)


def _load_full_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """A one-process optimizer state (keyed by parameter index) into a sharded optimizer: the
    indices become parameter names, which ``set_optimizer_state_dict`` shards."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    names = {id(p): n for n, p in model.named_parameters()}
    order = [names[id(p)] for g in optimizer.param_groups for p in g["params"]]
    index = [i for g in saved["param_groups"] for i in g["params"]]
    if len(index) != len(order):
        raise WeightsError(f"the checkpoint's optimizer holds {len(index)} parameters, this run {len(order)}")
    fqn = dict(zip(index, order, strict=True))
    full: dict[str, Any] = {"state": {fqn[i]: v for i, v in saved["state"].items()},
            "param_groups": [{**g, "params": [fqn[i] for i in g["params"]]} for g in saved["param_groups"]]}
    set_optimizer_state_dict(model, optimizer, full, options=StateDictOptions(full_state_dict=True))


def _read_state(path: Path) -> dict[str, Any]:
    try:
        state: dict[str, Any] = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"{path}: cannot read state.pt: {str(e).splitlines()[0]}") from None
    return state


def load_checkpoint(path: Path, model: nn.Module) -> dict[str, Any]:
    """Verify ``path``, load its weights into ``model`` and return its training state."""
    verify_checkpoint(path)
    load_weights(model, path / "model.safetensors")
    return _read_state(path)


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
