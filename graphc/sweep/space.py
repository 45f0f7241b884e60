"""The search space of a sweep: a YAML file validated like a spec (no torch, no Optuna).

A space names the same dotted keys as ``--set``: spec params (``c1``), any spec value
(``nodes.drop.p``) and recipe values (``train.optimizer.lr``).  Every key is checked against
the spec and the recipe before a single trial is sampled, and every mistake of the file is
reported at once with its ``FILE:LINE:COL``::

    objective: {metric: val_accuracy, mode: max}
    trials: 20                       # and/or timeout: 600 (seconds)
    trial: {steps: 60, eval_every: 20}
    fixed: {train.compile: none}
    budget: {params: 5e6, flops: 2e9, memory: 4GB}
    space:
      c1: {type: int, low: 4, high: 64, log: true}
      train.optimizer.lr: {type: float, low: 1e-4, high: 1e-2, log: true}
      attention: {type: choice, choices: [false, true]}
      heads: {type: choice, choices: [2, 4], when: {attention: true}}
"""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveFloat, PositiveInt, TypeAdapter, ValidationError

from graphc.errors import Collector, Diagnostic, Pos, SpecError, did_you_mean
from graphc.spec.load import Spec
from graphc.spec.pydantic_errors import report_validation_error
from graphc.spec.yaml_loader import YMap, load_yaml, locate

Scalar = bool | int | float | str


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IntRange(_Strict):
    """Integers from ``low`` to ``high`` (both included), every ``step``, or log-uniform."""

    type: Literal["int"]
    low: int
    high: int
    step: PositiveInt = 1
    log: bool = False
    when: dict[str, Scalar] | None = Field(None, description="sample only when these keys have these values")


class FloatRange(_Strict):
    """Floats from ``low`` to ``high``, uniform or log-uniform (``step`` discretizes)."""

    type: Literal["float"]
    low: float
    high: float
    step: PositiveFloat | None = None
    log: bool = False
    when: dict[str, Scalar] | None = None


class Choice(_Strict):
    """One of ``choices`` (numbers, strings or booleans)."""

    type: Literal["choice"]
    choices: list[Scalar]
    when: dict[str, Scalar] | None = None


Param = Annotated[IntRange | FloatRange | Choice, Field(discriminator="type")]
_PARAM = TypeAdapter(Param)


class Objective(_Strict):
    metric: str = Field(description="a metrics.csv column, e.g. val_accuracy or val_loss")
    mode: Literal["min", "max"] = "min"


class TrialLength(_Strict):
    """How long each trial trains (replaces the recipe's epochs/steps during the sweep)."""

    steps: PositiveInt | None = None
    epochs: PositiveInt | None = None
    eval_every: PositiveInt | None = Field(None, description="steps between evaluations = the pruners' report points")


class Budget(_Strict):
    """Configurations over any of these never train (estimated statically, see static.py)."""

    params: PositiveFloat | None = Field(None, description="total parameters")
    flops: PositiveFloat | None = Field(None, description="forward FLOPs at the spec's example sizes (as graphc summary)")
    memory: PositiveFloat | str | None = Field(None, description="training memory: bytes or '4GB', '512MiB'")


class SpaceDoc(_Strict):
    objective: Objective
    space: dict[str, Any] = Field(min_length=1)
    trials: PositiveInt | None = None
    timeout: PositiveFloat | None = Field(None, description="wall-clock seconds for the whole study")
    trial: TrialLength = TrialLength()
    fixed: dict[str, Any] = {}
    budget: Budget = Budget()
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    pruner: Literal["median", "hyperband", "none"] = "median"
    pruner_warmup: NonNegativeInt = Field(1, description="evaluations before the pruner may stop a trial")
    seed: int = 0


@dataclass
class Space:
    """A validated search space plus where it came from (for positioned messages)."""

    doc: SpaceDoc
    params: dict[str, IntRange | FloatRange | Choice]
    raw: YMap
    file: str
    text: bytes

    def pos(self, *path: str | int) -> Pos:
        return locate(self.raw, tuple(path), default=Pos(self.file))

    def memory_bytes(self) -> float | None:
        m = self.doc.budget.memory
        return parse_bytes(m) if isinstance(m, str) else m

    def trial_overrides(self) -> dict[str, Any]:
        """The recipe values every trial trains with: ``fixed`` plus the per-trial length."""
        out = dict(self.doc.fixed)
        t = self.doc.trial
        if t.steps is not None:
            out |= {"train.steps": t.steps, "train.epochs": None}
        elif t.epochs is not None:
            out |= {"train.epochs": t.epochs, "train.steps": None}
        if t.eval_every is not None:
            out["train.eval_every"] = t.eval_every
        return out


_UNITS = {"": 1, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_bytes(text: str) -> float:
    """``'4GB'`` -> 4e9, ``'512MiB'`` -> 536870912.0; ValueError otherwise."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).upper() not in _UNITS:
        raise ValueError(f"expected a size like 4GB or 512MiB, got {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2).upper()]


def load_space(source: str | Path, spec: Spec, recipe_root: Any, columns: list[str] | None = None) -> Space:
    """Read and validate a search space against ``spec`` and its recipe.

    Args:
        source: the space YAML file (its top level, or its ``sweep:`` section).
        spec: the loaded spec, whose params and values the keys may name.
        recipe_root: the recipe's raw values (``train:`` section or --config file) for keys
            like ``train.loss.label_smoothing`` that name a value rather than a field.
        columns: the metrics.csv columns the recipe will write (checks ``objective.metric``).

    Raises :class:`SpecError` with every problem of the file at once.
    """
    path = Path(source)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SpecError(f"cannot read search space: {e.strerror}", Pos(str(path))) from None
    root = load_yaml(data, str(path))
    raw = root.get("sweep", root) if isinstance(root, dict) else root
    if not isinstance(raw, YMap):
        raise SpecError("a search space must be a mapping (objective, space, ...)", getattr(raw, "pos", Pos(str(path))))
    errors = Collector()
    try:
        doc = SpaceDoc.model_validate(raw)
    except ValidationError as e:
        errors.errors.extend(report_validation_error(e, raw, (), model=SpaceDoc))
        doc = None
    params = _params(raw, errors)
    known = KeyCheck(spec, recipe_root)
    for key in params:
        known.check(key, locate(raw, ("space", key), key=True), "space", errors)
    for key in raw.get("fixed", {}) if isinstance(raw.get("fixed"), dict) else {}:
        known.check(key, locate(raw, ("fixed", key), key=True), "fixed", errors)
        if key in params:
            errors.error(f"fixed.{key}: '{key}' is also in space (a value is either fixed or searched)", locate(raw, ("fixed", key), key=True))
    _check_conditions(raw, params, errors)
    if doc is not None and columns is not None and doc.objective.metric not in columns:
        metric = doc.objective.metric
        errors.error(f"objective.metric: the recipe writes no column '{metric}'{did_you_mean(metric, columns)} (columns: {', '.join(columns)})",
                     locate(raw, ("objective", "metric")))
    if doc is not None and isinstance(doc.budget.memory, str):
        try:
            parse_bytes(doc.budget.memory)
        except ValueError as e:
            errors.error(f"budget.memory: {e}", locate(raw, ("budget", "memory")))
    errors.raise_if_any()
    assert doc is not None
    return Space(doc, params, raw, str(path), data)


def _params(raw: YMap, errors: Collector) -> dict[str, IntRange | FloatRange | Choice]:
    """Each ``space`` entry validated on its own (so every entry's mistakes show), then its ranges."""
    out: dict[str, IntRange | FloatRange | Choice] = {}
    space = raw.get("space")
    if not isinstance(space, dict):
        return out
    for key, entry in space.items():
        where = ("space", key)
        try:
            p = _PARAM.validate_python(entry)
        except ValidationError as e:
            errors.errors.extend(report_validation_error(e, entry, where, strip_tag=True))
            continue
        errors.errors.extend(_range_errors(key, p, entry))
        out[key] = p
    return out


def _range_errors(key: str, p: IntRange | FloatRange | Choice, entry: Any) -> list[Diagnostic]:
    """Ranges that cannot be sampled: empty, log over non-positive numbers, no choices."""
    where = f"space.{key}"
    if isinstance(p, Choice):
        if not p.choices:
            return [Diagnostic(locate(entry, ("choices",)), f"{where}.choices: the choice list is empty")]
        return []
    if p.low > p.high:
        return [Diagnostic(locate(entry, ("high",)), f"{where}: empty range: high {p.high} is below low {p.low}")]
    if p.log and p.low <= 0:
        return [Diagnostic(locate(entry, ("low",)), f"{where}: a log range needs bounds above 0, low is {p.low}")]
    if p.log and isinstance(p, IntRange) and p.step != 1:
        return [Diagnostic(locate(entry, ("step",)), f"{where}: a log range cannot have a step (Optuna samples it log-uniformly)")]
    if p.log and isinstance(p, FloatRange) and p.step is not None:
        return [Diagnostic(locate(entry, ("step",)), f"{where}: a log range cannot have a step (Optuna samples it log-uniformly)")]
    return []


def _check_conditions(raw: YMap, params: dict[str, IntRange | FloatRange | Choice], errors: Collector) -> None:
    """A ``when`` names a key of the space defined above it (so sampling in file order works)."""
    order = list(params)
    for i, (key, p) in enumerate(params.items()):
        for cond, value in (p.when or {}).items():
            pos = locate(raw, ("space", key, "when", cond), key=True)
            if cond not in params:
                errors.error(f"space.{key}.when: condition on '{cond}', which is not a key of the space{did_you_mean(cond, order)}", pos)
            elif order.index(cond) >= i:
                errors.error(f"space.{key}.when: '{cond}' must be defined above '{key}' in the space", pos)
            elif isinstance(params[cond], Choice) and value not in params[cond].choices:  # type: ignore[union-attr]
                errors.error(f"space.{key}.when: '{cond}' is never {value!r} (choices: {params[cond].choices})", pos)  # type: ignore[union-attr]


class KeyCheck:
    """Is a dotted ``--set`` key a value of the spec or of the recipe?

    Spec keys resolve like ``--set`` (a param name, else a path in the spec); ``train.*`` keys
    walk the recipe's pydantic fields (any field may be set, even one the recipe leaves at
    its default), then the recipe's own values for lists and mappings.
    """

    def __init__(self, spec: Spec, recipe_root: Any) -> None:
        self.spec = spec
        self.recipe_root = recipe_root
        self.params = list(spec.params)

    def check(self, key: str, pos: Pos, section: str, errors: Collector) -> None:
        if key.startswith("train."):
            problem = self._recipe(key.split(".")[1:])
        else:
            problem = self._spec(key)
        if problem:
            errors.error(f"{section}.{key}: {problem}", pos)

    def _spec(self, key: str) -> str | None:
        parts = key.split(".")
        if len(parts) == 1 and parts[0] in self.params:
            return None
        node: Any = self.spec.raw
        for i, part in enumerate(parts):
            node = _child(node, part)
            if node is _MISSING:
                if i == 0:
                    hint = did_you_mean(str(part), [*self.params, "train.*"])
                    return (f"unknown key '{key}': neither a param of the spec ({', '.join(self.params) or 'none'}) "
                            f"nor a recipe value (train.*){hint}")
                parent = _child_path(self.spec.raw, parts[:i])
                choices = list(parent) if isinstance(parent, dict) else []
                return f"unknown key '{key}': the spec has no '{'.'.join(map(str, parts[: i + 1]))}'{did_you_mean(str(part), choices)}"
        return None

    def _recipe(self, parts: list[str]) -> str | None:
        from graphc.train.recipe import Recipe

        model: Any = Recipe
        values: Any = self.recipe_root
        for i, part in enumerate(parts):
            sub = _model_of(model)
            if sub is not None:
                if part not in sub.model_fields:
                    where = ".".join(["train", *parts[: i + 1]])
                    return f"unknown key '{where}': the recipe has no field '{part}'{did_you_mean(part, sub.model_fields)}"
                model = sub.model_fields[part].annotation
            else:
                model = None
            values = _child(values, part)
            if model is None and values is _MISSING:
                return f"unknown key 'train.{'.'.join(parts)}': the recipe has no value '{'.'.join(parts[: i + 1])}'"
        return None


_MISSING = object()


def _child(values: Any, part: str) -> Any:
    if isinstance(values, dict) and part in values:
        return values[part]
    if isinstance(values, list) and part.isdigit() and int(part) < len(values):
        return values[int(part)]
    return _MISSING


def _child_path(values: Any, parts: list[str]) -> Any:
    for part in parts:
        values = _child(values, part)
    return values


def _model_of(ann: Any) -> type[BaseModel] | None:
    """The pydantic model inside ``X``, ``X | None`` (a list or a union of models: None)."""
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    args = [a for a in typing.get_args(ann) if a is not type(None)]
    if len(args) == 1 and isinstance(args[0], type) and issubclass(args[0], BaseModel):
        return args[0]
    return None
