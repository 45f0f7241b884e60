"""No spec text ever becomes code: every text field of a spec, filled with quote-breaking
payloads, is compiled, and the generated model.py is imported and loaded in a fresh
interpreter (``python -I``); a marker file that any payload would create must not appear.

Each payload tries a different way out of the kind of position it lands in (a docstring, a
``#`` comment, a string literal, a class name): triple quotes, single and double quotes,
a trailing backslash, newlines, ``#`` and the unicode line separator.  Several positions
share one spec so the whole file costs two compiles.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field

import graphc
from graphc.export.codegen import _comment_text, _literal
from graphc.graph.render import to_dot, to_mermaid
from graphc.ops.registry import unregister


def payloads(marker: Path) -> Iterator[str]:
    """Endless quote-breaking payloads, each of which would create ``marker`` if run."""
    act = f"open({str(marker)!r}, 'w').close()"
    kinds = [
        f'x"""\n{act}\n"""',
        f"y'''\n{act}\n'''",
        f'z"\n{act} #',
        f"w'\n{act} #",
        f"v\\\n{act}\n",
        f"u\u2028{act}\u2028#",
        f"t\r{act}\r",
        f"'); {act}; ('",
        f'"); {act}; ("',
        f"s # ]\"] {act}",
    ]
    while True:
        yield from kinds


@graphc.op("inj_tag", source="tests.test_injection", replace=True)
class InjTag(graphc.OpArgs):
    """Identity whose string and float params reach a layer's constructor (so model.py)."""

    label: str = "tag"
    scale: float = 1.0
    extra: list[str] = Field(default_factory=list)

    def infer(self, x: Any) -> Any:
        return x

    def lower(self, ctx: Any, x: Any) -> Any:
        import torch.nn as nn

        return ctx.module(nn.Identity, self.label, self.extra, scale=self.scale, tag={self.label: self.scale})(x)


@pytest.fixture(scope="module", autouse=True)
def _plugin() -> Iterator[None]:
    yield
    unregister("inj_tag")


def hostile_spec(marker: Path) -> dict[str, Any]:
    """A small spec with a payload in every text field the spec language lets through."""
    p = payloads(marker)
    block = next(p)
    return {
        "graphc": 1,
        "name": next(p),
        "doc": next(p),
        "params": {"label": next(p)},
        "inputs": {"x": {"shape": ["B", 6], "example": {"B": 2}, "doc": next(p)}},
        "blocks": {
            block: {
                "doc": next(p),
                "params": {"tag": {"type": "str", "default": "d", "doc": next(p)}},
                "inputs": ["a"],
                "nodes": {
                    "inner": {"op": "linear", "in": "a", "out": 4, "doc": next(p)},
                    "mark": {"op": "inj_tag", "label": "${tag}", "doc": next(p)},
                },
                "outputs": ["mark"],
            }
        },
        "nodes": {
            "fc1": {"op": "linear", "in": "x", "out": 6, "doc": next(p)},
            "tag1": {"op": "inj_tag", "label": "${label}", "scale": float("inf"), "extra": [next(p), next(p)]},
            "tag2": {"op": "inj_tag", "label": next(p), "scale": float("nan")},
            "body": {"block": block, "in": "tag2", "repeat": 2, "tag": next(p), "doc": next(p)},
            "twin": {"block": block, "in": "tag1", "tag": next(p)},
            "sum": {"op": "add", "in": ["body", "twin"]},
        },
        "outputs": {"logits": "sum"},
    }


def write_spec(path: Path, spec: dict[str, Any]) -> Path:
    """JSON is YAML: ``json.dumps`` writes every payload as an escaped double-quoted scalar."""
    path.write_text(json.dumps(spec, indent=1).replace("NaN", ".nan").replace("Infinity", ".inf") + "\n", encoding="utf-8")
    return path


def import_model(folder: Path) -> subprocess.CompletedProcess[str]:
    """``import model; model.load()`` in an isolated interpreter inside the compile folder."""
    code = "import sys; sys.path.insert(0, '.'); import model; m = model.load(); print(type(m).__name__)"
    return subprocess.run([sys.executable, "-I", "-c", code], cwd=folder, capture_output=True, text=True, timeout=120)


def test_payloads_in_every_spec_field_stay_text(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    spec = write_spec(tmp_path / "hostile.yaml", hostile_spec(marker))
    r = graphc.compile(str(spec), tmp_path / "out")
    assert r.verify.passed
    assert not marker.exists(), "compiling ran spec text"
    got = import_model(tmp_path / "out")
    assert got.returncode == 0, got.stderr
    assert not marker.exists(), "importing model.py ran spec text"
    src = (tmp_path / "out" / "model.py").read_text(encoding="utf-8")
    compile(src, "model.py", "exec")  # parses only; never executed here
    assert "\u2028" not in src and "\r" not in src
    first = src.splitlines()[0]
    assert first.startswith('"""') and first.count('"""') == 1, first  # the name cannot close the docstring


def test_payloads_in_the_spec_path_and_name_stay_text(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    folder = tmp_path / 'dir"""\n#\u2028'
    folder.mkdir()
    p = payloads(marker)
    next(p)
    spec = {"graphc": 1, "name": "name\\", "inputs": {"x": {"shape": ["B", 3], "example": {"B": 2}}},
            "nodes": {"fc": {"op": "linear", "in": "x", "out": 2}}, "outputs": {"y": "fc"}}
    path = write_spec(folder / f"{next(p)}.yaml".replace("/", "_"), spec)
    graphc.compile(path, tmp_path / "out")  # a Path: a str with a newline reads as YAML text
    got = import_model(tmp_path / "out")
    assert got.returncode == 0, got.stderr
    assert not marker.exists()


def test_literal_writes_only_plain_values() -> None:
    class Sneaky(str):
        def __repr__(self) -> str:
            return "__import__('os').system('true')"

    assert _literal(Sneaky("abc")) == "'abc'"
    assert _literal(float("inf")) == "float('inf')"
    assert eval(_literal({"a'\"": [1.5, None, (True,)]}), {}) == {"a'\"": [1.5, None, (True,)]}
    with pytest.raises(graphc.GraphcError):
        _literal(object())


@pytest.mark.parametrize("text", ['a"""b', "c'''d", "e\nf", "g\u2028h", "i\\", "j\x00k", "# l"])
def test_comment_text_is_one_line_without_quotes(text: str) -> None:
    out = _comment_text(text)
    assert out.isprintable() and '"' not in out and "'" not in out
    assert not out.endswith("\\") or out.endswith("\\\\")
    assert eval(f'"""{out}"""', {}) == text  # the escapes decode back to the text


def test_diagram_labels_are_escaped(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    tg = graphc.check(str(write_spec(tmp_path / "hostile.yaml", hostile_spec(marker))))
    mermaid = to_mermaid(tg)
    for line in mermaid.splitlines()[1:]:
        labels = line.split('"')
        assert len(labels) in (1, 3, 5), line  # every label is one quoted string, no stray quote
        assert line.startswith("  "), line  # no line break escaped from a label
    dot = to_dot(tg)
    for line in dot.splitlines()[1:-1]:
        assert line.startswith("  "), line
        assert line.replace('\\"', "").count('"') % 2 == 0, line
