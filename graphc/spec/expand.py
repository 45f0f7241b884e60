"""Expansion: blocks inlined, ``repeat`` unrolled, ``${...}`` evaluated, references resolved.

The result is a :class:`FlatSpec`: every op node under its full dotted name (``body.1.attn``),
its inputs resolved to :class:`Ref` s, plus *ports* (one per block-instance input) and the
block instances themselves, which lowering turns into submodules.  Every node keeps the file
position of its definition, so later phases can point errors at the YAML line.

The IR types live in :mod:`graphc.spec.ir`, the rules of a block call in
:mod:`graphc.spec.blocks` and those of names in :mod:`graphc.spec.naming`; this module holds the walk itself, whose parts call each other
on demand (a reference expands the node it names, which may be a block call, whose nodes
hold references), so they stay together.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from graphc.errors import Collector, Diagnostic, Pos, SpecError, did_you_mean
from graphc.ops.registry import REGISTRY
from graphc.spec import blocks, naming
from graphc.spec.early import EarlyTypes
from graphc.spec.expr import ExprError, InputShape, ShapeUnknownError, TextBudgetError, has_expr, substitute, text_budget
from graphc.spec.ir import FlatNode, FlatSpec, Instance, Ref, at
from graphc.spec.limits import MAX_NODES, MAX_REPEAT
from graphc.spec.load import Spec
from graphc.spec.model import BlockCall, BlockDef, node_adapter, node_model
from graphc.spec.pydantic_errors import report_validation_error
from graphc.spec.yaml_loader import YMap, locate


@dataclass
class _Entry:
    kind: Literal["op", "block", "input", "port"]
    flat: str = ""
    raw: YMap | None = None
    instances: list[Instance] = field(default_factory=list)
    state: Literal["new", "busy", "done"] = "new"
    enabled: bool | None = None  # its `when`, evaluated on first need
    passthrough: list[tuple[str, Ref]] | None = None  # `repeat: 0`: the block's outputs are its inputs
    call: BlockCall | None = None  # a block call, once validated (its `shares` is linked at the scope's end)


class _Scope:
    """One ``nodes`` mapping being expanded: the top level, or one copy of a block.

    It holds the raw mapping itself, so a node's position is a look-up in it (not a walk
    from the file's root, which a block's nodes, read from an include, may not share).
    """

    def __init__(self, prefix: str, names: Mapping[str, Any], path: tuple[str | int, ...], raw: Any):
        self.prefix = prefix  # the block copy ("body.1"); "" at the top level
        self.names = names  # expression names
        self.path = path  # spec path of the nodes mapping, for messages
        self.raw: YMap = raw if isinstance(raw, YMap) else YMap(Pos("<spec>"))  # not a mapping: already reported
        self.entries: dict[str, _Entry] = {}
        self.order: list[str] = []
        self.position: dict[str, int] = {}  # name -> index in order
        self.pending_ties: list[tuple[FlatNode, Any, YMap, tuple[str | int, ...]]] = []

    def at(self, where: str) -> str:
        """The head of a message about spec path ``where`` in this scope (see :func:`~graphc.spec.ir.at`)."""
        return at(where, self.prefix)

    def key_pos(self, name: str) -> Pos:
        """Where node ``name`` of this scope is defined (its key)."""
        return self.raw.key_pos[name]


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
        self.active: list[tuple[_Scope, str]] = []  # entries being expanded, outermost first
        self.block_sizes: dict[str, int] = {}  # block -> nodes one copy makes (for the size limit)
        self.early = EarlyTypes(self.nodes, spec.doc.inputs, self.broken)  # for ${x.shape[i]} in blocks

    # --- entry -------------------------------------------------------------------------

    def run(self) -> FlatSpec:
        spec = self.spec
        for name, inp in spec.doc.inputs.items():
            pos = spec.pos("inputs", name, key=True)
            if not name.isidentifier():
                self.errors.error(f"inputs.{name}: an input name must be an identifier", pos)
            self.nodes[name] = FlatNode(name, "input", pos, f"inputs.{name}")
            self.errors.extend(naming.input_dims_errors(spec, name, inp.shape, inp.example))
        self.errors.extend(naming.identifier_clashes(spec))
        top = _Scope("", spec.params, ("nodes",), spec.raw.get("nodes"))
        for name in spec.doc.inputs:
            top.entries[name] = _Entry("input", flat=name, state="done")
        self.fill_scope(top)
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

    def resolve_outputs(self, top: _Scope) -> tuple[dict[str, Ref], dict[str, Pos]]:
        """Resolve the spec's outputs; in list form ``node.port`` is named ``node_port``.

        Naming a list entry by its whole reference (not the text before the dot) keeps the
        outputs of a multi-output node apart (``[parts.0, parts.1]``); two entries that
        still share a name (``[a, a]``) are an error at the second, never a silent drop.
        """
        raw_out = self.spec.doc.outputs
        pairs = raw_out.items() if isinstance(raw_out, dict) else [(_list_output_name(r), r) for r in raw_out]
        out: dict[str, Ref] = {}
        pos_map: dict[str, Pos] = {}
        for i, (name, ref) in enumerate(pairs):
            pos = self.spec.pos("outputs", name if isinstance(raw_out, dict) else i)
            if name in pos_map:
                first = pos_map[name]
                self.errors.error(f"outputs.{name}: output name '{name}' is already used by the output at line {first.line}", pos)
                continue
            pos_map[name] = pos
            if not isinstance(name, str) or not name.isidentifier():
                self.errors.error(f"outputs.{name}: an output name must be an identifier", pos)
                continue
            resolved = self.resolve(top, ref, pos, f"outputs.{name}")
            if resolved is not None:
                out[name] = resolved
        return out, pos_map

    # --- scopes ------------------------------------------------------------------------

    def fill_scope(self, scope: _Scope) -> None:
        """Enter every node of the scope's mapping, in file order, without expanding it."""
        for name, raw in scope.raw.items():
            pos = scope.key_pos(name)
            where = ".".join(map(str, (*scope.path, name)))
            why = naming.node_name_error(name)
            if why is not None:
                self.errors.error(f"{where}: {why}", pos)
                scope.entries[name] = _Entry("op", flat=self.flat_name(scope, name), state="done")  # no follow-on errors
                continue
            if name in scope.entries:
                self.errors.error(f"{scope.at(where)}: name '{name}' is already used by a block input", pos)
                continue
            if not isinstance(raw, YMap):
                self.errors.error(f"{where}: expected a mapping like {{op: ..., in: ...}}", scope.raw.val_pos[name])
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
        self.link_shares(scope)  # before ties: a tie into a sharing copy names the owner's node
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
                    self.errors.error(f"{scope.at(where)}: {e}{self.scope_hint(scope, e)}", locate(entry.raw, ("when",)))
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
        poses = [s.key_pos(n) for s, n in members]
        chain = " -> ".join(f"{s.entries[n].flat} (line {p.line})" for (s, n), p in zip(members, poses, strict=True))
        self.errors.error(f"cycle: {chain}", min(poses[:-1]))

    # --- op nodes ----------------------------------------------------------------------

    def substitute(self, scope: _Scope, value: Any, raw: YMap, path: tuple[str | int, ...], sub: tuple[str | int, ...] = ()) -> Any:
        """``value`` (read from ``raw`` at ``sub``; spec path ``path``) with every ``${...}``
        evaluated in the scope's names; an error is reported at its place and re-raised."""
        if isinstance(value, dict):
            return {k: self.substitute(scope, v, raw, path, (*sub, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.substitute(scope, v, raw, path, (*sub, i)) for i, v in enumerate(value)]
        if has_expr(value):
            try:
                return substitute(value, scope.names)
            except ExprError as e:
                if isinstance(e, ShapeUnknownError) and self.errors.errors:
                    raise  # what feeds the block failed and was reported there
                where = ".".join(map(str, (*path, *sub)))
                self.errors.error(f"{scope.at(where)}: {e}{self.scope_hint(scope, e)}", locate(raw, sub))
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
        pos = scope.key_pos(name)
        op_name = raw.get("op")
        if has_expr(op_name):  # a block may take its activation as a param: {op: "${act}"}
            try:
                op_name = self.substitute(scope, op_name, raw, path, ("op",))
            except ExprError:
                return
        if not isinstance(op_name, str) or op_name not in REGISTRY:
            if op_name is None:
                self.errors.error(f"{where}: missing 'op' (or 'block')", pos)
            else:
                hint = did_you_mean(str(op_name), REGISTRY)
                head = scope.at(where) if has_expr(raw.get("op")) else where  # computed: copies may differ
                self.errors.error(f"{head}: unknown op '{op_name}'{hint}", locate(raw, ("op",)))
            return
        try:
            data = self.substitute(scope, raw, raw, path)
        except ExprError:
            return
        try:
            model = node_adapter().validate_python(data)
        except ValidationError as e:
            model_cls = node_model(REGISTRY[op_name].cls)
            self.errors.extend(report_validation_error(e, raw, path, model=model_cls, scope=scope.prefix, strip_tag=True))
            return
        node = FlatNode(entry.flat, "op", pos, where, scope.prefix, model)
        node.outputs = model.output_names()
        node.freeze = bool(model.freeze)
        node.doc, node.init = model.doc, model.init
        before = len(self.errors.errors)
        node.inputs, ok = self.op_inputs(scope, name, model, raw, previous)
        if not ok or len(self.errors.errors) > before:  # also: what it reads failed as it expanded
            self.broken.add(node.name)
        scope.pending_ties.append((node, model, raw, path))  # once every node of the scope exists
        self.nodes[node.name] = node
        if scope.prefix:
            self.instances[scope.prefix].nodes.append(node.name)

    def op_inputs(self, scope: _Scope, name: str, model: Any, raw: YMap, previous: str | None) -> tuple[list[Ref | None], bool]:
        """The node's input references, resolved (expanding what they name on demand), and
        whether all of them are good; each mistake is reported where it is."""
        opdef = REGISTRY[model.op_name]
        where = ".".join(map(str, (*scope.path, name, "in")))
        pos = locate(raw, ("in",)) if "in" in raw else locate(raw, (), key=False)
        given = model.in_
        if given is None:
            if opdef.min_inputs == 0:
                return [], True
            if previous is None:
                self.errors.error(f"{scope.at(where)}: no 'in' given and there is no previous node to use", pos)
                return [], False
            given = previous
        names = opdef.input_names
        variadic = opdef.max_inputs is None
        refs: list[tuple[str, Pos]]
        if isinstance(given, dict):
            if variadic and opdef.min_inputs == 0:  # add's {a: .., b: ..} stays valid; concat has no input names
                self.errors.error(f"{scope.at(where)}: op '{model.op_name}' takes a list of inputs, not a mapping", pos)
                return [], False
            by_name: dict[str, tuple[str, Pos]] = {}
            ok = True
            for key, ref in given.items():
                if key not in names:
                    self.errors.error(f"{scope.at(f'{where}.{key}')}: op '{model.op_name}' has no input '{key}'{did_you_mean(key, names)}", locate(raw, ("in", key), key=True))
                    ok = False
                    continue
                by_name[key] = (ref, locate(raw, ("in", key)))
            refs = [by_name.get(n, ("", pos)) for n in names]
            while refs and refs[-1][0] == "":
                refs.pop()
        elif isinstance(given, list):
            refs, ok = [(r, locate(raw, ("in", i))) for i, r in enumerate(given)], True
        else:
            refs, ok = [(given, pos)], True
        count = sum(1 for r, _ in refs if r)
        hi = opdef.max_inputs
        if count < opdef.min_inputs or (hi is not None and len(refs) > hi):
            want = f"{opdef.min_inputs}" if hi == opdef.min_inputs else f"{opdef.min_inputs} to {hi}" if hi is not None else f"at least {opdef.min_inputs}"
            inputs_doc = ", ".join(opdef.cls.inputs)
            self.errors.error(f"{scope.at(where)}: op '{model.op_name}' takes {want} input(s) ({inputs_doc}), got {count}", pos)
            return [], False
        out: list[Ref | None] = []
        for i, (ref, rpos) in enumerate(refs):
            if not ref:
                if i < opdef.min_inputs:
                    self.errors.error(f"{scope.at(where)}: missing required input '{names[i]}'", pos)
                    ok = False
                out.append(None)
                continue
            resolved = self.resolve(scope, ref, rpos, where)
            ok &= resolved is not None
            out.append(resolved)
        return out, ok

    def ties(self, scope: _Scope, model: Any, raw: YMap, path: tuple[str | int, ...]) -> dict[str, tuple[str, str]]:
        tie = model.tie
        if tie is None:
            return {}
        pos = locate(raw, ("tie",))
        where = ".".join(map(str, path))
        items = tie.items() if isinstance(tie, dict) else [("*", tie)]
        out: dict[str, tuple[str, str]] = {}
        for param, target in items:
            found = self.tie_target(scope, target, whole=param == "*")
            if found is None and self.failed_target(scope, target):
                continue  # its own error was reported; a second line would only blame the tie
            if found is not None and self.nodes[found[0]].shares:  # a node of a sharing copy: its owner's
                found = (self.nodes[found[0]].shares or "", found[1])
            if found is None:
                head = target.split(".")[0]
                hint = did_you_mean(head, [n for n, e in scope.entries.items() if e.kind in ("op", "block") and n != path[-1]])
                self.errors.error(f"{scope.at(f'{where}.tie')}: unknown node '{target}'{hint}", pos)
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
            self.errors.error(f"{scope.at(where)}: a reference must be a node name, got {ref!r}", pos)
            return None
        name, _, output = ref.partition(".")
        entry = scope.entries.get(name)
        if entry is None:
            hint = did_you_mean(name, scope.entries)
            self.errors.error(f"{scope.at(where)}: unknown reference '{name}'{hint}", pos)
            return None
        if entry.state == "busy":
            self.report_cycle(scope, name)
            return None
        self.expand_entry(scope, name, entry)
        if entry.enabled is False:
            line = locate(entry.raw, ("when",)).line if entry.raw is not None else pos.line
            self.errors.error(f"{scope.at(where)}: '{name}' is switched off by its `when` (line {line})", pos)
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
        self.errors.error(f"{scope.at(where)}: '{name}' has no output '{output}' (outputs: {', '.join(names)})", pos)
        return None

    # --- blocks ------------------------------------------------------------------------

    def block_def(self, name: str) -> BlockDef | None:
        if name not in self.block_defs:
            raw = self.spec.blocks[name]
            try:
                self.block_defs[name] = BlockDef.model_validate(raw)
            except ValidationError as e:
                self.errors.extend(report_validation_error(e, raw, ("blocks", name), model=BlockDef))
                self.block_defs[name] = None
        return self.block_defs[name]

    def expand_block_call(self, scope: _Scope, name: str, entry: _Entry, previous: str | None) -> None:
        assert entry.raw is not None
        raw = entry.raw
        path = (*scope.path, name)
        where = ".".join(map(str, path))
        pos = scope.key_pos(name)
        try:
            data = self.substitute(scope, raw, raw, path)
            call = BlockCall.model_validate(data)
        except ExprError:
            return
        except ValidationError as e:
            self.errors.extend(report_validation_error(e, raw, path, model=BlockCall, scope=scope.prefix))
            return
        wrong = blocks.target_error(call, self.spec.blocks, self.block_stack, raw, where, scope.prefix)
        if wrong is not None:
            self.errors.errors.append(wrong)
            return
        bdef = self.block_def(call.block)
        if bdef is None:
            return
        params, errors = blocks.call_params(call, bdef, raw, where, scope.prefix)
        self.errors.extend(errors)
        per_copy, errors = blocks.per_copy_params(call, bdef, raw, where, scope.prefix)
        self.errors.extend(errors)
        if params is None or per_copy is None:
            return
        inputs = self.call_inputs(scope, call, bdef, raw, where, previous)
        if inputs is None:
            return
        reps = blocks.copies(call)
        if not self.within_size_limits(call, raw, where, scope):
            return
        if reps == 0:
            entry.passthrough, errors = blocks.pass_through(call, bdef, inputs, raw, where, scope.prefix)
            self.errors.extend(errors)
            return
        block_raw = self.spec.blocks[call.block]
        entry.call = call
        self.block_stack.append(call.block)
        try:
            for i in range(reps or 1):
                inst_name = f"{entry.flat}.{i}" if reps is not None else entry.flat
                own = per_copy[i] if per_copy else {}  # `repeat: {over: ...}`: this copy's values
                inst = self.expand_instance(scope, inst_name, call, bdef, block_raw, {**params, **own, "index": i}, inputs, pos)
                if inst is None:
                    return
                entry.instances.append(inst)
                mismatch = blocks.chain_mismatch(call, len(inputs), len(inst.outputs), raw, where, scope.prefix)
                if mismatch is not None and reps is not None and i + 1 < reps:
                    self.errors.errors.append(mismatch)
                    return
                inputs = [r for _, r in inst.outputs]
        finally:
            self.block_stack.pop()

    # --- shared block calls --------------------------------------------------------------

    def link_shares(self, scope: _Scope) -> None:
        """Point every copy made by a call with ``shares`` at the copy it runs instead.

        Done once the whole scope is expanded, so ``shares`` may name a call that comes later
        in the file (or that reads this call's output): sharing weights is no data edge.
        Each call's own nodes are kept (the graph phase infers their types, lowering calls
        the owner's module on them); they are marked so that they own no parameters.
        """
        owners: dict[str, str | None] = {}
        for name in scope.order:
            entry = scope.entries[name]
            if entry.call is None or entry.call.shares is None or not entry.instances:
                continue
            assert entry.raw is not None
            where = ".".join(map(str, (*scope.path, name)))
            owner = self.share_owner(scope, name, owners)
            if owner is None:
                continue
            oentry = scope.entries[owner]
            assert oentry.call is not None
            wrong = blocks.share_mismatch(entry.call, owner, oentry.call, [i.params for i in entry.instances],
                                          [i.params for i in oentry.instances], entry.raw, where, scope.prefix)
            if wrong is not None:
                self.errors.errors.append(wrong)
                continue
            for mine, theirs in zip(entry.instances, oentry.instances, strict=True):
                differ = self.share_instance(mine, theirs)
                if differ is not None:
                    self.errors.error(f"{scope.at(f'{where}.shares')}: this call's copy differs from '{owner}' at node '{differ}'"
                                      " (a `when` that reads an input's shape?); calls that share weights need the same nodes",
                                      locate(entry.raw, ("shares",)))
                    break

    def share_owner(self, scope: _Scope, name: str, owners: dict[str, str | None]) -> str | None:
        """The call whose copies a ``shares`` chain ends at (``c shares b shares a``: ``a``), or
        None when a link of it is wrong (reported once, at that link); ``owners`` remembers
        every chain walked, so many calls sharing along one chain cost one walk."""
        path: dict[str, int] = {}
        cur: str | None = name
        while cur is not None and cur not in owners:
            if cur in path:  # a cycle: reported once, at its member first in the file
                members = list(path)[path[cur]:]
                first = min(members, key=lambda n: scope.position[n])
                i = members.index(first)
                chain = [*members[i:], *members[:i], first]
                raw = scope.entries[first].raw
                assert raw is not None
                self.errors.error(f"{scope.at('.'.join(map(str, (*scope.path, first, 'shares'))))}: block calls share each other's"
                                  f" weights in a cycle: {' -> '.join(chain)}", locate(raw, ("shares",)))
                cur = None
                break
            path[cur] = len(path)
            target = self.share_target(scope, cur)
            if target == cur:  # no `shares`: the owner
                owners[cur] = cur
                break
            cur = target
        result = owners.get(cur) if cur is not None else None
        for n in path:
            owners[n] = result
        return result

    def share_target(self, scope: _Scope, name: str) -> str | None:
        """What call ``name``'s ``shares`` names (``name`` itself without one), or None when
        that is no block call with copies to share (reported, unless its own failure was)."""
        entry = scope.entries[name]
        if entry.call is None or not entry.instances:
            return None  # the call failed (reported) or is switched off
        target = entry.call.shares
        if target is None:
            return name
        assert entry.raw is not None
        pos = locate(entry.raw, ("shares",))
        head = f"{scope.at('.'.join(map(str, (*scope.path, name, 'shares'))))}:"
        found = scope.entries.get(target)
        if target == name:
            self.errors.error(f"{head} a block call cannot share its own weights; name another call of the same block", pos)
        elif found is None or found.kind != "block":
            calls = [n for n, e in scope.entries.items() if e.kind == "block" and n != name]
            what = f"'{target}' is {'an op node' if found.kind == 'op' else 'an input'}" if found else f"unknown block call '{target}'"
            hint = did_you_mean(target, calls) if found is None else " (the weights of op nodes are shared with `tie`)" if found.kind == "op" else ""
            self.errors.error(f"{head} {what}{hint}; `shares` names a block call", pos)
        elif found.enabled is False:
            self.errors.error(f"{head} '{target}' is switched off by its `when`", pos)
        elif found.passthrough is not None:
            self.errors.error(f"{head} '{target}' has repeat 0: it makes no copy to share", pos)
        elif found.instances:
            return target
        return None  # an error above, or the target's own call failed (reported there)

    def share_instance(self, mine: Instance, theirs: Instance, top: bool = True) -> str | None:
        """Mark copy ``mine`` as running ``theirs`` and its nodes (all levels down) as owning
        nothing; the first of its nodes without a like counterpart, or None.  Block copies
        inside keep no ``shares``: only the outer call is lowered as a call of another module."""
        if top:
            mine.shares = theirs.name
        for flat in mine.nodes:
            other_name = theirs.name + flat[len(mine.name):]
            if flat in self.instances:
                if other_name not in self.instances:
                    return flat
                differ = self.share_instance(self.instances[flat], self.instances[other_name], top=False)
                if differ is not None:
                    return differ
                continue
            node, other = self.nodes.get(flat), self.nodes.get(other_name)
            if node is None or other is None or node.kind != other.kind or node.args != other.args:
                return flat
            if node.kind == "op":
                node.shares, node.tie = other_name, {}  # its ties are the owner's, applied there
        if len(mine.nodes) != len(theirs.nodes):
            return next((n for n in theirs.nodes if mine.name + n[len(theirs.name):] not in mine.nodes), mine.name)
        return None

    def within_size_limits(self, call: BlockCall, raw: YMap, where: str, scope: _Scope) -> bool:
        """Refuse a call before unrolling it when its repeat count or the nodes it would add
        go over the limits (``repeat: 1000000`` would take minutes and gigabytes).

        The node count is an estimate from the block's text (nested repeats that are
        expressions count once), but every nested call checks again against the nodes
        already made, so the total can never pass the limit by more than one call's estimate.
        Going over the node limit ends the expansion: nothing after it can be checked.
        """
        reps = blocks.copies(call) or 1
        if reps > MAX_REPEAT.value:
            self.errors.extend(MAX_REPEAT.exceeded(f"{scope.at(f'{where}.repeat')}: repeat {reps:,}", blocks.repeat_pos(call, raw)).diagnostics)
            return False
        total = len(self.nodes) + reps * blocks.block_size(self.spec.blocks, call.block, self.block_sizes)
        if total > MAX_NODES.value:
            self.errors.extend(MAX_NODES.exceeded(f"{scope.at(where)}: block '{call.block}' would make the spec {total:,} nodes",
                                               locate(raw, ("repeat",)) if "repeat" in raw else locate(raw, ("block",))).diagnostics)
            self.nodes.clear()  # the partial check that follows must not walk a huge graph
            self.errors.raise_if_any()
        return True

    def check_file_size(self, top: _Scope) -> None:
        """The node limit holds for a spec that spells out every node too (no blocks)."""
        total = len(self.nodes) + len(top.order)
        if total > MAX_NODES.value:
            self.errors.extend(MAX_NODES.exceeded(f"nodes: the spec has {total:,} nodes", locate(self.spec.raw, ("nodes",), key=True)).diagnostics)
            self.errors.raise_if_any()

    def call_inputs(self, scope: _Scope, call: BlockCall, bdef: BlockDef, raw: YMap, where: str, previous: str | None) -> list[Ref] | None:
        """A call's inputs, checked against the block's and resolved, or None (reported)."""
        items, errors = blocks.call_input_refs(call, bdef, raw, where, scope.prefix, previous)
        self.errors.extend(errors)
        if items is None:
            return None
        refs = [self.resolve(scope, r, p, f"{where}.in") for r, p in items]
        if any(r is None for r in refs):
            return None
        return [r for r in refs if r is not None]

    def expand_instance(
        self, scope: _Scope, inst_name: str, call: BlockCall, bdef: BlockDef, block_raw: YMap,
        params: dict[str, Any], inputs: list[Ref], pos: Pos,
    ) -> Instance | None:
        inst = Instance(inst_name, call.block, scope.prefix, pos, params, checkpoint=call.checkpoint)
        self.instances[inst_name] = inst
        if scope.prefix:
            self.instances[scope.prefix].nodes.append(inst_name)
        inner = _Scope(inst_name, {**self.input_shapes(inst_name, bdef, inputs), **params}, ("blocks", call.block, "nodes"), block_raw.get("nodes"))
        for i, (port, ref) in enumerate(zip(bdef.inputs, inputs, strict=True)):
            flat = f"{inst_name}.{port}"
            ppos = locate(block_raw, ("inputs", i))
            self.nodes[flat] = FlatNode(flat, "port", ppos, f"blocks.{call.block}.inputs.{i}", inst_name, inputs=[ref])
            inst.inputs.append(flat)
            inst.nodes.append(flat)
            inner.entries[port] = _Entry("port", flat=flat, state="done")
        self.fill_scope(inner)
        if call.freeze:
            for e in inner.entries.values():
                if e.raw is not None and "freeze" not in e.raw:
                    e.raw = _with_freeze(e.raw)
        self.expand_scope(inner)
        outs = bdef.outputs
        try:  # outputs may be computed: ["${'sum' if index > 0 else 'proj'}"]
            subst = self.substitute(inner, outs if isinstance(outs, dict) else list(outs), block_raw, ("blocks", call.block), ("outputs",))
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


    def input_shapes(self, inst_name: str, bdef: BlockDef, inputs: list[Ref]) -> dict[str, InputShape]:
        """Each block input as expressions see it (``x.shape[1]``), typed only when read."""
        def dims(port: str, ref: Ref) -> Any:
            return lambda: self.early.dims(ref, f"block input '{port}' (fed by '{ref}')")
        return {port: InputShape(port, dims(port, ref)) for port, ref in zip(bdef.inputs, inputs, strict=True)}


def _with_freeze(raw: YMap) -> YMap:
    out = YMap(raw.pos)
    out.update(raw)
    out.key_pos.update(raw.key_pos)
    out.val_pos.update(raw.val_pos)
    out["freeze"] = True
    out.key_pos["freeze"] = out.val_pos["freeze"] = raw.pos
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
    """Expand ``spec`` into flat nodes: all of it and no errors, or its intact part and every
    error found (so the caller can still check the shapes of the rest)."""
    with text_budget():
        return Expander(spec).run_partial()


__all__ = ["expand_partial"]


def _list_output_name(ref: Any) -> Any:
    """The name of a list-form output: ``node`` for ``node``, ``node_port`` for ``node.port``."""
    return ref.replace(".", "_") if isinstance(ref, str) else ref
