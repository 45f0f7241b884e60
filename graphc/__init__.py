"""graphc: a declarative model-graph compiler for PyTorch.

A YAML spec becomes a validated DAG with inferred shapes, a ``torch.fx.GraphModule``, a
trained model and a verified ONNX file.  See README.md and docs/.
"""

from graphc import ops as _ops  # noqa: F401  (registers the built-in ops)
from graphc.api import build, check, example_inputs, summary
from graphc.errors import GraphcError
from graphc.ops.registry import Example, Onnx, OpArgs, OpError, op
from graphc.spec.load import load_spec
from graphc.version import __version__

_LAZY = {  # imported on first use, so ``import graphc`` does not import onnx
    "export_onnx": "graphc.export.api",
    "verify_onnx": "graphc.export.api",
    "compile": "graphc.export.api",
    "load_weights": "graphc.export.weights",
    "save_weights": "graphc.export.weights",
    "predict": "graphc.use.predict",  # onnxruntime on a compile folder: no torch
    "evaluate": "graphc.use.evaluate",
    "generate": "graphc.use.generate",
}


def __getattr__(name: str) -> object:
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name == "train":  # the training package: graphc.train.train(spec, run_dir, ...)
        return importlib.import_module("graphc.train")
    raise AttributeError(f"module 'graphc' has no attribute {name!r}")

__all__ = [
    "Example",
    "GraphcError",
    "Onnx",
    "OpArgs",
    "OpError",
    "__version__",
    "build",
    "check",
    "compile",
    "evaluate",
    "example_inputs",
    "export_onnx",
    "generate",
    "load_spec",
    "load_weights",
    "op",
    "predict",
    "save_weights",
    "summary",
    "verify_onnx",
]
