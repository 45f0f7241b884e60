"""CLI commands of graphc.export: ``export``, ``verify`` and ``compile``.

Handlers import onnx/onnxruntime lazily so ``graphc check`` stays fast.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from graphc.weights.commands import add_transfer_args, weight_source


def _export(args: argparse.Namespace) -> int:
    from graphc.export.api import export_onnx
    from graphc.export.onnx_export import INT_MAX

    r = export_onnx(args.spec, args.output, args.overrides, weight_source(args.weights, args), args.opset, verify=not args.no_verify,
                    force=args.force)
    dims = ", ".join(f"{d} in [{lo}, {hi}]" if hi < INT_MAX else f"{d} >= {lo}" for d, (lo, hi) in r.dims.items()) or "static"
    print(f"wrote {r.path} (opset {r.opset}, {r.seconds:.1f} s; dynamic dims: {dims})")
    if r.verify is not None:
        print("\n".join(r.verify.lines()))
    return 0


def _verify(args: argparse.Namespace) -> int:
    from graphc.export.api import verify_onnx
    from graphc.export.quant_cli import is_quantized
    from graphc.export.verify import raise_if_failed

    if is_quantized(args.model):  # --quantize output: graphc/export/quantize.py checks it
        return _verify_quantized(args)
    r = verify_onnx(args.model, args.spec_file, args.overrides, weight_source(args.weights, args))
    if args.json:
        print(json.dumps(r.to_json(), indent=2))
    else:
        print("\n".join(r.lines()))
    raise_if_failed(r, args.model)
    return 0


def _compile(args: argparse.Namespace) -> int:
    from graphc.export.api import compile
    from graphc.export.quant_cli import quant_options, report_on_failure, summary

    quant = quant_options(args)
    with report_on_failure():
        r = compile(args.spec, args.output, args.overrides, weight_source(args.weights, args), args.opset, force=args.force,
                    quant=quant)
    print(f"wrote {r.out_dir}/: {', '.join(r.files)}")
    print("\n".join(r.verify.lines() + summary(r.out_dir)))
    return 0


def _weights_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", metavar="FILE", help="safetensors (or torch) file keyed by node paths")
    add_transfer_args(p)  # --map, --partial


def _opset_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--opset", type=int, default=None, metavar="N",
                   help="ONNX opset, 18 up to the installed torch's maximum (default: the exporter's)")


def register(sub: Any, add_spec_args: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``export``, ``verify`` and ``compile`` to the ``graphc`` parser."""
    p = sub.add_parser("export", help="export to ONNX and verify it in onnxruntime")
    add_spec_args(p)
    _weights_arg(p)
    p.add_argument("-o", "--output", required=True, metavar="MODEL.onnx",
                   help="the ONNX file (an existing one only if graphc wrote it; a device or FIFO is written into)")
    _opset_arg(p)
    p.add_argument("--no-verify", action="store_true", help="skip the onnxruntime check")
    p.add_argument("--force", action="store_true", help="replace an existing file graphc did not write")
    p.set_defaults(handler=_export)

    p = sub.add_parser("verify", help="re-check an ONNX file against the spec's torch model")
    p.add_argument("model", help="the .onnx file")
    p.add_argument("--spec", dest="spec_file", required=True, help="the spec it was exported from")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    _weights_arg(p)
    p.add_argument("--json", action="store_true", help="print verify.json's content")
    p.set_defaults(handler=_verify)

    p = sub.add_parser("compile", help="check, build, export and verify into OUT_DIR")
    add_spec_args(p)
    _weights_arg(p)
    p.add_argument("-o", "--output", required=True, metavar="OUT_DIR",
                   help="a new or empty folder, or a previous compile folder (replaced once all is verified)")
    _opset_arg(p)
    p.add_argument("--force", action="store_true",
                   help="write into a folder graphc did not make, replacing only graphc's own file names there")
    p.set_defaults(handler=_compile)
    _quant_args(p)


def _quant_args(p: argparse.ArgumentParser) -> None:
    """``compile``'s optimise/quantise flags, defined in graphc/export/quant_cli.py."""
    from graphc.export.quant_cli import quant_args

    quant_args(p)


def _verify_quantized(args: argparse.Namespace) -> int:
    """``verify`` of a quantized model.onnx: its node report within its recorded budget."""
    from pathlib import Path

    from graphc.export.api import _model
    from graphc.export.quant_cli import report_on_failure
    from graphc.export.quantize import verify_quantized
    from graphc.export.verify import check_provenance

    built = _model(args.spec_file, args.overrides, weight_source(args.weights, args), 0)
    check_provenance(built, args.model)
    with report_on_failure():
        r = verify_quantized(Path(args.model), built)
    print(json.dumps(r.to_json(), indent=2) if args.json else "\n".join(r.table()))
    return 0
