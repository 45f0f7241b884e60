"""The rules of a block call: its params, its inputs, and how its copies chain.

Plain functions that look at one call and return the diagnostics it earns; the expander
(:mod:`graphc.spec.expand`) calls them and does the recursion (resolving references,
expanding the block's nodes), which is why these take what they need and resolve nothing.
Every message names the spec path and the block copy it is in through :func:`~graphc.spec.ir.at`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from graphc.errors import Diagnostic, Pos, closest, did_you_mean
from graphc.spec.ir import RESERVED, Ref, at
from graphc.spec.model import BlockCall, BlockDef, BlockParam, RepeatOver
from graphc.spec.yaml_loader import YMap, locate

_TYPES: dict[str, tuple[type, ...]] = {"int": (int,), "float": (float, int), "bool": (bool,), "str": (str,)}


def declared_params(bdef: BlockDef) -> dict[str, BlockParam]:
    """A block's params in one form: ``d: int`` (a type) and ``d: 64`` (a default) both
    become a :class:`BlockParam`."""
    out: dict[str, BlockParam] = {}
    for name, spec in bdef.params.items():
        if isinstance(spec, BlockParam):
            out[name] = spec
        elif isinstance(spec, str) and spec in _TYPES:
            out[name] = BlockParam(type=spec)  # type: ignore[arg-type]
        else:
            kind = "bool" if isinstance(spec, bool) else "int" if isinstance(spec, int) else "float" if isinstance(spec, float) else "str"
            out[name] = BlockParam(type=kind, default=spec)  # type: ignore[arg-type]
    return out


def _type_error(key: str, value: Any, want: str) -> str | None:
    """Why ``value`` cannot be block param ``key`` of type ``want`` (None: it can)."""
    if not isinstance(value, _TYPES[want]) or (want != "bool" and isinstance(value, bool)):
        return f"block param '{key}' expects {want}, got {value!r}"
    return None


def call_params(call: BlockCall, bdef: BlockDef, raw: YMap, where: str, scope: str) -> tuple[dict[str, Any] | None, list[Diagnostic]]:
    """The params one call passes (defaults filled in, floats made float), or None with why.

    A param that is missing but looks like the typo of an unknown one is reported once,
    as the typo.  Params given per copy (``repeat: {over: ...}``) are not missing here;
    :func:`per_copy_params` checks them.
    """
    given = dict(call.model_extra or {})
    per_copy = call.repeat.over if isinstance(call.repeat, RepeatOver) else {}
    declared = declared_params(bdef)
    out: dict[str, Any] = {}
    errors: list[Diagnostic] = []
    for key, value in given.items():
        if key not in declared:
            hint = did_you_mean(key, list(declared) + sorted(RESERVED))
            if key == "tie":  # the op-node spelling of sharing: point at the block-call one
                hint = "; to run the same copy of the block (one set of weights) on other inputs, use `shares: <block call>`"
            errors.append(Diagnostic(locate(raw, (key,), key=True), f"{at(f'{where}.{key}', scope)}: block '{call.block}' has no param '{key}'{hint}"))
            continue
        why = _type_error(key, value, declared[key].type)
        if why is not None:
            errors.append(Diagnostic(locate(raw, (key,)), f"{at(f'{where}.{key}', scope)}: {why}"))
            continue
        out[key] = float(value) if declared[key].type == "float" else value
    typos = {m for k in [*given, *per_copy] if k not in declared if (m := closest(k, declared))}
    for key, p in declared.items():
        if key not in out and key not in given and key not in per_copy:
            if p.default is None and key not in typos:
                errors.append(Diagnostic(locate(raw, ("block",)), f"{at(where, scope)}: block '{call.block}' needs param '{key}'"))
            else:
                out[key] = p.default
    return (None if errors else out), errors


def per_copy_params(call: BlockCall, bdef: BlockDef, raw: YMap, where: str, scope: str) -> tuple[list[dict[str, Any]] | None, list[Diagnostic]]:
    """The params ``repeat: {over: {param: [...]}}`` gives each copy (copy ``i`` gets the
    ``i``-th value of every list), or None with why; ``[]`` for a call without lists.

    Each list must name a declared param not also given to every copy, hold values of the
    param's type, and be as long as the first list (and as ``n``, when written), so a copy
    never silently lacks a value or drops one.
    """
    rep = call.repeat
    if not isinstance(rep, RepeatOver):
        return [], []
    declared = declared_params(bdef)
    given = call.model_extra or {}
    errors: list[Diagnostic] = []

    def error(path: tuple[str | int, ...], msg: str, key: bool = False) -> None:
        errors.append(Diagnostic(locate(raw, path, key=key), f"{at('.'.join(map(str, (where, *path))), scope)}: {msg}"))

    if not rep.over:
        error(("repeat", "over"), "no per-copy list; give each param that differs between copies a list, e.g. over: {out: [64, 128]}")
        return None, errors
    first = next(iter(rep.over))
    for name, values in rep.over.items():
        over = ("repeat", "over", name)
        if name not in declared:
            error(over, f"block '{call.block}' has no param '{name}'{did_you_mean(name, declared)}", key=True)
        elif name in given:
            error((name,), f"param '{name}' is given both to every copy and per copy (repeat.over.{name}, line {locate(raw, over).line}); give it once", key=True)
        elif not values:
            error(over, "an empty list makes no copy; give one value per copy (repeat: 0 makes none)")
        elif len(values) != len(rep.over[first]):
            error(over, f"{len(values)} value(s), but repeat.over.{first} has {len(rep.over[first])}; every list under 'over' gives one value per copy")
        else:
            for i, value in enumerate(values):
                why = _type_error(name, value, declared[name].type)
                if why is not None:
                    error((*over, i), why)
    if not errors and rep.n is not None and rep.n != len(rep.over[first]):
        error(("repeat", "n"), f"{rep.n} copies, but repeat.over.{first} has {len(rep.over[first])} value(s); n must equal the lists' length")
    if errors:
        return None, errors
    floats = {k for k in rep.over if declared[k].type == "float"}
    columns = [[float(v) if k in floats else v for v in vs] for k, vs in rep.over.items()]
    return [dict(zip(rep.over, row, strict=True)) for row in zip(*columns, strict=True)], []


def copies(call: BlockCall) -> int | None:
    """How many copies a call makes: its count, or the length of its per-copy lists (once
    :func:`per_copy_params` found them equal); None for a plain call (one copy named like
    the call, not ``name.0``)."""
    rep = call.repeat
    if isinstance(rep, RepeatOver):
        return rep.n if rep.n is not None else len(next(iter(rep.over.values()), []))
    return rep


def repeat_pos(call: BlockCall, raw: YMap) -> Pos:
    """Where a call's copy count is written: ``repeat``, or ``repeat.n`` or the first
    per-copy list."""
    rep = call.repeat
    if isinstance(rep, RepeatOver):
        return locate(raw, ("repeat", "n") if rep.n is not None else ("repeat", "over", *list(rep.over)[:1]))
    return locate(raw, ("repeat",))


def call_input_refs(
    call: BlockCall, bdef: BlockDef, raw: YMap, where: str, scope: str, previous: str | None,
) -> tuple[list[tuple[Any, Pos]] | None, list[Diagnostic]]:
    """The references a call passes, one per block input in the block's order, each with
    its position (not yet resolved), or None with why.

    ``in`` may be one reference, a list, or a mapping by input name; without ``in`` the
    call reads ``previous``.
    """
    given = call.in_ if call.in_ is not None else previous
    pos = locate(raw, ("in",)) if "in" in raw else locate(raw, ())
    if given is None:
        return None, [Diagnostic(pos, f"{at(f'{where}.in', scope)}: no 'in' given and there is no previous node to use")]
    items: list[tuple[Any, Pos]]
    if isinstance(given, dict):
        unknown = [k for k in given if k not in bdef.inputs]
        errors = [
            Diagnostic(locate(raw, ("in", k), key=True), f"{at(f'{where}.in.{k}', scope)}: block '{call.block}' has no input '{k}'{did_you_mean(k, bdef.inputs)}")
            for k in unknown
        ]
        typos = {m for k in unknown if (m := closest(k, bdef.inputs))}
        missing = [k for k in bdef.inputs if k not in given and k not in typos]
        if missing:
            errors.append(Diagnostic(pos, f"{at(f'{where}.in', scope)}: block '{call.block}' input '{missing[0]}' is not given"))
        if unknown or missing or typos:
            return None, errors
        items = [(given[k], locate(raw, ("in", k))) for k in bdef.inputs]
    elif isinstance(given, list):
        items = [(r, locate(raw, ("in", i))) for i, r in enumerate(given)]
    else:
        items = [(given, pos)]
    if len(items) != len(bdef.inputs):
        msg = f"block '{call.block}' takes {len(bdef.inputs)} input(s) ({', '.join(bdef.inputs)}), got {len(items)}"
        return None, [Diagnostic(pos, f"{at(f'{where}.in', scope)}: {msg}")]
    return items, []


def output_names(bdef: BlockDef) -> list[str]:
    """The names of a block's outputs (a list entry ``node.output`` is named ``node``)."""
    return list(bdef.outputs) if isinstance(bdef.outputs, dict) else [o.split(".")[0] for o in bdef.outputs]


def pass_through(call: BlockCall, bdef: BlockDef, inputs: list[Ref], raw: YMap, where: str, scope: str) -> tuple[list[tuple[str, Ref]] | None, list[Diagnostic]]:
    """``repeat: 0``: no copy of the block; its outputs are its inputs (counts must match)."""
    names = output_names(bdef)
    if len(names) != len(inputs):
        msg = (f"with repeat 0 the block's outputs are its inputs, but block '{call.block}'"
               f" has {len(inputs)} input(s) and {len(names)} output(s)")
        return None, [Diagnostic(locate(raw, ("repeat",)), f"{at(f'{where}.repeat', scope)}: {msg}")]
    return list(zip(names, inputs, strict=True)), []


def chain_mismatch(call: BlockCall, n_inputs: int, n_outputs: int, raw: YMap, where: str, scope: str) -> Diagnostic | None:
    """A repeated block feeds each copy's outputs to the next copy's inputs: the counts of
    one copy must match."""
    if n_outputs == n_inputs:
        return None
    return Diagnostic(
        locate(raw, ("repeat",)),
        f"{at(f'{where}.repeat', scope)}: block '{call.block}' has {n_inputs} input(s) but {n_outputs} output(s);"
        " a repeated block feeds its outputs to the next copy's inputs, so the counts must match",
    )


def target_error(call: BlockCall, known: Mapping[str, Any], stack: list[str], raw: YMap, where: str, scope: str) -> Diagnostic | None:
    """A call must name a block that exists and is not one of the blocks it is inside of."""
    if call.block not in known:
        return Diagnostic(locate(raw, ("block",)), f"{at(where, scope)}: unknown block '{call.block}'{did_you_mean(call.block, known)}")
    if call.block in stack:
        chain = " -> ".join([*stack, call.block])
        return Diagnostic(locate(raw, ("block",)), f"{at(where, scope)}: block '{call.block}' uses itself ({chain})")
    return None


def block_size(defs: Mapping[str, YMap], name: str, cache: dict[str, int], seen: frozenset[str] = frozenset()) -> int:
    """Nodes one copy of block ``name`` makes, counted from its text (ports included), so
    a call can be refused before it is unrolled; ``cache`` keeps each block's count.

    Nested repeats that are expressions count once: an estimate, which every nested call
    checks again against the nodes already made.
    """
    if name in cache:
        return cache[name]
    raw = defs.get(name)
    if raw is None or name in seen or not isinstance(raw.get("nodes"), dict):
        return 1
    inputs = raw.get("inputs")
    size = len(inputs) if isinstance(inputs, list) else 1
    for node in raw["nodes"].values():
        inner = node.get("block") if isinstance(node, dict) else None
        if isinstance(inner, str):
            size += _raw_copies(node.get("repeat")) * block_size(defs, inner, cache, seen | {name})
        else:
            size += 1
    cache[name] = size
    return size


def _raw_copies(reps: Any) -> int:
    """The copies a call's raw ``repeat`` text makes, as far as it says without expressions
    (``3``; ``{n: 3}``; ``{over: {c: [a, b, c]}}``), else 1."""
    if isinstance(reps, dict):
        over = reps.get("over")
        lists = [v for v in over.values() if isinstance(v, list)] if isinstance(over, dict) else []
        reps = reps.get("n", max(map(len, lists), default=1))
    return reps if isinstance(reps, int) and not isinstance(reps, bool) and reps > 0 else 1


def share_mismatch(
    call: BlockCall, owner: str, owner_call: BlockCall, copies: list[dict[str, Any]], owner_copies: list[dict[str, Any]],
    raw: YMap, where: str, scope: str,
) -> Diagnostic | None:
    """Why call ``call`` (its copies' params ``copies``) cannot run the copies of block call
    ``owner``, or None: one module runs both, so the block, the number of copies and every
    param must be the same (else the parameters' shapes or the code would differ)."""
    def said(key: str, msg: str) -> Diagnostic:  # at the key that differs when the call gives it, else at `shares`
        key = key if key in raw else "shares"
        return Diagnostic(locate(raw, (key,)), f"{at(f'{where}.{key}', scope)}: '{owner}' {msg}")

    if owner_call.block != call.block:
        return said("block", f"calls block '{owner_call.block}', this call block '{call.block}'; only a call of the same block can share its weights")
    if len(copies) != len(owner_copies):
        return said("repeat", f"makes {len(owner_copies)} cop{'y' if len(owner_copies) == 1 else 'ies'}, this call {len(copies)};"
                              " calls that share weights need the same repeat")
    for mine, theirs in zip(copies, owner_copies, strict=True):
        for key, value in mine.items():
            if key != "index" and theirs.get(key) != value:
                return said(key, f"has block param {key}={theirs.get(key)!r}, this call {key}={value!r}; calls that share weights need the same params")
    if call.freeze and not owner_call.freeze:
        return Diagnostic(locate(raw, ("freeze",)), f"{at(f'{where}.freeze', scope)}: the weights belong to '{owner}'; freeze that call instead")
    return None
