"""Turning pydantic's ValidationError into one positioned diagnostic per problem.

One mistake should read as one line: a misspelled field (``outt``) makes pydantic report
both "extra field 'outt'" and "missing field 'out'"; the second is dropped when the first's
did-you-mean names it.
"""

from __future__ import annotations

import types
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from graphc.errors import Diagnostic, closest, did_you_mean
from graphc.spec.ir import at
from graphc.spec.yaml_loader import locate


def _model_in(ann: Any) -> Any:
    """The model, dict or list type an annotation stands for (unions: the first that fits)."""
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    origin = get_origin(ann)
    if origin in (dict, list):
        return ann
    if origin in (Union, types.UnionType):
        for arg in get_args(ann):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def _fields_at(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> list[str]:
    """Field names (aliases) valid at ``loc`` inside ``model``, for 'did you mean'."""
    current: Any = model
    for part in loc:
        if current is None:
            return []
        origin = get_origin(current)
        if origin is dict:
            current = _model_in(get_args(current)[1])
            continue
        if origin is list:
            current = _model_in(get_args(current)[0])
            continue
        fields = current.model_fields
        f = fields.get(str(part)) or next((v for v in fields.values() if v.alias == part), None)
        current = _model_in(getattr(f, "annotation", None))
    if not (isinstance(current, type) and issubclass(current, BaseModel)):
        return []
    return [v.alias or k for k, v in current.model_fields.items()]


_STRICT_TEXT = {"bool_type": "expected true or false", "float_type": "expected a number"}


def _value_repr(value: Any) -> str:
    """The offending value as the spec spells it (``true``, not Python's ``True``)."""
    text = "null" if value is None else str(value).lower() if isinstance(value, bool) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _join(*parts: Any) -> str:
    return ".".join(str(p) for p in parts)


def _misspelled(errors: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
    """Locations of missing fields that an unknown field at the same level is a typo of."""
    out: set[tuple[Any, ...]] = set()
    missing = [tuple(e["loc"]) for e in errors if e["type"] == "missing"]
    for e in errors:
        if e["type"] != "extra_forbidden":
            continue
        loc = tuple(e["loc"])
        for m in missing:
            if m[:-1] == loc[:-1] and closest(str(loc[-1]), [m[-1]]):
                out.add(m)
    return out


def report_validation_error(
    e: ValidationError,
    raw: Any,
    prefix: tuple[str | int, ...],
    *,
    model: type[BaseModel] | None = None,
    scope: str = "",
    strip_tag: bool = False,
) -> list[Diagnostic]:
    """Diagnostics for each error of ``e``.

    Args:
        raw: the raw (positioned) value that was validated.
        prefix: the spec path of ``raw`` (e.g. ``("nodes", "fc1")``), used in messages.
        model: the model validated, to suggest field names.
        scope: the block copy ``raw`` was validated in (``body.1``), named after the path.
        strip_tag: the first loc item is a union tag (the op name), not a key of ``raw``.
    """
    errors: list[dict[str, Any]] = [dict(err) for err in e.errors(include_url=False)]
    if strip_tag:
        for err in errors:
            err["loc"] = tuple(err["loc"])[1:]
    typos = _misspelled(errors)
    out: list[Diagnostic] = []
    for err in errors:
        loc = tuple(err["loc"])
        kind = err["type"]
        if kind == "missing" and loc in typos:
            continue
        path = _join(*prefix, *loc)
        if kind == "extra_forbidden":
            name = str(loc[-1])
            hint = did_you_mean(name, _fields_at(model, loc[:-1]))
            msg = f"{at(path, scope)}: unknown field '{name}'{hint}"
            pos = locate(raw, loc, key=True)
        elif kind == "missing":
            parent = _join(*prefix, *loc[:-1])
            msg = f"{at(parent, scope)}: missing required field '{loc[-1]}'" if parent else f"missing required top-level key '{loc[-1]}'"
            pos = locate(raw, loc[:-1])
        else:
            got = f" (got {_value_repr(err.get('input'))})" if kind not in ("union_tag_invalid",) else ""
            # strict bool/float fields refuse 'no', 'off', 1 and true: say what they take
            text = _STRICT_TEXT.get(kind) or str(err["msg"]).replace("Input should be ", "expected ", 1)
            msg = f"{at(path, scope)}: {text[0].lower()}{text[1:]}{got}"
            pos = locate(raw, loc)
        out.append(Diagnostic(pos, msg))
    return out
