"""Tables (CSV, Parquet, JSONL) as training data: columns -> the spec's inputs and targets.

Read through pyarrow (its CSV/JSON readers are multi-threaded, typed and report bad rows),
then encoded declaratively (``data.table`` in the recipe, :class:`TableCfg`):

- ``encode: float``: numeric columns side by side -> one float input ``[B, F]``;
- ``encode: ids``: one categorical column -> integer ids ``[B]`` (for an ``embedding``),
  several -> ``[B, F]``; ``encode: onehot``: the ids as one-hot floats ``[B, F * K]``.

Everything learned from the data (column means for missing values, category vocabularies,
the class list of each target) is fitted on the *train split only* and saved with the run
(``vocab.json``, ``classes.json``), so that ``graphc predict --vocab RUN`` encodes new rows
exactly as training did.  Torch-free: DataLoader workers and ``graphc check`` stay light.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from graphc.data.source import Example, Prepared
from graphc.errors import DataError, Pos

if TYPE_CHECKING:
    import pyarrow as pa

    from graphc.spec.model import InputDef

Missing = Literal["error", "drop", "mean", "zero", "constant"]
Unknown = Literal["unk", "error"]
UNK = "<unk>"  # id 0 of every category vocabulary: unknown (and, with a fill policy, missing) values
VOCAB_FORMAT = "graphc.table/1"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ColumnsCfg(_Strict):
    """Columns that make one spec input, and how they are encoded."""

    columns: list[str] = Field(min_length=1, description="table columns, in this order")
    encode: Literal["float", "ids", "onehot"] = Field("float", description="float: numbers as float32 [B, F]; ids: categories -> "
                                                      "int64 ids (0 = <unk>) [B] or [B, F]; onehot: the ids one-hot, float32 [B, F*K]")
    scale: Literal["none", "standard"] = Field("none", description="float: standard -> (x - mean) / std of the train split")
    missing: Missing | None = Field(None, description="default: the table's 'missing'")
    unknown: Unknown | None = Field(None, description="default: the table's 'unknown'")


class TargetCfg(_Strict):
    """A target column: class labels (any values -> ids 0..C-1, sorted) or numbers."""

    column: str
    kind: Literal["class", "value"] = Field("class", description="class: labels -> ids (classes.json); value: float32 [B, 1]")


class TableCfg(_Strict):
    """``data.table``: a CSV / Parquet / JSONL file, its input columns and its targets."""

    path: str = Field(description=".csv, .parquet or .jsonl (relative to the recipe file)")
    format: Literal["auto", "csv", "parquet", "jsonl"] = Field("auto", description="auto: by the file's suffix")
    inputs: dict[str, list[str] | ColumnsCfg] = Field(min_length=1, description="spec input -> its columns (a list: numbers as float)")
    targets: dict[str, str | TargetCfg] = Field({}, description="recipe target name (e.g. label) -> its column (class labels by default)")
    missing: Missing = Field("error", description="an empty cell: error | drop the row | mean (train mean) | zero | constant (fill); "
                             "categories: any fill -> <unk>")
    fill: float = Field(0.0, description="missing: constant -> this value")
    unknown: Unknown = Field("unk", description="a category not in the train split's vocabulary: the <unk> id, or an error")
    delimiter: str = Field(",", min_length=1, max_length=1, description="csv: field separator")
    vocab: str | None = Field(None, description="a training run's vocab.json (or its folder): apply its encoding and classes "
                              "instead of fitting them (evaluation on new rows; graphc evaluate --vocab)")

    @model_validator(mode="after")
    def _one_role(self) -> TableCfg:
        used = [c for spec in self.inputs.values() for c in _cols(spec).columns]
        target_cols = {_target(t).column for t in self.targets.values()}
        both = sorted(target_cols & set(used))
        if both:
            raise ValueError(f"column '{both[0]}' is both an input and a target")
        return self


def _cols(spec: list[str] | ColumnsCfg) -> ColumnsCfg:
    return spec if isinstance(spec, ColumnsCfg) else ColumnsCfg(columns=spec)


def _target(spec: str | TargetCfg) -> TargetCfg:
    return spec if isinstance(spec, TargetCfg) else TargetCfg(column=spec)


class Locator(Protocol):
    """Where recipe keys are (graphc.train.recipe.LoadedRecipe is one)."""

    def where(self, *path: str | int) -> str: ...
    def pos(self, *path: str | int) -> Pos: ...


@dataclass
class ArraySplit:
    """One split held as arrays (tables fit in memory); example ``i`` is row ``i`` of each."""

    arrays: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values()))) if self.arrays else 0

    def __getitem__(self, i: int) -> Example:
        return {k: v[i] for k, v in self.arrays.items()}


# --- reading ---------------------------------------------------------------------------------


@dataclass
class Rows:
    """A table read from ``path``, plus where each of its rows is in the file."""

    table: pa.Table
    path: Path
    fmt: str

    def pos(self, row: int) -> Pos:
        """The file position of data row ``row`` (0-based): its line for CSV / JSONL."""
        if self.fmt == "csv":
            return Pos(str(self.path), row + 2)  # line 1 is the header
        if self.fmt == "jsonl":
            return Pos(str(self.path), _jsonl_line(self.path, row))
        return Pos(str(self.path))

    def at(self, row: int) -> str:
        return f"row {row + 1}" if self.fmt == "parquet" else f"data row {row + 1}"


def table_format(path: Path, fmt: str = "auto") -> str:
    if fmt != "auto":
        return fmt
    suffix = path.suffix.lower()
    found = {".csv": "csv", ".tsv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}.get(suffix)
    if found is None:
        raise DataError(f"unsupported table file type '{suffix}' (use .csv, .parquet or .jsonl, or set data.table.format)", Pos(str(path)))
    return found


def read_rows(path: Path, fmt: str = "auto", delimiter: str = ",") -> Rows:
    """The whole table at ``path`` (``fmt``: csv | parquet | jsonl | auto by suffix).

    Raises:
        DataError: no such file, or a malformed one, naming the file and the bad line.
    """
    import pyarrow as pa

    if not path.is_file():
        raise DataError("data file not found" if not path.exists() else "not a regular file", Pos(str(path)))
    fmt = table_format(path, fmt)
    try:
        if fmt == "csv":
            return Rows(_read_csv(path, delimiter), path, fmt)
        if fmt == "jsonl":
            return Rows(_read_jsonl(path), path, fmt)
        import pyarrow.parquet as pq

        return Rows(pq.read_table(path), path, fmt)
    except DataError:
        raise
    except (pa.ArrowException, OSError, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"cannot read {fmt} file: {first}", Pos(str(path))) from None


def _read_csv(path: Path, delimiter: str) -> pa.Table:
    """pyarrow's CSV reader; a row with the wrong number of fields is an error naming its line."""
    import pyarrow.csv as pcsv

    bad: list[Any] = []

    def on_bad_row(row: Any) -> str:
        bad.append(row)
        return "skip"

    def read(threads: bool) -> pa.Table:
        return pcsv.read_csv(path, read_options=pcsv.ReadOptions(use_threads=threads),
                             parse_options=pcsv.ParseOptions(delimiter=delimiter, invalid_row_handler=on_bad_row),
                             convert_options=pcsv.ConvertOptions(strings_can_be_null=True))

    table = read(True)
    if bad and bad[0].number is None:  # the threaded reader does not know line numbers: read again to find it
        bad.clear()
        read(False)
    if bad:
        row = bad[0]
        raise DataError(f"row has {row.actual_columns} field(s), but the header has {row.expected_columns}: {row.text[:80]!r}",
                        Pos(str(path), row.number or 1))
    return table


def _read_jsonl(path: Path) -> pa.Table:
    """pyarrow's JSON-lines reader; on a parse error the file is scanned again (stopping at the
    first bad line) so the message names the line and the column, which pyarrow's does not."""
    import pyarrow as pa
    import pyarrow.json as pjson

    try:
        return pjson.read_json(path)
    except pa.ArrowInvalid as e:
        with path.open("rb") as f:
            for lineno, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                try:
                    row = json.loads(raw.rstrip(b"\r\n"))
                except (json.JSONDecodeError, UnicodeDecodeError) as bad:
                    msg, col = (bad.msg, bad.colno) if isinstance(bad, json.JSONDecodeError) else ("not UTF-8 text", 1)
                    raise DataError(f"line is not JSON: {msg}", Pos(str(path), lineno, col)) from None
                if not isinstance(row, dict):
                    raise DataError(f"line is a JSON {type(row).__name__}, not an object", Pos(str(path), lineno)) from None
        raise DataError(f"cannot read jsonl file: {str(e).splitlines()[0]}", Pos(str(path))) from None


def _jsonl_line(path: Path, row: int) -> int:
    """The line of data row ``row`` (blank lines hold no row); only called for an error."""
    seen = -1
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            if raw.strip():
                seen += 1
                if seen == row:
                    return lineno
    return 1


# --- columns -> values ---------------------------------------------------------------------


def _column(rows: Rows, name: str, loc: Locator, key: tuple[str | int, ...]) -> pa.ChunkedArray:
    if name not in rows.table.column_names:
        have = ", ".join(rows.table.column_names[:20])
        raise DataError(f"{loc.where(*key)}: {rows.path} has no column '{name}' (it has: {have})", loc.pos(*key))
    return rows.table.column(name)


def numbers(rows: Rows, name: str, col: pa.ChunkedArray, use: str) -> np.ndarray:
    """Column ``name`` as float64 (NaN where empty); a cell that is not a number is an error
    naming its row (CSV/JSONL), a column typed as something else (Parquet) one naming its type."""
    import pyarrow as pa

    t = col.type
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_null(t) or pa.types.is_decimal(t):
        return np.asarray(col.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    if (pa.types.is_string(t) or pa.types.is_large_string(t)) and rows.fmt != "parquet":
        values = col.to_pylist()
        out = np.empty(len(values), np.float64)
        for i, v in enumerate(values):
            try:
                out[i] = np.nan if v is None else float(v)
            except ValueError:
                raise DataError(f"column '{name}' {rows.at(i)}: {str(v)[:40]!r} is not a number ({use} needs numbers)", rows.pos(i)) from None
        return out
    raise DataError(f"column '{name}' has type {t}, but {use} needs numbers", rows.pos(0) if rows.fmt != "parquet" else Pos(str(rows.path)))


def labels(rows: Rows, name: str, col: pa.ChunkedArray, use: str) -> list[Any]:
    """Column ``name`` as Python values (None where empty) for categories and class labels."""
    import pyarrow as pa

    t = col.type
    if pa.types.is_nested(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t):
        raise DataError(f"column '{name}' has type {t}, but {use} needs one text, number or boolean per row", Pos(str(rows.path)))
    if pa.types.is_dictionary(t):
        col = col.cast(t.value_type)
    values = col.to_pylist()
    return [v if v is None or isinstance(v, str | int | bool) else (int(v) if float(v).is_integer() else float(v)) for v in values]


def _missing(values: np.ndarray | list[Any]) -> np.ndarray:
    if isinstance(values, np.ndarray):
        return np.isnan(values)
    return np.array([v is None for v in values], dtype=bool)


# --- the encoding, fitted on the train split and saved as vocab.json ------------------------------


@dataclass
class Plan:
    """Everything :func:`prepare` learned: applied to new rows by :func:`encode_inputs`."""

    inputs: dict[str, dict[str, Any]]   # input -> {columns, encode, missing, fill: [..] | None, unknown, vocab: {col: [..]}}
    targets: dict[str, dict[str, Any]]  # target -> {column, kind, classes: [..] | None}

    def to_json(self) -> dict[str, Any]:
        return {"format": VOCAB_FORMAT, "inputs": self.inputs, "targets": self.targets}

    @classmethod
    def from_json(cls, data: Any, where: Pos) -> Plan:
        if not isinstance(data, dict) or data.get("format") != VOCAB_FORMAT or not isinstance(data.get("inputs"), dict):
            raise DataError(f"not a graphc table vocabulary (expected \"format\": \"{VOCAB_FORMAT}\" as written by graphc train)", where)
        return cls(data["inputs"], data.get("targets", {}))


def _fit_input(rows: Rows, cfg: TableCfg, name: str, spec: ColumnsCfg, train: np.ndarray, loc: Locator) -> dict[str, Any]:
    key = ("data", "table", "inputs", name)
    missing = spec.missing or cfg.missing
    entry: dict[str, Any] = {"columns": spec.columns, "encode": spec.encode, "missing": missing, "unknown": spec.unknown or cfg.unknown}
    if spec.encode == "float":
        fill, mean, std = [], [], []
        for c in spec.columns:
            v = numbers(rows, c, _column(rows, c, loc, key), f"input '{name}'")[train]
            ok = v[np.isfinite(v)]
            mean.append(float(ok.mean()) if len(ok) else 0.0)
            std.append(float(ok.std()) if len(ok) > 1 and ok.std() > 0 else 1.0)
            fill.append({"mean": mean[-1], "zero": 0.0, "constant": cfg.fill}.get(missing, 0.0))
        entry |= {"fill": fill, "scale": spec.scale, "mean": mean, "std": std}
    else:
        vocab = {}
        for c in spec.columns:
            seen = {v for i, v in enumerate(labels(rows, c, _column(rows, c, loc, key), f"input '{name}'")) if train[i] and v is not None}
            vocab[c] = [UNK, *sorted(seen, key=_order)]
        entry["vocab"] = vocab
    return entry


def _order(v: Any) -> tuple[int, Any]:
    """Sort key for mixed label values: numbers by value, then text."""
    return (0, v) if isinstance(v, int | float) and not isinstance(v, bool) else (1, str(v))


def encode_inputs(rows: Rows, plan: Plan, keep: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The spec inputs of ``rows`` (optionally only rows ``keep``) under the fitted ``plan``.

    Raises:
        DataError: a missing value under ``missing: error`` (or ``drop`` at predict time), an
            unknown category under ``unknown: error``, a non-number: each naming file and row.
    """
    idx = np.arange(rows.table.num_rows) if keep is None else keep
    out = {}
    for name, entry in plan.inputs.items():
        parts = []
        for j, c in enumerate(entry["columns"]):
            if c not in rows.table.column_names:
                raise DataError(f"{rows.path}: no column '{c}' for input '{name}' (it has: {', '.join(rows.table.column_names[:20])})")
            col = rows.table.column(c)
            parts.append(_encode_column(rows, name, c, col, entry, j, idx))
        out[name] = _combine(parts, entry)
    return out


def _encode_column(rows: Rows, name: str, c: str, col: pa.ChunkedArray, entry: dict[str, Any], j: int, idx: np.ndarray) -> np.ndarray:
    use = f"input '{name}'"
    if entry["encode"] == "float":
        v = numbers(rows, c, col, use)[idx]
        gaps = np.isnan(v)
        if gaps.any():
            if entry["missing"] in ("error", "drop"):
                _missing_error(rows, c, int(idx[np.argmax(gaps)]), entry["missing"])
            v = np.where(gaps, entry["fill"][j], v)
        if entry.get("scale") == "standard":
            v = (v - entry["mean"][j]) / entry["std"][j]
        return v.astype(np.float32)
    vocab = entry["vocab"][c]
    ids = {v: i for i, v in enumerate(vocab)}
    values = labels(rows, c, col, use)
    out = np.empty(len(idx), np.int64)
    for k, i in enumerate(idx.tolist()):
        v = values[i]
        if v is None:
            if entry["missing"] in ("error", "drop"):
                _missing_error(rows, c, i, entry["missing"])
            out[k] = 0
        elif v in ids:
            out[k] = ids[v]
        elif entry["unknown"] == "error":
            raise DataError(f"column '{c}' {rows.at(i)}: category {v!r} does not occur in the training split "
                            f"(unknown: error; {len(vocab) - 1} known)", rows.pos(i))
        else:
            out[k] = 0
    return out


def _missing_error(rows: Rows, c: str, i: int, policy: str) -> None:
    why = "missing: error" if policy == "error" else "missing: drop cannot drop rows here"
    raise DataError(f"column '{c}' {rows.at(i)}: empty value ({why}; or declare mean | zero | constant)", rows.pos(i))


def _combine(parts: list[np.ndarray], entry: dict[str, Any]) -> np.ndarray:
    if entry["encode"] == "onehot":
        sizes = [len(entry["vocab"][c]) for c in entry["columns"]]
        return np.concatenate([np.eye(k, dtype=np.float32)[p] for p, k in zip(parts, sizes, strict=True)], axis=1)
    if len(parts) == 1 and entry["encode"] == "ids":
        return parts[0]
    return np.stack(parts, axis=1)


def _class_ids(rows: Rows, name: str, cfg: TargetCfg, split: tuple[np.ndarray, ...], loc: Locator,
               fitted: list[Any] | None = None) -> tuple[dict[str, Any], np.ndarray]:
    """Target ``name`` as ids of the train split's sorted classes (or of ``fitted``, a training
    run's classes), or as floats; a label outside them is an error naming its row: the model
    could never predict it."""
    col = _column(rows, cfg.column, loc, ("data", "table", "targets", name))
    use = f"target '{name}'"
    if cfg.kind == "value":
        v = numbers(rows, cfg.column, col, use)
        if np.isnan(v).any():
            _missing_error(rows, cfg.column, int(np.argmax(np.isnan(v))), "error")
        return {"column": cfg.column, "kind": "value", "classes": None}, v.astype(np.float32)[:, None]
    values = labels(rows, cfg.column, col, use)
    for i, v in enumerate(values):
        if v is None:
            _missing_error(rows, cfg.column, i, "error")
    classes = fitted if fitted is not None else sorted({values[i] for i in split[0].tolist()}, key=_order)
    ids = {v: i for i, v in enumerate(classes)}
    for part in split[1:] if fitted is None else split:
        for i in part.tolist():
            if values[i] not in ids:
                raise DataError(f"column '{cfg.column}' {rows.at(i)}: label {values[i]!r} does not occur in the training split "
                                f"(classes: {', '.join(map(str, classes[:10]))}{' ...' if len(classes) > 10 else ''})", rows.pos(i))
    return {"column": cfg.column, "kind": "class", "classes": classes}, np.array([ids.get(v, -1) for v in values], dtype=np.int64)


# --- prepare --------------------------------------------------------------------------------


def split_rows(n: int, fractions: tuple[float, float, float], seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A seeded shuffle cut into train/val/test row indices (each sorted: file order)."""
    perm = np.random.default_rng(seed).permutation(n)
    n_train = max(1, round(fractions[0] * n))
    n_val = round(fractions[1] * n)
    return np.sort(perm[:n_train]), np.sort(perm[n_train:n_train + n_val]), np.sort(perm[n_train + n_val:])


def resolve(base: Path, name: str) -> Path:
    """A recipe's data path: absolute, or relative to the recipe file's folder."""
    p = Path(name).expanduser()
    return p if p.is_absolute() else base / p


def _drop_rows(rows: Rows, cfg: TableCfg) -> np.ndarray:
    """Indices of the rows kept: those with an empty value in a ``missing: drop`` column go."""
    import pyarrow.compute as pc

    keep = np.ones(rows.table.num_rows, dtype=bool)
    for spec in map(_cols, cfg.inputs.values()):
        if (spec.missing or cfg.missing) != "drop":
            continue
        for c in spec.columns:
            if c in rows.table.column_names:
                col = rows.table.column(c)
                gaps = pc.is_null(col, nan_is_null=True)
                keep &= ~np.asarray(gaps.to_numpy(zero_copy_only=False), dtype=bool)
    return np.flatnonzero(keep)


def prepare(cfg: TableCfg, base: Path, inputs: Mapping[str, InputDef], split: tuple[float, float, float], seed: int,
            where: Locator) -> Prepared:
    """Read ``cfg.path``, fit the encoding on the train split, and encode all three splits.

    Raises:
        DataError: a malformed file, a missing column, a bad cell, or a val/test label the
            train split lacks, each naming the file and (where there is one) the row's line.
    """
    path = resolve(base, cfg.path)
    unknown = sorted(set(cfg.inputs) - set(inputs))
    if unknown:
        raise DataError(f"{where.where('data', 'table', 'inputs')}: the spec has no input '{unknown[0]}' (inputs: {', '.join(inputs)})",
                        where.pos("data", "table", "inputs", unknown[0]))
    rows = read_rows(path, cfg.format, cfg.delimiter)
    kept = _drop_rows(rows, cfg)
    if len(kept) == 0:
        raise DataError(f"{where.where('data', 'table')}: {path} has no rows{' left after missing: drop' if rows.table.num_rows else ''}",
                        where.pos("data", "table", "path"))
    parts = tuple(kept[p] for p in split_rows(len(kept), split, seed))
    train_mask = np.zeros(rows.table.num_rows, dtype=bool)
    train_mask[parts[0]] = True
    fitted = load_plan(resolve(base, cfg.vocab)) if cfg.vocab else None
    plan = Plan(fitted.inputs if fitted else {name: _fit_input(rows, cfg, name, _cols(spec), train_mask, where)
                                              for name, spec in cfg.inputs.items()}, {})
    targets: dict[str, np.ndarray] = {}
    for name, spec in cfg.targets.items():
        known = fitted.targets.get(name, {}).get("classes") if fitted else None
        plan.targets[name], targets[name] = _class_ids(rows, name, _target(spec), parts, where, known)
    splits = [ArraySplit({**encode_inputs(rows, plan, p), **{k: v[p] for k, v in targets.items()}}) for p in parts]
    classes = {k: t["classes"] for k, t in plan.targets.items() if t["classes"] is not None}
    artifacts = {"vocab.json": (json.dumps(plan.to_json(), indent=1) + "\n").encode()}
    if classes:
        artifacts["classes.json"] = (json.dumps(classes, indent=1) + "\n").encode()
    bounds = {name: max(len(v) for v in e["vocab"].values()) for name, e in plan.inputs.items() if e["encode"] == "ids"}
    return Prepared(splits[0], splits[1], splits[2], artifacts=artifacts, baselines=_majority(targets, parts),
                    value_bounds=bounds, fingerprint={"files": [{"path": str(path), "bytes": path.stat().st_size}]})


def _majority(targets: dict[str, np.ndarray], parts: tuple[np.ndarray, ...]) -> dict[str, float]:
    """Accuracy of always answering the train split's most frequent class (the bar to beat)."""
    out = {}
    for name, y in targets.items():
        if y.dtype != np.int64 or not len(parts[0]):
            continue
        top = int(np.bincount(y[parts[0]]).argmax())
        for label, p in zip(("val", "test"), parts[1:], strict=True):
            if len(p):
                out[f"majority_{label}_accuracy" if len(targets) == 1 else f"majority_{label}_accuracy_{name}"] = float((y[p] == top).mean())
    return out


def load_plan(path: Path) -> Plan:
    """A run's ``vocab.json`` (or the run folder holding it), for ``graphc predict --vocab``."""
    if path.is_dir():
        path = path / "vocab.json"
    if not path.is_file():
        raise DataError("no table vocabulary here (expected a run folder's vocab.json)", Pos(str(path)))
    try:
        data = json.loads(path.read_bytes()[: 64 << 20])
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"not JSON: {e}", Pos(str(path))) from None
    return Plan.from_json(data, Pos(str(path)))
