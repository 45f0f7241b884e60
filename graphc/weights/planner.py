"""The transfer plan: what each checkpoint tensor becomes, from headers and inferred shapes.

No torch and no model: checkpoint names/shapes come from headers (:mod:`.readers`), the
spec's parameter and buffer shapes from each op's ``params``/``buffers`` rules on the
:class:`~graphc.graph.infer.TypedGraph`.  Every spec tensor ends up in one row:

* ``carried``: same name and shape; ``renamed``: a map rule renamed it;
  ``transformed``: a rule also transposed/reshaped/split/joined/cast it;
* ``tied``: it shares its owner's tensor (``tie:`` in the spec), filled by the owner;
* ``new``: no checkpoint tensor feeds it (newly initialised);
* ``mismatch``: fed, but the shapes differ (always an error on load);

and every checkpoint tensor nobody reads is ``unused`` (or ``dropped`` by a ``drop`` rule).
Map mistakes (a rule that matches nothing, two rules writing one node path, a transform the
shapes cannot take) raise :class:`WeightsError` at the rule's line, all at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from graphc.errors import NO_FILE, Collector, Diagnostic, Pos, WeightsError
from graphc.graph.infer import TypedGraph
from graphc.weights.maps import CompiledRule, WeightMap, fill
from graphc.weights.readers import Checkpoint, TensorInfo

Shape = tuple[int, ...]
STATUSES = ("carried", "renamed", "transformed", "tied", "new", "mismatch", "unused", "dropped")


@dataclass(frozen=True)
class Expected:
    """One tensor of the spec's state dict."""

    name: str
    shape: Shape
    node: str
    pos: Pos
    owner: str | None = None  # tied: the state-dict key whose tensor this one shares


@dataclass
class Transfer:
    """Checkpoint tensor(s) -> node path(s), through one rule (or none: same name)."""

    sources: list[str]
    targets: list[str]
    shapes: list[Shape]
    dtype: str
    rule: CompiledRule | None = None

    @property
    def status(self) -> str:
        if self.rule is None:
            return "carried"
        return "renamed" if self.rule.rule.renames_only else "transformed"


@dataclass
class Row:
    status: str
    name: str  # the node path, or the checkpoint name for unused/dropped
    source: str = ""
    shape: Shape | None = None  # what the checkpoint gives (after transforms)
    expected: Shape | None = None  # what the spec wants
    where: str = ""  # the spec line of the node (mismatch) or the map rule
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "name": self.name, "source": self.source,
                "shape": list(self.shape) if self.shape is not None else None,
                "expected": list(self.expected) if self.expected is not None else None,
                "where": self.where, "note": self.note}


@dataclass
class Plan:
    """The whole transfer: rows for people, transfers for :func:`graphc.weights.transfer`."""

    spec: str
    checkpoint: str
    rows: list[Row]
    transfers: list[Transfer]

    def count(self) -> dict[str, int]:
        return {s: sum(1 for r in self.rows if r.status == s) for s in STATUSES}

    def names(self, status: str) -> list[str]:
        return [r.name for r in self.rows if r.status == status]

    def problems(self, partial: bool) -> list[str]:
        """What stops a load: mismatches always; new and unused tensors unless ``partial``."""
        out = [f"shape mismatch: {r.name} {list(r.expected or ())} in the spec ({r.where}) but "
               f"{list(r.shape or ())} from {r.source}" for r in self.rows if r.status == "mismatch"]
        if not partial:
            new, unused = self.names("new"), self.names("unused")
            if new:
                out.append(f"{len(new)} spec tensor(s) not in the checkpoint (newly initialised; --partial accepts): {', '.join(new)}")
            if unused:
                out.append(f"{len(unused)} checkpoint tensor(s) unused (--partial accepts): {', '.join(unused)}")
        return out

    def to_json(self) -> dict[str, Any]:
        return {"spec": self.spec, "checkpoint": self.checkpoint, "counts": self.count(),
                "rows": [r.to_json() for r in self.rows]}


def expected_tensors(tg: TypedGraph) -> dict[str, Expected]:
    """The spec's state dict, torch-free: ``{node}.{param}`` for parameters and buffers, in order."""
    out: dict[str, Expected] = {}
    for node in tg.flat.op_nodes():
        if node.shares:
            continue  # a node of a block call with `shares`: its tensors are its owner's
        ties = tg.ties.get(node.name, {})
        for p, shape in tg.params.get(node.name, {}).items():
            owner = f"{ties[p][0]}.{ties[p][1]}" if p in ties else None
            out[f"{node.name}.{p}"] = Expected(f"{node.name}.{p}", tuple(shape), node.name, node.pos, owner)
        for p, shape in node.args.buffers(*tg.in_types(node)).items():  # type: ignore[arg-type]
            out[f"{node.name}.{p}"] = Expected(f"{node.name}.{p}", tuple(shape), node.name, node.pos)
    return out


def make_plan(tg: TypedGraph, ckpt: Checkpoint, wmap: WeightMap | None = None) -> Plan:
    """Plan the transfer of ``ckpt`` into ``tg``'s state dict (headers only)."""
    errors = Collector()
    infos = ckpt.infos()
    expected = expected_tensors(tg)
    if wmap is not None and wmap.doc.spec != tg.flat.spec.name:
        errors.error(f"this map is for spec '{wmap.doc.spec}', not '{tg.flat.spec.name}'", wmap.spec_pos)
    transfers, dropped = _match(infos, wmap, errors)
    errors.raise_if_any(WeightsError)
    rows = _rows(transfers, dropped, expected, errors)
    errors.raise_if_any(WeightsError)
    return Plan(tg.flat.spec.name, str(ckpt.path), rows, transfers)


def _match(infos: dict[str, TensorInfo], wmap: WeightMap | None, errors: Collector) -> tuple[list[Transfer], list[tuple[str, CompiledRule]]]:
    """Each checkpoint name through the first rule that matches it (or kept as it is)."""
    rules = wmap.rules if wmap is not None else []
    used: set[int] = set()
    consumed = _joined(infos, rules)
    transfers: list[Transfer] = []
    dropped: list[tuple[str, CompiledRule]] = []
    for name, info in infos.items():
        if name in consumed:
            continue
        hit = next(((r, c) for r in rules if (c := r.match(name)) is not None), None)
        if hit is None:
            transfers.append(Transfer([name], [name], [info.shape], info.dtype))
            continue
        rule, caps = hit
        used.add(rule.index)
        if rule.rule.drop:
            dropped.append((name, rule))
            continue
        sources = [fill(p, caps) for p in rule.rule.sources]
        missing = [s for s in sources if s not in infos]
        if missing:
            errors.error(f"rules[{rule.index}]: '{name}' needs {', '.join(repr(m) for m in missing)}, not in the checkpoint", rule.pos)
            continue
        try:
            shapes = transform_shapes(rule, [infos[s].shape for s in sources])
        except ValueError as e:
            errors.error(f"rules[{rule.index}]: {name}: {e}", rule.pos)
            continue
        dtype = rule.rule.dtype or infos[name].dtype
        transfers.append(Transfer(sources, [fill(p, caps) for p in rule.rule.targets], shapes, dtype, rule))
    for rule in rules:
        if rule.index not in used and not rule.rule.optional:
            pats = " + ".join(rule.rule.sources)
            errors.error(f"rules[{rule.index}]: '{pats}' matches no tensor of the checkpoint (mark it 'optional: true' if that is expected)", rule.pos)
    return transfers, dropped


def _joined(infos: dict[str, TensorInfo], rules: list[CompiledRule]) -> set[str]:
    """Names a ``concat`` rule reads besides its first: they are taken by that rule, wherever they sit."""
    out: set[str] = set()
    joining = [r for r in rules if len(r.rule.sources) > 1]
    for name in infos if joining else ():
        for r in joining:
            caps = r.match(name)
            if caps is not None:
                out.update(fill(p, caps) for p in r.rule.sources[1:])
    return out


def transform_shapes(rule: CompiledRule, shapes: Sequence[Shape]) -> list[Shape]:
    """The output shape(s) of ``rule``'s transforms, or ValueError saying why they cannot work."""
    r = rule.rule
    shape = tuple(shapes[0])
    if r.concat is not None:
        axis = _axis(r.concat, len(shape), "concat")
        for s in shapes[1:]:
            if len(s) != len(shape) or any(a != b for i, (a, b) in enumerate(zip(s, shape, strict=True)) if i != axis):
                raise ValueError(f"cannot concat shapes {[list(x) for x in shapes]} along axis {r.concat}")
        shape = (*shape[:axis], sum(s[axis] for s in shapes), *shape[axis + 1:])
    if r.transpose:
        perm = _perm(r.transpose, len(shape))
        shape = tuple(shape[i] for i in perm)
    if r.reshape is not None:
        shape = _reshape(shape, r.reshape)
    if r.split is not None:
        n = len(r.targets)
        axis = _axis(r.split, len(shape), "split")
        if shape[axis] % n:
            raise ValueError(f"cannot split axis {r.split} of size {shape[axis]} (shape {list(shape)}) into {n} equal parts")
        return [(*shape[:axis], shape[axis] // n, *shape[axis + 1:])] * n
    return [shape]


def _axis(axis: int, ndim: int, what: str) -> int:
    if not -ndim <= axis < ndim:
        raise ValueError(f"{what} axis {axis} is out of range for a {ndim}-d tensor")
    return axis % ndim


def _perm(transpose: bool | list[int], ndim: int) -> list[int]:
    if transpose is True:
        if ndim < 2:
            raise ValueError(f"cannot transpose a {ndim}-d tensor")
        return [*range(ndim - 2), ndim - 1, ndim - 2]
    perm = list(transpose) if isinstance(transpose, list) else []
    if sorted(perm) != list(range(ndim)):
        raise ValueError(f"transpose {perm} is not a permutation of the {ndim} dims")
    return perm


def _reshape(shape: Shape, new: list[int]) -> Shape:
    total = math.prod(shape)
    if new.count(-1) > 1 or any(d < -1 for d in new):
        raise ValueError(f"reshape {new}: at most one -1 and no other negative size")
    known = math.prod(d for d in new if d != -1)
    if -1 in new:
        if known == 0 or total % known:
            raise ValueError(f"cannot reshape {list(shape)} to {new}")
        new = [total // known if d == -1 else d for d in new]
    if math.prod(new) != total:
        raise ValueError(f"cannot reshape {list(shape)} ({total} values) to {new}")
    return tuple(new)


def _rows(transfers: list[Transfer], dropped: list[tuple[str, CompiledRule]], expected: dict[str, Expected], errors: Collector) -> list[Row]:
    writers: dict[str, Transfer] = {}
    rows: dict[str, Row] = {}
    unused: list[Row] = []
    for t in transfers:
        for target, shape in zip(t.targets, t.shapes, strict=True):
            source = " + ".join(t.sources)
            if target in writers:
                errors.errors.append(_twice(target, writers[target], t))
                continue
            writers[target] = t
            exp = expected.get(target)
            if exp is None:
                note = _rule_note(t) + (f" -> {target}, not in the spec" if target != source else "")
                unused.append(Row("unused", source, "", shape, note=note.lstrip()))
                continue
            status = "tied" if exp.owner else t.status
            if shape != exp.shape:
                status = "mismatch"
            rows[target] = Row(status, target, source, shape, exp.shape, _where(exp), _rule_note(t))
    for name, exp in expected.items():
        if name not in rows:
            owner_fed = exp.owner is not None and exp.owner in rows
            rows[name] = Row("tied" if owner_fed else "new", name, "", None, exp.shape, _where(exp),
                             f"shares {exp.owner}" if owner_fed else "")
    ordered = [rows[n] for n in expected] + unused
    ordered += [Row("dropped", name, note=f"rules[{rule.index}] ({rule.pos})") for name, rule in dropped]
    return ordered


def _rule_note(t: Transfer) -> str:
    if t.rule is None:
        return ""
    r = t.rule.rule
    ops = [op for op, on in (("concat", r.concat is not None), ("transpose", bool(r.transpose)), ("reshape", r.reshape is not None),
                             ("split", r.split is not None), (f"to {r.dtype}", r.dtype is not None)) if on]
    return f"rules[{t.rule.index}]" + (f": {', '.join(ops)}" if ops else "")


def _where(exp: Expected) -> str:
    return str(exp.pos) if exp.pos.file != NO_FILE else ""


def _twice(target: str, first: Transfer, second: Transfer) -> Diagnostic:
    """Two writers of one node path, reported at the later rule of the map."""
    def index(t: Transfer) -> int:
        return t.rule.index if t.rule is not None else -1

    a, b = sorted((first, second), key=index)

    def who(t: Transfer) -> str:
        return (f"rules[{t.rule.index}]" if t.rule else "the same name as is") + f" (from {' + '.join(t.sources)})"

    pos = b.rule.pos if b.rule is not None else Pos(NO_FILE)
    return Diagnostic(pos, f"'{target}' is written twice: by {who(a)} and by {who(b)}")
