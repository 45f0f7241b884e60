"""Where a model runs: onnxruntime over a compile folder, or torch over a spec + weights.

Both take and return numpy arrays by name, with the same signatures (:class:`TensorSig`), so
``predict``/``evaluate``/``generate`` do not care which runs.  Only :class:`TorchBackend`
imports torch, and only when it is created.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from graphc.errors import GraphcError
from graphc.serve.manifest import INT_MAX, TensorSig, is_compile_folder

Arrays = dict[str, np.ndarray]
Overrides = Mapping[str, Any] | Sequence[str] | None


class Backend(Protocol):
    name: str
    inputs: dict[str, TensorSig]
    outputs: dict[str, TensorSig]

    def run(self, feeds: Mapping[str, np.ndarray]) -> Arrays: ...

    def dim_range(self, symbol: str) -> tuple[int, int]: ...


class OnnxBackend:
    """A ``graphc compile`` folder in onnxruntime (no torch)."""

    kind = "onnx"

    def __init__(self, folder: str | Path, threads: int = 0) -> None:
        from graphc.serve.runtime import OnnxModel

        self.model = OnnxModel(folder, threads)
        m = self.model.manifest
        self.name, self.inputs, self.outputs = m.name, m.inputs, m.outputs
        self.dim_range = m.dim_range  # type: ignore[method-assign]

    def run(self, feeds: Mapping[str, np.ndarray]) -> Arrays:
        return self.model.run(feeds)


class TorchBackend:
    """A spec built in torch, with ``weights`` (safetensors keyed by node paths) loaded."""

    kind = "torch"

    def __init__(self, spec: str | Path, weights: str | Path | None, overrides: Overrides = None) -> None:
        from graphc.api import _default_range, build, check
        from graphc.export.weights import load_weights

        self.tg = check(spec, overrides)
        self.gm = build(self.tg, seed=0)
        if weights is not None:
            load_weights(self.gm, weights)
        self.gm.eval()
        doc = self.tg.flat.spec.doc
        self.name = doc.name
        self.inputs = {n: TensorSig(n, tuple(i.shape), i.dtype, tuple(i.range) if i.range is not None  # type: ignore[arg-type]
                                    else (None if i.dtype.startswith("float") else _default_range(n, i.dtype, self.tg)))
                       for n, i in doc.inputs.items()}
        self.outputs = {n: TensorSig(n, tuple(d if isinstance(d, int) else str(d) for d in t.shape), t.dtype)
                        for n, t in self.tg.output_types().items()}

    def dim_range(self, symbol: str) -> tuple[int, int]:
        """Torch has no proven range; a position table's ``max_len`` bounds a sequence dim."""
        lens = (getattr(n.args, "max_len", None) for n in self.tg.flat.op_nodes())
        tables = [m for m in lens if isinstance(m, int)]
        if tables and symbol != self.batch_symbol():
            return (1, min(tables))
        return (1, INT_MAX)

    def batch_symbol(self) -> str | None:
        first = next(iter(self.inputs.values())).shape
        return first[0] if first and isinstance(first[0], str) else None

    def run(self, feeds: Mapping[str, np.ndarray]) -> Arrays:
        import torch

        with torch.no_grad():
            out = self.gm(*(torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in self.inputs))
        outs = out if isinstance(out, dict) else {next(iter(self.outputs)): out}
        return {k: v.detach().float().numpy() if v.dtype == torch.bfloat16 else v.detach().numpy() for k, v in outs.items()}


def open_backend(target: str | Path, weights: str | Path | None = None, overrides: Overrides = None, threads: int = 0) -> Any:
    """A compile folder -> :class:`OnnxBackend`; a spec file -> :class:`TorchBackend`.

    Raises:
        GraphcError: the target is neither, or ``weights`` was given with a compile folder.
    """
    p = Path(target)
    if p.is_dir():
        if weights is not None or overrides:
            raise GraphcError(f"{p}: a compile folder carries its own weights and sizes; --weights/--set are for a spec")
        if not is_compile_folder(p):
            raise GraphcError(f"{p}: not a 'graphc compile' folder (needs manifest.json and model.onnx)")
        return OnnxBackend(p, threads)
    if not p.is_file():
        raise GraphcError(f"{p}: no such spec file or compile folder")
    return TorchBackend(p, weights, overrides)
