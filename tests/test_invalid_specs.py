"""Every spec in tests/invalid/ fails ``graphc check`` with exactly its golden error text.

Each ``X.yaml`` holds one mistake (its first comment line says which); ``X.expected`` is
what ``graphc check`` prints on stderr: the diagnostics and the count line.  Regenerate after
a deliberate message change with ``GRAPHC_UPDATE_GOLDEN=1 pytest tests/test_invalid_specs.py``
and read the diff: each message must be one precise line at the right line:col.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from conftest import ROOT, run_cli

INVALID = ROOT / "tests" / "invalid"
# a spec in a subfolder is its folder's entry point only when it is called main.yaml
CASES = sorted([*INVALID.glob("*.yaml"), *INVALID.glob("*/main.yaml")])
UPDATE = os.environ.get("GRAPHC_UPDATE_GOLDEN") == "1"
LINE = re.compile(r"^[^:\s]+\.yaml:\d+:\d+: error: \S.*$")


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@pytest.mark.parametrize("spec", CASES, ids=[_rel(p).removeprefix("tests/invalid/") for p in CASES])
def test_invalid_spec_matches_golden(spec: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    res = run_cli("check", _rel(spec))
    assert res.code == 1, res.out + res.err
    assert "Traceback" not in res.err
    lines = res.err.splitlines()
    n = len(lines) - 1
    assert n >= 1 and lines[-1] == f"{n} error{'s' if n != 1 else ''}"
    for line in lines[:-1]:
        assert LINE.match(line), line
    golden = spec.with_suffix(".expected")
    if UPDATE or not golden.exists():
        golden.write_text(res.err)
        if not UPDATE:
            pytest.fail(f"wrote missing golden {_rel(golden)}; review it")
    assert res.err == golden.read_text()


def test_enough_distinct_mistakes() -> None:
    assert len(CASES) >= 30
    for spec in CASES:
        assert spec.read_text().startswith("# mistake"), f"{spec.name}: first line should say what the mistake is"


def test_no_orphan_goldens() -> None:
    goldens = {p.with_suffix(".yaml") for p in INVALID.rglob("*.expected")}
    assert goldens <= set(CASES)
