"""The layering rules of the codebase, enforced.

* ``graphc check`` (spec + graph + ops registry) never imports torch, so it stays fast;
* only ``graphc/export/`` imports onnx / onnxscript; onnxruntime also ``graphc/serve/``;
* serving a compile folder, and ``predict`` / ``generate`` on one, never import torch.
"""

from __future__ import annotations

import os
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
    pattern = re.compile(r"^\s*(import|from)\s+onnx(script)?\b", re.MULTILINE)
    offenders = [p for p in PACKAGE.rglob("*.py") if "export" not in p.parts and pattern.search(p.read_text())]
    assert not offenders, offenders
    runtime = re.compile(r"^\s*(import|from)\s+onnxruntime\b", re.MULTILINE)
    offenders = [p for p in PACKAGE.rglob("*.py") if not {"export", "serve"} & set(p.parts) and runtime.search(p.read_text())]
    assert not offenders, offenders


SERVE_WITHOUT_TORCH = """
import socket, sys, threading, time
import httpx, numpy as np
from graphc.cli import main
from graphc.serve import make_server
digits, gpt, tmp = sys.argv[1:4]
sock = socket.socket(); sock.bind(("127.0.0.1", 0))
server = make_server(digits, log_level="warning")
thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True); thread.start()
while not server.started: time.sleep(0.02)
r = httpx.post(f"http://127.0.0.1:{sock.getsockname()[1]}/v1/predict", json={"inputs": {"image": np.zeros((2, 1, 8, 8)).tolist()}})
assert r.status_code == 200, r.text
server.should_exit = True; thread.join()
np.savez(f"{tmp}/in.npz", image=np.zeros((3, 1, 8, 8), np.float32))
assert main(["predict", digits, f"{tmp}/in.npz", "-o", f"{tmp}/out.csv", "-q"]) == 0
assert main(["generate", gpt, "ab", "--max-new-tokens", "3"]) == 0
bad = [m for m in ("torch", "onnx") if m in sys.modules]
sys.exit(f"imported: {bad}" if bad else 0)
"""


def test_serving_and_onnx_predict_and_generate_import_no_torch(tmp_path: object) -> None:
    from compiled import compiled

    args = [str(compiled("digits_cnn")), str(compiled("gpt_mini")), str(tmp_path)]
    proc = subprocess.run([sys.executable, "-c", SERVE_WITHOUT_TORCH, *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
