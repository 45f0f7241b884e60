"""The op registry and the built-in ops (one definition per op).

Importing this package registers every built-in op; see :mod:`graphc.ops.registry`.
"""

from graphc.ops import activation, attention, nn, pool, recurrent, select, tensor  # noqa: F401  (registers)
from graphc.ops.context import LowerContext
from graphc.ops.registry import REGISTRY, Example, Onnx, OpArgs, OpDef, OpError, load_entry_points, op

load_entry_points()

__all__ = ["REGISTRY", "Example", "LowerContext", "Onnx", "OpArgs", "OpDef", "OpError", "op"]
