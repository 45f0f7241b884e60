"""Expansion: blocks inlined, ``repeat`` unrolled, ``${...}`` evaluated, references resolved.

The result is a :class:`FlatSpec`: every op node under its full dotted name (``body.1.attn``),
its inputs resolved to :class:`Ref` s, plus *ports* (one per block-instance input) and the
block instances themselves, which lowering turns into submodules.  Every node keeps the file
position of its definition, so later phases can point errors at the YAML line.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from graphc.errors import Collector, Diagnostic, Pos, SpecError, did_you_mean, scope_label
from graphc.ops.registry import REGISTRY, OpArgs
from graphc.shapes import parse_dim
from graphc.spec.expr import ExprError, TextBudgetError, has_expr, substitute, text_budget
from graphc.spec.limits import MAX_NODES, MAX_REPEAT
from graphc.spec.load import Spec
from graphc.spec.model import BlockCall, BlockDef, BlockParam, NodeCommon, node_adapter
from graphc.spec.pydantic_errors import report_validation_error
from graphc.spec.yaml_loader import YMap, locate

RESERVED = {"block", "in", "repeat", "doc", "freeze", "when"}
# Public attributes of torch.nn.Module / fx.GraphModule (and graphc's own): a node of that
# name would shadow them, since every node becomes a module attribute.  Kept as data here so
# that the front end stays torch-free.
MODULE_ATTRIBUTES = frozenset(
    ["T_destination", "add_module", "add_submodule", "apply", "bfloat16", "buffers", "call_super_init", "children", "code", "compile", "cpu", "cuda", "delete_all_unused_submodules", "delete_submodule", "double", "dump_patches", "eval", "extra_repr", "float", "forward", "get_buffer", "get_extra_state", "get_parameter", "get_submodule", "graph", "graphc", "graphc_records", "half", "ipu", "load_state_dict", "meta", "modules", "mtia", "named_buffers", "named_children", "named_modules", "named_parameters", "parameters", "print_readable", "recompile", "register_backward_hook", "register_buffer", "register_forward_hook", "register_forward_pre_hook", "register_full_backward_hook", "register_full_backward_pre_hook", "register_load_state_dict_post_hook", "register_load_state_dict_pre_hook", "register_module", "register_parameter", "register_state_dict_post_hook", "register_state_dict_pre_hook", "requires_grad_", "set_extra_state", "set_submodule", "share_memory", "state_dict", "to", "to_empty", "to_folder", "train", "training", "type", "xpu", "zero_grad"]
)
_TYPES: dict[str, tuple[type, ...]] = {"int": (int,), "float": (float, int), "bool": (bool,), "str": (str,)}


@dataclass(frozen=True)
class Ref:
    """One output of one flat node."""

    node: str
    output: int = 0

    def __str__(self) -> str:
        return self.node if self.output == 0 else f"{self.node}:{self.output}"


@dataclass
class FlatNode:
    """A node after expansion: a spec input, a block port, or an op."""

    name: str
    kind: Literal["input", "port", "op"]
    pos: Pos
    path: str  # spec path of the definition, e.g. "blocks.decoder.nodes.attn"
    scope: str = ""  # the block instance it lives in ("" = top level)
    op: Any = None  # the validated node model (an OpArgs subclass + NodeCommon)
    inputs: list[Ref | None] = field(default_factory=list)
    outputs: list[str] = field(default_factory=lambda: ["out"])
    tie: dict[str, tuple[str, str]] = field(default_factory=dict)
    freeze: bool = False

    @property
    def local_name(self) -> str:
        return self.name.rsplit(".", 1)[-1] if self.scope else self.name

    @property
    def args(self) -> OpArgs:
        return self.op  # type: ignore[no-any-return]

    @property
    def op_name(self) -> str:
        return self.op.op_name if self.op is not None else self.kind


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


@dataclass
class _Entry:
    kind: Literal["op", "block", "input", "port"]
    flat: str = ""
    raw: YMap | None = None
    call: BlockCall | None = None
    instances: list[Instance] = field(default_factory=list)
    state: Literal["new", "busy", "done"] = "new"
    enabled: bool | None = None  # its `when`, evaluated on first need
    passthrough: list[tuple[str, Ref]] | None = None  # `repeat: 0`: the block's outputs are its inputs


class _Scope:
    def __init__(self, prefix: str, names: Mapping[str, Any], path: tuple[str | int, ...], raw_root: YMap, label: str):
        self.prefix = prefix
        self.names = names  # expression names
        self.path = path  # spec path of the nodes mapping
        self.raw_root = raw_root
        self.label = label  # " (in body.1)" for messages
        self.entries: dict[str, _Entry] = {}
        self.order: list[str] = []
        self.position: dict[str, int] = {}  # name -> index in order
        self.pending_ties: list[tuple[FlatNode, Any, YMap, tuple[str | int, ...]]] = []


class Expander:
    """Walks the spec's scopes; collects every error instead of stopping at the first."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.errors = Collector()
        self.nodes: dict[str, FlatNode] = {}
        self.instances: dict[str, Instance] = {}
        self.block_stack: list[str] = []
        self.block_defs: dict[str, BlockDef | None] = {}
        self.broken: set[str] = set()  # op nodes that failed or read from a failed reference
        self.failed: set[str] = set()  # op nodes whose own definition failed (reported once)
        self.unresolved = False
        self.active: list[tuple[_Scope, str]] = []  # entries being expanded, outermost first
        self.block_sizes: dict[str, int] = {}  # block -> nodes one copy makes (for the size limit)

    # --- entry -------------------------------------------------------------------------

    def run(self) -> FlatSpec:
        spec = self.spec
        for name, inp in spec.doc.inputs.items():
            pos = spec.pos("inputs", name, key=True)
            if not name.isidentifier():
                self.errors.error(f"inputs.{name}: an input name must be an identifier", pos)
            self.nodes[name] = FlatNode(name, "input", pos, f"inputs.{name}")
            self.check_input_dims(name, inp.shape, inp.example)
        self.errors.errors.extend(identifier_clashes(spec))
        top = _Scope("", spec.params, ("nodes",), spec.raw, "")
        for name in spec.doc.inputs:
            top.entries[name] = _Entry("input", flat=name, state="done")
        self.fill_scope(top, spec.raw.get("nodes", {}), ("nodes",))
        self.check_file_size(top)
        self.expand_scope(top)
        outputs, output_pos = self.resolve_outputs(top)
        self.errors.raise_if_any()
        return FlatSpec(spec, self.nodes, self.instances, outputs, output_pos, self.errors.warnings)

    def run_partial(self) -> tuple[FlatSpec, list[Diagnostic]]:
        """Expand as far as possible: the intact part of the spec plus every error found.

        Nodes that failed, or that read from a node that failed, are left out, so the
        caller can still check the shapes of everything else and report all mistakes of a
        file in one run.
        """
        try:
            return self.run(), []
        except SpecError as e:
            errors = e.diagnostics
        flat = FlatSpec(self.spec, dict(self.nodes), self.instances, {}, {}, [])
        _prune(flat, self.broken)
        return flat, errors

    def check_input_dims(self, name: str, shape: list[int | str], example: dict[str, int]) -> None:
        """Symbolic dims are identifiers, sizes are positive, and examples name real dims."""
        for i, d in enumerate(shape):
            if isinstance(d, int) and d < 1:
                self.errors.error(f"inputs.{name}.shape.{i}: a size must be at least 1, got {d}", self.spec.pos("inputs", name, "shape", i))
            elif isinstance(d, str) and parse_dim(d) is None:
                self.errors.error(
                    f"inputs.{name}.shape.{i}: a symbolic dim is a name like T, or k*NAME like 8*H (a multiple of k), got '{d}'",
                    self.spec.pos("inputs", name, "shape", i),
                )
        dims = [w for d in shape if isinstance(d, str) for w in re.findall(r"[A-Za-z_]\w*", d)]  # "8*H" names H
        for d, size in example.items():
            if d not in dims:
                hint = did_you_mean(d, dims)
                self.errors.error(f"inputs.{name}.example.{d}: '{d}' is not a symbolic dim of the shape [{', '.join(map(str, shape))}]{hint}", self.spec.pos("inputs", name, "example", d, key=True))
            elif size < 1:
                self.errors.error(f"inputs.{name}.example.{d}: an example size must be at least 1, got {size}", self.spec.pos("inputs", name, "example", d))

    def resolve_outputs(self, top: _Scope) -> tuple[dict[str, Ref], dict[str, Pos]]:
        raw_out = self.spec.doc.outputs
        pairs = raw_out.items() if isinstance(raw_out, dict) else [(r.split(".")[0], r) for r in raw_out]
        out: dict[str, Ref] = {}
        pos_map: dict[str, Pos] = {}
        for i, (name, ref) in enumerate(pairs):
            pos = self.spec.pos("outputs", name if isinstance(raw_out, dict) else i)
            pos_map[name] = pos
            if not isinstance(name, str) or not name.isidentifier():
                self.errors.error(f"outputs.{name}: an output name must be an identifier", pos)
                continue
            resolved = self.resolve(top, ref, pos, f"outputs.{name}")
            if resolved is not None:
                out[name] = resolved
        return out, pos_map

    # --- scopes ------------------------------------------------------------------------

    def fill_scope(self, scope: _Scope, nodes: Any, path: tuple[str | int, ...]) -> None:
        if not isinstance(nodes, YMap):
            return  # the top-level model already reported a wrong type
        for name, raw in nodes.items():
            pos = locate(scope.raw_root, (*path, name), key=True)
            where = ".".join(map(str, (*path, name)))
            ident = python_identifier(name)  # what Python makes of it: 'ｆｏｒｗａｒｄ' is 'forward'
            if not name.isidentifier() or ident in MODULE_ATTRIBUTES or ident.startswith("_"):
                why = (
                    "a node name must be an identifier (letters, digits, _)" if not name.isidentifier()
                    else f"'{name}' is reserved: nodes become torch module attributes, and torch modules already have '{ident}'"
                    if not ident.startswith("_") else "a node name must not start with '_' (reserved for torch internals)"
                )
                self.errors.error(f"{where}: {why}", pos)
                scope.entries[name] = _Entry("op", flat=self.flat_name(scope, name), state="done")  # no follow-on errors
                continue
            if name in scope.entries:
                self.errors.error(f"{where}: name '{name}' is already used by a block input{scope.label}", pos)
                continue
            if not isinstance(raw, YMap):
                self.errors.error(f"{where}: expected a mapping like {{op: ..., in: ...}}", locate(scope.raw_root, (*path, name)))
                continue
            kind: Literal["op", "block"] = "block" if "block" in raw else "op"
            scope.entries[name] = _Entry(kind, flat=self.flat_name(scope, name), raw=raw)
            scope.position[name] = len(scope.order)
            scope.order.append(name)

    def flat_name(self, scope: _Scope, name: str) -> str:
        return f"{scope.prefix}.{name}" if scope.prefix else name

    def expand_scope(self, scope: _Scope) -> None:
        for name in scope.order:
            self.expand_entry(scope, name, scope.entries[name])
        for node, model, raw, path in scope.pending_ties:
            node.tie = self.ties(scope, model, raw, path)

    def previous(self, scope: _Scope, name: str) -> str | None:
        """What a node without ``in`` reads: the node before it, or the scope's first input."""
        i = scope.position[name]
        while i > 0:
            i -= 1
            if self.enabled(scope, scope.order[i]):
                return scope.order[i]
        return next((n for n, e in scope.entries.items() if e.kind in ("input", "port")), None)

    def enabled(self, scope: _Scope, name: str) -> bool:
        """A node's ``when`` (true when absent), evaluated in its scope once."""
        entry = scope.entries[name]
        if entry.enabled is None:
            entry.enabled = True
            if entry.raw is not None and "when" in entry.raw:
                value = entry.raw["when"]
                where = ".".join(map(str, (*scope.path, name, "when")))
                try:
                    value = substitute(value, scope.names) if has_expr(value) else value
                    if not isinstance(value, bool):
                        raise ExprError(f"expected true or false, got {value!r}")
                except ExprError as e:
                    self.errors.error(f"{where}{scope.label}: {e}{self.scope_hint(scope, e)}", locate(entry.raw, ("when",)))
                    entry.state = "done"  # not expanded: no follow-on errors about this node
                    return True
                entry.enabled = value
        return entry.enabled

    def expand_entry(self, scope: _Scope, name: str, entry: _Entry) -> None:
        """Expand one node or block call (references expand what they name first, on demand)."""
        if entry.state != "new":
            return
        if not self.enabled(scope, name) or entry.state != "new":
            entry.state = "done"
            return
        entry.state = "busy"
        self.active.append((scope, name))
        try:
            if entry.kind == "op":
                self.expand_op(scope, name, entry, self.previous(scope, name))
                if entry.flat not in self.nodes:
                    self.failed.add(entry.flat)
            else:
                self.expand_block_call(scope, name, entry, self.previous(scope, name))
        finally:
            self.active.pop()
            entry.state = "done"

    def report_cycle(self, scope: _Scope, name: str) -> None:
        """A reference reached a node still being expanded: the nodes between form a cycle.

        Reported once, at the first node of the cycle in the file, with every node's line.
        """
        start = next(i for i, (s, n) in enumerate(self.active) if s is scope and n == name)
        members = [*self.active[start:], (scope, name)]
        poses = [locate(s.raw_root, (*s.path, n), key=True) for s, n in members]
        chain = " -> ".join(f"{s.entries[n].flat} (line {p.line})" for (s, n), p in zip(members, poses, strict=True))
        self.errors.error(f"cycle: {chain}", min(poses[:-1]))

    # --- op nodes ----------------------------------------------------------------------

    def substitute(self, scope: _Scope, value: Any, path: tuple[str | int, ...]) -> Any:
        if isinstance(value, dict):
            return {k: self.substitute(scope, v, (*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.substitute(scope, v, (*path, i)) for i, v in enumerate(value)]
        if has_expr(value):
            try:
                return substitute(value, scope.names)
            except ExprError as e:
                where = ".".join(map(str, path))
                self.errors.error(f"{where}{scope.label}: {e}{self.scope_hint(scope, e)}", locate(scope.raw_root, path))
                if isinstance(e, TextBudgetError):  # a size limit: stop, as for too many nodes
                    self.nodes.clear()
                    self.errors.raise_if_any()
                raise
        return value

    def scope_hint(self, scope: _Scope, e: ExprError) -> str:
        """Why a top-level param is unknown inside a block: blocks see only their own params."""
        name = getattr(e, "name", None)
        if scope.prefix and name in self.spec.params:
            return f"; a block sees only its own params and 'index', so declare '{name}' in the block's params and pass it"
        return ""

    def expand_op(self, scope: _Scope, name: str, entry: _Entry, previous: str | None) -> None:
        assert entry.raw is not None
        path = (*scope.path, name)
        where = ".".join(map(str, path))
        raw = entry.raw
        pos = locate(scope.raw_root, path, key=True)
        op_name = raw.get("op")
        if not isinstance(op_name, str) or op_name not in REGISTRY:
            if op_name is None:
                self.errors.error(f"{where}: missing 'op' (or 'block')", pos)
            else:
                hint = did_you_mean(str(op_name), REGISTRY)
                self.errors.error(f"{where}: unknown op '{op_name}'{hint}", locate(raw, ("op",)))
            return
        try:
            data = self.substitute(scope, raw, path)
        except ExprError:
            return
        try:
            model = node_adapter().validate_python(data)
        except ValidationError as e:
            cls = REGISTRY[op_name].cls
            from graphc.spec.model import node_model

            for d in report_validation_error(e, raw, path, model=node_model(cls), label=scope.label, strip_tag=True):
                self.errors.errors.append(d)
            return
        node = FlatNode(entry.flat, "op", pos, where, scope.prefix, model)
        node.outputs = model.output_names()
        node.freeze = bool(model.freeze)
        before, self.unresolved = len(self.errors.errors), False
        node.inputs = self.op_inputs(scope, name, model, raw, previous)
        if self.unresolved or len(self.errors.errors) > before:
            self.broken.add(node.name)
        scope.pending_ties.append((node, model, raw, path))  # once every node of the scope exists
        self.nodes[node.name] = node
        if scope.prefix:
            self.instances[scope.prefix].nodes.append(node.name)

    def op_inputs(self, scope: _Scope, name: str, model: Any, raw: YMap, previous: str | None) -> list[Ref | None]:
        opdef = REGISTRY[model.op_name]
        where = ".".join(map(str, (*scope.path, name, "in")))
        pos = locate(raw, ("in",)) if "in" in raw else locate(raw, (), key=False)
        given = model.in_
        if given is None:
            if opdef.min_inputs == 0:
                return []
            if previous is None:
                self.errors.error(f"{where}{scope.label}: no 'in' given and there is no previous node to use", pos)
                return []
            given = previous
        names = opdef.input_names
        variadic = opdef.max_inputs is None
        refs: list[tuple[str, Pos]]
        if isinstance(given, dict):
            if variadic:
                self.errors.error(f"{where}{scope.label}: op '{model.op_name}' takes a list of inputs, not a mapping", pos)
                return []
            by_name: dict[str, tuple[str, Pos]] = {}
            for key, ref in given.items():
                if key not in names:
                    self.errors.error(f"{where}.{key}{scope.label}: op '{model.op_name}' has no input '{key}'{did_you_mean(key, names)}", locate(raw, ("in", key), key=True))
                    continue
                by_name[key] = (ref, locate(raw, ("in", key)))
            refs = [by_name.get(n, ("", pos)) for n in names]
            while refs and refs[-1][0] == "":
                refs.pop()
        elif isinstance(given, list):
            refs = [(r, locate(raw, ("in", i))) for i, r in enumerate(given)]
        else:
            refs = [(given, pos)]
        count = sum(1 for r, _ in refs if r)
        hi = opdef.max_inputs
        if count < opdef.min_inputs or (hi is not None and len(refs) > hi):
            want = f"{opdef.min_inputs}" if hi == opdef.min_inputs else f"{opdef.min_inputs} to {hi}" if hi is not None else f"at least {opdef.min_inputs}"
            inputs_doc = ", ".join(opdef.cls.inputs)
            self.errors.error(f"{where}{scope.label}: op '{model.op_name}' takes {want} input(s) ({inputs_doc}), got {count}", pos)
            return []
        out: list[Ref | None] = []
        for i, (ref, rpos) in enumerate(refs):
            if not ref:
                if i < opdef.min_inputs:
                    self.errors.error(f"{where}{scope.label}: missing required input '{names[i]}'", pos)
                out.append(None)
                continue
            resolved = self.resolve(scope, ref, rpos, where)
            self.unresolved |= resolved is None
            out.append(resolved)
        return out

    def ties(self, scope: _Scope, model: Any, raw: YMap, path: tuple[str | int, ...]) -> dict[str, tuple[str, str]]:
        tie = model.tie
        if tie is None:
            return {}
        pos = locate(raw, ("tie",))
        items = tie.items() if isinstance(tie, dict) else [("*", tie)]
        out: dict[str, tuple[str, str]] = {}
        for param, target in items:
            found = self.tie_target(scope, target, whole=param == "*")
            if found is None and self.failed_target(scope, target):
                continue  # its own error was reported; a second line would only blame the tie
            if found is None:
                head = target.split(".")[0]
                hint = did_you_mean(head, [n for n, e in scope.entries.items() if e.kind in ("op", "block") and n != path[-1]])
                self.errors.error(f"{'.'.join(map(str, path))}.tie{scope.label}: unknown node '{target}'{hint}", pos)
                continue
            out[param] = (found[0], found[1] or param)
        return out

    def failed_target(self, scope: _Scope, target: str) -> bool:
        """Whether ``target`` names a node (or block copy) whose own definition failed."""
        head, _, rest = target.partition(".")
        entry = scope.entries.get(head)
        if entry is None or entry.enabled is False or entry.kind not in ("op", "block"):
            return False
        if entry.kind == "op":
            return entry.flat not in self.nodes
        if not entry.instances and entry.passthrough is None:
            return True  # the block call itself failed
        parts = rest.split(".") if rest else []
        return any(".".join([entry.flat, *parts[:cut]]) in self.failed for cut in range(len(parts) + 1))

    def tie_target(self, scope: _Scope, target: str, whole: bool) -> tuple[str, str] | None:
        """``node``, ``node.param`` or ``instance.path.node[.param]`` -> (flat node, param)."""
        head, _, rest = target.partition(".")
        entry = scope.entries.get(head)
        if entry is None or entry.kind not in ("op", "block"):
            return None
        parts = rest.split(".") if rest else []
        for cut in range(len(parts), -1, -1):
            name = ".".join([entry.flat, *parts[:cut]])
            param = ".".join(parts[cut:])
            if (whole and param) or len(parts) - cut > 1:
                continue
            node = self.nodes.get(name)
            if node is not None and node.kind == "op":
                return name, param
        return None

    # --- references --------------------------------------------------------------------

    def resolve(self, scope: _Scope, ref: Any, pos: Pos, where: str) -> Ref | None:
        if not isinstance(ref, str) or not ref:
            self.errors.error(f"{where}{scope.label}: a reference must be a node name, got {ref!r}", pos)
            return None
        name, _, output = ref.partition(".")
        entry = scope.entries.get(name)
        if entry is None:
            hint = did_you_mean(name, scope.entries)
            self.errors.error(f"{where}{scope.label}: unknown reference '{name}'{hint}", pos)
            return None
        if entry.state == "busy":
            self.report_cycle(scope, name)
            return None
        self.expand_entry(scope, name, entry)
        if entry.enabled is False:
            line = locate(entry.raw, ("when",)).line if entry.raw is not None else pos.line
            self.errors.error(f"{where}{scope.label}: '{name}' is switched off by its `when` (line {line})", pos)
            return None
        if entry.kind == "block":
            outs = entry.passthrough if entry.passthrough is not None else entry.instances[-1].outputs if entry.instances else None
            if outs is None:
                return None  # the block call itself failed and was reported
            return self.pick_output(name, output, [n for n, _ in outs], [r for _, r in outs], pos, where, scope)
        node = self.nodes.get(entry.flat)
        if node is None:
            return None
        if not output:
            return Ref(node.name, 0)
        picked = self.pick_output(name, output, node.outputs, [Ref(node.name, i) for i in range(len(node.outputs))], pos, where, scope)
        return picked

    def pick_output(self, name: str, output: str, names: list[str], refs: list[Ref], pos: Pos, where: str, scope: _Scope) -> Ref | None:
        if not output:
            return refs[0]
        if output in names:
            return refs[names.index(output)]
        if output.isdigit() and int(output) < len(refs):
            return refs[int(output)]
        self.errors.error(f"{where}{scope.label}: '{name}' has no output '{output}' (outputs: {', '.join(names)})", pos)
        return None

    # --- blocks ------------------------------------------------------------------------

    def block_def(self, name: str) -> BlockDef | None:
        if name not in self.block_defs:
            raw = self.spec.blocks[name]
            try:
                self.block_defs[name] = BlockDef.model_validate(raw)
            except ValidationError as e:
                self.errors.errors.extend(report_validation_error(e, raw, ("blocks", name), model=BlockDef))
                self.block_defs[name] = None
        return self.block_defs[name]

    def expand_block_call(self, scope: _Scope, name: str, entry: _Entry, previous: str | None) -> None:
        assert entry.raw is not None
        raw = entry.raw
        path = (*scope.path, name)
        where = ".".join(map(str, path))
        pos = locate(scope.raw_root, path, key=True)
        try:
            data = self.substitute(scope, raw, path)
            call = BlockCall.model_validate(data)
        except ExprError:
            return
        except ValidationError as e:
            self.errors.errors.extend(report_validation_error(e, raw, path, model=BlockCall, label=scope.label))
            return
        if call.block not in self.spec.blocks:
            self.errors.error(f"{where}{scope.label}: unknown block '{call.block}'{did_you_mean(call.block, self.spec.blocks)}", locate(raw, ("block",)))
            return
        if call.block in self.block_stack:
            chain = " -> ".join([*self.block_stack, call.block])
            self.errors.error(f"{where}{scope.label}: block '{call.block}' uses itself ({chain})", locate(raw, ("block",)))
            return
        bdef = self.block_def(call.block)
        if bdef is None:
            return
        params = self.block_params(call, bdef, raw, where, scope)
        if params is None:
            return
        inputs = self.call_inputs(scope, call, bdef, raw, where, previous)
        if inputs is None:
            return
        reps = call.repeat
        if not self.within_size_limits(call, raw, where, scope):
            return
        if reps == 0:
            self.pass_through(entry, call, bdef, inputs, raw, where, scope)
            return
        block_raw = self.spec.blocks[call.block]
        self.block_stack.append(call.block)
        try:
            for i in range(reps or 1):
                inst_name = f"{entry.flat}.{i}" if reps is not None else entry.flat
                inst = self.expand_instance(scope, inst_name, call, bdef, block_raw, {**params, "index": i}, inputs, pos)
                if inst is None:
                    return
                entry.instances.append(inst)
                if len(inst.outputs) != len(inputs) and reps is not None and i + 1 < reps:
                    self.errors.error(
                        f"{where}.repeat{scope.label}: block '{call.block}' has {len(inputs)} input(s) but {len(inst.outputs)} output(s);"
                        " a repeated block feeds its outputs to the next copy's inputs, so the counts must match",
                        locate(raw, ("repeat",)),
                    )
                    return
                inputs = [r for _, r in inst.outputs]
        finally:
            self.block_stack.pop()

    def within_size_limits(self, call: BlockCall, raw: YMap, where: str, scope: _Scope) -> bool:
        """Refuse a call before unrolling it when its repeat count or the nodes it would add
        go over the limits (``repeat: 1000000`` would take minutes and gigabytes).

        The node count is an estimate from the block's text (nested repeats that are
        expressions count once), but every nested call checks again against the nodes
        already made, so the total can never pass the limit by more than one call's estimate.
        Going over the node limit ends the expansion: nothing after it can be checked.
        """
        reps = call.repeat or 1
        if reps > MAX_REPEAT.value:
            self.errors.add(MAX_REPEAT.exceeded(f"{where}.repeat{scope.label}: repeat {reps:,}", locate(raw, ("repeat",))))
            return False
        total = len(self.nodes) + reps * self.block_size(call.block, set())
        if total > MAX_NODES.value:
            self.errors.add(MAX_NODES.exceeded(f"{where}{scope.label}: block '{call.block}' would make the spec {total:,} nodes",
                                               locate(raw, ("repeat",)) if "repeat" in raw else locate(raw, ("block",))))
            self.nodes.clear()  # the partial check that follows must not walk a huge graph
            self.errors.raise_if_any()
        return True

    def check_file_size(self, top: _Scope) -> None:
        """The node limit holds for a spec that spells out every node too (no blocks)."""
        total = len(self.nodes) + len(top.order)
        if total > MAX_NODES.value:
            self.errors.add(MAX_NODES.exceeded(f"nodes: the spec has {total:,} nodes", locate(self.spec.raw, ("nodes",), key=True)))
            self.errors.raise_if_any()

    def block_size(self, name: str, seen: set[str]) -> int:
        """Nodes one copy of block ``name`` makes, counted from its text (ports included)."""
        if name in self.block_sizes:
            return self.block_sizes[name]
        raw = self.spec.blocks.get(name)
        if raw is None or name in seen or not isinstance(raw.get("nodes"), dict):
            return 1
        inputs = raw.get("inputs")
        size = len(inputs) if isinstance(inputs, list) else 1
        for node in raw["nodes"].values():
            inner = node.get("block") if isinstance(node, dict) else None
            if isinstance(inner, str):
                reps = node.get("repeat")
                copies = reps if isinstance(reps, int) and not isinstance(reps, bool) and reps > 0 else 1
                size += copies * self.block_size(inner, seen | {name})
            else:
                size += 1
        self.block_sizes[name] = size
        return size

    def pass_through(self, entry: _Entry, call: BlockCall, bdef: BlockDef, inputs: list[Ref], raw: YMap, where: str, scope: _Scope) -> None:
        """``repeat: 0``: no copy of the block; its outputs are its inputs (counts must match)."""
        names = list(bdef.outputs) if isinstance(bdef.outputs, dict) else [o.split(".")[0] for o in bdef.outputs]
        if len(names) != len(inputs):
            self.errors.error(
                f"{where}.repeat{scope.label}: with repeat 0 the block's outputs are its inputs, but block '{call.block}'"
                f" has {len(inputs)} input(s) and {len(names)} output(s)",
                locate(raw, ("repeat",)),
            )
            return
        entry.passthrough = list(zip(names, inputs, strict=True))

    def block_params(self, call: BlockCall, bdef: BlockDef, raw: YMap, where: str, scope: _Scope) -> dict[str, Any] | None:
        given = dict(call.model_extra or {})
        declared: dict[str, BlockParam] = {}
        for pname, spec in bdef.params.items():
            if isinstance(spec, BlockParam):
                declared[pname] = spec
            elif isinstance(spec, str) and spec in _TYPES:
                declared[pname] = BlockParam(type=spec)  # type: ignore[arg-type]
            else:
                kind = "bool" if isinstance(spec, bool) else "int" if isinstance(spec, int) else "float" if isinstance(spec, float) else "str"
                declared[pname] = BlockParam(type=kind, default=spec)  # type: ignore[arg-type]
        out: dict[str, Any] = {}
        ok = True
        for key, value in given.items():
            if key not in declared:
                self.errors.error(f"{where}.{key}{scope.label}: block '{call.block}' has no param '{key}'{did_you_mean(key, list(declared) + sorted(RESERVED))}", locate(raw, (key,), key=True))
                ok = False
                continue
            want = declared[key].type
            if not isinstance(value, _TYPES[want]) or (want != "bool" and isinstance(value, bool)):
                self.errors.error(f"{where}.{key}{scope.label}: block param '{key}' expects {want}, got {value!r}", locate(raw, (key,)))
                ok = False
                continue
            out[key] = float(value) if want == "float" else value  # type: ignore[arg-type]
        typos = {m for k in given if k not in declared for m in difflib.get_close_matches(k, list(declared), n=1, cutoff=0.6)}
        for key, p in declared.items():
            if key not in out and key not in given:
                if p.default is None and key not in typos:
                    self.errors.error(f"{where}{scope.label}: block '{call.block}' needs param '{key}'", locate(raw, ("block",)))
                    ok = False
                else:
                    out[key] = p.default
        return out if ok else None

    def call_inputs(self, scope: _Scope, call: BlockCall, bdef: BlockDef, raw: YMap, where: str, previous: str | None) -> list[Ref] | None:
        given = call.in_ if call.in_ is not None else previous
        pos = locate(raw, ("in",)) if "in" in raw else locate(raw, ())
        if given is None:
            self.errors.error(f"{where}.in{scope.label}: no 'in' given and there is no previous node to use", pos)
            return None
        if isinstance(given, dict):
            unknown = [k for k in given if k not in bdef.inputs]
            for k in unknown:
                self.errors.error(f"{where}.in.{k}{scope.label}: block '{call.block}' has no input '{k}'{did_you_mean(k, bdef.inputs)}", locate(raw, ("in", k), key=True))
            typos = {m for k in unknown for m in difflib.get_close_matches(k, bdef.inputs, n=1, cutoff=0.6)}
            missing = [k for k in bdef.inputs if k not in given and k not in typos]
            if missing:
                self.errors.error(f"{where}.in{scope.label}: block '{call.block}' input '{missing[0]}' is not given", pos)
            if unknown or missing or typos:
                return None
            items = [(given[k], locate(raw, ("in", k))) for k in bdef.inputs]
        elif isinstance(given, list):
            items = [(r, locate(raw, ("in", i))) for i, r in enumerate(given)]
        else:
            items = [(given, pos)]
        if len(items) != len(bdef.inputs):
            self.errors.error(f"{where}.in{scope.label}: block '{call.block}' takes {len(bdef.inputs)} input(s) ({', '.join(bdef.inputs)}), got {len(items)}", pos)
            return None
        refs = [self.resolve(scope, r, p, f"{where}.in") for r, p in items]
        if any(r is None for r in refs):
            return None
        return [r for r in refs if r is not None]

    def expand_instance(
        self, scope: _Scope, inst_name: str, call: BlockCall, bdef: BlockDef, block_raw: YMap,
        params: dict[str, Any], inputs: list[Ref], pos: Pos,
    ) -> Instance | None:
        inst = Instance(inst_name, call.block, scope.prefix, pos, params)
        self.instances[inst_name] = inst
        if scope.prefix:
            self.instances[scope.prefix].nodes.append(inst_name)
        inner = _Scope(inst_name, params, ("blocks", call.block, "nodes"), _Rooted(block_raw, call.block), scope_label(inst_name))
        for i, (port, ref) in enumerate(zip(bdef.inputs, inputs, strict=True)):
            flat = f"{inst_name}.{port}"
            ppos = locate(block_raw, ("inputs", i))
            self.nodes[flat] = FlatNode(flat, "port", ppos, f"blocks.{call.block}.inputs.{i}", inst_name, inputs=[ref])
            inst.inputs.append(flat)
            inst.nodes.append(flat)
            inner.entries[port] = _Entry("port", flat=flat, state="done")
        self.fill_scope(inner, block_raw.get("nodes"), ("blocks", call.block, "nodes"))
        if call.freeze:
            for e in inner.entries.values():
                if e.raw is not None and "freeze" not in e.raw:
                    e.raw = _with_freeze(e.raw)
        self.expand_scope(inner)
        outs = bdef.outputs
        try:  # outputs may be computed: ["${'sum' if index > 0 else 'proj'}"]
            subst = self.substitute(inner, outs if isinstance(outs, dict) else list(outs), ("blocks", call.block, "outputs"))
        except ExprError:
            return None
        pairs = list(subst.items()) if isinstance(subst, dict) else [(str(o).split(".")[0], o) for o in subst]
        for i, (oname, oref) in enumerate(pairs):
            opos = locate(block_raw, ("outputs", oname if isinstance(outs, dict) else i))
            r = self.resolve(inner, oref, opos, f"blocks.{call.block}.outputs")
            if r is None:
                return None
            inst.outputs.append((oname, r))
        return inst


class _Rooted(YMap):
    """Presents a block's raw definition as if it sat at ``blocks.<name>`` of a spec."""

    def __init__(self, block_raw: YMap, name: str) -> None:
        blocks = YMap(block_raw.pos)
        blocks[name] = block_raw
        blocks.key_pos[name] = block_raw.pos
        blocks.val_pos[name] = block_raw.pos
        super().__init__(block_raw.pos)
        self["blocks"] = blocks
        self.key_pos["blocks"] = block_raw.pos
        self.val_pos["blocks"] = block_raw.pos


def _with_freeze(raw: YMap) -> YMap:
    out = YMap(raw.pos)
    out.update(raw)
    out.key_pos.update(raw.key_pos)
    out.val_pos.update(raw.val_pos)
    out["freeze"] = True
    out.key_pos["freeze"] = out.val_pos["freeze"] = raw.pos
    return out


def python_identifier(name: str) -> str:
    """The identifier Python makes of ``name``: source code is NFKC-normalised, so the
    mathematical-bold '𝐟𝐜1' *is* 'fc1' as an attribute of the generated module."""
    return name if name.isascii() else unicodedata.normalize("NFKC", name)


def _names(mapping: Any, *path: str) -> list[tuple[str, Pos, str]]:
    """Keys of a raw mapping (or items of a raw list) with their positions and spec paths."""
    where = ".".join(path)
    if isinstance(mapping, YMap):
        return [(k, mapping.key_pos[k], f"{where}.{k}") for k in mapping]
    if isinstance(mapping, list) and hasattr(mapping, "item_pos"):
        return [(v, p, f"{where}.{i}") for i, (v, p) in enumerate(zip(mapping, mapping.item_pos, strict=False)) if isinstance(v, str)]
    return []


def identifier_clashes(spec: Spec) -> list[Diagnostic]:
    """Names that differ in the YAML but are one Python identifier (``fc1`` and ``𝐟𝐜1``).

    Node names become module attributes, inputs and params become Python names, blocks
    become classes: two such names would silently share one layer.  Each group of names
    that share a namespace is checked once, from the raw text, so a repeated block is not
    reported once per copy.
    """
    raw = spec.raw
    groups = [
        [*_names(raw.get("inputs"), "inputs"), *_names(raw.get("nodes"), "nodes")],
        _names(raw.get("outputs"), "outputs"),
        _names(raw.get("params"), "params"),
        [(name, block.pos, f"blocks.{name}") for name, block in spec.blocks.items() if isinstance(block, YMap)],
    ]
    for name, block in spec.blocks.items():
        if isinstance(block, YMap):
            groups += [
                [*_names(block.get("inputs"), "blocks", name, "inputs"), *_names(block.get("nodes"), "blocks", name, "nodes")],
                _names(block.get("outputs"), "blocks", name, "outputs"),
                _names(block.get("params"), "blocks", name, "params"),
            ]
    out: list[Diagnostic] = []
    for names in groups:
        if all(n.isascii() for n, _, _ in names):
            continue  # the common case costs one pass of isascii()
        first: dict[str, tuple[str, Pos]] = {}
        for name, pos, where in names:
            ident = python_identifier(name)
            if ident in first and first[ident][0] != name:
                other, opos = first[ident]
                out.append(Diagnostic(pos, f"{where}: '{name}' is the same Python identifier as '{other}' ({opos}):"
                                           f" both are '{ident}' after Unicode NFKC normalisation; rename one"))
            first.setdefault(ident, (name, pos))
    return out


def _prune(flat: FlatSpec, broken: set[str]) -> None:
    """Drop broken nodes and everything downstream of them (ports included)."""
    gone = set(broken)
    changed = True
    while changed:
        changed = False
        for name, node in list(flat.nodes.items()):
            if name in gone or any(r is not None and (r.node in gone or r.node not in flat.nodes) for r in node.inputs):
                del flat.nodes[name]
                gone.add(name)
                changed = True


def expand_partial(spec: Spec) -> tuple[FlatSpec, list[Diagnostic]]:
    """:func:`expand` that returns the intact part of a broken spec along with its errors."""
    with text_budget():
        return Expander(spec).run_partial()


def expand(spec: Spec) -> FlatSpec:
    """Expand ``spec`` into flat nodes; raises SpecError with every problem found."""
    with text_budget():
        return Expander(spec).run()


__all__ = ["FlatNode", "FlatSpec", "Instance", "NodeCommon", "Ref", "SpecError", "expand"]
