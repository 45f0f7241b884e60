"""A memory estimate before anything is allocated: refuse example sizes that cannot fit.

``compile``, ``export`` and ``verify`` allocate the parameters, the example inputs (at the
example size of every symbolic dim) and, through the probe, every node's value in both
torch and onnxruntime.  An example size of 10**12 or a ``shape: [B, 100000000]`` would
otherwise end in an allocation traceback (or the machine swapping) minutes later.  The
estimate comes from the inferred shapes alone (:func:`graphc.summarize.summarize`: no
torch), so the refusal is immediate and can name the input and its example size.

The cap is ``GRAPHC_MAX_EXAMPLE_BYTES`` when set, else half the memory available now
(``MemAvailable``, and what an address-space limit such as ``ulimit -v`` leaves).
"""

from __future__ import annotations

import os
import resource
from math import prod

from graphc.errors import ExportError, Pos
from graphc.graph.infer import TypedGraph, where
from graphc.shapes import DTYPE_BYTES
from graphc.summarize import human, summarize

ENV = "GRAPHC_MAX_EXAMPLE_BYTES"
# rough: torch, the exported program, ONNX IR, protobuf, onnxruntime (a 2 GB linear, past
# protobuf's 2 GB limit so written as external data, peaked at 11x its parameter bytes)
PARAM_COPIES = 6
VALUE_COPIES = 3  # every node's value in torch (the probe keeps them all), in tracing and in onnxruntime


def estimate(tg: TypedGraph) -> dict[str, int]:
    """Bytes of parameters, example inputs and node values at the example sizes."""
    s = summarize(tg)
    inputs = input_bytes(tg)
    params = (s.total_params + s.buffers) * 4
    total = params * PARAM_COPIES + sum(inputs.values()) * VALUE_COPIES + s.memory["activations_bytes"] * VALUE_COPIES
    return {"params": params, "inputs": sum(inputs.values()), "activations": s.memory["activations_bytes"], "total": total}


def input_bytes(tg: TypedGraph) -> dict[str, int]:
    """Each spec input's bytes at the example sizes."""
    return {n: prod(t.concrete(tg.example)) * DTYPE_BYTES[t.dtype] for n, t in tg.spec_input_types().items()}


def cap() -> tuple[int, str]:
    """The byte limit and where it comes from (for the message)."""
    raw = os.environ.get(ENV, "").strip()
    if raw:
        try:
            return int(float(raw)), f"{ENV}={raw}"
        except (ValueError, OverflowError):
            raise ExportError(f"{ENV}={raw!r} is not a number of bytes") from None
    return available() // 2, f"half the available memory; set {ENV} to change it"


def available() -> int:
    """Memory this process can still get: MemAvailable, lowered by an address-space limit."""
    free = _meminfo_available() or os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    limit, _ = resource.getrlimit(resource.RLIMIT_AS)
    if limit != resource.RLIM_INFINITY:
        free = min(free, max(0, limit - _mapped()))
    return int(free)


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _mapped() -> int:
    """Address space this process maps now (what an RLIMIT_AS is measured against)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def fits_memory(tg: TypedGraph) -> TypedGraph:
    """``tg`` unchanged if building and exporting it fits the cap, else a positioned error
    naming the estimate: at the largest input's example size (or shape), or at the node
    with the most parameters when parameters are most of it."""
    est = estimate(tg)
    limit, why = cap()
    if est["total"] <= limit:
        return tg
    parts = ", ".join(f"{k} {human(v, 'B')}" for k, v in est.items() if k != "total")
    need = f"needs an estimated {human(est['total'], 'B')} to build, export and verify ({parts}), over the limit of {human(limit, 'B')} ({why})"
    if est["params"] * PARAM_COPIES * 2 > est["total"]:
        node = max(tg.params, key=lambda n: sum(prod(s) for s in tg.params[n].values()))
        flat = tg.flat.nodes[node]
        raise ExportError(f"{where(flat)}: the model {need}; node '{node}' holds the most parameters", flat.pos)
    sizes = input_bytes(tg)
    name = max(sizes, key=lambda n: sizes[n])
    inp = tg.flat.spec.doc.inputs[name]
    dims = ", ".join(f"{d}={tg.example[d]}" for d in tg.example) or "static shape"
    hint = f"--set inputs.{name}.example.{max(inp.example, key=lambda d: inp.example[d])}=N" if inp.example else f"a smaller inputs.{name}.shape"
    raise ExportError(f"inputs.{name}: example ({dims}) {need}; use smaller sizes ({hint})", _where(tg, name, inp.example))


def _where(tg: TypedGraph, name: str, example: dict[str, int]) -> Pos:
    """The input's largest example size, else its shape."""
    spec = tg.flat.spec
    if example:
        biggest = max(example, key=lambda d: example[d])
        return spec.pos("inputs", name, "example", biggest)
    return spec.pos("inputs", name, "shape")
