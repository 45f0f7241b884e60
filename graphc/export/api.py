"""``graphc.export_onnx``, ``graphc.verify_onnx`` and ``graphc.compile``.

    >>> import graphc
    >>> r = graphc.compile("specs/mlp.yaml", "out/mlp")      # check, build, export, verify
    >>> r.verify.passed, sorted(p.name for p in r.out_dir.iterdir())

A failed verification raises :class:`~graphc.errors.VerifyError` (CLI exit 3) naming the
first divergent spec node; ``compile`` then leaves no OUT_DIR behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graphc.api import SpecLike, build, check
from graphc.errors import ExportError
from graphc.export.onnx_export import ExportResult, export_model
from graphc.export.verify import VerifyResult, check_provenance, raise_if_failed, verify_model

Overrides = Mapping[str, Any] | Sequence[str] | None


@dataclass
class CompileResult:
    """What :func:`compile` wrote into ``out_dir``."""

    out_dir: Path
    files: list[str]
    export: ExportResult
    verify: VerifyResult


def _model(spec: SpecLike, overrides: Overrides, weights: str | Path | None, seed: int) -> Any:
    from graphc.export.weights import load_weights

    gm = build(check(spec, overrides), seed=seed)
    if weights is not None:
        load_weights(gm, weights)
    return gm.eval()


def export_onnx(spec: SpecLike, output: str | Path, overrides: Overrides = None, weights: str | Path | None = None,
                opset: int | None = None, verify: bool = True, seed: int = 0) -> ExportResult:
    """Export ``spec`` to ONNX at ``output`` and (by default) verify it in onnxruntime.

    Raises:
        VerifyError: onnxruntime disagrees with torch (the file is removed again).
    """
    gm = _model(spec, overrides, weights, seed)
    result = export_model(gm, Path(output), opset)
    if verify:
        result.verify = verify_model(gm, output)
        if not result.verify.passed:
            with contextlib.suppress(OSError):
                os.unlink(output)
            raise_if_failed(result.verify, output)
    return result


def verify_onnx(model: str | Path, spec: SpecLike, overrides: Overrides = None, weights: str | Path | None = None,
                seed: int = 0, raise_on_failure: bool = False) -> VerifyResult:
    """Re-run the onnxruntime-vs-torch check on an existing ONNX file."""
    if not Path(model).is_file():
        raise ExportError(f"{model}: ONNX file not found")
    gm = _model(spec, overrides, weights, seed)
    check_provenance(gm, model)
    result = verify_model(gm, model)
    if raise_on_failure:
        raise_if_failed(result, model)
    return result


def compile(spec: SpecLike, out_dir: str | Path, overrides: Overrides = None, weights: str | Path | None = None,
            opset: int | None = None, seed: int = 0, quant: Any = None) -> CompileResult:
    """check -> build -> model.py, weights.safetensors, model.onnx, verify.json, summary.json,
    manifest.json, written into a temp dir beside ``out_dir`` and renamed into place at the end."""
    from graphc.export.codegen import generate
    from graphc.export.weights import save_weights

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(0o755 & ~_umask())
    try:
        gm = _model(spec, overrides, weights, seed)
        tg = gm.graphc
        (tmp / "model.py").write_text(generate(gm), encoding="utf-8")
        save_weights(gm, tmp / "weights.safetensors")
        exp = export_model(gm, tmp / "model.onnx", opset)
        ver = verify_model(gm, tmp / "model.onnx")
        exp.verify = ver
        _write_json(tmp / "verify.json", ver.to_json())
        from graphc.api import summary

        _write_json(tmp / "summary.json", summary(tg).to_json())
        _write_json(tmp / "manifest.json", manifest(tg, exp))
        raise_if_failed(ver, out / "model.onnx")
        if quant is not None:  # --optimize / --quantize: graphc/export/quantize.py (a QuantOptions)
            from graphc.export.quantize import apply

            apply(gm, tmp, quant, seed)
        for f in tmp.iterdir():
            f.chmod(0o644 & ~_umask())
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    files = sorted(p.name for p in out.iterdir())
    exp.path = out / "model.onnx"
    return CompileResult(out, files, exp, ver)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _replace_dir(tmp: Path, out: Path) -> None:
    """Move ``tmp`` to ``out``; an existing ``out`` is swapped out first and then removed."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
    os.replace(out, old / out.name)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def manifest(tg: Any, exp: ExportResult) -> dict[str, Any]:
    """Versions, the spec hash and the model's input/output signatures."""
    import onnx
    import onnxruntime
    import torch

    import graphc

    spec = tg.flat.spec
    return {
        "spec": {"name": spec.name, "file": str(spec.file), "sha256": spec.sha256,
                 "overrides": list(spec.overrides) if spec.overrides else []},
        "versions": {"graphc": graphc.__version__, "torch": torch.__version__, "onnx": onnx.__version__,
                     "onnxruntime": onnxruntime.__version__, "opset": exp.opset},
        "inputs": {n: {"shape": list(i.shape), "dtype": i.dtype} for n, i in spec.doc.inputs.items()},
        "outputs": {n: {"shape": [str(d) if not isinstance(d, int) else d for d in t.shape], "dtype": t.dtype}
                    for n, t in tg.output_types().items()},
        "dims": {d: {"example": tg.example[d], "range": list(exp.dims.get(d, (1, None)))} for d in tg.example},
        "files": ["model.py", "weights.safetensors", "model.onnx", "verify.json", "summary.json", "manifest.json"],
    }
