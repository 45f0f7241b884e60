"""Hostile or broken YAML fails fast with one positioned error line, never a traceback.

The timing and no-traceback claims use real subprocesses (``python -m graphc check``), as a
user would run it; the time is measured inside the test with generous slack for slow CI.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from graphc.errors import SpecError
from graphc.spec.yaml_loader import load_yaml

ERROR_LINE = re.compile(r"^.+:\d+:\d+: error: \S.*$")

ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
    for i in range(8)
)


def _check(tmp_path: Path, data: bytes, name: str = "spec.yaml") -> tuple[subprocess.CompletedProcess[str], float]:
    path = tmp_path / name
    path.write_bytes(data)
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "graphc", "check", str(path)], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    return res, time.perf_counter() - t0


def _assert_one_error(res: subprocess.CompletedProcess[str], seconds: float, fragment: str) -> str:
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    lines = res.stderr.splitlines()
    assert len(lines) == 2, res.stderr
    assert ERROR_LINE.match(lines[0]), lines[0]
    assert lines[1] == "1 error"
    assert fragment in lines[0], lines[0]
    assert seconds < 5, f"took {seconds:.2f} s (goal: 1 s)"  # measured ~0.3 s; slack for noisy CI
    return lines[0]


HOSTILE = {
    "alias_bomb": (ALIAS_BOMB.encode(), "alias bomb"),
    "deep_brackets": (b"a: " + b"[" * 600 + b"]" * 600 + b"\n", "nesting deeper than"),
    "empty": (b"", "the spec is empty"),
    "nul_byte": (b"graphc: 1\nname: a\x00b\n", "NUL byte"),
    "bad_utf8": (b"graphc: 1\nname: caf\xe9\n", "invalid UTF-8"),
    "top_level_list": (b"- graphc: 1\n- name: x\n", "must be a mapping, not a list"),
    "duplicate_keys": (b"graphc: 1\nname: a\nname: b\n", "duplicate key 'name' (first defined at line 2)"),
}


def test_alias_bomb_is_small() -> None:
    assert 400 <= len(ALIAS_BOMB) <= 700


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_input_fails_fast_with_one_error(case: str, tmp_path: Path) -> None:
    data, fragment = HOSTILE[case]
    res, seconds = _check(tmp_path, data)
    line = _assert_one_error(res, seconds, fragment)
    assert line.startswith(str(tmp_path / "spec.yaml") + ":")


def test_duplicate_key_points_at_second(tmp_path: Path) -> None:
    res, seconds = _check(tmp_path, b"graphc: 1\nname: a\nname: b\n")
    line = _assert_one_error(res, seconds, "duplicate key")
    assert ":3:1: error:" in line


def test_python_tag_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    data = f"graphc: 1\nname: !!python/object/apply:os.system ['touch {marker}']\n".encode()
    res, seconds = _check(tmp_path, data)
    _assert_one_error(res, seconds, "is not allowed in a spec")
    assert not marker.exists()


def test_missing_file_is_a_clean_error(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "graphc", "check", "nope.yaml"], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    _assert_one_error(res, time.perf_counter() - t0, "cannot read spec")


def test_yaml_12_scalars() -> None:
    doc = load_yaml("a: 1e-3\nb: no\nc: off\nd: yes\ne: true\nf: 0x10\ng: 1_000\nh: .5\n", "t.yaml")
    assert doc["a"] == pytest.approx(0.001) and isinstance(doc["a"], float)
    assert doc["b"] == "no" and doc["c"] == "off" and doc["d"] == "yes"
    assert doc["e"] is True and doc["f"] == 16 and doc["g"] == "1_000" and doc["h"] == 0.5


def test_positions_are_kept() -> None:
    doc = load_yaml("graphc: 1\nnodes:\n  fc1: {op: linear, out: 5}\n", "t.yaml")
    assert doc.key_pos["nodes"].line == 2
    assert doc["nodes"].val_pos["fc1"].line == 3 and doc["nodes"]["fc1"].val_pos["out"].col == 26


@pytest.mark.parametrize("text", ["a: !custom 3\n", "a: !!binary aGk=\n", "a: !!set {x}\n"])
def test_other_tags_are_refused(text: str) -> None:
    with pytest.raises(SpecError, match="tag"):
        load_yaml(text, "t.yaml")


def test_unquoted_expression_in_flow_mapping() -> None:
    doc = load_yaml("n: {op: linear, out: ${4 * d}, in: x}\n", "t.yaml")
    assert doc["n"]["out"] == "${4 * d}" and doc["n"]["in"] == "x"
    assert doc["n"].val_pos["in"].col == 36
