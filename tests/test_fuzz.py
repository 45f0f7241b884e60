"""Fuzzing the front end: whatever the input, ``graphc.check`` either succeeds or raises a
GraphcError whose every diagnostic has a real file position.  Nothing else may escape
(no KeyError, TypeError, RecursionError, pydantic ValidationError, ...).

Examples per run: 400 mutations of real specs + 400 random documents (fixed, so the run
stays well under a minute on two slow cores).
"""

from __future__ import annotations

from pathlib import Path

from conftest import SPECS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import graphc
from graphc.errors import GraphcError

BASES = [p.read_text() for p in SPECS if p.stat().st_size < 20_000]
SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
NAMES = ["x", "fc1", "fc2", "act", "body", "in", "out", "op", "block", "repeat", "tie", "nodes", "blocks", "params", "${d}", "${1/0}"]
SCALARS = st.one_of(st.integers(-3, 300), st.floats(allow_nan=False, width=16), st.booleans(), st.none(), st.sampled_from(NAMES))


def _check(text: str, tmp: Path) -> None:
    path = tmp / "fuzz.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        graphc.check(str(path))
    except GraphcError as e:
        for d in e.diagnostics:
            assert d.pos.file and not d.pos.file.startswith("<graphc"), str(d)
            assert d.pos.line >= 1 and d.pos.col >= 1, str(d)
            assert "\n" not in d.message, str(d)


def _mutate(text: str, data: st.DataObject) -> str:
    lines = text.splitlines()
    kind = data.draw(st.sampled_from(["delete", "rename", "retype", "swap", "garbage", "truncate"]))
    i = data.draw(st.integers(0, max(0, len(lines) - 1)))
    line = lines[i] if lines else ""
    if kind == "delete":
        del lines[i:i + 1]
    elif kind == "rename" and ":" in line:
        key, _, rest = line.partition(":")
        lines[i] = key.rstrip() + data.draw(st.sampled_from(["x", "_", "s", ""])) + ":" + rest
    elif kind == "retype" and ":" in line:
        key, _, _ = line.partition(":")
        lines[i] = f"{key}: {data.draw(SCALARS)!s}"
    elif kind == "swap":
        words = [w for w in NAMES if w in line]
        if words:
            lines[i] = line.replace(words[0], data.draw(st.sampled_from(NAMES)), 1)
    elif kind == "garbage":
        at = data.draw(st.integers(0, len(text)))
        return text[:at] + data.draw(st.text(alphabet="{}[]:,-&*!|>'\"#%@`\t\n ab1$", max_size=8)) + text[at:]
    elif kind == "truncate":
        return text[: data.draw(st.integers(0, len(text)))]
    return "\n".join(lines) + "\n"


@SETTINGS
@given(data=st.data())
def test_mutated_specs_fail_cleanly(data: st.DataObject) -> None:
    import tempfile

    text = data.draw(st.sampled_from(BASES))
    for _ in range(data.draw(st.integers(1, 3))):
        text = _mutate(text, data)
    with tempfile.TemporaryDirectory() as tmp:
        _check(text, Path(tmp))


YAMLISH = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.sampled_from([*NAMES, "graphc", "name", "inputs", "outputs", "shape", "example"]), children, max_size=5),
    ),
    max_leaves=25,
)


def _dump(value: object, indent: int = 0) -> str:
    pad = "  " * indent
    if isinstance(value, dict):
        if not value:
            return pad + "{}\n"
        return "".join(
            f"{pad}{k}:\n{_dump(v, indent + 1)}" if isinstance(v, dict | list) and v else f"{pad}{k}: {_scalar(v)}\n"
            for k, v in value.items()
        )
    if isinstance(value, list):
        if not value:
            return pad + "[]\n"
        return "".join(f"{pad}-\n{_dump(v, indent + 1)}" if isinstance(v, dict | list) and v else f"{pad}- {_scalar(v)}\n" for v in value)
    return pad + _scalar(value) + "\n"


def _scalar(v: object) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict):
        return "{}"
    if isinstance(v, list):
        return "[]"
    return str(v) if not isinstance(v, str) else f'"{v}"'


@SETTINGS
@given(doc=YAMLISH, header=st.booleans())
def test_random_documents_fail_cleanly(doc: object, header: bool) -> None:
    import tempfile

    text = ("graphc: 1\nname: fuzz\n" if header and isinstance(doc, dict) else "") + _dump(doc)
    with tempfile.TemporaryDirectory() as tmp:
        _check(text, Path(tmp))
