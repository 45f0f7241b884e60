"""``--optimize``: an onnxruntime-optimised model.onnx, saved offline and verified again.

Two library passes, in order:

1. onnxruntime's transformer fusions (``onnxruntime.transformers.optimizer.optimize_model``,
   model type ``bert``, fusions only): SkipLayerNormalization, BiasGelu, Attention ... where
   their patterns match.  Harmless on graphs without them, so every spec gets the pass; the
   counts of what fused are recorded.
2. onnxruntime's graph optimisation at level "all", saved with
   ``SessionOptions.optimized_model_filepath`` so sessions skip it at load time.  Level "all"
   may use CPU-specific layouts and contrib ops: the file is meant for onnxruntime's CPU
   provider on the kind of machine that wrote it (onnxruntime's own advice for offline mode).

graphc's metadata (node values, dim ranges, provenance) is copied onto the result, since the
passes do not promise to keep it.  Spec node values that a fusion folds away simply no
longer appear in the node report.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import onnx

from graphc.errors import ExportError
from graphc.graph.infer import TypedGraph
from graphc.lower.built import Built


def _fusions(src: Path, dst: Path) -> dict[str, int]:
    from onnxruntime.transformers.optimizer import optimize_model

    for name in ("onnxruntime.transformers", "fusion"):
        logging.getLogger(name).setLevel(logging.ERROR)
    model = optimize_model(str(src), model_type="bert", num_heads=0, hidden_size=0, opt_level=0)
    stats = {k: int(v) for k, v in model.get_fused_operator_statistics().items() if v}
    model.save_model_to_file(str(dst))
    return stats


def _ort_all(src: Path, dst: Path) -> None:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.optimized_model_filepath = str(dst)
    opts.log_severity_level = 3
    ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])


def optimize_file(src: Path, dst: Path, tg: TypedGraph) -> dict[str, Any]:
    """Optimise ``src`` into ``dst`` (may be the same path); returns what was done."""
    meta = [(p.key, p.value) for p in onnx.load(str(src), load_external_data=False).metadata_props]
    fd, tmp_name = tempfile.mkstemp(suffix=".onnx", dir=dst.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        fused = _fusions(src, tmp)
        _ort_all(tmp, tmp)
        model = onnx.load(str(tmp))
        have = {p.key for p in model.metadata_props}
        for k, v in meta:
            if k not in have:
                model.metadata_props.add(key=k, value=v)
        onnx.save_model(model, str(tmp))
        os.replace(tmp, dst)
    except ExportError:
        raise
    except Exception as e:
        lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
        raise ExportError(f"{tg.flat.spec.file}: onnxruntime optimisation failed: {lines[0] if lines else type(e).__name__}") from e
    finally:
        tmp.unlink(missing_ok=True)
    return {"level": "all", "fusions": fused}


def optimize_verified(built: Built, folder: Path) -> dict[str, Any]:
    """``--optimize`` without ``--quantize``: optimise ``folder/model.onnx`` in place and verify
    it against torch again (the op-declared tolerances apply, as for every export).

    Raises:
        VerifyError: the optimised model diverges (exit 3), naming the first divergent node.
    """
    import json

    from graphc.export.verify import raise_if_failed, verify_model

    tg: TypedGraph = built.graph
    path = folder / "model.onnx"
    done = optimize_file(path, path, tg)
    ver = verify_model(built, path)
    raise_if_failed(ver, path)
    done["verify"] = ver.to_json()
    data = json.loads((folder / "verify.json").read_text(encoding="utf-8"))
    data["optimized"] = done
    (folder / "verify.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    man = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    man["optimized"] = {"level": "all", "fusions": done["fusions"]}
    (folder / "manifest.json").write_text(json.dumps(man, indent=2) + "\n", encoding="utf-8")
    return done
