"""Training data: built-in sets (no download), synthetic sets, user files and image folders.

Every source produces named numpy examples (``x``, ``label``, ``tokens``, ``target`` ...):
in-memory sets as whole arrays (kept as tensors and gathered by index), the kinds of
graphc/data (image folders, tables, text) as a :class:`graphc.data.source.Source` read
example by example.  :func:`load_data` maps them onto the spec's inputs by name (or through
``data.map``), checks each against the spec's declared shape and dtype *before* training,
and returns seeded train/val/test :class:`Split` s that graphc/data/loader.py batches.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from graphc.data.bounds import check_value_bounds
from graphc.data.fingerprint import file_entries, fingerprint_arrays
from graphc.data.loader import ArraySource, Batches, BatchKey
from graphc.data.source import Example, Prepared, Source
from graphc.errors import DataError, Pos
from graphc.graph.infer import TypedGraph
from graphc.shapes import FLOAT_DTYPES, parse_dim
from graphc.spec.model import InputDef
from graphc.train.recipe import DataCfg, LoadedRecipe

Arrays = dict[str, np.ndarray]


@dataclass
class Split:
    """One part of the data: its examples and the tensor dtype of each array."""

    source: Source
    dtypes: dict[str, torch.dtype] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.source)

    def batch(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """The examples ``idx`` as one batch of tensors (what the loader's workers do)."""
        return Batches(self.source, self.dtypes)[BatchKey(0, idx)]

    @property
    def tensors(self) -> dict[str, torch.Tensor]:
        """Every example at once (in-memory sets: no copy)."""
        if isinstance(self.source, ArraySource):
            return self.source.tensors
        return self.batch(torch.arange(len(self)))


@dataclass
class Data:
    """The three splits, which names are model inputs (in the spec's order), and what the
    run folder keeps about them (artifacts such as classes.json, and the data fingerprint)."""

    train: Split
    val: Split
    test: Split
    inputs: list[str]
    unigram_loss: float | None = None  # sequence sets: cross-entropy of the character-frequency model
    artifacts: dict[str, bytes] = field(default_factory=dict)
    fingerprint: dict[str, Any] = field(default_factory=dict)
    baselines: dict[str, float] = field(default_factory=dict)


# --- sources ---------------------------------------------------------------------------


def _sklearn(name: str) -> Callable[[DataCfg, dict[str, InputDef]], Arrays]:
    def load(cfg: DataCfg, inputs: dict[str, InputDef]) -> Arrays:
        import sklearn.datasets as skd

        bunch = getattr(skd, f"load_{name}")()
        x = bunch.data.astype(np.float32)
        if name == "digits":
            x = x / 16.0  # pixel intensities 0..16 -> [0, 1]
            rank = len(next(iter(inputs.values())).shape) if len(inputs) == 1 else 2
            if rank == 4:
                x = x.reshape(-1, 1, 8, 8)
        else:
            x = (x - x.mean(0)) / (x.std(0) + 1e-8)  # standardized features
        return {"x": x, "label": bunch.target.astype(np.int64)}

    return load


def stdlib_corpus(max_chars: int) -> bytes:
    """The standard library's top-level ``.py`` files, sorted by name, as one byte string.

    Deterministic for a given Python installation; bytes keep the vocabulary within 256.
    The same files as a ``text: {stdlib: N}`` corpus (graphc.data.text.stdlib_docs).
    """
    from graphc.data.text import stdlib_docs

    try:
        return b"".join(d.data or b"" for d in stdlib_docs(max_chars))
    except DataError as e:
        raise DataError(f"stdlib_chars: {e.message}") from None


def _seq_len(cfg: DataCfg, inputs: dict[str, InputDef]) -> int:
    if cfg.seq_len:
        return cfg.seq_len
    for inp in inputs.values():
        if len(inp.shape) == 2 and isinstance(inp.shape[1], str):
            return inp.example.get(inp.shape[1], 64)
        if len(inp.shape) == 2 and isinstance(inp.shape[1], int):
            return inp.shape[1]
    return 64


def _windows(seq: np.ndarray, t: int) -> Arrays:
    """Non-overlapping windows of ``t`` tokens and their next-token targets."""
    n = (len(seq) - 1) // t
    idx = np.arange(n * t).reshape(n, t)
    return {"tokens": seq[idx].astype(np.int64), "target": seq[idx + 1].astype(np.int64)}


def _stdlib_chars(cfg: DataCfg, inputs: dict[str, InputDef]) -> Arrays:
    seq = np.frombuffer(stdlib_corpus(cfg.max_chars), dtype=np.uint8)
    return _windows(seq, _seq_len(cfg, inputs))


def _feature_shape(inputs: dict[str, InputDef], default: int = 8) -> tuple[int, ...]:
    inp = next(iter(inputs.values()))
    return tuple(d if isinstance(d, int) else default for d in inp.shape[1:]) or (default,)


def _synthetic_regression(cfg: DataCfg, inputs: dict[str, InputDef]) -> Arrays:
    rng = np.random.default_rng(cfg.seed or 0)
    shape = _feature_shape(inputs)
    x = rng.standard_normal((cfg.samples, *shape)).astype(np.float32)
    w = rng.standard_normal(int(np.prod(shape))).astype(np.float32)
    y = x.reshape(cfg.samples, -1) @ w + 0.1 * rng.standard_normal(cfg.samples).astype(np.float32)
    return {"x": x, "y": y[:, None].astype(np.float32)}


def _synthetic_classification(cfg: DataCfg, inputs: dict[str, InputDef]) -> Arrays:
    rng = np.random.default_rng(cfg.seed or 0)
    shape = _feature_shape(inputs)
    centers = 2.0 * rng.standard_normal((cfg.classes, *shape))
    label = rng.integers(0, cfg.classes, cfg.samples)
    x = centers[label] + rng.standard_normal((cfg.samples, *shape))
    return {"x": x.astype(np.float32), "label": label.astype(np.int64)}


def _synthetic_sequence(cfg: DataCfg, inputs: dict[str, InputDef]) -> Arrays:
    """Counting sequences with random starts and strides: learnable next-token structure."""
    rng = np.random.default_rng(cfg.seed or 0)
    t = _seq_len(cfg, inputs)
    vocab = 16
    for inp in inputs.values():
        if inp.range is not None:
            vocab = int(inp.range[1])
    start = rng.integers(0, vocab, (cfg.samples, 1))
    stride = rng.integers(1, 4, (cfg.samples, 1))
    seq = (start + stride * np.arange(t + 1)) % vocab
    return {"tokens": seq[:, :-1].astype(np.int64), "target": seq[:, 1:].astype(np.int64)}


BUILTIN: dict[str, Callable[[DataCfg, dict[str, InputDef]], Arrays]] = {
    "digits": _sklearn("digits"),
    "wine": _sklearn("wine"),
    "iris": _sklearn("iris"),
    "breast_cancer": _sklearn("breast_cancer"),
    "stdlib_chars": _stdlib_chars,
    "synthetic_regression": _synthetic_regression,
    "synthetic_classification": _synthetic_classification,
    "synthetic_sequence": _synthetic_sequence,
}


def _read_file(path: Path, pos: Pos) -> Arrays:
    """Arrays of a ``.npz``, ``.csv`` (one column per name) or ``.safetensors`` file."""
    if not path.is_file():
        raise DataError(f"data file not found: {path}", pos)
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                return {k: f[k] for k in f.files}
        if path.suffix == ".safetensors":
            from safetensors.numpy import load_file

            return dict(load_file(str(path)))
        if path.suffix == ".csv":
            table = np.genfromtxt(path, delimiter=",", names=True, dtype=None, encoding="utf-8")
            if table.dtype.names is None:
                raise ValueError("expected a header row of column names")
            return {n: np.asarray(table[n]) for n in table.dtype.names}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{path}: cannot read data file: {str(e).splitlines()[0] if str(e) else type(e).__name__}", pos) from None
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise DataError(f"{path}: cannot read data file: {type(e).__name__}: {str(e).splitlines()[0]}", pos) from None
    raise DataError(f"{path}: unsupported data file type '{path.suffix}' (use .npz, .csv or .safetensors)", pos)


# --- mapping onto the spec ---------------------------------------------------------------


def _csv_features(arrays: Arrays, name: str, targets: set[str]) -> Arrays:
    """A CSV has one column per value: gather the non-target columns into input ``name``."""
    cols = [k for k in arrays if k not in targets and arrays[k].ndim == 1]
    if name in arrays or not cols:
        return arrays
    x = np.stack([arrays[c].astype(np.float32) for c in cols], axis=1)
    return {**{k: v for k, v in arrays.items() if k in targets}, name: x}


def _resolve(arrays: Arrays, inputs: dict[str, InputDef], targets: set[str], loaded: LoadedRecipe, kind: str = "dataset") -> Arrays:
    """The arrays the run needs, under the spec's input names and the recipe's target names."""
    cfg = loaded.recipe.data
    pos = loaded.pos("data", kind)
    label = f"dataset '{cfg.dataset}'" if kind == "dataset" else f"the {kind} data"
    out: Arrays = {}
    primary = [k for k in arrays if k not in targets]
    for name in [*inputs, *sorted(targets)]:
        src = cfg.map.get(name, name)
        if src not in arrays and name in inputs and len(inputs) == 1 and len(primary) == 1:
            src = primary[0]  # one input, one feature array: they go together whatever their names
        if src not in arrays:
            have = ", ".join(sorted(arrays))
            raise DataError(f"{loaded.where('data')}: {label} has no array '{src}' for '{name}' (it has: {have}); map it with data.map", pos)
        out[name] = arrays[src]
    n = {len(v) for v in out.values()}
    if len(n) != 1:
        sizes = ", ".join(f"{k}: {len(v)}" for k, v in out.items())
        raise DataError(f"{loaded.where('data')}: arrays have different numbers of examples ({sizes})", pos)
    return out


def _check_shape(name: str, arr: np.ndarray, inp: InputDef, pos: Pos, spec_pos: Pos) -> None:
    """A one-line error naming both shapes unless ``arr`` (examples first) fits the input."""
    want = [*inp.shape]
    ok = arr.ndim == len(want) and all(not isinstance(d, int) or d == s for d, s in zip(want[1:], arr.shape[1:]))
    float_in = inp.dtype in FLOAT_DTYPES
    kind_ok = np.issubdtype(arr.dtype, np.floating if float_in else np.integer) or (float_in and np.issubdtype(arr.dtype, np.integer))
    if not ok or not kind_ok:
        dims = ", ".join(map(str, want))
        raise DataError(f"data for input '{name}' has shape {list(arr.shape)} {arr.dtype} but the spec declares [{dims}] {inp.dtype} (at {spec_pos})", pos)


def _check_input(name: str, arr: np.ndarray, inp: InputDef, pos: Pos, spec_pos: Pos) -> torch.Tensor:
    """The array as a tensor of the input's dtype, or a one-line error naming both shapes."""
    _check_shape(name, arr, inp, pos, spec_pos)
    return torch.from_numpy(np.ascontiguousarray(arr)).to(getattr(torch, inp.dtype))


def _target(arr: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(arr))
    return t.long() if not t.is_floating_point() else t.float()


def _base(loaded: LoadedRecipe) -> Path:
    """The folder relative data paths start from: the recipe file's."""
    return Path(loaded.file).parent if not loaded.file.startswith("<") else Path.cwd()


def load_data(tg: TypedGraph, loaded: LoadedRecipe, seed: int) -> Data:
    """Load, check and split the recipe's data for the spec in ``tg``.

    Raises:
        DataError: a missing/corrupt file, a missing array, or a shape/dtype that disagrees
            with the spec's inputs (one line naming the input and both shapes).
    """
    cfg = loaded.recipe.data
    inputs = dict(tg.flat.spec.doc.inputs)
    targets = {t.target for t in loaded.recipe.loss_terms} | {m.target for m in loaded.recipe.metric_cfgs if m.target}
    split_seed = cfg.seed if cfg.seed is not None else seed
    if cfg.dataset is not None:
        return _in_memory(tg, loaded, inputs, targets, split_seed)
    prep: Prepared
    if cfg.images is not None:  # exactly one kind is given (DataCfg checks)
        from graphc.data import images

        prep = images.prepare(cfg.images, _base(loaded), inputs, cfg.split, split_seed, loaded)
    elif cfg.table is not None:
        from graphc.data import tables

        prep = tables.prepare(cfg.table, _base(loaded), inputs, cfg.split, split_seed, loaded)
    elif cfg.text is not None:
        from graphc.data import text

        prep = text.prepare(cfg.text, _base(loaded), inputs, cfg.split, split_seed, loaded)
    else:
        raise DataError(f"{loaded.where('data')}: no data source given", loaded.pos("data"))
    return _from_prepared(prep, tg, loaded, inputs, targets)


def _in_memory(tg: TypedGraph, loaded: LoadedRecipe, inputs: dict[str, InputDef], targets: set[str], seed: int) -> Data:
    """A built-in set or an array file: whole arrays, split by one seeded permutation."""
    cfg = loaded.recipe.data
    name = cfg.dataset or ""
    pos = loaded.pos("data", "dataset")
    files: list[dict[str, Any]] = []
    if name in BUILTIN:
        arrays = BUILTIN[name](cfg, inputs)
    elif Path(name).suffix in (".npz", ".csv", ".safetensors"):
        path = Path(name) if Path(name).is_absolute() else _base(loaded) / name
        if not path.exists() and Path(name).exists():
            path = Path(name)
        arrays = _read_file(path, pos)
        files = file_entries([path])
        if path.suffix == ".csv" and len(inputs) == 1:
            arrays = _csv_features(arrays, next(iter(inputs)), {cfg.map.get(t, t) for t in targets})
    else:
        raise DataError(f"{loaded.where('data', 'dataset')}: unknown dataset '{name}' (built-in: {', '.join(BUILTIN)}; or a .npz/.csv/.safetensors path)", pos)
    arrays = _resolve(arrays, inputs, targets, loaded)
    check_targets(tg, loaded, arrays, str(files[0]["path"]) if files else f"dataset '{name}'")
    tensors = {k: _check_input(k, v, inputs[k], pos, tg.flat.spec.pos("inputs", k)) for k, v in arrays.items() if k in inputs}
    tensors |= {k: _target(v) for k, v in arrays.items() if k not in inputs}
    splits = _split(tensors, cfg.split, seed)
    unigram = unigram_loss(splits[0].tensors["target"], splits[1].tensors["target"]) if name in ("stdlib_chars",) else None
    fingerprint = {"kind": "dataset", "dataset": name, **fingerprint_arrays(arrays)}
    if files:
        fingerprint["entries"] = files
    return Data(*splits, inputs=list(inputs), unigram_loss=unigram, fingerprint=fingerprint)


class Renamed:
    """A source whose arrays are renamed onto the spec's names (``data.map``); picklable."""

    def __init__(self, source: Source, names: dict[str, str]) -> None:
        self.source, self.names = source, names  # spec name -> the source's own name

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> Example:
        ex = self.source[i]
        return {k: ex[v] for k, v in self.names.items()}

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.source, "set_epoch"):
            self.source.set_epoch(epoch)

    def column(self, name: str) -> np.ndarray | None:
        column = getattr(self.source, "column", None)
        return column(self.names.get(name, name)) if column is not None and name in self.names else None


def _from_prepared(prep: Prepared, tg: TypedGraph, loaded: LoadedRecipe, inputs: dict[str, InputDef], targets: set[str]) -> Data:
    """Check a prepared source against the spec on its first example (and its labels) before
    training; the examples themselves are read by the loader, batch by batch."""
    cfg = loaded.recipe.data
    kind = next(k for k in ("images", "table", "text") if getattr(cfg, k, None) is not None)
    pos = loaded.pos("data", kind)
    if len(prep.train) == 0:
        raise DataError(f"{loaded.where('data', kind)}: the training split has no examples", pos)
    example = prep.train[0]
    one = {k: np.asarray(v)[None] for k, v in example.items()}  # a batch of one, to resolve names and shapes
    resolved = _resolve(one, inputs, targets, loaded, kind)
    names = {k: next(src for src, v in one.items() if v is arr) for k, arr in resolved.items()}
    for k in inputs:
        _check_shape(k, resolved[k], inputs[k], pos, tg.flat.spec.pos("inputs", k))
    by_source = {v: k for k, v in names.items()}  # ids against the spec's ranges and embeddings first: the spec's line
    check_value_bounds(tg, {by_source.get(k, k): b for k, b in prep.value_bounds.items()}, f"{loaded.where('data', kind)}'s vocabulary")
    column = getattr(prep.train, "column", None)
    arrays = getattr(prep.train, "arrays", None)  # an in-memory source (a table): every label is checked
    for t in targets:
        full = column(names[t]) if column is not None else arrays.get(names[t]) if isinstance(arrays, dict) else None
        if full is not None:
            resolved[t] = full
    check_targets(tg, loaded, resolved, f"{kind} '{prep.fingerprint.get('root', '')}'".replace(" ''", ""))
    _check_bounds(tg, loaded, prep.value_bounds, names, pos)
    dtypes = {k: getattr(torch, inputs[k].dtype) if k in inputs else _target(resolved[k][:1]).dtype for k in resolved}
    same = all(k == v for k, v in names.items()) and set(names) == set(example)

    def split(src: Source) -> Split:
        return Split(src if same else Renamed(src, names), dtypes)

    return Data(split(prep.train), split(prep.val), split(prep.test), inputs=list(inputs),
                unigram_loss=prep.baselines.get("unigram_val_loss"), artifacts=dict(prep.artifacts),
                fingerprint=dict(prep.fingerprint), baselines=dict(prep.baselines))


def _check_bounds(tg: TypedGraph, loaded: LoadedRecipe, bounds: Mapping[str, int], names: dict[str, str], pos: Pos) -> None:
    """A class target's ids (a label vocabulary) against its output's number of classes,
    before step 0.  Input ids are graphc.data.bounds.check_value_bounds' (the spec's ranges
    and the ops that read them)."""
    spec = tg.flat.spec
    outputs = tg.output_types()
    by_source = {v: k for k, v in names.items()}
    for src_name, bound in bounds.items():
        name = by_source.get(src_name, src_name)
        for t in loaded.recipe.loss_terms:
            if t.target == name and t.type in CLASS_LOSSES and t.output in outputs:
                classes = outputs[t.output].concrete(dict(tg.example))[-1]
                if bound > classes:
                    raise DataError(f"target '{name}' has ids up to {bound - 1}, but output '{t.output}' has {classes} classes "
                                    f"(at {spec.pos('outputs', t.output)})", pos)


# --- targets against the spec's outputs ---------------------------------------------------

CLASS_LOSSES = {"cross_entropy"}
CLASS_METRICS = {"accuracy", "top_k", "perplexity", "f1"}


def check_targets(tg: TypedGraph, loaded: LoadedRecipe, arrays: Arrays, source: str) -> None:
    """Every loss term's and metric's target against its output, before step 0.

    Class targets (cross-entropy, accuracy, ...) must be integer ids, one per position of the
    output without its class axis, and within ``[0, classes)``; value targets (mse, mae,
    bce) must hold as many values per example as the output.  Otherwise torch fails deep
    inside the first step with a message that names neither the file nor the recipe line.
    """
    outputs = tg.output_types()
    sizes = _bound_sizes(tg, arrays)
    terms: list[tuple[str, str, str, tuple[str | int, ...]]] = [(t.type, t.output, t.target, ("loss", i) if isinstance(loaded.recipe.loss, list) else ("loss",))
             for i, t in enumerate(loaded.recipe.loss_terms)]
    terms += [(m.type, m.output or "", m.target or "", ("metrics", i)) for i, m in enumerate(loaded.recipe.metric_cfgs)]
    for kind, out_name, target, path in terms:
        if out_name not in outputs or target not in arrays:
            continue  # reported elsewhere (no such output / array)
        shape = outputs[out_name].concrete(sizes)
        where = f"{loaded.where(*path)}: {source}: target '{target}'"
        output = f"'{out_name}' {outputs[out_name]}"  # with the spec's (symbolic) type: 'logits' [B, 3]
        pos = loaded.pos(*path)
        if kind in CLASS_LOSSES | CLASS_METRICS:
            _check_classes(arrays[target], shape, where, kind, output, pos)
        else:
            _check_values(arrays[target], shape, where, kind, output, pos)


def _bound_sizes(tg: TypedGraph, arrays: Arrays) -> dict[str, int]:
    """Each symbolic dim's size in this data (from the input arrays), else its example."""
    sizes = dict(tg.example)
    for name, inp in tg.flat.spec.doc.inputs.items():
        arr = arrays.get(name)
        if arr is None:
            continue
        for d, n in zip(inp.shape, arr.shape, strict=False):
            parsed = parse_dim(d) if isinstance(d, str) else None
            if parsed is not None and parsed[0] == 1:
                sizes[parsed[1]] = int(n)
    return sizes


def _check_classes(arr: np.ndarray, out: tuple[int, ...], where: str, kind: str, output: str, pos: Pos) -> None:
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
        raise DataError(f"{where} has dtype {arr.dtype}, but {kind} needs integer class ids (0 .. {out[-1] - 1}) "
                        f"for output {output}", pos)
    per = int(np.prod(arr.shape[1:], dtype=np.int64))
    want = int(np.prod(out[1:-1], dtype=np.int64))
    if per != want:
        raise DataError(f"{where} has shape {list(arr.shape)}, but {kind} on output {output} needs "
                        f"{want} class id(s) per example (shape {_shown(out[1:-1])})", pos)
    if arr.size == 0:
        return
    classes = out[-1]
    bad = (arr < 0) | (arr >= classes)
    if bad.any():
        first = np.argwhere(bad)[0]
        raise DataError(f"{where} has {int(bad.sum())} label(s) outside [0, {classes}) (min {int(arr.min())}, max {int(arr.max())}; "
                        f"first at index {first.tolist()}): output {output} has {classes} classes", pos)


def _shown(rest: tuple[int, ...]) -> str:
    return "[" + ", ".join(["N", *map(str, rest)]) + "]"


def _check_values(arr: np.ndarray, out: tuple[int, ...], where: str, kind: str, output: str, pos: Pos) -> None:
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise DataError(f"{where} has dtype {arr.dtype}, but {kind} needs numbers", pos)
    per = int(np.prod(arr.shape[1:], dtype=np.int64))
    want = int(np.prod(out[1:], dtype=np.int64))
    if per != want:
        raise DataError(f"{where} has shape {list(arr.shape)}, but {kind} on output {output} needs "
                        f"{want} value(s) per example (shape {_shown(out[1:])})", pos)
    if kind == "bce" and arr.size and (arr.min() < 0 or arr.max() > 1):
        raise DataError(f"{where} has values in [{arr.min():g}, {arr.max():g}], but bce needs targets in [0, 1]", pos)


def _split(tensors: dict[str, torch.Tensor], fractions: tuple[float, float, float], seed: int) -> tuple[Split, Split, Split]:
    n = len(next(iter(tensors.values())))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_train = max(1, round(fractions[0] * n))
    n_val = round(fractions[1] * n)
    parts = (perm[:n_train], perm[n_train : n_train + n_val], perm[n_train + n_val :])
    dtypes = {k: v.dtype for k, v in tensors.items()}
    return tuple(Split(ArraySource({k: v[p] for k, v in tensors.items()}), dtypes) for p in parts)  # type: ignore[return-value]


def unigram_loss(train_targets: torch.Tensor, val_targets: torch.Tensor) -> float:
    """Validation cross-entropy (nats) of predicting the training set's character frequencies."""
    counts = torch.bincount(train_targets.flatten(), minlength=256).double() + 1.0  # add-one smoothing
    logp = (counts / counts.sum()).log()
    return float(-logp[val_targets.flatten()].mean())
