"""A ``graphc compile`` folder's ``manifest.json`` read into typed signatures (no torch, no onnx).

The manifest is the contract the server and ``graphc predict`` check every request against:
input names, symbolic shapes, dtypes, each symbolic dim's proven range (the sizes the ONNX
file was verified at or derived for), and, where the manifest carries it, an input's value
range (ids below the vocabulary size).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from graphc.errors import GraphcError, Pos

MAX_MANIFEST_BYTES = 1 << 20
INT_MAX = 2**31 - 1


@dataclass(frozen=True)
class TensorSig:
    """One input or output: ``shape`` holds ints and symbol names (``B``, ``T``)."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str
    range: tuple[float, float] | None = None  # [low, high) of values (integer ids); None: unknown

    @property
    def is_float(self) -> bool:
        return self.dtype.startswith(("float", "bfloat"))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"shape": list(self.shape), "dtype": self.dtype}
        if self.range is not None:
            out["range"] = list(self.range)
        return out


@dataclass(frozen=True)
class Manifest:
    """The signatures of a compiled model."""

    folder: Path
    name: str
    inputs: dict[str, TensorSig]
    outputs: dict[str, TensorSig]
    dims: dict[str, tuple[int, int]]  # symbol -> [low, high] inclusive, proven by export
    examples: dict[str, int] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def batch_dim(self) -> str | None:
        """The symbol every input and output starts with, if there is one: requests can be
        concatenated along it (micro-batching) and outputs split back along it."""
        firsts = {s.shape[0] if s.shape else None for s in (*self.inputs.values(), *self.outputs.values())}
        only = next(iter(firsts)) if len(firsts) == 1 else None
        return only if isinstance(only, str) else None

    def dim_range(self, symbol: str) -> tuple[int, int]:
        return self.dims.get(symbol, (1, INT_MAX))

    def to_json(self) -> dict[str, Any]:
        """What ``GET /v1/model`` answers."""
        return {
            "name": self.name,
            "inputs": {n: s.to_json() for n, s in self.inputs.items()},
            "outputs": {n: s.to_json() for n, s in self.outputs.items()},
            "dims": {d: {"range": list(r), "example": self.examples.get(d)} for d, r in self.dims.items()},
            "batch_dim": self.batch_dim,
            "spec": self.raw.get("spec", {}),
            "versions": self.raw.get("versions", {}),
        }


def is_compile_folder(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and (p / "manifest.json").is_file() and (p / "model.onnx").is_file()


def load_manifest(folder: str | Path) -> Manifest:
    """Read ``folder/manifest.json``.

    Raises:
        GraphcError: the folder is not a ``graphc compile`` output, or its manifest is unreadable.
    """
    folder = Path(folder)
    path = folder / "manifest.json"
    if not is_compile_folder(folder):
        raise GraphcError(f"{folder}: not a 'graphc compile' folder (needs manifest.json and model.onnx)")
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise ValueError(f"larger than {MAX_MANIFEST_BYTES} bytes")
        raw = json.loads(path.read_text(encoding="utf-8"))
        return _parse(folder, raw)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise GraphcError(f"cannot read the manifest: {e}", Pos(str(path))) from None


def _sig(name: str, d: dict[str, Any]) -> TensorSig:
    shape = tuple(int(x) if isinstance(x, int) else str(x) for x in d["shape"])
    rng = d.get("range")
    return TensorSig(name, shape, str(d.get("dtype", "float32")), (float(rng[0]), float(rng[1])) if rng else None)


def _parse(folder: Path, raw: dict[str, Any]) -> Manifest:
    dims = {}
    examples = {}
    for sym, d in raw.get("dims", {}).items():
        lo, hi = d.get("range", [1, None])
        dims[sym] = (int(lo or 1), int(hi) if hi is not None else INT_MAX)
        if d.get("example") is not None:
            examples[sym] = int(d["example"])
    return Manifest(
        folder=folder,
        name=str(raw.get("spec", {}).get("name", folder.name)),
        inputs={n: _sig(n, d) for n, d in raw["inputs"].items()},
        outputs={n: _sig(n, d) for n, d in raw["outputs"].items()},
        dims=dims,
        examples=examples,
        raw=raw,
    )
