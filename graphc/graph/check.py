"""The front half of the pipeline: a spec (any form) becomes a :class:`TypedGraph`.

Here, below lower/ and export/, so every later stage can start from a spec without going
through the package's front door (:mod:`graphc.api` only re-exports this).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from graphc.errors import GraphcError, SpecError
from graphc.graph.infer import TypedGraph, infer
from graphc.spec import library
from graphc.spec.expand import expand_partial
from graphc.spec.load import Spec, load_spec

SpecLike = Spec | str | Path | Mapping[str, Any]
Overrides = Mapping[str, Any] | Sequence[str] | None


def as_spec(spec: SpecLike, overrides: Overrides = None) -> Spec:
    """``spec`` loaded (a path, YAML text or a dict) or re-valued with ``overrides``."""
    if isinstance(spec, Spec):
        return spec.with_overrides(overrides)
    return load_spec(spec, overrides)


def check(spec: SpecLike, overrides: Overrides = None) -> TypedGraph:
    """Validate, expand, build the DAG and infer every shape (no torch, no weights).

    Returns:
        The :class:`TypedGraph`; its ``flat.warnings`` hold non-fatal diagnostics.
    """
    flat, errors = expand_partial(as_spec(spec, overrides))
    try:
        if not errors:
            return infer(flat)
        try:  # still check the shapes of the intact part, so every mistake shows at once
            infer(flat)
        except GraphcError as e:
            errors = [*errors, *e.diagnostics]
        raise SpecError.many(errors)
    except GraphcError as e:  # a mistake inside an included block also names the user's call
        raise library.note_callers(e, flat) from e.__cause__


def typed(spec: SpecLike | TypedGraph, overrides: Overrides = None) -> TypedGraph:
    """``spec`` itself when it is already checked, else :func:`check` of it."""
    return spec if isinstance(spec, TypedGraph) else check(spec, overrides)
