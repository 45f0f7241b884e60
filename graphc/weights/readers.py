"""Checkpoint readers: names, shapes and dtypes from headers; tensors one at a time.

A :class:`Checkpoint` lists its tensors (:class:`TensorInfo`: name, shape, dtype) without
reading their data, so ``graphc weights plan`` needs no torch for safetensors, and
:meth:`Checkpoint.tensor` reads one tensor when asked, so converting never holds two copies
of a checkpoint.

Formats (all offline):

* a ``.safetensors`` file: the header is parsed here (8-byte little-endian length + JSON),
  checked against the file size before anything is allocated; a tensor's bytes are read with
  ``seek`` + ``readinto`` (not mmap: touched mmap pages count towards RSS until unmapped,
  and the convert benchmark holds RSS to one tensor at a time);
* a Hugging Face folder: ``model.safetensors``, ``model.safetensors.index.json`` (shards),
  ``pytorch_model.bin`` or ``pytorch_model.bin.index.json``;
* a torch ``.pt``/``.pth``/``.bin`` state dict, loaded with ``torch.load(weights_only=True,
  mmap=True)``: a pickle that needs code is refused, never run;
* a graphc run folder (``best.safetensors``) or ``graphc compile`` folder
  (``weights.safetensors``).
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from graphc.errors import WeightsError

if TYPE_CHECKING:
    import torch

MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the JSON header
ST_DTYPES = {  # safetensors dtype -> (bytes per element, torch dtype name)
    "F64": (8, "float64"), "F32": (4, "float32"), "F16": (2, "float16"), "BF16": (2, "bfloat16"),
    "I64": (8, "int64"), "I32": (4, "int32"), "I16": (2, "int16"), "I8": (1, "int8"), "U8": (1, "uint8"),
    "BOOL": (1, "bool"),
}
TORCH_TO_ST = {v[1]: k for k, v in ST_DTYPES.items()}


@dataclass(frozen=True)
class TensorInfo:
    """What the plan needs to know about one checkpoint tensor."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # torch dtype name, e.g. "float32"


class Checkpoint:
    """A set of named tensors whose headers are known and whose data is read lazily."""

    path: Path
    metadata: dict[str, str]

    def infos(self) -> dict[str, TensorInfo]:
        raise NotImplementedError

    def tensor(self, name: str) -> torch.Tensor:
        raise NotImplementedError


class SafetensorsFile(Checkpoint):
    """One ``.safetensors`` file, header parsed and bounds-checked against the file size."""

    def __init__(self, path: Path) -> None:
        self.path = path
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise WeightsError(f"{path}: not a safetensors file: {size} bytes, shorter than the 8-byte header length")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER or 8 + n > size:
                raise WeightsError(f"{path}: corrupt safetensors header: it claims {n} header bytes but the file has {size - 8} after the length")
            raw = f.read(n)
        try:
            header = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise WeightsError(f"{path}: corrupt safetensors header: not JSON ({e})") from None
        if not isinstance(header, dict):
            raise WeightsError(f"{path}: corrupt safetensors header: not a JSON object")
        meta = header.pop("__metadata__", None) or {}
        self.metadata = {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}
        self._data_start = 8 + n
        self._entries: dict[str, tuple[TensorInfo, int, int]] = {}
        data_len = size - self._data_start
        for name, entry in header.items():
            self._entries[name] = _entry(path, name, entry, data_len)

    def infos(self) -> dict[str, TensorInfo]:
        return {k: v[0] for k, v in self._entries.items()}

    def tensor(self, name: str) -> torch.Tensor:
        import torch

        info, start, end = self._entries[name]
        buf = bytearray(end - start)
        with open(self.path, "rb") as f:
            f.seek(self._data_start + start)
            if f.readinto(buf) != len(buf):
                raise WeightsError(f"{self.path}: tensor '{name}' is truncated")
        if not buf:
            return torch.empty(info.shape, dtype=getattr(torch, info.dtype))
        return torch.frombuffer(buf, dtype=getattr(torch, info.dtype)).reshape(info.shape)


def _entry(path: Path, name: str, entry: Any, data_len: int) -> tuple[TensorInfo, int, int]:
    """Check one header entry: a known dtype, a shape whose byte size equals its offsets, in the file."""
    bad = f"{path}: corrupt safetensors header: tensor '{name}'"
    if not isinstance(entry, dict) or entry.get("dtype") not in ST_DTYPES:
        raise WeightsError(f"{bad} has no known dtype")
    shape, offsets = entry.get("shape"), entry.get("data_offsets")
    if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
        raise WeightsError(f"{bad} has an invalid shape {shape!r}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
        raise WeightsError(f"{bad} has invalid data_offsets {offsets!r}")
    start, end = offsets
    width, dtype = ST_DTYPES[entry["dtype"]]
    if not 0 <= start <= end or end - start != math.prod(shape) * width:
        raise WeightsError(f"{bad}: shape {shape} {entry['dtype']} does not fit its data_offsets {offsets}")
    if end > data_len:
        raise WeightsError(f"{bad} ends at byte {end} but the file holds only {data_len} data bytes (truncated?)")
    return TensorInfo(name, tuple(shape), dtype), start, end


class TorchFile(Checkpoint):
    """A torch state dict file, loaded memory-mapped with ``weights_only=True`` (no code runs)."""

    def __init__(self, path: Path) -> None:
        import torch

        self.path = path
        self.metadata = {}
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=_is_zip(path))
        except Exception as e:  # UnpicklingError for code, RuntimeError/EOFError for corrupt files
            raise WeightsError(f"{path}: refused to load: {_why_not(e)}") from None
        if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise WeightsError(f"{path}: not a state dict (expected a mapping of names to tensors)")
        self._tensors: dict[str, torch.Tensor] = {str(k): v for k, v in obj.items()}

    def infos(self) -> dict[str, TensorInfo]:
        return {k: TensorInfo(k, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in self._tensors.items()}

    def tensor(self, name: str) -> torch.Tensor:
        return self._tensors[name]


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def _why_not(e: BaseException) -> str:
    text = str(e).strip()
    if "weights_only" in text or "Unsupported global" in text or "GLOBAL" in text:
        return "it is a pickle that needs code to load (only plain tensors are accepted; it was not run)"
    return (text.splitlines() or [type(e).__name__])[0][:200]


class Sharded(Checkpoint):
    """Several checkpoint files read as one (a Hugging Face index, or a list of shards)."""

    def __init__(self, path: Path, shards: list[Checkpoint]) -> None:
        self.path = path
        self.metadata = {}
        self._shards = shards
        self._owner: dict[str, Checkpoint] = {}
        for shard in shards:
            for name in shard.infos():
                if name in self._owner:
                    raise WeightsError(f"{path}: tensor '{name}' is in both {self._owner[name].path.name} and {shard.path.name}")
                self._owner[name] = shard

    def infos(self) -> dict[str, TensorInfo]:
        return {k: v for s in self._shards for k, v in s.infos().items()}

    def tensor(self, name: str) -> torch.Tensor:
        return self._owner[name].tensor(name)


FOLDER_FILES = ("best.safetensors", "weights.safetensors", "model.safetensors", "model.safetensors.index.json",
                "pytorch_model.bin.index.json", "pytorch_model.bin")


def open_checkpoint(path: str | Path) -> Checkpoint:
    """Open a checkpoint file or folder by looking at what it is, not at its name alone."""
    path = Path(path)
    if path.is_dir():
        for name in FOLDER_FILES:
            if (path / name).is_file():
                return open_checkpoint(path / name)
        raise WeightsError(f"{path}: no checkpoint in this folder (looked for {', '.join(FOLDER_FILES)})")
    if not path.is_file():
        raise WeightsError(f"{path}: checkpoint not found")
    if path.name.endswith(".index.json"):
        return _index(path)
    if _looks_safetensors(path):
        return SafetensorsFile(path)
    return TorchFile(path)


def _looks_safetensors(path: Path) -> bool:
    if path.suffix == ".safetensors":
        return True
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def _index(path: Path) -> Checkpoint:
    """A Hugging Face shard index: ``{"weight_map": {tensor: shard file}}``."""
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
        files = sorted(set(index["weight_map"].values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise WeightsError(f"{path}: not a checkpoint index (expected {{\"weight_map\": {{name: file}}}}): {e}") from None
    shards = []
    for name in files:
        shard = (path.parent / str(name)).resolve()
        if shard.parent != path.parent.resolve():
            raise WeightsError(f"{path}: shard '{name}' is outside the checkpoint's folder")
        shards.append(open_checkpoint(shard))
    return Sharded(path, shards)
