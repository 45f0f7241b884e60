"""Weight maps: declarative YAML that renames and reshapes a checkpoint's tensors.

A map names the spec it targets and lists ordered rules; each checkpoint tensor takes the
first rule whose ``from`` pattern matches it (unmatched names keep their name)::

    graphc-weights: 1
    spec: gpt2
    rules:
      - {from: "transformer.h.{i}.attn.c_attn.weight", to: "body.{i}.attn.qkv.weight", transpose: true}
      - {from: "transformer.h.{i}.attn.bias", drop: true, optional: true}

``{name}`` captures one dotted component (``[^.]+``); patterns compile to a regex built
with ``re.escape`` around the captures, so a map can rename, never run code.  Transforms,
applied in this order: ``concat`` (several ``from`` patterns, joined along an axis),
``transpose`` (``true`` swaps the last two dims, or a permutation), ``reshape`` (one ``-1``
allowed), ``split`` (into the ``to`` list, equal parts along an axis), ``dtype``.
Files are loaded like specs: positions kept, ``extra="forbid"``, every error at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from graphc.errors import Collector, Pos, WeightsError
from graphc.spec.load import read_bounded
from graphc.spec.pydantic_errors import report_validation_error
from graphc.spec.yaml_loader import load_yaml, locate

CAPTURE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
DTYPES = ("float32", "float16", "bfloat16", "float64")


class Rule(BaseModel):
    """One rule: checkpoint name pattern(s) -> node path(s), with transforms."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    from_: str | list[str] = Field(alias="from", description="checkpoint name pattern; a list joins tensors with `concat`")
    to: str | list[str] | None = Field(None, description="node path pattern; a list splits the tensor with `split`")
    drop: bool = Field(False, description="ignore matching tensors (e.g. num_batches_tracked, attention masks)")
    transpose: bool | list[int] = Field(False, description="true swaps the last two dims; a list is a permutation")
    reshape: list[int] | None = Field(None, description="new shape (one -1 allowed), e.g. [1, 1, -1]")
    split: int | None = Field(None, description="axis to split along into the `to` list, in equal parts")
    concat: int | None = Field(None, description="axis to join the `from` list along")
    dtype: Literal["float32", "float16", "bfloat16", "float64"] | None = Field(None, description="cast to this dtype")
    optional: bool = Field(False, description="matching nothing is not an error")
    doc: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
        if self.drop == (self.to is not None):
            raise ValueError("give exactly one of 'to' and 'drop: true'")
        if isinstance(self.from_, list) != (self.concat is not None):
            raise ValueError("a list 'from' needs 'concat: AXIS' (and 'concat' needs a list 'from')")
        if isinstance(self.to, list) != (self.split is not None):
            raise ValueError("a list 'to' needs 'split: AXIS' (and 'split' needs a list 'to')")
        for pats in (self.sources, self.targets):
            if len(set(pats)) != len(pats) or (not pats and self.to is not None):
                raise ValueError("the patterns of a list must be given and differ")
        captured = set(CAPTURE.findall(self.sources[0]))
        for pat in [*self.sources[1:], *self.targets]:
            unknown = set(CAPTURE.findall(pat)) - captured
            if unknown:
                raise ValueError(f"'{pat}' uses {{{sorted(unknown)[0]}}} which the first 'from' pattern does not capture")
        return self

    @property
    def sources(self) -> list[str]:
        return self.from_ if isinstance(self.from_, list) else [self.from_]

    @property
    def targets(self) -> list[str]:
        return [] if self.to is None else (self.to if isinstance(self.to, list) else [self.to])

    @property
    def renames_only(self) -> bool:
        return not (self.transpose or self.reshape or self.split is not None or self.concat is not None or self.dtype)


class MapDoc(BaseModel):
    """A weight-map file."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    version: Literal[1] = Field(alias="graphc-weights", description="map format version")
    spec: str = Field(description="name of the spec this map targets (its `name:`)")
    source: str | None = Field(None, description="what the checkpoint is, for people")
    doc: str | None = None
    rules: list[Rule] = Field(default_factory=list)


@dataclass
class CompiledRule:
    """A rule with its regex and where it was written."""

    index: int
    rule: Rule
    regex: re.Pattern[str]
    pos: Pos

    def match(self, name: str) -> dict[str, str] | None:
        m = self.regex.fullmatch(name)
        return m.groupdict() if m else None


@dataclass
class WeightMap:
    """A loaded map: its document, compiled rules and file."""

    doc: MapDoc
    rules: list[CompiledRule]
    file: str
    spec_pos: Pos


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """``a.{i}.b`` -> ``a\\.(?P<i>[^.]+)\\.b``: literal text escaped, captures one component."""
    parts, last = [], 0
    for m in CAPTURE.finditer(pattern):
        parts.append(re.escape(pattern[last:m.start()]))
        parts.append(f"(?P<{m.group(1)}>[^.]+)")
        last = m.end()
    parts.append(re.escape(pattern[last:]))
    return re.compile("".join(parts))


def fill(pattern: str, captures: dict[str, str]) -> str:
    return CAPTURE.sub(lambda m: captures[m.group(1)], pattern)


def load_map(path: str | Path) -> WeightMap:
    """Read, validate and compile a weight map; every mistake at once, positioned."""
    path = Path(path)
    file = str(path)
    if not path.exists():
        raise WeightsError(f"{path}: weight map not found")
    try:  # the same bounded, regular-files-only read as specs and includes
        data = read_bounded(path)
    except OSError as e:
        raise WeightsError(f"{path}: cannot read weight map: {e.strerror}") from None
    raw = load_yaml(data, file)
    try:
        doc = MapDoc.model_validate(raw)
    except ValidationError as e:
        raise WeightsError.many(report_validation_error(e, raw, (), model=MapDoc)) from None
    errors = Collector()
    rules = []
    for i, rule in enumerate(doc.rules):
        pos = locate(raw, ("rules", i))
        for pat in rule.sources:
            _check_pattern(pat, pos, errors)
        rules.append(CompiledRule(i, rule, pattern_regex(rule.sources[0]), pos))
    errors.raise_if_any(WeightsError)
    return WeightMap(doc, rules, file, locate(raw, ("spec",)))


def _check_pattern(pattern: str, pos: Pos, errors: Collector) -> None:
    names = CAPTURE.findall(pattern)
    if len(names) != len(set(names)):
        errors.error(f"pattern '{pattern}' captures the same name twice", pos)
    if "{" in CAPTURE.sub("", pattern) or "}" in CAPTURE.sub("", pattern):
        errors.error(f"pattern '{pattern}': braces must enclose a capture name like {{i}}", pos)


def map_schema() -> dict[str, Any]:
    """JSON Schema of the weight-map format (``graphc weights schema``)."""
    schema = MapDoc.model_json_schema(by_alias=True)
    schema["title"] = "graphc weight map"
    schema["$id"] = "https://graphc.dev/schema/weights-map-v1.json"  # graphc.outputs.SCHEMA_ID: `-o` recognises its own file
    return schema


__all__ = ["CompiledRule", "MapDoc", "Rule", "WeightMap", "fill", "load_map", "map_schema", "pattern_regex"]
