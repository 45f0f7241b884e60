"""A hostile ``--config RECIPE``: refused at once with one positioned line, like a hostile spec.

The recipe file goes through the spec loader's bounded reader, so a named pipe does not
block forever, ``/dev/zero`` is not read until memory runs out, and a folder or an
oversized file is named as such; nothing in the folder changes.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hostile import assert_clean, assert_unchanged, run_guarded, snapshot

from graphc.spec.limits import MAX_FILE_BYTES

MLP = str(Path(__file__).resolve().parent.parent / "specs" / "mlp.yaml")


def _fifo(folder: Path) -> str:
    os.mkfifo(folder / "recipe.yaml")
    return "recipe.yaml"


def _folder(folder: Path) -> str:
    (folder / "recipe.yaml").mkdir()
    return "recipe.yaml"


def _huge(folder: Path) -> str:
    with open(folder / "recipe.yaml", "wb") as f:
        f.truncate(MAX_FILE_BYTES.value + 1)  # sparse: costs no disk
    return "recipe.yaml"


CASES = {
    "fifo": (_fifo, "not a regular file"),
    "dev_zero": (lambda folder: "/dev/zero", "not a regular file"),
    "folder": (_folder, "it is a folder, not a file"),
    "too_big": (_huge, f"file of {MAX_FILE_BYTES.value + 1:,} bytes is over the limit"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_recipe_file(tmp_path: Path, case: str) -> None:
    make, message = CASES[case]
    config = make(tmp_path)
    before = snapshot(tmp_path)
    r = run_guarded("train", MLP, "--config", config, "-o", "run", cwd=tmp_path, torch=True)
    assert_clean(r, codes=(1,), positioned=True, contains=f"cannot read recipe: {message}")
    assert_unchanged(before, snapshot(tmp_path))
