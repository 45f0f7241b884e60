"""The flat IR that expansion hands to the graph phase: nodes, references, block instances.

Every later stage (graph/, lower/, export/) reads these types; only :mod:`graphc.spec.expand`
makes them.  Kept apart from the expander so that reading the IR does not mean importing
the machinery that builds it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from graphc.errors import Diagnostic, Pos, scope_label
from graphc.ops.registry import OpArgs

if TYPE_CHECKING:
    from graphc.spec.load import Spec
    from graphc.spec.model import InitScheme, InitSpec

# Keys of a block call that are the language's own, not params of the block.
RESERVED = {"block", "in", "repeat", "doc", "freeze", "checkpoint", "when", "shares"}
# Public attributes of torch.nn.Module / fx.GraphModule (and graphc's own): a node of that
# name would shadow them, since every node becomes a module attribute.  Kept as data here so
# that the front end stays torch-free.
MODULE_ATTRIBUTES = frozenset(
    ["T_destination", "add_module", "add_submodule", "apply", "bfloat16", "buffers", "call_super_init", "children", "code", "compile", "cpu", "cuda", "delete_all_unused_submodules", "delete_submodule", "double", "dump_patches", "eval", "extra_repr", "float", "forward", "get_buffer", "get_extra_state", "get_parameter", "get_submodule", "graph", "half", "ipu", "load_state_dict", "meta", "modules", "mtia", "named_buffers", "named_children", "named_modules", "named_parameters", "parameters", "print_readable", "recompile", "register_backward_hook", "register_buffer", "register_forward_hook", "register_forward_pre_hook", "register_full_backward_hook", "register_full_backward_pre_hook", "register_load_state_dict_post_hook", "register_load_state_dict_pre_hook", "register_module", "register_parameter", "register_state_dict_post_hook", "register_state_dict_pre_hook", "requires_grad_", "set_extra_state", "set_submodule", "share_memory", "state_dict", "to", "to_empty", "to_folder", "train", "training", "type", "xpu", "zero_grad"]
)


def at(path: str, scope: str) -> str:
    """The head of a message about ``path`` inside block copy ``scope`` ("" = top level):
    ``nodes.fc.in`` or ``blocks.ffn.nodes.up.in (in body.1)``.

    The one spelling of that label (:func:`graphc.errors.scope_label`) is what lets
    ``GraphcError.many`` fold one mistake found in every copy of a block into one line.
    """
    return f"{path}{scope_label(scope)}" if scope else path


@dataclass(frozen=True)
class Ref:
    """One output of one flat node."""

    node: str
    output: int = 0

    def __str__(self) -> str:
        return self.node if self.output == 0 else f"{self.node}:{self.output}"


class _NoArgs(OpArgs):
    """The arguments of a node that is no op (a spec input, a block port): none.

    Every node has ``args`` of the one type, so code that walks op nodes needs no None
    checks; ``op_name`` is empty and every op method is :class:`OpArgs`' unimplemented one.
    """


NO_ARGS = _NoArgs()


@dataclass
class FlatNode:
    """A node after expansion: a spec input, a block port, or an op."""

    name: str
    kind: Literal["input", "port", "op"]
    pos: Pos
    path: str  # spec path of the definition, e.g. "blocks.decoder.nodes.attn"
    scope: str = ""  # the block instance it lives in ("" = top level)
    args: OpArgs = field(default_factory=lambda: NO_ARGS)  # the op's validated arguments
    inputs: list[Ref | None] = field(default_factory=list)
    outputs: list[str] = field(default_factory=lambda: ["out"])
    tie: dict[str, tuple[str, str]] = field(default_factory=dict)
    freeze: bool = False
    doc: str | None = None
    init: InitSpec | InitScheme | None = None  # this node's own weight init (else the spec's)
    # inside a block call with `shares`: the node of the owning copy whose module (and so
    # parameters and buffers) runs in its place; such a node owns nothing itself
    shares: str | None = None

    @property
    def local_name(self) -> str:
        return self.name.rsplit(".", 1)[-1] if self.scope else self.name

    @property
    def op_name(self) -> str:
        """The op's name (``linear``), or the node's kind for inputs and ports."""
        return self.args.op_name or self.kind


@dataclass
class Instance:
    """One use of a block (one repetition of a repeated block)."""

    name: str
    block: str
    scope: str  # the scope it is called from
    pos: Pos
    params: dict[str, Any]
    inputs: list[str] = field(default_factory=list)  # port node names, in block-input order
    outputs: list[tuple[str, Ref]] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)  # flat names directly inside (ports, ops, sub-instances)
    shares: str | None = None  # `shares`: the instance whose module this one calls (it makes none)
    checkpoint: bool = False  # the call said checkpoint: true (activations recomputed in backward)


@dataclass
class FlatSpec:
    """The expanded spec: what the graph phase works on."""

    spec: Spec
    nodes: dict[str, FlatNode]
    instances: dict[str, Instance]
    outputs: dict[str, Ref]
    output_pos: dict[str, Pos]
    warnings: list[Diagnostic] = field(default_factory=list)

    def op_nodes(self) -> list[FlatNode]:
        return [n for n in self.nodes.values() if n.kind == "op"]
