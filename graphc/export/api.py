"""``graphc.export_onnx``, ``graphc.verify_onnx`` and ``graphc.compile``.

    >>> import graphc
    >>> r = graphc.compile("specs/mlp.yaml", "out/mlp")      # check, build, export, verify
    >>> r.verify.passed, sorted(p.name for p in r.out_dir.iterdir())

A failed verification raises :class:`~graphc.errors.VerifyError` (CLI exit 3) naming the
first divergent spec node; ``compile`` then leaves no OUT_DIR behind and ``export_onnx`` no
file.  Where each may write is decided by :mod:`graphc.outputs` before any work starts.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from graphc.errors import ExportError, GraphcError
from graphc.export.onnx_export import TWO_GB, ExportResult, export_model
from graphc.export.verify import VerifyResult, check_provenance, raise_if_failed, verify_model
from graphc.graph.check import SpecLike, check
from graphc.graph.infer import TypedGraph
from graphc.io import umask
from graphc.lower.built import Built, lower_spec
from graphc.outputs import FOLDER_FILES, MARKER_KEY, check_file, check_folder, file_output, install_folder, spec_path, stage_folder

Overrides = Mapping[str, Any] | Sequence[str] | None


class UsageError(GraphcError):
    """A command-line value no run could accept (CLI exit 2)."""

    exit_code = 2


@dataclass
class CompileResult:
    """What :func:`compile` wrote into ``out_dir``."""

    out_dir: Path
    files: list[str]
    export: ExportResult
    verify: VerifyResult


def _model(spec: SpecLike, overrides: Overrides, weights: str | Path | None, seed: int) -> Built:
    """The lowered model in eval mode, with ``weights`` loaded (recorded as its source when a
    plain file; a WeightSource (--map/--partial) goes through the plan)."""
    from graphc.export.guard import fits_memory
    from graphc.weights import WeightSource, load_weights_from

    built = lower_spec(fits_memory(check(spec, overrides)), seed=seed)
    if weights is not None:
        load_weights_from(built.module, weights, built.graph)
        if not isinstance(weights, WeightSource):
            built = replace(built, weights=str(weights))
    built.module.eval()
    return built


def export_onnx(spec: SpecLike, output: str | Path, overrides: Overrides = None, weights: str | Path | None = None,
                opset: int | None = None, verify: bool = True, seed: int = 0, force: bool = False) -> ExportResult:
    """Export ``spec`` to ONNX at ``output`` and (by default) verify it in onnxruntime.

    The file is written beside ``output`` and moved into place only after it verified, so a
    failure leaves ``output`` as it was.  An existing file is replaced only when graphc wrote
    it (its ONNX metadata says so) or with ``force``; a device or FIFO is written into.

    Raises:
        OutputError: ``output`` is not graphc's to replace (see :mod:`graphc.outputs`).
        VerifyError: onnxruntime disagrees with torch (``output`` is left untouched).
    """
    check_opset(opset)
    target = check_file(output, force, is_graphc_onnx, "ONNX file")
    with file_output(target) as staged:
        built = _model(spec, overrides, weights, seed)
        result = export_model(built, staged, opset)
        if verify:
            result.verify = verify_model(built, staged)
            raise_if_failed(result.verify, output)
    result.path = Path(output)
    return result


def is_graphc_onnx(path: Path) -> bool:
    """True for an ONNX file graphc exported (its metadata has ``graphc.version``)."""
    import onnx

    if path.stat().st_size > TWO_GB:  # graphc keeps bigger weights in NAME.data
        return False
    model = onnx.load(str(path), load_external_data=False)
    return any(p.key == "graphc.version" for p in model.metadata_props)


def opset_range() -> tuple[int, int]:
    """The opsets the installed exporter writes: from the one it converts natively (below it,
    ``torch.onnx.export(dynamo=True)`` silently falls back to it) to torch's declared maximum."""
    from torch.onnx import _constants

    native = 18  # torch.onnx's dynamo exporter builds opset 18 graphs (its onnxscript torchlib)
    return native, max(native, int(_constants.ONNX_MAX_OPSET))


def check_opset(opset: int | None) -> None:
    """Refuse an opset the exporter cannot write (usage error, exit 2)."""
    if opset is None:
        return
    lo, hi = opset_range()
    if not lo <= opset <= hi:
        raise UsageError(f"--opset {opset}: this exporter writes opsets {lo} to {hi} (torch {_torch_version()})")


def _torch_version() -> str:
    import torch

    return str(torch.__version__)


def verify_onnx(model: str | Path, spec: SpecLike, overrides: Overrides = None, weights: str | Path | None = None,
                seed: int = 0, raise_on_failure: bool = False) -> VerifyResult:
    """Re-run the onnxruntime-vs-torch check on an existing ONNX file."""
    if not Path(model).is_file():
        raise ExportError(f"{model}: ONNX file not found")
    built = _model(spec, overrides, weights, seed)
    check_provenance(built, model)
    result = verify_model(built, model)
    if raise_on_failure:
        raise_if_failed(result, model)
    return result


def compile(spec: SpecLike, out_dir: str | Path, overrides: Overrides = None, weights: str | Path | None = None,
            opset: int | None = None, seed: int = 0, force: bool = False, quant: Any = None) -> CompileResult:
    """check -> build -> model.py, weights.safetensors, model.onnx, verify.json, summary.json,
    manifest.json, written into a temp dir beside ``out_dir`` and moved into place at the end.

    ``out_dir`` may be new, empty or a previous compile folder; ``force`` writes into any
    other folder, replacing only the files named above (see :mod:`graphc.outputs`).
    """
    from graphc.export.codegen import generate
    from graphc.summarize import summarize
    from graphc.weights.tensors import save_weights

    check_opset(opset)
    where = spec_path(spec)
    folder = check_folder(out_dir, "compile", force, where)
    built = _model(spec, overrides, weights, seed)
    tmp = stage_folder(folder)
    try:
        (tmp / "model.py").write_text(generate(built), encoding="utf-8")
        save_weights(built.module, tmp / "weights.safetensors")
        exp = export_model(built, tmp / "model.onnx", opset)
        ver = verify_model(built, tmp / "model.onnx")
        exp.verify = ver
        _write_json(tmp / "verify.json", ver.to_json())
        _write_json(tmp / "summary.json", summarize(built.graph).to_json())
        _write_json(tmp / "manifest.json", manifest(built.graph, exp))
        raise_if_failed(ver, folder.path / "model.onnx")
        if quant is not None:  # --optimize / --quantize: graphc/export/quantize.py (a QuantOptions)
            from graphc.export.quantize import apply

            apply(built, tmp, quant, seed)
        for f in tmp.iterdir():
            f.chmod(0o644 & ~umask())
        install_folder(tmp, folder, where)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone after a successful install
    out = folder.path
    files = sorted(p.name for p in out.iterdir() if p.name in FOLDER_FILES["compile"])
    exp.path = out / "model.onnx"
    return CompileResult(out, files, exp, ver)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def manifest(tg: TypedGraph, exp: ExportResult) -> dict[str, Any]:
    """Versions, the spec hash and the model's input/output signatures."""
    import onnx
    import onnxruntime
    import torch

    from graphc.version import __version__

    spec = tg.flat.spec
    return {
        "spec": {"name": spec.name, "file": str(spec.file), "sha256": spec.sha256,
                 "overrides": [f"{k}={v}" for k, v in spec.overrides.items()]},
        "versions": {"graphc": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
                     "onnxruntime": onnxruntime.__version__, "opset": exp.opset},
        "inputs": {n: {"shape": list(i.shape), "dtype": i.dtype, "range": list(i.range) if i.range is not None else None}
                   for n, i in spec.doc.inputs.items()},
        "outputs": {n: {"shape": [str(d) if not isinstance(d, int) else d for d in t.shape], "dtype": t.dtype}
                    for n, t in tg.output_types().items()},
        "dims": {d: {"example": tg.example[d], "range": list(exp.dims.get(d, (1, None)))} for d in tg.example},
        "weights": {"sha256": exp.extra.get("weights_sha256"), "source": exp.extra.get("weights_source")},
        "files": list(FOLDER_FILES["compile"]),
        MARKER_KEY: "compile",
    }
