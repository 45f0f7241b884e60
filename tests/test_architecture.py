"""The layering rules of the codebase, enforced.

* ``graphc check`` (spec + graph + ops registry) never imports torch, so it stays fast;
* only ``graphc/export/`` imports onnx / onnxruntime.
"""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import ROOT

PACKAGE = ROOT / "graphc"


def test_checking_a_spec_imports_neither_torch_nor_onnx() -> None:
    code = (
        "import sys; from graphc.cli import main; "
        f"main(['check', {str(ROOT / 'specs' / 'gpt2.yaml')!r}, '--json']); "
        "bad = [m for m in ('torch', 'onnx', 'onnxruntime') if m in sys.modules]; "
        "sys.exit(f'imported: {bad}' if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr


def test_spec_and_graph_packages_do_not_import_torch() -> None:
    pattern = re.compile(r"^\s*(import|from)\s+torch\b", re.MULTILINE)
    offenders = [p for d in ("spec", "graph") for p in (PACKAGE / d).glob("*.py") if pattern.search(p.read_text())]
    assert not offenders, offenders


def test_only_export_imports_onnx() -> None:
    pattern = re.compile(r"^\s*(import|from)\s+onnx(runtime|script)?\b", re.MULTILINE)
    offenders = [p for p in PACKAGE.rglob("*.py") if "export" not in p.parts and pattern.search(p.read_text())]
    assert not offenders, offenders
