"""Every spec in specs/ is a real, documented example that checks cleanly at full size."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import SPECS, run_cli


@pytest.mark.parametrize("spec", SPECS, ids=[s.stem for s in SPECS])
def test_spec_checks_at_full_size_without_warnings(spec: Path) -> None:
    res = run_cli("check", str(spec))
    assert res.code == 0, res.err
    assert "warning" not in res.err, res.err
    assert f"{spec}: ok:" in res.out


@pytest.mark.parametrize("spec", SPECS, ids=[s.stem for s in SPECS])
def test_spec_is_documented(spec: Path) -> None:
    lines = spec.read_text().splitlines()
    assert lines[0] == "# yaml-language-server: $schema=../docs/graphc.schema.json"
    assert lines[1].startswith("# ") and len(lines[1]) > 20, "the second line says what the model is"
