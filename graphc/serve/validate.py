"""Every request is checked against the manifest before it reaches onnxruntime.

Both request forms end as named numpy arrays: JSON (``{"inputs": {name: nested lists}}``) and
``application/x-npz`` (one ``.npy`` member per input).  For the binary form the shape and
dtype are read from each member's header and checked *before* any array memory is allocated,
so a header that declares a 10^9-long dim costs nothing.  Each problem becomes a
:class:`RequestError` that names the input and says what is wrong; the app turns it into a
4xx JSON answer.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from graphc.serve.manifest import Manifest, TensorSig

NPY_HEADER_LIMIT = 10_000  # bytes of one .npy header (numpy's own default guard)


class DimRanges(Protocol):
    """Anything that knows each symbolic dim's allowed sizes (a :class:`Manifest`, a backend)."""

    def dim_range(self, symbol: str) -> tuple[int, int]: ...


class RequestError(Exception):
    """A request the server refuses: HTTP ``status``, the ``input`` concerned (if any) and the problem."""

    def __init__(self, status: int, problem: str, input: str | None = None) -> None:
        super().__init__(problem)
        self.status = status
        self.problem = problem
        self.input = input

    @property
    def message(self) -> str:
        return f"input '{self.input}': {self.problem}" if self.input else self.problem

    def to_json(self) -> dict[str, Any]:
        return {"error": {"status": self.status, "input": self.input, "problem": self.problem, "message": self.message}}


# --- names, headers, values ---------------------------------------------------------------


def check_names(man: Manifest, names: Any) -> None:
    """Missing and extra inputs, each named (extra ones with a hint at the real names)."""
    missing = [n for n in man.inputs if n not in names]
    extra = [n for n in names if n not in man.inputs]
    if extra:
        raise RequestError(422, f"unknown input (the model's inputs are: {', '.join(man.inputs)})", str(extra[0]))
    if missing:
        raise RequestError(422, "missing input", missing[0])


def _kind_ok(sig: TensorSig, dtype: np.dtype) -> bool:
    if sig.is_float:
        return dtype.kind in "fiu"  # integer values are exact in a float input
    if sig.dtype == "bool":
        return dtype.kind == "b"
    return dtype.kind in "iu"


def check_header(man: Manifest | DimRanges, sig: TensorSig, shape: tuple[int, ...], dtype: np.dtype, sizes: dict[str, int],
                 max_bytes: int) -> None:
    """Dtype kind, rank, fixed dims, symbolic dims within their proven range and consistent
    across inputs, and the array's size: all from the header, before allocation."""
    if not _kind_ok(sig, dtype):
        raise RequestError(422, f"wrong dtype: got {dtype.name} values, the model takes {sig.dtype}", sig.name)
    if len(shape) != len(sig.shape):
        raise RequestError(422, f"wrong rank: got shape {list(shape)} (rank {len(shape)}), the model takes "
                                f"[{', '.join(map(str, sig.shape))}] (rank {len(sig.shape)})", sig.name)
    for axis, (want, got) in enumerate(zip(sig.shape, shape)):
        if isinstance(want, int):
            if got != want:
                raise RequestError(422, f"dim {axis} is {got}, the model takes {want} (shape [{', '.join(map(str, sig.shape))}])",
                                   sig.name)
            continue
        lo, hi = man.dim_range(want)
        if not lo <= got <= hi:
            raise RequestError(422, f"dim {axis} ({want}) is {got}, outside its proven range [{lo}, {hi}]", sig.name)
        if sizes.setdefault(want, got) != got:
            raise RequestError(422, f"dim {axis} ({want}) is {got} but another input has {want}={sizes[want]}", sig.name)
    nbytes = math.prod(shape) * max(dtype.itemsize, np.dtype(sig.dtype).itemsize)
    if nbytes > max_bytes:
        raise RequestError(413, f"shape {list(shape)} needs {nbytes} bytes, over the limit of {max_bytes}", sig.name)


def check_values(sig: TensorSig, arr: np.ndarray) -> np.ndarray:
    """Non-finite floats and ids outside the declared range are refused; returns the array
    in the model's dtype."""
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
        raise RequestError(422, f"non-finite value {arr[bad]} at index {list(bad)}", sig.name)
    if sig.range is not None and not sig.is_float and arr.size:
        lo, hi = sig.range
        if arr.min() < lo or arr.max() >= hi:
            v = arr.min() if arr.min() < lo else arr.max()
            raise RequestError(422, f"value {int(v)} outside the declared range [{lo:g}, {hi:g})", sig.name)
    out = arr.astype(sig.dtype, copy=False)
    if sig.is_float and not np.isfinite(out).all():  # e.g. 1e300 overflows float32
        raise RequestError(422, f"a value overflows {sig.dtype}", sig.name)
    return np.ascontiguousarray(out)


# --- request bodies -----------------------------------------------------------------------


def parse_json(man: Manifest, body: bytes, max_bytes: int) -> dict[str, np.ndarray]:
    """``{"inputs": {name: nested lists}}`` -> checked arrays."""
    try:
        doc = json.loads(body)
    except json.JSONDecodeError as e:
        raise RequestError(400, f"malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except UnicodeDecodeError:
        raise RequestError(400, "malformed JSON: the body is not UTF-8") from None
    except RecursionError:
        raise RequestError(400, "malformed JSON: nested too deeply") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), dict):
        raise RequestError(400, 'expected a JSON object {"inputs": {NAME: nested lists, ...}}')
    if set(doc) - {"inputs"}:
        raise RequestError(400, f"unknown top-level key '{sorted(set(doc) - {'inputs'})[0]}' (only 'inputs' is read)")
    inputs: dict[str, Any] = doc["inputs"]
    check_names(man, inputs)
    sizes: dict[str, int] = {}
    out = {}
    for name, sig in man.inputs.items():
        arr = _json_array(sig, inputs[name])
        check_header(man, sig, arr.shape, arr.dtype, sizes, max_bytes)
        out[name] = check_values(sig, arr)
    return out


def _json_array(sig: TensorSig, value: Any) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError):
        raise RequestError(422, "ragged nested lists: every row must have the same length", sig.name) from None
    if arr.dtype.kind not in "biuf":
        got = "strings" if arr.dtype.kind in "US" else "mixed or nested values of different depths"
        raise RequestError(422, f"wrong dtype: got {got}, the model takes {sig.dtype}", sig.name)
    if arr.dtype.kind == "b" and sig.dtype != "bool":
        raise RequestError(422, f"wrong dtype: got booleans, the model takes {sig.dtype}", sig.name)
    return arr


def parse_npz(man: Manifest, body: bytes, max_bytes: int) -> dict[str, np.ndarray]:
    """An ``.npz`` body (``numpy.savez``), one ``NAME.npy`` member per input.  Headers are
    checked before data is read; object arrays (pickles) are refused."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(body))
        members = {m.filename.removesuffix(".npy"): m for m in zf.infolist()}
    except (zipfile.BadZipFile, ValueError, OSError) as e:
        raise RequestError(400, f"malformed npz body: {e}") from None
    check_names(man, members)
    sizes: dict[str, int] = {}
    out = {}
    for name, sig in man.inputs.items():
        out[name] = _read_member(man, sig, zf, members[name], sizes, max_bytes)
    return out


def _read_member(man: Manifest, sig: TensorSig, zf: zipfile.ZipFile, member: zipfile.ZipInfo, sizes: dict[str, int],
                 max_bytes: int) -> np.ndarray:
    try:
        with zf.open(member) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f, max_header_size=NPY_HEADER_LIMIT)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f, max_header_size=NPY_HEADER_LIMIT)
            if dtype.hasobject or dtype.kind not in "biuf":
                raise RequestError(422, f"wrong dtype: got {dtype}, the model takes {sig.dtype}", sig.name)
            check_header(man, sig, shape, dtype, sizes, max_bytes)
            n = math.prod(shape) * dtype.itemsize
            data = f.read(n)
    except RequestError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, SyntaxError) as e:
        raise RequestError(400, f"malformed .npy member: {str(e).splitlines()[0] if str(e) else type(e).__name__}", sig.name) from None
    if len(data) != n:
        raise RequestError(400, f"truncated .npy member: header says {n} bytes, found {len(data)}", sig.name)
    arr = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")
    return check_values(sig, arr)


def to_npz(arrays: Mapping[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()
