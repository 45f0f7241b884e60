"""graphc's error types.

Every error that can be caused by a user's input is a :class:`GraphcError` carrying a
:class:`Pos` (file, line, column), so the CLI can print compiler-style one-line diagnostics
(``FILE:LINE:COL: error: MESSAGE``) and never a traceback.  Errors are collected rather than
raised one at a time where a phase can keep going, so a user sees every mistake of a file at
once (:class:`SpecErrors`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace

NO_FILE = "<graphc>"  # errors that belong to no file print as "graphc: error: ..."


@dataclass(frozen=True, order=True)
class Pos:
    """A position in a source file (1-based line and column)."""

    file: str
    line: int = 1
    col: int = 1

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True)
class Diagnostic:
    """One compiler message: where, how bad, and what."""

    pos: Pos
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        if self.pos.file == NO_FILE:
            return f"graphc: {self.severity}: {self.message}"
        return f"{self.pos}: {self.severity}: {self.message}"


class GraphcError(Exception):
    """Base class of every error graphc raises for bad input.

    It holds one or more :class:`Diagnostic` s (all errors of a phase are reported at once).
    ``exit_code`` is what the CLI exits with: 1 for bad user input, 3 for a failed
    verification.
    """

    exit_code = 1

    def __init__(self, message: str, pos: Pos | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.pos = pos
        self.diagnostics = [Diagnostic(pos or Pos(NO_FILE), message)]

    @classmethod
    def many(cls, diagnostics: list[Diagnostic]) -> GraphcError:
        """One error carrying several diagnostics, sorted by position."""
        items = sorted(merge_copies(dict.fromkeys(diagnostics)), key=lambda d: d.pos)
        err = cls(items[0].message, items[0].pos)
        err.diagnostics = items
        return err

    def __str__(self) -> str:
        return "\n".join(str(d) for d in self.diagnostics)


def scope_label(scope: str) -> str:
    """The text that says which block instance a message is about: `` (in body.1)``.

    Every message about a node inside a block instance carries it right after the node's
    path; :func:`merge_copies` relies on this one spelling.
    """
    return f" (in {scope})"


_SCOPE = re.compile(r" \(in ([^\s()]+)\)")


def merge_copies(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    """One diagnostic per mistake, however many block copies it shows up in.

    A mistake inside a block (or a repeated block) is found once per instance, at the same
    position with the same text but for the :func:`scope_label`; those merge into one line
    that names the copies, e.g. ``(in body.0 .. body.5)``.
    """
    groups: dict[tuple[Pos, str, str], list[tuple[Diagnostic, str]]] = {}
    for d in diagnostics:
        m = _SCOPE.search(d.message)
        scope = m.group(1) if m else ""
        text = d.message[: m.start()] + "\0" + d.message[m.end() :] if m else d.message
        groups.setdefault((d.pos, d.severity, text), []).append((d, scope))
    out: list[Diagnostic] = []
    for (_, _, text), members in groups.items():
        scopes = list(dict.fromkeys(s for _, s in members))
        if len(scopes) < 2:
            out.append(members[0][0])
            continue
        out.append(replace(members[0][0], message=text.replace("\0", f" (in {name_copies(scopes)})", 1)))
    return out


def _natural(name: str) -> list[tuple[int, int | str]]:
    return [(0, int(p)) if p.isdigit() else (1, p) for p in name.split(".")]


def name_copies(scopes: list[str]) -> str:
    """``body.0 .. body.5`` for a run of one repeat's copies, else a short list."""
    scopes = sorted(scopes, key=_natural)
    heads = {s.rpartition(".")[0] for s in scopes}
    tails = [s.rpartition(".")[2] for s in scopes]
    if len(heads) == 1 and all(t.isdigit() for t in tails):
        nums = [int(t) for t in tails]
        if nums == list(range(nums[0], nums[0] + len(nums))) and len(nums) > 2:
            return f"{scopes[0]} .. {scopes[-1]}"
    if len(scopes) <= 4:
        return ", ".join(scopes)
    return f"{len(scopes)} copies: {', '.join(scopes[:3])}, ..., {scopes[-1]}"


class SpecError(GraphcError):
    """The spec file is malformed or invalid (YAML, schema, expressions, blocks)."""


class GraphError(GraphcError):
    """The node graph is broken: cycles, dangling references, missing outputs."""


class ShapeError(GraphcError):
    """Shapes or dtypes do not fit together."""


class LowerError(GraphcError):
    """The graph cannot be turned into a torch module (e.g. a layer size is not static)."""


class WeightsError(GraphcError):
    """A weights file is missing, corrupt, or does not match the model."""


class DataError(GraphcError):
    """Training data is missing, corrupt, or does not match the spec's inputs."""


class TrainError(GraphcError):
    """Training failed (e.g. the loss stayed non-finite)."""


class ExportError(GraphcError):
    """ONNX export failed."""


class VerifyError(GraphcError):
    """The exported model does not compute what the torch model computes."""

    exit_code = 3


class Collector:
    """Gathers diagnostics of one phase; :meth:`raise_if_any` ends the phase."""

    def __init__(self) -> None:
        self.errors: list[Diagnostic] = []
        self.warnings: list[Diagnostic] = []

    def error(self, message: str, pos: Pos) -> None:
        self.errors.append(Diagnostic(pos, message))

    def extend(self, diagnostics: Iterable[Diagnostic]) -> None:
        """Take over errors found elsewhere (another phase's, or a :class:`GraphcError`'s ``.diagnostics``)."""
        self.errors.extend(diagnostics)

    def warn(self, message: str, pos: Pos) -> None:
        self.warnings.append(Diagnostic(pos, message, "warning"))

    def raise_if_any(self, kind: type[GraphcError] = SpecError) -> None:
        if self.errors:
            raise kind.many(self.errors)


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (libraries' errors can run to pages), or its type."""
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__


def closest(name: str, choices: Iterable[object]) -> str | None:
    """The choice closest to ``name`` (compared case-folded, so 'GELU' finds 'gelu'), or None.

    A name never matches itself: it is not a typo of anything.
    """
    import difflib

    folded: dict[str, str] = {}
    for c in choices:
        folded.setdefault(str(c).casefold(), str(c))
    close = difflib.get_close_matches(name.casefold(), list(folded), n=1, cutoff=0.6)
    if not close or folded[close[0]] == name:
        return None
    return folded[close[0]]


def did_you_mean(name: str, choices: Iterable[object]) -> str:
    """A ' (did you mean 'x'?)' suffix for the closest choice, or ''."""
    match = closest(name, choices)
    return f" (did you mean '{match}'?)" if match else ""
