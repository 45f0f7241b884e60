"""``graphc weights``: plan at GPT-2 XL size, and the peak memory of converting a 1 GB checkpoint.

* plan: an HF-named GPT-2 XL checkpoint (1.56 B parameters, 6.2 GB) written as a *sparse*
  safetensors file (the header is real, the data region is a hole), so only the header is
  ever read; ``graphc weights plan --map specs/maps/gpt2_hf.yaml`` in a fresh process.
  Goals: < 2 s, < 300 MB peak RSS.
* convert: a ~1 GB HF-named GPT-2 checkpoint with random data, converted with the shipped
  map in a fresh process. Goal: peak RSS < 1.3 x the checkpoint's size.

Each command runs as a user would run it (``python -m graphc``), so the figures include
interpreter start-up and imports; peak RSS is the child's ``ru_maxrss``.
"""

from __future__ import annotations

import json
import os
import resource
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
MAP = ROOT / "specs" / "maps" / "gpt2_hf.yaml"
SPEC = ROOT / "specs" / "gpt2.yaml"
XL = {"layers": 48, "d": 1600, "heads": 25}
GB1 = {"layers": 16, "d": 1024, "heads": 16}  # about 254 M parameters: 1.0 GB in fp32


def hf_gpt2_names(layers: int, d: int, vocab: int = 50257, ctx: int = 1024) -> Iterator[tuple[str, tuple[int, ...]]]:
    """HF GPT2LMHeadModel's saved tensors (Conv1D weights are [in, out])."""
    yield "transformer.wte.weight", (vocab, d)
    yield "transformer.wpe.weight", (ctx, d)
    for i in range(layers):
        h = f"transformer.h.{i}."
        yield from ((h + "ln_1.weight", (d,)), (h + "ln_1.bias", (d,)))
        yield from ((h + "attn.c_attn.weight", (d, 3 * d)), (h + "attn.c_attn.bias", (3 * d,)))
        yield from ((h + "attn.c_proj.weight", (d, d)), (h + "attn.c_proj.bias", (d,)))
        yield from ((h + "ln_2.weight", (d,)), (h + "ln_2.bias", (d,)))
        yield from ((h + "mlp.c_fc.weight", (d, 4 * d)), (h + "mlp.c_fc.bias", (4 * d,)))
        yield from ((h + "mlp.c_proj.weight", (4 * d, d)), (h + "mlp.c_proj.bias", (d,)))
    yield from (("transformer.ln_f.weight", (d,)), ("transformer.ln_f.bias", (d,)))


def write_safetensors(path: Path, tensors: list[tuple[str, tuple[int, ...]]], sparse: bool) -> int:
    """A float32 safetensors file; ``sparse`` leaves the data as a hole (header-only reading)."""
    import numpy as np

    header, offset = {}, 0
    for name, shape in tensors:
        n = int(np.prod(shape)) * 4
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    rng = np.random.default_rng(0)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        if sparse:
            f.truncate(8 + len(raw) + offset)
        else:
            for _, shape in tensors:
                f.write((rng.standard_normal(shape, dtype=np.float32) * 0.02).tobytes())
    return 8 + len(raw) + offset


def _run(args: list[str]) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds and peak RSS (MB) of ``python -m graphc ARGS`` in a fresh process.

    CPU time is what a busy shared machine distorts least (wall time waits for other jobs).
    """
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    before = r0.ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "graphc", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"graphc {' '.join(args)} failed:\n{proc.stderr}")
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    return wall, cpu, max(r1.ru_maxrss, before) / 1024


def _sets(overrides: dict[str, int]) -> list[str]:
    return [a for k, v in overrides.items() for a in ("--set", f"{k}={v}")]


def run() -> list[tuple[str, str, str]]:
    rows = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("GRAPHC_BENCH_TMP")) as tmp:
        xl = Path(tmp) / "xl.safetensors"
        size = write_safetensors(xl, list(hf_gpt2_names(XL["layers"], XL["d"])), sparse=True)
        best = min(_run(["weights", "plan", str(SPEC), "--from", str(xl), "--map", str(MAP), *_sets(XL)]) for _ in range(3))
        rows.append((f"plan GPT-2 XL ({size / 1e9:.1f} GB checkpoint, header only)", f"{best[0]:.2f} s wall, {best[1]:.2f} s CPU, {best[2]:.0f} MB", "< 2 s, < 300 MB RSS"))
        xl.unlink()
        ck = Path(tmp) / "gpt2_1gb.safetensors"
        size = write_safetensors(ck, list(hf_gpt2_names(GB1["layers"], GB1["d"])), sparse=False)
        wall, cpu, peak = _run(["weights", "convert", str(SPEC), "--from", str(ck), "--map", str(MAP), "-o", str(Path(tmp) / "out.safetensors"), *_sets(GB1)])
        rows.append((f"convert {size / 1e9:.2f} GB GPT-2 checkpoint (peak RSS / size)", f"{peak / (size / 2**20):.2f} ({peak:.0f} MB)", "< 1.3"))
        rows.append(("convert time", f"{wall:.1f} s wall, {cpu:.1f} s CPU", ""))
    return rows
