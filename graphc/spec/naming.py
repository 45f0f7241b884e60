"""What a name in a spec may be: node names, input shapes, and names Python would merge.

Plain functions over the raw spec that return diagnostics (or the reason a name is
refused); the expander (:mod:`graphc.spec.expand`) calls them.
"""

from __future__ import annotations

import re
import unicodedata
from typing import TYPE_CHECKING, Any

from graphc.errors import Diagnostic, Pos, did_you_mean
from graphc.shapes import parse_dim
from graphc.spec.ir import MODULE_ATTRIBUTES
from graphc.spec.yaml_loader import YMap

if TYPE_CHECKING:
    from graphc.spec.load import Spec


def node_name_error(name: str) -> str | None:
    """Why ``name`` cannot name a node, or None: nodes become attributes of a torch module,
    so a name must be an identifier that is none of the module's own attributes."""
    ident = python_identifier(name)  # what Python makes of it: 'ｆｏｒｗａｒｄ' is 'forward'
    if not name.isidentifier():
        return "a node name must be an identifier (letters, digits, _)"
    if ident.startswith("_"):
        return "a node name must not start with '_' (reserved for torch internals)"
    if ident in MODULE_ATTRIBUTES:
        return f"'{name}' is reserved: nodes become torch module attributes, and torch modules already have '{ident}'"
    return None


def input_dims_errors(spec: Spec, name: str, shape: list[int | str], example: dict[str, int]) -> list[Diagnostic]:
    """Input ``name``'s shape: symbolic dims are identifiers, sizes are positive, and
    examples name real dims."""
    errors: list[Diagnostic] = []
    for i, d in enumerate(shape):
        if isinstance(d, int) and d < 1:
            errors.append(Diagnostic(spec.pos("inputs", name, "shape", i), f"inputs.{name}.shape.{i}: a size must be at least 1, got {d}"))
        elif isinstance(d, str) and parse_dim(d) is None:
            errors.append(Diagnostic(
                spec.pos("inputs", name, "shape", i),
                f"inputs.{name}.shape.{i}: a symbolic dim is a name like T, or k*NAME like 8*H (a multiple of k), got '{d}'",
            ))
    dims = [w for d in shape if isinstance(d, str) for w in re.findall(r"[A-Za-z_]\w*", d)]  # "8*H" names H
    for d, size in example.items():
        if d not in dims:
            hint = did_you_mean(d, dims)
            errors.append(Diagnostic(spec.pos("inputs", name, "example", d, key=True),
                                     f"inputs.{name}.example.{d}: '{d}' is not a symbolic dim of the shape [{', '.join(map(str, shape))}]{hint}"))
        elif size < 1:
            errors.append(Diagnostic(spec.pos("inputs", name, "example", d), f"inputs.{name}.example.{d}: an example size must be at least 1, got {size}"))
    return errors


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
