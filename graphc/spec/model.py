"""pydantic models of the spec format (version 1).

The top level (:class:`SpecDoc`) is validated once params are substituted; nodes are
validated one by one during expansion, against a discriminated union over the op registry
(:func:`node_adapter`), so an error names the branch that failed (``nodes.fc1.linear.out``)
and every op's arguments are checked with ``extra="forbid"``.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    NonNegativeInt,
    Tag,
    TypeAdapter,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    create_model,
)
from pydantic_core import PydanticCustomError

from graphc.ops.registry import REGISTRY, OpArgs, on_change, strict_scalars
from graphc.shapes import DTYPES

FORMAT_VERSION = 1
Scalar = int | float | bool | str
Refs = str | list[str] | dict[str, str]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        strict_scalars(cls)  # `bias: no` is text, not false


InitScheme = Literal[
    "default",
    "xavier_uniform",
    "xavier_normal",
    "kaiming_uniform",
    "kaiming_normal",
    "normal",
    "trunc_normal",
    "zeros",
    "ones",
]


class InitSpec(_Strict):
    """How a node's weights (and biases) are initialized."""

    weight: InitScheme = "default"
    bias: Literal["default", "zeros"] = "default"
    std: float = Field(0.02, gt=0, description="std for normal / trunc_normal")
    scale: float = Field(1.0, gt=0, description="multiplies the initialized weight (e.g. GPT-2's 1/sqrt(2*layers))")
    embedding: InitScheme = Field("default", description="scheme for embedding tables (global init only)")
    only: list[str] | None = Field(
        None, description="node init only: parameter names (glob patterns, e.g. 'proj.weight') it applies to; the rest keep the global init"
    )


class NodeCommon(_Strict):
    """Fields every op node has besides its op's own arguments."""

    in_: Refs | None = Field(None, alias="in", description="input reference(s): 'node', 'node.output', a list, or {input_name: ref}")
    doc: str | None = Field(None, description="free text shown in summaries and graphs")
    init: InitSpec | InitScheme | None = Field(None, description="weight initialization of this node")
    tie: str | dict[str, str] | None = Field(
        None, description="share parameters: 'other_node' (same names) or {param: 'other_node.param'}"
    )
    freeze: bool = Field(False, description="parameters are not trained")
    when: bool = Field(True, description="false (e.g. ${index == 0}) leaves the node out; references to it are errors")


class RepeatOver(_Strict):
    """Per-copy block arguments: ``repeat: {over: {out: [64, 128], stride: [1, 2]}}``.

    Copy ``i`` gets the ``i``-th value of every list as the block param of that name, so a
    stage whose copies differ (widths, strides) is one call instead of one call per copy.
    The lists must be equally long; ``n``, when given, must equal their length.
    """

    # The values are checked against each param's declared type in graphc.spec.blocks (one
    # line per bad value, naming the param); here only their scalar kind reaches the schema.
    over: dict[str, list[Any]] = Field(
        description="block param -> one value per copy (all lists equally long, none empty)",
        json_schema_extra={"minProperties": 1, "additionalProperties": {"type": "array", "items": {"type": ["integer", "number", "boolean", "string"]}}},
    )
    n: int | None = Field(None, ge=0, description="the number of copies, if written out: must equal the lists' length")


_COUNT: TypeAdapter[int] = TypeAdapter(NonNegativeInt)


def _repeat_form(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """Validate ``repeat`` as the one form its value has (a mapping: per-copy lists; else a
    count), so an error names that form's field (``repeat.over.out``), not a union branch."""
    if isinstance(value, dict):
        return RepeatOver.model_validate(value)
    if value is None:
        return None
    if isinstance(value, bool):  # as strict_scalars does for every int field: true is no count
        raise PydanticCustomError("number_type", "expected a number, not true or false")
    return _COUNT.validate_python(value)


class BlockCall(_Strict):
    """A use of a block: ``{block: name, in: ..., repeat: N, <block params>}``."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    block: str
    in_: Refs | None = Field(None, alias="in")
    repeat: Annotated[NonNegativeInt | RepeatOver | None, WrapValidator(_repeat_form)] = Field(
        None,
        description="unroll N copies named name.0 ... name.N-1, chained; 0 passes the inputs through;"
        " {over: {param: [v0, v1, ...]}} gives copy i the i-th value of each list",
    )
    doc: str | None = None
    freeze: bool = False
    checkpoint: bool = Field(False, description="recompute this call's activations in backward instead of keeping them (training)")
    when: bool = Field(True, description="false leaves the whole block call out")
    shares: str | None = Field(None, description="another block call in the same scope whose copy (and weights) this call runs on its own inputs")


class BlockParam(_Strict):
    type: Literal["int", "float", "bool", "str"] = "int"
    default: Scalar | None = None
    doc: str | None = None


class BlockDef(_Strict):
    """A reusable, parameterized sub-graph."""

    doc: str | None = None
    params: dict[str, Literal["int", "float", "bool", "str"] | BlockParam | Scalar] = {}
    inputs: list[str] = Field(min_length=1)
    nodes: dict[str, dict[str, Any]] = Field(min_length=1)
    outputs: list[str] | dict[str, str] = Field(min_length=1)


class InputDef(_Strict):
    """A model input: symbolic shape, dtype, example sizes, and (for ids) a value range."""

    shape: list[int | str] = Field(description="ints or symbolic dim names like B, T")
    dtype: Literal[DTYPES] = "float32"  # type: ignore[valid-type]
    example: dict[str, int] = Field({}, description="example size of each symbolic dim")
    range: tuple[float, float] | None = Field(None, description="[low, high) of example values (ids: high = vocab)")
    doc: str | None = None


class SpecDoc(_Strict):
    """The whole spec file after params are substituted (blocks and nodes still raw)."""

    graphc: Literal[1] = Field(description="spec format version")
    name: str
    doc: str | None = None
    include: list[str] = []
    params: dict[str, Scalar] = {}
    inputs: dict[str, InputDef] = Field(min_length=1)
    blocks: dict[str, dict[str, Any]] = {}
    nodes: dict[str, dict[str, Any]] = Field(min_length=1)
    outputs: dict[str, str] | list[str] = Field(min_length=1)
    init: InitSpec | None = None
    train: dict[str, Any] | None = None


def node_model(cls: type[OpArgs]) -> type[BaseModel]:
    """The pydantic model of a node using op ``cls``: ``op`` tag + common + op args."""
    return _node_model(cls, cls.op_name)


@functools.cache
def _node_model(cls: type[OpArgs], name: str) -> type[BaseModel]:
    model: type[BaseModel] = create_model(  # type: ignore[call-overload]
        f"{cls.__name__}Node",
        __base__=(cls, NodeCommon),
        __doc__=cls.__doc__,
        op=(Literal[name], Field(description=f"op '{name}'")),  # type: ignore[arg-type]
    )
    return model


def _tag(value: Any) -> str:
    if isinstance(value, dict):
        if "block" in value:
            return "block"
        return str(value.get("op", ""))
    return ""


@functools.lru_cache(maxsize=1)
def node_adapter() -> TypeAdapter[Any]:
    """A TypeAdapter for the discriminated union of all node kinds (rebuilt on registration)."""
    members: list[Any] = [Annotated[node_model(d.cls), Tag(name)] for name, d in sorted(REGISTRY.items())]
    members.append(Annotated[BlockCall, Tag("block")])
    union: Any = Annotated[  # type: ignore[valid-type]
        Union[tuple(members)],  # noqa: UP007 - a runtime-built union
        Discriminator(_tag, custom_error_type="unknown_op", custom_error_message="unknown op"),
    ]
    return TypeAdapter(union)


on_change(node_adapter.cache_clear)
