"""The op registry: one definition per op, used by every stage.

An op is a pydantic model class (its arguments, ``extra="forbid"``) whose methods hold
everything else about it, so nothing op-specific lives outside its class:

* ``infer(*inputs)``: the shape rule, on :class:`~graphc.shapes.TensorType` s (no torch);
* ``params(*inputs)``: parameter names and shapes, for counting without allocating;
* ``lower(ctx, *inputs)``: the torch code, written on fx proxies (imports torch lazily);
  ``ctx`` is a :class:`~graphc.ops.context.LowerContext`;
* ``flops(ins, outs)``: multiply-adds x2 at concrete example shapes;
* ``saves(ins, outs, itemsize)``, ``workspace(...)`` and ``view_of()``: what autograd keeps
  for the backward pass, the kernels' temporaries, and whether the output shares its input's storage (the memory planner,
  :mod:`graphc.graph.memory_planner`, reads them to estimate training memory);
* class attributes: ``inputs`` (input names; ``?`` optional, ``*`` variadic), ``family``,
  ``autocast`` (the precision autocast runs it in), ``onnx`` (expected ONNX ops and
  tolerance) and ``examples`` (rows of the op test table).

The JSON Schema, validation (a discriminated union generated here), ``summary``, lowering,
docs/ops.md and the parametrized op tests all iterate over :data:`REGISTRY`.  User code adds
ops the same way, with :func:`op` (also exported as ``graphc.op``) or through the
``graphc.ops`` entry-point group.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict, Strict
from pydantic_core import PydanticCustomError

from graphc.ops.context import LowerContext
from graphc.shapes import Dim, TensorType, dim_value


class OpError(ValueError):
    """Raised by an op's rules; the caller adds the node's name and file position."""


@dataclass(frozen=True)
class Onnx:
    """What an op is expected to become in ONNX, and how closely it must match torch."""

    ops: tuple[str, ...] = ()
    atol: float | None = None
    rtol: float | None = None


@dataclass(frozen=True)
class Example:
    """One row of the op test table: arguments and input types with symbolic dims.

    ``inputs`` are strings like ``"B,10"`` or ``"B,T:int64<100"`` (dtype and an exclusive
    upper bound for integer values).
    """

    args: dict[str, Any] = field(default_factory=dict)
    inputs: tuple[str, ...] = ("B,8",)
    sizes: tuple[dict[str, int], dict[str, int]] = ({"B": 2, "T": 5, "H": 8, "W": 8, "L": 8}, {"B": 3, "T": 7, "H": 10, "W": 12, "L": 11})
    id: str = ""


@dataclass(frozen=True)
class Saved:
    """What an op's backward pass keeps from its forward pass (read by the memory planner).

    ``inputs``: indices of the inputs autograd keeps (a tensor kept by several ops is one
    tensor: the planner counts it once); ``output``: it keeps its first output; ``extra``:
    bytes of tensors the op makes and keeps itself (statistics, masks, indices, an
    attention layer's projections).
    """

    inputs: tuple[int, ...] = ()
    output: bool = False
    extra: int = 0


@dataclass(frozen=True)
class Facts:
    """What ``graphc check`` knows about a node's inputs beyond their types.

    ``example`` maps each symbolic dim to its example size; ``ranges`` holds, per input,
    the declared ``[low, high)`` of its values (spec inputs with ``range``) or ``None``.
    """

    example: Mapping[str, int]
    ranges: tuple[tuple[float, float] | None, ...] = ()

    def size(self, d: Dim) -> int:
        """``d`` at the example sizes."""
        return dim_value(d, self.example)

    def range_of(self, i: int) -> tuple[float, float] | None:
        return self.ranges[i] if i < len(self.ranges) else None


def _scalar_kind(ann: Any) -> str:
    """How :func:`strict_scalars` treats a field of type ``ann``."""
    members = set(get_args(ann)) if get_origin(ann) in (Union, types.UnionType) else {ann}
    members.discard(type(None))
    if members in ({bool}, {float}):
        return "strict"  # strict float still takes ints, and refuses bools and text
    if members and members <= {int, float}:
        return "number"
    return ""


def _refuse_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise PydanticCustomError("number_type", "expected a number, not true or false")
    return value


_NO_BOOL = BeforeValidator(_refuse_bool)


def strict_scalars(model: type[BaseModel]) -> None:
    """Refuse pydantic's lax bool coercions in both directions, on every field of ``model``.

    pydantic reads ``"no"``, ``"off"``, ``"0"`` and ``1`` as booleans and ``true`` as the
    number 1; in a spec those words stay text (docs/spec.md), so ``bias: no`` must be an
    error.  Bool and float fields become strict (no Python call per value); int fields get
    a check for bools only (strict ints would refuse ``${d / 2}``'s ``32.0``).  Called once
    per class, when it is created, for the spec's models and every :class:`OpArgs` (user
    ops too).
    """
    changed = False
    for f in model.model_fields.values():
        kind = _scalar_kind(f.annotation)
        if kind == "strict" and not any(isinstance(m, Strict) for m in f.metadata):
            f.metadata.append(Strict())
            changed = True
        elif kind == "number" and _NO_BOOL not in f.metadata:
            f.metadata.append(_NO_BOOL)  # last: it wraps, so runs before, the constraints
            changed = True
    if changed:
        model.model_rebuild(force=True)


class OpArgs(BaseModel):
    """Base of every op's argument model."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        strict_scalars(cls)

    op_name: ClassVar[str] = ""
    family: ClassVar[str] = "misc"
    inputs: ClassVar[tuple[str, ...]] = ("x",)
    onnx: ClassVar[Onnx] = Onnx()
    examples: ClassVar[tuple[Example, ...]] = ()
    stateful: ClassVar[bool] = False
    lookup_table: ClassVar[bool] = False  # its weight is a table of vectors: the global init's `embedding` scheme applies
    # under bf16/fp16 autocast: "lower" runs in the low precision (matmuls, convs), "float32"
    # in fp32 (norms, softmax), "promote" in its inputs' widest float type (elementwise ops)
    autocast: ClassVar[Literal["lower", "float32", "promote"]] = "promote"

    def output_names(self) -> list[str]:
        """Names of the op's outputs; the first is what a plain reference means."""
        return ["out"]

    def infer(self, *ins: Any) -> TensorType | list[TensorType]:
        raise NotImplementedError

    def check(self, facts: Facts, *ins: Any) -> None:
        """Check-time proofs beyond shapes (raise OpError): e.g. an example size or a
        value range that would fail at run time. ``infer`` has already passed."""

    def params(self, *ins: Any) -> dict[str, tuple[int, ...]]:
        return {}

    def buffers(self, *ins: Any) -> dict[str, tuple[int, ...]]:
        return {}

    def lower(self, ctx: LowerContext, *ins: Any) -> Any:
        raise NotImplementedError

    def flops(self, ins: Sequence[tuple[int, ...]], outs: Sequence[tuple[int, ...]]) -> int:
        return 0

    def saves(self, ins: Sequence[tuple[int, ...] | None], outs: Sequence[tuple[int, ...]], itemsize: int) -> Saved:
        """What autograd keeps for this op's backward, at concrete shapes (``None``: an optional
        input left out); ``itemsize`` is the bytes per element of the op's activations.

        The default keeps the output, which is what relu, tanh, sigmoid and softmax keep and a
        fair guess for an op that does not say (a plugin op): one output-sized tensor.
        """
        return Saved(output=True)

    def workspace(self, ins: Sequence[tuple[int, ...] | None], outs: Sequence[tuple[int, ...]], itemsize: int) -> int:
        """Bytes of temporaries the op's kernels allocate and free within one call, forward or
        backward, beyond its outputs and gradients (a convolution's reordered copies)."""
        return 0

    def view_of(self) -> int | None:
        """The input whose storage the output shares (a view), or None for a new tensor.

        A tensor kept through a view (``flatten`` of a kept ``relu`` output) is the same
        memory, and the gradient of a view is a view of its output's gradient.
        """
        return None

    # helpers shared by many ops -------------------------------------------------------

    @staticmethod
    def static(d: Dim, what: str) -> int:
        """``d`` as an int, or an error saying that ``what`` must be known statically."""
        if not isinstance(d, int):
            raise OpError(f"{what} must be a fixed size, got symbolic '{d}'")
        return d


A = TypeVar("A", bound=type[OpArgs])


@dataclass
class OpDef:
    """Registry entry: the op's class plus what the registry derives from it."""

    name: str
    cls: type[OpArgs]
    source: str  # "builtin" or the user module that registered it

    @property
    def doc(self) -> str:
        return (self.cls.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")

    @property
    def min_inputs(self) -> int:
        return sum(1 for n in self.cls.inputs if not n.endswith("?") and not n.startswith("*"))

    @property
    def max_inputs(self) -> int | None:
        return None if any(n.startswith("*") for n in self.cls.inputs) else len(self.cls.inputs)

    @property
    def input_names(self) -> list[str]:
        return [n.strip("?*") for n in self.cls.inputs]


REGISTRY: dict[str, OpDef] = {}
_listeners: list[Callable[[], None]] = []


def op(name: str, *, source: str = "builtin", replace: bool = False) -> Callable[[A], A]:
    """Register an op class under ``name`` (a class decorator).

    Example:
        >>> import graphc
        >>> from graphc.ops import OpArgs
        >>> @graphc.op("double", source="example", replace=True)
        ... class Double(OpArgs):
        ...     '''Multiplies its input by two.'''
        ...     def infer(self, x): return x
        ...     def lower(self, ctx, x): return x * 2
    """
    if not name.isidentifier():
        raise ValueError(f"op name {name!r} must be an identifier")

    def register(cls: A) -> A:
        if name in REGISTRY and not replace and REGISTRY[name].cls is not cls:
            raise ValueError(f"op '{name}' is already registered by {REGISTRY[name].source}")
        cls.op_name = name
        REGISTRY[name] = OpDef(name, cls, source if source != "builtin" or cls.__module__.startswith("graphc.") else cls.__module__)
        for fn in _listeners:
            fn()
        return cls

    return register


def on_change(fn: Callable[[], None]) -> None:
    """Call ``fn`` whenever the registry changes (caches of derived models listen here)."""
    _listeners.append(fn)


def unregister(name: str) -> None:
    """Remove a (user) op from the registry; derived caches are rebuilt."""
    REGISTRY.pop(name, None)
    for fn in _listeners:
        fn()


def load_entry_points() -> None:
    """Import user op modules advertised under the ``graphc.ops`` entry-point group.

    Installed packages opt in by declaring the entry point; a spec itself never names a
    module to import.  A plugin that fails to import is reported and skipped.
    """
    import warnings
    from importlib.metadata import entry_points

    for ep in entry_points(group="graphc.ops"):
        try:
            ep.load()
        except Exception as e:  # a broken plugin must not break graphc itself
            warnings.warn(f"graphc: op plugin '{ep.name}' ({ep.value}) failed to load: {e}", stacklevel=2)


__all__ = ["REGISTRY", "Example", "Facts", "Literal", "Onnx", "OpArgs", "OpDef", "OpError", "Saved", "load_entry_points", "on_change", "op", "strict_scalars", "unregister"]
