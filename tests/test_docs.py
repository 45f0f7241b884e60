"""docs/ops.md is generated from the registry and must be current."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from conftest import ROOT

from graphc.ops import REGISTRY


def _tool() -> Any:
    """tools/gen_ops_docs.py, imported from its path (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location("gen_ops_docs", ROOT / "tools" / "gen_ops_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


docs: Any = _tool()


def test_ops_md_is_up_to_date() -> None:
    current = docs.OPS_MD.read_text(encoding="utf-8") if docs.OPS_MD.exists() else ""
    assert current == docs.render(), f"docs/ops.md is out of date; regenerate it with `{docs.REGENERATE}`"


def test_every_builtin_op_is_documented_with_its_args() -> None:
    text = docs.render()
    for name, d in REGISTRY.items():
        if d.source != "builtin":
            continue
        assert f"### `{name}`" in text
        for fname, field in d.cls.model_fields.items():
            assert f"| `{field.alias or fname}` |" in text, f"{name}.{fname} missing from docs"


def test_type_rendering() -> None:
    from typing import Literal

    assert docs.type_str(int | list[int]) == "int \\| list[int]"
    assert docs.type_str(Literal["a", "b"]) == '"a" \\| "b"'
    assert docs.type_str(float | None) == "float \\| null"


def test_check_mode_reports_stale_file(tmp_path: Path, capsys: object) -> None:
    stale = tmp_path / "ops.md"
    stale.write_text("old\n")
    assert docs.main(["--check", "--out", str(stale)]) == 1
    assert docs.main(["--out", str(stale)]) == 0
    assert docs.main(["--check", "--out", str(stale)]) == 0
    assert stale.read_text() == docs.render()


def test_the_tool_runs_as_a_script() -> None:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "gen_ops_docs.py"), "--check"], capture_output=True, text=True, cwd="/")
    assert proc.returncode == 0, proc.stderr
