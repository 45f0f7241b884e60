"""``graphc predict``: run a model over a file of inputs and write its outputs.

Inputs are read by the reader registry (graphc/use/readers.py), matched to the model's inputs
by name, checked like a server request (dtype, rank, fixed dims, proven dim ranges, non-finite
values, id ranges), run in batches and written as ``.npz``, ``.csv`` or ``.jsonl`` (by the
output's suffix).  Class outputs (``[..., C]`` floats) can be written as ``labels`` (argmax),
``topk`` (ids and softmax probabilities) or raw ``logits``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np

from graphc.errors import DataError, GraphcError, Pos
from graphc.outputs import Target
from graphc.serve.manifest import TensorSig
from graphc.serve.validate import RequestError, check_header, check_values
from graphc.use.backends import Arrays, Overrides, open_backend
from graphc.use.readers import read_arrays, read_table_inputs

As = Literal["labels", "topk", "logits"]
TARGET_NAMES = ("label", "labels", "target", "targets", "y")  # columns that are answers, not inputs
WRITERS = (".npz", ".csv", ".jsonl")


def predict(target: str | Path, data: str | Path | Mapping[str, np.ndarray], output: str | Path | None = None, *,
            weights: str | Path | None = None, overrides: Overrides = None, batch_size: int = 256, as_: As = "logits",
            topk: int = 5, force: bool = False, progress: bool = False, vocab: str | Path | None = None) -> Arrays:
    """Run ``target`` (a compile folder, or a spec with ``weights``) over ``data`` (a file, or
    arrays by name); write the formatted outputs to ``output`` if given, and return them.
    ``vocab`` (a run folder or its vocab.json) encodes a table's columns as that run's
    training did: the same category ids, missing-value fills and scaling.

    Example:
        >>> out = graphc.predict("out/digits", "images.npz", "pred.csv", as_="topk", topk=3)
        >>> out["logits_top"].shape     # (N, 3) class ids; out["logits_prob"] their probabilities

    Raises:
        DataError: unreadable data or arrays that do not fit the model's inputs (one line).
        GraphcError: ``output`` exists and graphc did not write it (without ``force``).
    """
    claimed = claim_output(output, force) if output is not None else None
    backend = open_backend(target, weights, overrides)
    where = Pos(str(data)) if not isinstance(data, Mapping) else Pos("<arrays>")
    if vocab is not None and not isinstance(data, Mapping):
        arrays = read_table_inputs(data, vocab)  # encoded as training encoded the table (vocab.json)
    else:
        arrays = read_arrays(data) if not isinstance(data, Mapping) else dict(data)
    feeds = match_inputs(arrays, backend, where)
    n = len(next(iter(feeds.values())))
    parts: list[Arrays] = [backend.run({k: v[i:i + batch_size] for k, v in feeds.items()})
                           for i in _progress(range(0, n, batch_size), n, batch_size, progress)]
    outs = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}
    result = format_outputs(outs, backend.outputs, as_, topk)
    if claimed is not None:
        write_outputs(claimed, result)
    return result


def _progress(steps: range, n: int, batch_size: int, show: bool) -> Iterator[int]:
    if not show:
        yield from steps
        return
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task("predicting", total=n)
        for i in steps:
            yield i
            bar.advance(task, min(batch_size, n - i))


def match_inputs(arrays: Arrays, backend: Any, where: Pos) -> Arrays:
    """The model's inputs from the file's arrays: by name; a single input also takes ``x``
    or the only non-target array, or (a table) all non-target columns side by side, reshaped
    to the input's fixed dims when the sizes agree.  Each is checked like a server request."""
    inputs: dict[str, TensorSig] = backend.inputs
    out: Arrays = {}
    sizes: dict[str, int] = {}
    for name, sig in inputs.items():
        arr = _find(arrays, name, len(inputs) == 1, where)
        arr = _fit(arr, sig)
        try:
            check_header(backend, sig, arr.shape, arr.dtype, sizes, max_bytes=1 << 40)
            out[name] = check_values(sig, arr)
        except RequestError as e:
            raise DataError(f"{e.message} (file arrays: {_describe(arrays)})", where) from None
    return out


def _describe(arrays: Arrays) -> str:
    return ", ".join(f"{k} {list(v.shape)} {v.dtype}" for k, v in arrays.items())


def _find(arrays: Arrays, name: str, only: bool, where: Pos) -> np.ndarray:
    if name in arrays:
        return arrays[name]
    features = [k for k in arrays if k not in TARGET_NAMES]
    if only and "x" in arrays:
        return arrays["x"]
    if only and len(features) == 1:
        return arrays[features[0]]
    if only and features and all(arrays[k].ndim == 1 for k in features):  # a table: one column per feature
        text = [k for k in features if arrays[k].dtype.kind not in "biuf"]
        if text:
            raise DataError(f"input '{name}': wrong dtype: column '{text[0]}' holds text, not numbers", where)
        return np.stack([arrays[k].astype(np.float32) for k in features], axis=1)
    raise DataError(f"no array for input '{name}' (the file has: {_describe(arrays)})", where)


def _fit(arr: np.ndarray, sig: TensorSig) -> np.ndarray:
    """Flat rows (a CSV of 64 pixels) reshaped to a fixed input shape ([B, 1, 8, 8])."""
    fixed = [d for d in sig.shape[1:] if isinstance(d, int)]
    if arr.ndim == 2 and len(fixed) == len(sig.shape) - 1 > 1 and arr.shape[1] == math.prod(fixed):
        return arr.reshape(arr.shape[0], *fixed)
    return arr


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def format_outputs(outs: Arrays, sigs: Mapping[str, TensorSig], as_: As, k: int) -> Arrays:
    """``labels``: argmax ids; ``topk``: ``NAME_top`` ids and ``NAME_prob`` probabilities;
    ``logits``: as computed.  Only float outputs with a class axis are reformatted."""
    if as_ not in ("labels", "topk", "logits"):
        raise GraphcError(f"--as must be labels, topk or logits, not '{as_}'")
    result: Arrays = {}
    for name, v in outs.items():
        classes = v.dtype.kind == "f" and v.ndim >= 2 and v.shape[-1] > 1
        if as_ == "logits" or not classes:
            result[name] = v
        elif as_ == "labels":
            result[name] = v.argmax(-1)
        else:
            kk = min(k, v.shape[-1])
            top = np.argsort(-v, axis=-1, kind="stable")[..., :kk]
            result[f"{name}_top"] = top
            result[f"{name}_prob"] = np.take_along_axis(_softmax(v.astype(np.float64)), top, -1).astype(np.float32)
    return result


# --- writing ----------------------------------------------------------------------------


def claim_output(path: str | Path, force: bool) -> Target:
    """Where predictions may be written, decided before any work (graphc.outputs rules: a new
    file, any existing file only with ``force``, or into a device/FIFO such as /dev/null)."""
    from graphc.outputs import check_file

    p = Path(path)
    if p.suffix.lower() not in WRITERS and not Path(os.path.realpath(p)).is_char_device():
        raise GraphcError(f"{p}: output must end in {', '.join(WRITERS)}")
    return check_file(p, force, None, "predictions file")


def _rows(result: Arrays) -> Iterator[dict[str, Any]]:
    n = len(next(iter(result.values())))
    for i in range(n):
        yield {k: v[i].tolist() for k, v in result.items()}


def _csv_header(result: Arrays) -> list[str]:
    cols = []
    for k, v in result.items():
        width = int(np.prod(v.shape[1:]))
        cols += [k] if v.ndim == 1 else [f"{k}_{j}" for j in range(width)]
    return cols


def write_outputs(target: Target, result: Arrays) -> None:
    """Write ``result`` as .npz, .csv (flattened per row) or .jsonl (one object per row) to the
    output :func:`claim_output` accepted, staged and moved into place (graphc.outputs)."""
    from graphc.outputs import file_output

    suffix = target.path.suffix.lower()

    def write_with(writer: Any) -> None:
        with file_output(target) as staged:
            writer(staged)

    if suffix == ".npz":
        def npz(tmp: Path) -> None:
            with tmp.open("wb") as f:
                np.savez(f, **result)  # type: ignore[arg-type]
        write_with(npz)
    elif suffix == ".jsonl":
        write_with(lambda tmp: tmp.write_text("".join(json.dumps(r) + "\n" for r in _rows(result)), encoding="utf-8"))
    else:
        import csv

        def table(tmp: Path) -> None:
            n = len(next(iter(result.values())))
            flat = [v.reshape(n, -1) for v in result.values()]
            with tmp.open("w", newline="", encoding="utf-8") as f:
                w = csv.writer(f)
                w.writerow(_csv_header(result))
                for i in range(n):
                    w.writerow([x for a in flat for x in a[i].tolist()])
        write_with(table)
