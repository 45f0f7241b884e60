"""Turning pydantic's ValidationError into one positioned diagnostic per problem."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from graphc.errors import Diagnostic, did_you_mean
from graphc.spec.yaml_loader import locate


def _fields_at(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> list[str]:
    """Field names (aliases) valid at ``loc`` inside ``model``, for 'did you mean'."""
    for part in loc:
        if model is None:
            return []
        f = model.model_fields.get(str(part))
        if f is None:
            f = next((v for v in model.model_fields.values() if v.alias == part), None)
        ann = getattr(f, "annotation", None)
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    if model is None:
        return []
    return [v.alias or k for k, v in model.model_fields.items()]


def _value_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def report_validation_error(
    e: ValidationError,
    raw: Any,
    prefix: tuple[str | int, ...],
    *,
    model: type[BaseModel] | None = None,
    label: str = "",
    strip_tag: bool = False,
) -> list[Diagnostic]:
    """Diagnostics for each error of ``e``.

    Args:
        raw: the raw (positioned) value that was validated.
        prefix: the spec path of ``raw`` (e.g. ``("nodes", "fc1")``), used in messages.
        model: the model validated, to suggest field names.
        label: text added after the path (e.g. ``" (in body.1)"``).
        strip_tag: the first loc item is a union tag (the op name), not a key of ``raw``.
    """
    out: list[Diagnostic] = []
    for err in e.errors(include_url=False):
        loc = tuple(err["loc"])
        if strip_tag and loc:
            loc = loc[1:]
        kind = err["type"]
        path = ".".join(str(p) for p in (*prefix, *loc))
        if kind == "extra_forbidden":
            name = str(loc[-1])
            hint = did_you_mean(name, _fields_at(model, loc[:-1]))
            msg = f"{path}{label}: unknown field '{name}'{hint}"
            pos = locate(raw, loc, key=True)
        elif kind == "missing":
            msg = f"{path}{label}: missing required field '{loc[-1]}'"
            pos = locate(raw, loc[:-1])
        else:
            got = f" (got {_value_repr(err.get('input'))})" if kind not in ("union_tag_invalid",) else ""
            msg = f"{path}{label}: {err['msg'][0].lower()}{err['msg'][1:]}{got}"
            pos = locate(raw, loc)
        out.append(Diagnostic(pos, msg))
    return out
