"""Compile folders shared by the serve/predict/architecture tests: each spec is compiled once
per test session (a compile costs seconds), into a temp folder removed at exit."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GPT_TINY = ["layers=1", "d=32", "heads=2", "ctx=16"]
_TMP = Path(tempfile.mkdtemp(prefix="graphc-compiled-"))
atexit.register(shutil.rmtree, _TMP, True)


@functools.cache
def compiled(name: str) -> Path:
    """``specs/NAME.yaml`` compiled (gpt_mini at a tiny size), weights = seeded init."""
    import graphc

    overrides = GPT_TINY if name == "gpt_mini" else None
    return graphc.compile(ROOT / "specs" / f"{name}.yaml", _TMP / name, overrides).out_dir
