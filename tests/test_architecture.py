"""The layering rules of the codebase (docs/design.md, "Stages and layering"), enforced.

Every module of ``graphc/`` belongs to one stage of :data:`STAGES`; a module imports only from
its own stage or an earlier one: never from a later stage, never the package front door
(``import graphc``, ``from graphc import check``: it imports the whole pipeline) and never
``graphc.cli`` (the CLI hands command modules what they need). Imports are read with ``ast``,
at every level: module top, inside functions, and under ``TYPE_CHECKING``.

Besides the order:

* ``graphc check`` (spec + graph + ops registry) never imports torch, so it stays fast;
* spec/, graph/, serve/, the base modules and the planners import no torch, even lazily;
* only export/ imports onnx (serve/ may use onnxruntime, which needs no torch).
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "graphc"

# The pipeline's stages, earliest first (the same table is in docs/design.md). A module's
# stage is that of the longest entry that is the module or a package above it ("graphc"
# itself means graphc/__init__.py only, so a new package must be added here). The op
# registry comes before spec: the spec's node union and JSON Schema are generated from it.
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("base", ("graphc.errors", "graphc.io", "graphc.outputs", "graphc.shapes", "graphc.version", "graphc.limits")),
    ("ops", ("graphc.ops",)),
    ("spec", ("graphc.spec",)),
    ("graph", ("graphc.graph", "graphc.summarize")),
    ("lower", ("graphc.lower",)),
    ("products", ("graphc.weights", "graphc.data", "graphc.train", "graphc.export")),
    ("services", ("graphc.serve", "graphc.sweep", "graphc.use")),
    ("front", ("graphc", "graphc.api", "graphc.cli", "graphc.__main__")),
)

# Imports that break the rules today and are being removed on other branches: each entry is
# (importer, imported). The lead empties this set; an entry that no longer occurs fails too.
KNOWN_VIOLATIONS: set[tuple[str, str]] = set()

NO_TORCH = ("graphc.spec", "graphc.graph", "graphc.serve", "graphc.shapes", "graphc.errors", "graphc.io", "graphc.version")


def _is_planner(module: str) -> bool:
    """Planners (weights/planner.py, memory plans) work from headers and shapes: no torch."""
    return "planner" in module.rsplit(".", 1)[-1] or module.endswith(".plan")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(dotted: str) -> bool:
    base = ROOT.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _imports(path: Path, module: str | None = None) -> Iterator[str]:
    """Every module ``path`` imports, at any level, as absolute dotted names.

    ``from graphc.x import y`` is ``graphc.x.y`` when y is a module, else ``graphc.x``; so
    ``from graphc import ops`` is graphc.ops while ``from graphc import check`` is the front
    door ``graphc``.
    """
    module = module or _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            for a in node.names:
                full = f"{source}.{a.name}"
                yield full if _is_module(full) else source


def _stage(module: str) -> int | None:
    best: tuple[int, int] | None = None  # (prefix length, stage index)
    for i, (_, prefixes) in enumerate(STAGES):
        for p in prefixes:
            within = module == p or (p != "graphc" and module.startswith(p + "."))  # "graphc": the front door only
            if within and (best is None or len(p) > best[0]):
                best = (len(p), i)
    return best[1] if best else None


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _graphc_edges() -> set[tuple[str, str]]:
    return {(_module_name(p), m) for p in _sources() for m in _imports(p) if m == "graphc" or m.startswith("graphc.")}


def test_every_module_has_a_stage() -> None:
    missing = [m for m in map(_module_name, _sources()) if _stage(m) is None]
    assert not missing, f"add these modules to STAGES here and in docs/design.md: {missing}"


def _violations() -> set[tuple[str, str]]:
    front = _stage("graphc")
    out = set()
    for importer, imported in _graphc_edges():
        a, b = _stage(importer), _stage(imported)
        if a is None or b is None:
            continue  # reported by test_every_module_has_a_stage
        if b > a or (imported == "graphc.cli" and importer != "graphc.__main__") or (imported == "graphc" and a != front):
            out.add((importer, imported))
    return out


def test_imports_point_down_the_pipeline() -> None:
    found = _violations()
    new = sorted(found - KNOWN_VIOLATIONS)
    shown = [f"{a} ({STAGES[_stage(a) or 0][0]}) imports {b} ({STAGES[_stage(b) or 0][0]})" for a, b in new]
    assert not new, "imports that point up the pipeline (docs/design.md):\n" + "\n".join(shown)


def test_known_violations_still_exist() -> None:
    """A fixed violation leaves the list, so the list stays the truth."""
    stale = sorted(KNOWN_VIOLATIONS - _violations())
    assert not stale, f"fixed: remove from KNOWN_VIOLATIONS: {stale}"


def test_the_rules_see_every_kind_of_import(tmp_path: Path) -> None:
    """The parser finds function-level, TYPE_CHECKING and relative imports, and tells the front
    door (``from graphc import check``) from a subpackage (``from graphc import ops``)."""
    src = tmp_path / "probe.py"
    src.write_text(
        "from typing import TYPE_CHECKING\n"
        "from graphc import ops, check\n"
        "if TYPE_CHECKING:\n    from graphc.lower.context import LowerCtx\n"
        "def f():\n    from ..export import api\n    import graphc.cli\n"
    )
    found = set(_imports(src, "graphc.spec.probe"))
    assert {"graphc.ops", "graphc", "graphc.lower.context", "graphc.export.api", "graphc.cli"} <= found


def _top(names: set[str]) -> set[str]:
    return {n.split(".")[0] for n in names}


def test_checking_a_spec_imports_neither_torch_nor_onnx() -> None:
    code = (
        "import sys; from graphc.cli import main; "
        f"main(['check', {str(ROOT / 'specs' / 'gpt2.yaml')!r}, '--json']); "
        "bad = [m for m in ('torch', 'onnx', 'onnxruntime') if m in sys.modules]; "
        "sys.exit(f'imported: {bad}' if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr


def test_torch_free_modules_and_planners_never_import_torch() -> None:
    modules = {_module_name(p): set(_imports(p)) for p in _sources()}
    offenders = sorted(m for m, names in modules.items() if (m.startswith(NO_TORCH) or _is_planner(m)) and "torch" in _top(names))
    assert not offenders, offenders


def test_only_export_imports_onnx_and_only_export_or_serve_onnxruntime() -> None:
    modules = {_module_name(p): _top(set(_imports(p))) for p in _sources()}
    onnx = sorted(m for m, tops in modules.items() if tops & {"onnx", "onnxscript"} and not m.startswith("graphc.export"))
    ort = sorted(m for m, tops in modules.items() if "onnxruntime" in tops and not m.startswith(("graphc.export", "graphc.serve")))
    assert not onnx and not ort, (onnx, ort)


def test_docs_design_has_the_same_stage_table() -> None:
    """docs/design.md's table (stage name, then its modules in backticks) is this one."""
    documented = []
    for line in (ROOT / "docs" / "design.md").read_text().splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 4 and cells[1].isdigit():
            documented.append((cells[2], tuple(re.findall(r"`(graphc[\w.]*)`", cells[3]))))
    assert documented == list(STAGES)


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
