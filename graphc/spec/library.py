"""graphc's block library: block files shipped inside the package (``graphc/blocks/*.yaml``).

A spec includes one by name, ``include: [graphc:transformer]``.  The name is looked up in
the list of shipped files, never joined onto a path, so ``graphc:../secrets`` names nothing
(an error with the shipped names) instead of a file outside the package.

Positions inside a library block are the shipped file's own (``graphc/blocks/resnet.yaml:24:7``
when run from a checkout), so a mistake found there would leave the user guessing which of
their lines caused it: :func:`note_callers` adds the position of the call in the user's file.
"""

from __future__ import annotations

import re
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from graphc.errors import Diagnostic, GraphcError, Pos, did_you_mean

if TYPE_CHECKING:
    from graphc.spec.ir import FlatSpec

PREFIX = "graphc:"
_LABEL = re.compile(r" \(in ([^()]+)\)")


def _folder() -> Path:
    """The package's ``blocks`` folder (package data; a wheel ships it, see pyproject.toml)."""
    return Path(str(resources.files("graphc").joinpath("blocks")))


def names() -> list[str]:
    """The names a spec may include as ``graphc:NAME``: one per shipped ``blocks/NAME.yaml``."""
    return sorted(p.stem for p in _folder().glob("*.yaml") if p.is_file())


def is_library(include: str) -> bool:
    """Whether an ``include`` entry names the block library (``graphc:NAME``), not a file."""
    return include.startswith(PREFIX)


def resolve(include: str) -> Path | str:
    """The shipped file that ``graphc:NAME`` names, or the message saying why none does.

    ``NAME`` must be one of :func:`names` exactly; nothing of it ever reaches a path
    operation, which is what makes a computed or hostile name (``graphc:../x``) harmless.
    """
    name = include[len(PREFIX):]
    known = names()
    if name not in known:
        shipped = ", ".join(PREFIX + n for n in known)
        return f"include '{include}': graphc ships no block library '{name}'{did_you_mean(name, known)} (it ships {shipped})"
    return _folder() / f"{name}.yaml"


def blocks() -> dict[str, tuple[str, Any]]:
    """Every shipped block: name -> (library name, raw definition); for docs and tests."""
    from graphc.spec.load import read_bounded
    from graphc.spec.yaml_loader import load_yaml

    out: dict[str, tuple[str, Any]] = {}
    for name in names():
        path = _folder() / f"{name}.yaml"
        raw = load_yaml(read_bounded(path), str(path))
        for block, definition in (raw.get("blocks") or {}).items():
            out[block] = (name, definition)
    return out


def note_callers(error: GraphcError, flat: FlatSpec | None) -> GraphcError:
    """``error`` with ``(called at FILE:LINE:COL)`` added to each diagnostic that points into
    another file than the spec (a library block, an included file) from inside a block copy.

    The call named is the outermost one in the spec's own file, i.e. the line the user wrote:
    for ``inverted_residual`` calling ``conv_bn_act`` that is the user's stage call.
    """
    if flat is None or not flat.instances:
        return error
    own = flat.spec.file
    changed = False
    out: list[Diagnostic] = []
    for d in error.diagnostics:
        callers = _callers(d, flat, own) if d.pos.file != own else []
        if callers:
            changed = True
            d = replace(d, message=f"{d.message} (called at {', '.join(map(str, callers))})")
        out.append(d)
    if not changed:
        return error
    new = type(error).many(out)
    new.__cause__ = error.__cause__
    return new


def _callers(d: Diagnostic, flat: FlatSpec, own: str) -> list[Pos]:
    """The positions, in the spec's own file, of the calls a diagnostic's scope label names."""
    m = _LABEL.search(d.message)
    if m is None:
        return []
    found: list[Pos] = []
    for word in re.split(r"[\s,]+", m.group(1)):
        inst = flat.instances.get(word)
        while inst is not None and inst.pos.file != own:
            inst = flat.instances.get(inst.scope) if inst.scope else None
        if inst is not None and inst.pos not in found:
            found.append(inst.pos)
    return sorted(found)


def markdown() -> str:
    """The docs table of every shipped block: its library name, inputs, outputs and params.

    docs/spec.md holds it ("The block library"); tools/gen_block_docs.py rewrites it there
    and tests/test_block_library.py fails when it is stale.
    """
    rows = ["| block | include | inputs -> outputs | params (default) |", "| --- | --- | --- | --- |"]
    for name, (lib, raw) in sorted(blocks().items(), key=lambda kv: (kv[1][0], kv[0])):
        outs = raw["outputs"]
        outputs = ", ".join(outs) if isinstance(outs, dict) else ", ".join(o if "${" not in o else "out" for o in outs)
        params = "<br>".join(_param(p, spec) for p, spec in raw["params"].items())
        rows.append(f"| `{name}` | `{PREFIX}{lib}` | {', '.join(raw['inputs'])} -> {outputs} | {params} |")
    return "\n".join(rows) + "\n"


def _param(name: str, spec: Any) -> str:
    default = spec.get("default")
    shown = f" (`{str(default).lower() if isinstance(default, bool) else default}`)" if default is not None else " (required)"
    return f"`{name}`: {spec.get('type', 'int')}{shown}: {spec.get('doc', '')}".replace("|", "\\|")
