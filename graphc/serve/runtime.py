"""One onnxruntime session over a compile folder's ``model.onnx`` (no torch)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from graphc.errors import GraphcError, Pos
from graphc.serve.manifest import Manifest, load_manifest


class OnnxModel:
    """The compiled model: its manifest and an inference session.

    ``threads`` sets onnxruntime's intra-op threads (0: onnxruntime's default, all cores).
    Idle threads do not spin: a server shares its cores with the event loop that parses
    requests, and spinning workers would take that time from it.
    """

    def __init__(self, folder: str | Path, threads: int = 0) -> None:
        import onnxruntime as ort

        self.manifest: Manifest = load_manifest(folder)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        path = Path(folder) / "model.onnx"
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own types for a corrupt file
            raise GraphcError(f"cannot load the ONNX model: {str(e).splitlines()[0]}", Pos(str(path))) from None
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs by name for inputs by name (already checked against the manifest)."""
        outs = self.session.run(self.output_names, dict(feeds))
        return dict(zip(self.output_names, (np.asarray(o) for o in outs)))
