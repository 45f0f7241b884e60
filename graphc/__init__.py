"""graphc: a declarative model-graph compiler for PyTorch.

A YAML spec becomes a validated DAG with inferred shapes, a ``torch.fx.GraphModule``, a
trained model and a verified ONNX file.  See README.md and docs/.
"""

from graphc import ops as _ops  # noqa: F401  (registers the built-in ops)
from graphc.api import build, check, example_inputs, summary
from graphc.errors import GraphcError
from graphc.ops.registry import Example, Onnx, OpArgs, OpError, op
from graphc.spec.load import load_spec

__version__ = "0.1.0"

__all__ = [
    "Example",
    "GraphcError",
    "Onnx",
    "OpArgs",
    "OpError",
    "__version__",
    "build",
    "check",
    "example_inputs",
    "load_spec",
    "op",
    "summary",
]
