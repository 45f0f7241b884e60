"""Input files as named numpy arrays: one registry of readers, keyed by file suffix (no torch).

``graphc predict`` reads its inputs here.  A new format is one function registered with
:func:`reader` (image folders, tokenized text and the like plug in the same way); each returns
``{name: array}`` with examples along the first axis.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from graphc.errors import DataError, Pos

Arrays = dict[str, np.ndarray]
Reader = Callable[[Path], Arrays]
READERS: dict[str, Reader] = {}


def reader(*suffixes: str) -> Callable[[Reader], Reader]:
    """Register ``fn`` as the reader of files ending in ``suffixes`` (``".npz"``)."""
    def add(fn: Reader) -> Reader:
        for s in suffixes:
            READERS[s] = fn
        return fn
    return add


def read_arrays(path: str | Path) -> Arrays:
    """The arrays in ``path``, by the reader registered for its suffix.

    Raises:
        DataError: missing file, unknown suffix, or a file its reader cannot parse (one line).
    """
    path = Path(path)
    pos = Pos(str(path))
    if not path.is_file():
        raise DataError("input file not found", pos)
    fn = READERS.get(path.suffix.lower())
    if fn is None:
        raise DataError(f"unsupported input file type '{path.suffix}' (readers: {', '.join(sorted(READERS))})", pos)
    try:
        arrays = fn(path)
    except DataError:
        raise
    except Exception as e:  # each library raises its own types for a corrupt file
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"cannot read input file: {first}", pos) from None
    if not arrays:
        raise DataError("the file holds no arrays", pos)
    return arrays


def read_table_inputs(path: str | Path, vocab: str | Path) -> Arrays:
    """A table (.csv/.parquet/.jsonl) encoded by a run's ``vocab.json`` (or the run folder):
    the model's inputs exactly as ``data.table`` made them in training (graphc.data.tables)."""
    from graphc.data.tables import encode_inputs, load_plan, read_rows

    return encode_inputs(read_rows(Path(path)), load_plan(Path(vocab)))


@reader(".npz")
def _npz(path: Path) -> Arrays:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


@reader(".npy")
def _npy(path: Path) -> Arrays:
    return {path.stem: np.load(path, allow_pickle=False)}


@reader(".safetensors")
def _safetensors(path: Path) -> Arrays:
    from safetensors.numpy import load_file

    return dict(load_file(str(path)))


@reader(".csv")
def _csv(path: Path) -> Arrays:
    """One array per column (header row of names), like the training reader."""
    table = np.genfromtxt(path, delimiter=",", names=True, dtype=None, encoding="utf-8")
    if table.dtype.names is None:
        raise ValueError("expected a header row of column names")
    return {n: np.atleast_1d(np.asarray(table[n])) for n in table.dtype.names}


def _columns(rows: list[dict[str, object]], pos: Pos) -> Arrays:
    if not rows:
        raise DataError("the file holds no rows", pos)
    names = list(rows[0])
    try:
        return {n: np.asarray([r[n] for r in rows]) for n in names}
    except KeyError as e:
        raise DataError(f"a row lacks key {e}", pos) from None
    except ValueError as e:
        raise DataError(f"rows of different shapes: {e}", pos) from None


@reader(".jsonl")
def _jsonl(path: Path) -> Arrays:
    """One JSON object per line, ``{name: value or nested list}``; rows stack into arrays."""
    rows = []
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"bad JSON: {e.msg}", Pos(str(path), i, e.colno)) from None
                if not isinstance(row, dict):
                    raise DataError("expected a JSON object per line", Pos(str(path), i))
                rows.append(row)
    return _columns(rows, Pos(str(path)))


@reader(".parquet")
def _parquet(path: Path) -> Arrays:
    """One array per column; list columns (fixed length per row) stack into a 2-D array."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    out = {}
    for name in table.column_names:
        values = table.column(name).to_pylist()
        out[name] = np.asarray(values)
    return out


