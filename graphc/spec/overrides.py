"""``--set KEY=VALUE``: dotted overrides applied to a loaded YAML tree before validation.

One mechanism, two rules, chosen by the caller with ``create=``:

* a spec (``create=False``): every key must already be in the file, so a typo is an error
  with a did-you-mean instead of a key nothing reads; a text value is typed like the value it
  replaces (``layers=8`` stays an int, ``act=gelu`` a string), and a bare param name means
  ``params.NAME``;
* a training recipe (``create=True``): missing mappings are created, because most of a
  recipe lives in its defaults (``train.optimizer.lr=3e-4`` needs no ``optimizer:`` section),
  and text is read as YAML (``3e-4``, ``[fc1, fc2]``, ``{rank: 4}``): there is no old value to
  type it like, and pydantic validates the result with positions afterwards.

Like the rest of :mod:`graphc.spec`, this module never imports torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from graphc.errors import Pos, SpecError, did_you_mean
from graphc.spec.expr import has_expr
from graphc.spec.yaml_loader import load_yaml, locate, plain_scalar

SET = Pos("<--set>")  # where an override's own mistakes are reported

Overrides = Mapping[str, Any] | Sequence[str] | None  # ["KEY=VALUE", ...] from --set, or a mapping from Python


def parse_overrides(overrides: Overrides) -> dict[str, Any]:
    """``["layers=8", ...]`` (or a mapping, taken as it is) -> ``{"layers": "8", ...}``."""
    if not overrides:
        return {}
    if isinstance(overrides, Mapping):
        return dict(overrides)
    out: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SpecError(f"--set expects KEY=VALUE, got '{item}'", SET)
        out[key.strip()] = value
    return out


def split_overrides(overrides: Sequence[str], prefix: str = "train.") -> tuple[list[str], dict[str, str]]:
    """``--set`` items for the spec, and ``PREFIX.KEY=VALUE`` items (prefix removed) for the recipe.

    An item without ``=`` stays with the spec's, whose :func:`parse_overrides` reports it.
    """
    spec, recipe = [], {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if sep and key.strip().startswith(prefix):
            recipe[key.strip()[len(prefix):]] = value
        else:
            spec.append(item)
    return spec, recipe


def apply_overrides(root: dict[str, Any], overrides: Mapping[str, Any], *, create: bool = False, prefix: str = "") -> None:
    """Set each dotted ``KEY`` of ``overrides`` inside ``root`` (in place).

    Args:
        root: the loaded tree (a spec's raw :class:`~graphc.spec.yaml_loader.YMap`, or a copy
            of a recipe's mapping).
        overrides: ``{"nodes.fc1.out": "64"}``; values that are not text are set as they are.
        create: the recipe's rule (create missing mappings, read text as YAML) instead of the
            spec's (keys must exist, text is typed like the value it replaces).
        prefix: what the user wrote before each key (``"train."``), for messages only.

    Raises:
        SpecError: at ``<--set>`` (or the replaced value) for an unknown key or a mistyped value.
    """
    for key, value in overrides.items():
        if create:
            _create(root, key, value, prefix)
        else:
            _replace(root, key, value)


def _replace(raw: dict[str, Any], key: str, value: Any) -> None:
    """The spec's rule: the key must exist; a bare param name means ``params.NAME``."""
    parts: list[str | int] = [int(p) if p.isascii() and p.isdigit() else p for p in key.split(".")]
    if parts[0] not in raw and "params" in raw and isinstance(raw["params"], dict) and parts[0] in raw["params"]:
        parts.insert(0, "params")
    if parts[0] not in raw:
        params = list(raw["params"]) if isinstance(raw.get("params"), dict) else []
        hint = did_you_mean(str(parts[0]), [*params, *raw])
        raise SpecError(f"--set {key}: '{parts[0]}' is neither a param nor a top-level key of the spec{hint}", SET)
    node: Any = raw
    for i, part in enumerate(parts[:-1]):
        node = _child(node, part, key, parts[: i + 1])
    last = parts[-1]
    old = _child(node, last, key, parts)
    node[last] = typed_like(old, value, key, locate(raw, tuple(parts)))


def _child(node: Any, part: str | int, key: str, path: Sequence[str | int]) -> Any:
    if isinstance(node, dict) and isinstance(part, str) and part in node:
        return node[part]
    if isinstance(node, list) and isinstance(part, int) and part < len(node):
        return node[part]
    choices = list(node) if isinstance(node, dict) else []
    where = ".".join(str(p) for p in path)
    raise SpecError(f"--set {key}: '{where}' is not in the spec{did_you_mean(str(part), choices)}", SET)


def typed_like(old: Any, value: Any, key: str, pos: Pos) -> Any:
    """``value`` (text from ``--set``) as the type of ``old``, the value it replaces.

    An expression (``${...}``) stays text wherever one may stand, and is typed when the spec
    is substituted.  Raises :class:`SpecError` at ``pos`` when the text is not of that type.
    """
    if not isinstance(value, str) or (has_expr(old) and not isinstance(old, str)):
        return value
    if isinstance(old, bool):
        if value.lower() in ("true", "false"):
            return value.lower() == "true"
    elif isinstance(old, int):
        try:
            return int(value)
        except ValueError:
            pass
    elif isinstance(old, float):
        try:
            return float(value)
        except ValueError:
            pass
    elif isinstance(old, str):
        return value
    else:
        try:
            return plain_scalar(value)
        except ValueError as e:  # an integer wider than 64 bits
            raise SpecError(f"--set {key}: {e}", pos) from None
    if has_expr(value):
        return value
    raise SpecError(f"--set {key}={value}: expected {type(old).__name__} like the value it replaces ({old!r})", pos)


def _create(root: dict[str, Any], key: str, value: Any, prefix: str) -> None:
    """The recipe's rule: walk ``a.b.c``, creating (or replacing) what is not a mapping."""
    parts = key.split(".")
    node = root
    for p in parts[:-1]:
        child = node.get(p)
        if not isinstance(child, dict):
            child = {}
            node[p] = child
        node = child
    if isinstance(value, str):
        try:
            value = yaml_value(value)
        except ValueError as e:  # an integer wider than 64 bits
            raise SpecError(f"--set {prefix}{key}: {e}", SET) from None
    node[parts[-1]] = value


def yaml_value(text: str) -> Any:
    """``3e-4`` -> 0.0003; ``[fc1, fc2]`` / ``{rank: 4}`` -> a list / mapping (YAML flow style).

    Flow text that is not valid YAML stays text (validation then names the field).

    Raises:
        ValueError: for a plain integer wider than 64 bits.
    """
    if text.strip().startswith(("[", "{")):
        try:
            return load_yaml(f"v: {text.strip()}", "<--set>")["v"]
        except SpecError:
            return text
    return plain_scalar(text)
