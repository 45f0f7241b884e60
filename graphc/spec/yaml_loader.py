"""Safe YAML loading that remembers where every value came from.

PyYAML's own loaders either construct arbitrary objects or forget source positions, and the
YAML 1.1 rules it follows turn ``no``/``off`` into booleans while leaving ``1e-3`` a string.
This module builds plain Python values straight from libyaml's event stream with:

* YAML 1.2 core-schema scalars (``1e-3`` is a float; only ``true``/``false`` are booleans);
* no tags but the standard scalar/collection ones (``!!python/...`` is an error, never run);
* duplicate mapping keys reported with both lines;
* bounded nesting depth and bounded alias expansion (a "billion laughs" file stops early);
* a bounded file size and number of values (:mod:`graphc.spec.limits`), counted as the
  events arrive, so a 30 MB flow list stops at the limit instead of being built first;
* integers bounded to 64 bits (a 5000-digit literal is an error, not Python's int-string limit);
* every mapping/sequence as a :class:`YMap`/:class:`YSeq` that keeps the position of each
  key and value, so later phases can point errors at ``FILE:LINE:COL``.

The event loop is iterative: deep nesting cannot exhaust Python's or C's stack.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import yaml

from graphc.errors import Pos, SpecError
from graphc.spec.limits import MAX_FILE_BYTES, MAX_YAML_VALUES

MAX_DEPTH = 64
MAX_ALIAS_NODES = 100_000
MAX_INT_BITS = 64

PathKey = str | int
Path = tuple[PathKey, ...]


class YMap(dict[str, Any]):
    """A mapping that knows where it, its keys and its values are in the file."""

    pos: Pos
    key_pos: dict[str, Pos]
    val_pos: dict[str, Pos]

    def __init__(self, pos: Pos) -> None:
        super().__init__()
        self.pos = pos
        self.key_pos = {}
        self.val_pos = {}


class YSeq(list[Any]):
    """A sequence that knows where it and each item are in the file."""

    pos: Pos
    item_pos: list[Pos]

    def __init__(self, pos: Pos) -> None:
        super().__init__()
        self.pos = pos
        self.item_pos = []


def locate(root: Any, path: Path, key: bool = False, default: Pos | None = None) -> Pos:
    """Position of the value (or, with ``key=True``, the key) at ``path`` below ``root``.

    Falls back to the deepest known ancestor, so every error gets a position.
    """
    best = getattr(root, "pos", default) or Pos("<spec>")
    node = root
    for i, part in enumerate(path):
        last = i == len(path) - 1
        if isinstance(node, YMap) and isinstance(part, str) and part in node:
            best = node.key_pos[part] if (last and key) else node.val_pos[part]
            node = node[part]
        elif isinstance(node, YSeq) and isinstance(part, int) and 0 <= part < len(node):
            best = node.item_pos[part]
            node = node[part]
        else:
            if isinstance(node, YMap | YSeq):
                best = node.pos
            break
    return best


# --- YAML 1.2 core schema -------------------------------------------------------------

_INT = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_FLOAT = re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?)$")
_INF = re.compile(r"^[-+]?\.(?:inf|Inf|INF)$")
_NAN = re.compile(r"^\.(?:nan|NaN|NAN)$")
_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_NULL = {"", "~", "null", "Null", "NULL"}

_STR_TAG = "tag:yaml.org,2002:str"
_SCALAR_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
}
_MAP_TAGS = {None, "!", "tag:yaml.org,2002:map"}
_SEQ_TAGS = {None, "!", "tag:yaml.org,2002:seq"}


def _plain_scalar(value: str) -> Any:
    """Resolve an untagged plain scalar by the YAML 1.2 core schema.

    Raises:
        ValueError: for an integer wider than 64 bits (checked on its length first, so a
            huge literal costs nothing to refuse).
    """
    if value in _NULL:
        return None
    if value in _BOOL:
        return _BOOL[value]
    if _INT.match(value):
        if len(value) > 25:  # > 64 bits in any base: 2**64 has 20 decimal, 22 octal, 16 hex digits
            raise ValueError(f"integer of {len(value)} digits is too large (at most {MAX_INT_BITS} bits)")
        number = int(value[2:], 8) if value.startswith("0o") else int(value[2:], 16) if value.startswith("0x") else int(value)
        if number.bit_length() > MAX_INT_BITS:
            raise ValueError(f"integer {value} is too large (at most {MAX_INT_BITS} bits)")
        return number
    if _FLOAT.match(value):
        return float(value)
    if _INF.match(value):
        return float("-inf") if value.startswith("-") else float("inf")
    if _NAN.match(value):
        return float("nan")
    return value


def _tagged_scalar(tag: str, value: str, pos: Pos) -> Any:
    if tag == _STR_TAG:
        return value
    try:
        resolved = _plain_scalar(value)
    except ValueError as e:
        raise SpecError(str(e), pos) from None
    expect = {
        "tag:yaml.org,2002:int": int,
        "tag:yaml.org,2002:float": float,
        "tag:yaml.org,2002:bool": bool,
        "tag:yaml.org,2002:null": type(None),
    }[tag]
    if expect is float and isinstance(resolved, int) and not isinstance(resolved, bool):
        return float(resolved)
    if type(resolved) is not expect:
        raise SpecError(f"value {value!r} is not a valid {tag.rsplit(':', 1)[-1]}", pos)
    return resolved


# --- the event-driven builder ----------------------------------------------------------


class _Loader(yaml.CLoader if yaml.__with_libyaml__ else yaml.Loader):  # type: ignore[misc,name-defined]
    """libyaml's parser; we only use its events, never its constructors."""


def _size(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + sum(_size(v) for v in value.values())
    if isinstance(value, list):
        return 1 + sum(_size(v) for v in value)
    return 1


class _Builder:
    def __init__(self, file: str) -> None:
        self.file = file
        self.anchors: dict[str, Any] = {}
        self.anchor_size: dict[str, int] = {}
        self.alias_budget = MAX_ALIAS_NODES
        # stack entries: [container, pending_key, key_pos, anchor]
        self.stack: list[list[Any]] = []
        self.root: Any = None
        self.done = False
        self.exprs: dict[str, str] = {}
        self.values = 0
        self.max_values = MAX_YAML_VALUES.value

    def pos(self, mark: Any) -> Pos:
        return Pos(self.file, mark.line + 1, mark.column + 1)

    def add(self, value: Any, pos: Pos, anchor: str | None) -> None:
        self.values += 1
        if self.values > self.max_values:
            raise MAX_YAML_VALUES.exceeded("the file holds too many values", pos)
        if anchor:
            self.anchors[anchor] = value
        if not self.stack:
            self.root = value
            return
        frame = self.stack[-1]
        container = frame[0]
        if isinstance(container, YSeq):
            container.append(value)
            container.item_pos.append(pos)
        elif frame[1] is _NO_KEY:
            self.set_key(frame, value, pos)
        else:
            key, key_pos = frame[1], frame[2]
            frame[1] = _NO_KEY
            if key == "<<" and key_pos is not None:
                self.merge(container, value, pos)
                return
            container[key] = value
            container.key_pos[key] = key_pos
            container.val_pos[key] = pos

    def set_key(self, frame: list[Any], key: Any, pos: Pos) -> None:
        container: YMap = frame[0]
        if isinstance(key, dict | list):
            raise SpecError("mapping keys must be plain scalars", pos)
        if isinstance(key, bool) or key is None or isinstance(key, float):
            key = "null" if key is None else str(key).lower() if isinstance(key, bool) else str(key)
        key = str(key)
        if key in container and key != "<<":
            first = container.key_pos[key]
            raise SpecError(f"duplicate key '{key}' (first defined at line {first.line})", pos)
        frame[1] = key
        frame[2] = pos

    def merge(self, container: YMap, value: Any, pos: Pos) -> None:
        sources = value if isinstance(value, list) else [value]
        for src in sources:
            if not isinstance(src, YMap):
                raise SpecError("'<<' merges only mappings", pos)
            for k, v in src.items():
                if k not in container:
                    container[k] = v
                    container.key_pos[k] = src.key_pos[k]
                    container.val_pos[k] = src.val_pos[k]

    def feed(self, ev: Any) -> None:
        pos = self.pos(ev.start_mark)
        if isinstance(ev, yaml.ScalarEvent):
            if self.exprs and _MARK in ev.value:
                ev.value = _TOKEN.sub(lambda m: self.exprs.get(m.group(0), m.group(0)), ev.value)
                if ev.style is None and ev.tag is None:
                    ev.style = "$"  # an expression stays text until it is evaluated
            tag = ev.tag
            if tag in (None, "!") or (ev.implicit[0] and tag is None):
                try:
                    value = ev.value if (ev.style or tag == "!") else _plain_scalar(ev.value)
                except ValueError as e:
                    raise SpecError(str(e), pos) from None
            elif tag in _SCALAR_TAGS:
                value = _tagged_scalar(tag, ev.value, pos)
            else:
                raise SpecError(f"YAML tag '{tag}' is not allowed in a spec", pos)
            self.add(value, pos, ev.anchor)
        elif isinstance(ev, yaml.AliasEvent):
            if ev.anchor not in self.anchors:
                raise SpecError(f"unknown YAML alias '*{ev.anchor}'", pos)
            size = self.anchor_size.setdefault(ev.anchor, _size(self.anchors[ev.anchor]))
            self.alias_budget -= size
            if self.alias_budget < 0:
                raise SpecError(
                    f"YAML aliases expand to more than {MAX_ALIAS_NODES} values (alias bomb?)", pos
                )
            self.add(self.anchors[ev.anchor], pos, None)
        elif isinstance(ev, yaml.MappingStartEvent | yaml.SequenceStartEvent):
            is_map = isinstance(ev, yaml.MappingStartEvent)
            if ev.tag not in (_MAP_TAGS if is_map else _SEQ_TAGS):
                raise SpecError(f"YAML tag '{ev.tag}' is not allowed in a spec", pos)
            if len(self.stack) >= MAX_DEPTH:
                raise SpecError(f"nesting deeper than {MAX_DEPTH} levels", pos)
            container = YMap(pos) if is_map else YSeq(pos)
            self.stack.append([container, _NO_KEY, None, ev.anchor, pos])
        elif isinstance(ev, yaml.MappingEndEvent | yaml.SequenceEndEvent):
            container, _, _, anchor, start = self.stack.pop()
            self.add(container, start, anchor)
        elif isinstance(ev, yaml.DocumentStartEvent) and self.done:
            raise SpecError("a spec file holds one YAML document, found a second", pos)
        elif isinstance(ev, yaml.DocumentEndEvent):
            self.done = True


_NO_KEY = object()


def _decode(data: bytes, file: str) -> str:
    if len(data) > MAX_FILE_BYTES.value:
        raise MAX_FILE_BYTES.exceeded(f"the file has {len(data):,} bytes", Pos(file))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise SpecError(f"invalid UTF-8 (byte 0x{data[e.start]:02x})", Pos(file, line, col)) from None
    return text.removeprefix("\ufeff")


def _char_pos(text: str, index: int, file: str) -> Pos:
    line = text.count("\n", 0, index) + 1
    return Pos(file, line, index - (text.rfind("\n", 0, index) + 1) + 1)


def _yaml_error(e: yaml.YAMLError, text: str, file: str) -> SpecError:
    if isinstance(e, yaml.MarkedYAMLError) and e.problem_mark is not None:
        mark = e.problem_mark
        msg = " ".join(p for p in (e.context, e.problem) if p) or "invalid YAML"
        return SpecError(f"invalid YAML: {msg}", Pos(file, mark.line + 1, mark.column + 1))
    if isinstance(e, yaml.reader.ReaderError):
        what = "NUL byte" if e.character == 0 else f"control character {e.character!r}"
        return SpecError(f"invalid YAML: {what} is not allowed", _char_pos(text, e.position, file))
    return SpecError(f"invalid YAML: {e}", Pos(file))


_EXPR_SPAN = re.compile(r"\$\{[^{}\n]*\}")
_MARK = "\ue000"
_PAD = "\ue001"
_DIGIT0 = 0xE100
_TOKEN = re.compile("\ue000[\ue100-\ue1ff]+\ue001*")


def _protect_exprs(text: str) -> tuple[str, dict[str, str]]:
    """Hide ``${...}`` from the YAML scanner, keeping every column where it was.

    ``{op: linear, out: ${4 * d}}`` is not valid YAML (braces and commas end a flow scalar),
    yet it is how people write specs.  Each expression is swapped for a same-length token of
    private-use characters before parsing and swapped back in the scalar values.
    """
    table: dict[str, str] = {}

    def swap(m: re.Match[str]) -> str:
        n = len(table)
        digits = chr(_DIGIT0 + (n >> 8)) + chr(_DIGIT0 + (n & 0xFF))
        token = (_MARK + digits).ljust(len(m.group(0)), _PAD)
        if len(token) != len(m.group(0)) or n >= 1 << 16:
            return m.group(0)
        table[token] = m.group(0)
        return token

    return _EXPR_SPAN.sub(swap, text), table


def _events(text: str) -> Iterator[Any]:
    loader = _Loader(text)
    try:
        while loader.check_event():
            yield loader.get_event()
    finally:
        loader.dispose()


def load_yaml(source: str | bytes, file: str = "<spec>") -> YMap:
    """Parse one spec document into a :class:`YMap` with positions.

    Raises:
        SpecError: for anything that is not a single, well-formed YAML mapping.
    """
    if isinstance(source, str) and len(source) > MAX_FILE_BYTES.value:
        raise MAX_FILE_BYTES.exceeded(f"the text has {len(source):,} characters", Pos(file))
    text = _decode(source, file) if isinstance(source, bytes) else source
    if "\x00" in text:
        raise SpecError("invalid YAML: NUL byte is not allowed", _char_pos(text, text.index("\x00"), file))
    builder = _Builder(file)
    if "${" in text:
        text, builder.exprs = _protect_exprs(text)
    try:
        for ev in _events(text):
            builder.feed(ev)
    except yaml.YAMLError as e:
        raise _yaml_error(e, text, file) from None
    root = builder.root
    if root is None:
        raise SpecError("the spec is empty (expected a mapping with 'graphc: 1')", Pos(file))
    if not isinstance(root, YMap):
        kind = "a list" if isinstance(root, list) else f"a {type(root).__name__}"
        raise SpecError(f"a spec must be a mapping, not {kind}", getattr(root, "pos", Pos(file)))
    return root
