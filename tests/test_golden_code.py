"""Golden files pin the generated fx code (top module and one block submodule) and the text
of shape errors, so a change to lowering or messages shows up as a reviewable diff.

Regenerate after a deliberate change: ``GRAPHC_UPDATE_GOLDEN=1 pytest tests/test_golden_code.py``.
"""

from __future__ import annotations

import os

import pytest
from conftest import ROOT, run_cli

GOLDEN = ROOT / "tests" / "golden"
UPDATE = os.environ.get("GRAPHC_UPDATE_GOLDEN") == "1"


def _compare(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE or not path.exists():
        path.write_text(text)
        if not UPDATE:
            pytest.fail(f"wrote missing golden tests/golden/{name}; review it")
    assert text == path.read_text(), f"tests/golden/{name} differs; rerun with GRAPHC_UPDATE_GOLDEN=1 if intended"


def _code(module: object) -> str:
    return str(module.code).strip() + "\n"  # type: ignore[attr-defined]


@pytest.mark.parametrize(("spec", "stem", "block"), [("specs/mlp.yaml", "mlp", None), ("tests/golden/tower.yaml", "tower", "body.1")])
def test_generated_code(spec: str, stem: str, block: str | None) -> None:
    import graphc

    gm = graphc.build(str(ROOT / spec), seed=0)
    _compare(f"{stem}.top.py.txt", _code(gm))
    if block is not None:
        sub = gm.get_submodule(block)
        _compare(f"{stem}.{block}.py.txt", _code(sub))


@pytest.mark.parametrize("case", ["flatten_size", "shape_add_mismatch"])
def test_shape_error_text(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    res = run_cli("check", f"tests/invalid/{case}.yaml")
    assert res.code == 1
    _compare(f"{case}.err.txt", res.err)


def test_golden_spec_checks() -> None:
    res = run_cli("check", str(GOLDEN / "tower.yaml"))
    assert res.code == 0 and "outputs y [B, 3]" in res.out
