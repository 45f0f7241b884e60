"""Loading a spec: YAML with positions, includes, ``--set`` overrides (:mod:`graphc.spec.overrides`), params, top level.

:func:`load_spec` is the one public entry; it returns a :class:`Spec` whose blocks and nodes
are still raw (with positions).  :mod:`graphc.spec.expand` turns those into flat nodes.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

from pydantic import ValidationError

from graphc.errors import Collector, Pos, SpecError
from graphc.spec import library
from graphc.spec.expr import ExprError, TextBudgetError, has_expr, substitute, text_budget
from graphc.spec.limits import MAX_FILE_BYTES
from graphc.spec.model import FORMAT_VERSION, SpecDoc
from graphc.spec.overrides import Overrides, apply_overrides, parse_overrides
from graphc.spec.pydantic_errors import report_validation_error
from graphc.spec.yaml_loader import YMap, YSeq, load_yaml, locate

MAX_INCLUDE_DEPTH = 16


@dataclass
class Spec:
    """A loaded, top-level-validated spec."""

    doc: SpecDoc
    raw: YMap
    file: str
    params: dict[str, Any]
    blocks: dict[str, YMap]  # block name -> raw definition (from this file or includes)
    sha256: str
    overrides: dict[str, str] = field(default_factory=dict)
    source: Any = None  # what load_spec was given (path, text or dict), to re-load with more overrides

    def with_overrides(self, overrides: Overrides) -> Spec:
        """This spec loaded again from its source with ``overrides`` on top of its own."""
        if not overrides:
            return self
        return load_spec(self.source, {**self.overrides, **parse_overrides(overrides)})

    @property
    def name(self) -> str:
        return self.doc.name

    def pos(self, *path: str | int, key: bool = False) -> Pos:
        return locate(self.raw, tuple(path), key=key)


def load_spec(
    source: str | FsPath | Mapping[str, Any],
    overrides: Overrides = None,
) -> Spec:
    """Load and validate a spec's top level.

    Args:
        source: a path (a :class:`~pathlib.Path`, or a one-line string: ``"specs/mlp.yaml"``),
            YAML text (anything with a newline, or a one-line ``{...}`` flow mapping), or an
            already-parsed dict.
        overrides: ``{"layers": 8, "nodes.fc1.out": 64}`` or ``["layers=8", ...]``; values
            given as text are typed like the value they replace.

    Returns:
        The :class:`Spec`.  Raises :class:`~graphc.errors.SpecError` with file positions.
    """
    with text_budget():
        return _load(source, overrides)


def _load(source: str | FsPath | Mapping[str, Any], overrides: Overrides) -> Spec:
    raw, file, data = _read(source)
    blocks = _collect_blocks(raw, file, stack=[])
    over = parse_overrides(overrides)
    apply_overrides(raw, over)
    params = resolve_params(raw)
    top = _substitute_top(raw, params)
    _check_version(raw)
    try:
        doc = SpecDoc.model_validate(top)
    except ValidationError as e:
        raise SpecError.many(report_validation_error(e, raw, (), model=SpecDoc)) from None
    return Spec(doc, raw, file, params, blocks, hashlib.sha256(data).hexdigest(), over, source)


def _check_version(raw: YMap) -> None:
    """A wrong format version gets its own message: nothing else in the file can be trusted."""
    if "graphc" not in raw:
        raise SpecError(f"missing 'graphc: {FORMAT_VERSION}' (the spec format version) at the top of the file", raw.pos)
    version = raw["graphc"]
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise SpecError(f"graphc: unsupported spec format version {version!r} (this graphc reads version {FORMAT_VERSION})", locate(raw, ("graphc",)))


def _read(source: str | FsPath | Mapping[str, Any]) -> tuple[YMap, str, bytes]:
    if isinstance(source, Mapping):
        import json

        text = json.dumps(source, default=str)
        return load_yaml(text, "<dict>"), "<dict>", text.encode()
    if _is_path(source):
        path = FsPath(source)
        try:
            data = read_bounded(path)
        except OSError as e:
            raise SpecError(f"cannot read spec: {e.strerror}", Pos(str(path), 1, 1)) from None
        return load_yaml(data, str(path)), str(path), data
    assert isinstance(source, str)
    return load_yaml(source, "<text>"), "<text>", source.encode()


def _is_path(source: str | FsPath) -> bool:
    """A Path, or one line of text that is not a ``{...}`` flow mapping, names a file.

    So ``graphc check missing`` says "No such file" instead of parsing the word ``missing``
    as a YAML document (a spec needs several keys: one line of YAML is a flow mapping).
    """
    if isinstance(source, FsPath):
        return True
    one_line = "\n" not in source and "\r" not in source
    return one_line and (not source.lstrip().startswith("{") or os.path.lexists(source))


def read_bounded(path: FsPath) -> bytes:
    """A spec or include file's bytes: a regular file only, at most ``MAX_FILE_BYTES``.

    Opened without blocking (a FIFO would otherwise wait forever for a writer) and checked
    with ``fstat`` before anything is read, so ``/dev/zero``, ``/dev/urandom``, a folder or a
    pipe is refused at once; the read itself stops one byte past the limit in case the file
    grows meanwhile.

    Raises:
        OSError: with a ``strerror`` to show (not a regular file, too large, unreadable).
    """
    cap = MAX_FILE_BYTES.value
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise OSError(errno.EISDIR, "it is a folder, not a file")
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file (a device, pipe or socket is never read as a spec)")
        if st.st_size > cap:
            raise OSError(errno.EFBIG, _too_big(st.st_size))
        chunks, size = [], 0
        while size <= cap:
            chunk = os.read(fd, min(1 << 20, cap + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > cap:
            raise OSError(errno.EFBIG, _too_big(size))
        return b"".join(chunks)
    finally:
        os.close(fd)


def _too_big(size: int) -> str:
    return (f"file of {size:,} bytes is over the limit of {MAX_FILE_BYTES.value:,} bytes per file"
            f" (set {MAX_FILE_BYTES.env} to raise it)")


def _collect_blocks(raw: YMap, file: str, stack: list[str], seen: set[str] | None = None) -> dict[str, YMap]:
    """This file's blocks plus those of its includes (relative paths or ``graphc:NAME``
    library names, cycles rejected).

    ``seen`` holds every file already read for this spec: a file reached twice without a
    cycle (``graphc:mobilenet`` and ``graphc:conv``, which it includes too) adds its blocks once.
    """
    seen = set() if seen is None else seen
    out: dict[str, YMap] = {}
    includes = raw.get("include", [])
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list):
        raise SpecError("include: expected a list of file paths", locate(raw, ("include",)))
    base = FsPath(file).parent if not file.startswith("<") else FsPath.cwd()
    here = str(FsPath(file).resolve())
    for i, inc in enumerate(includes):
        pos = locate(raw, ("include", i)) if isinstance(raw.get("include"), YSeq) else locate(raw, ("include",))
        if not isinstance(inc, str):
            raise SpecError("include: expected a file path", pos)
        path = _include_path(inc, base, pos)
        if str(path) in stack or str(path) == here:
            chain = " -> ".join(FsPath(p).name for p in [*stack, here, str(path)])
            raise SpecError(f"include cycle: {chain}", pos)
        if str(path) in seen:
            continue
        seen.add(str(path))
        if len(stack) >= MAX_INCLUDE_DEPTH:
            raise SpecError(f"includes nested deeper than {MAX_INCLUDE_DEPTH}", pos)
        try:
            data = read_bounded(path)
        except OSError as e:
            raise SpecError(f"include '{inc}': {e.strerror}", pos) from None
        lib = load_yaml(data, _display(path))
        unknown = set(lib) - {"graphc", "doc", "include", "blocks", "name"}
        if unknown:
            key = sorted(unknown)[0]
            raise SpecError(f"an included file may hold only blocks (and include), found '{key}'", lib.key_pos[key])
        for name, block in _collect_blocks(lib, _display(path), [*stack, here], seen).items():
            if name in out:
                raise SpecError(f"block '{name}' is defined twice (also at {out[name].pos})", block.pos)
            out[name] = block
    own = raw.get("blocks", {})
    if isinstance(own, YMap):
        for name, block in own.items():
            if name in out:
                raise SpecError(f"block '{name}' is also defined in an include ({out[name].pos})", own.key_pos[name])
            out[name] = block
    return out


def _include_path(inc: str, base: FsPath, pos: Pos) -> FsPath:
    """The file an include entry names: a shipped library file for ``graphc:NAME`` (looked
    up by name in :mod:`graphc.spec.library`), else a path relative to the including file."""
    if not library.is_library(inc):
        return (base / inc).resolve()
    found = library.resolve(inc)
    if isinstance(found, str):
        raise SpecError(found, pos)
    return found.resolve()


def _display(path: FsPath) -> str:
    try:
        return str(path.relative_to(FsPath.cwd()))
    except ValueError:
        return str(path)


def resolve_params(raw: YMap) -> dict[str, Any]:
    """Evaluate ``params`` in order; a param may use the ones before it."""
    params_raw = raw.get("params", {})
    if not isinstance(params_raw, dict):
        raise SpecError("params: expected a mapping of name: value", locate(raw, ("params",)))
    out: dict[str, Any] = {}
    failed: set[str] = set()  # a param that failed is not reported again as "unknown" by its users
    errors = Collector()
    for name, value in params_raw.items():
        pos = locate(raw, ("params", name))
        if not name.isidentifier():
            errors.error(f"params.{name}: a param name must be an identifier", locate(raw, ("params", name), key=True))
            continue
        try:
            out[name] = substitute(value, out) if has_expr(value) else value
        except ExprError as e:
            failed.add(name)
            if e.name not in failed:
                errors.error(f"params.{name}: {e}", pos)
            if isinstance(e, TextBudgetError):
                break  # every later text param would fail the same way
    errors.raise_if_any()
    return out


def _substitute_top(raw: YMap, params: Mapping[str, Any]) -> dict[str, Any]:
    """Substitute ``${...}`` everywhere except in blocks and nodes (expanded later, per scope)."""
    errors = Collector()

    def walk(value: Any, path: tuple[str | int, ...]) -> Any:
        if isinstance(value, dict):
            return {k: walk(v, (*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, (*path, i)) for i, v in enumerate(value)]
        if has_expr(value):
            try:
                return substitute(value, params)
            except ExprError as e:
                errors.error(f"{'.'.join(map(str, path))}: {e}", locate(raw, path))
                if isinstance(e, TextBudgetError):
                    errors.raise_if_any()  # one error, not one per remaining value
        return value

    top = {k: (v if k in ("blocks", "nodes", "params") else walk(v, (k,))) for k, v in raw.items()}
    top["params"] = dict(params)
    errors.raise_if_any()
    return top
