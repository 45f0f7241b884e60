"""Hostile specs: every one ends in a positioned error, in bounded time and memory.

Each row is one payload from issue #9 (expression overflows, size limits, special files as
specs or includes, names that are one Python identifier after NFKC normalisation).  Each runs
``graphc check`` in a bounded child process (tests/hostile.py) and asserts: exit 1 (2 for
usage), no traceback, under 5 s and 1 GiB, a ``FILE:LINE:COL: error:`` line with the expected
words, and nothing in the folder changed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hostile import assert_clean, assert_unchanged, run_guarded, snapshot

from graphc.spec.limits import ALL, MAX_FILE_BYTES, MAX_YAML_VALUES

FIFO = object()  # a file entry that is made as a named pipe


def spec(params: str = "{}", nodes: str = "  fc: {op: linear, out: 4}\n", outputs: str = "[fc]",
         inputs: str = "  x: {shape: [B, 4]}\n", extra: str = "") -> str:
    """A small valid spec with one part replaced by a payload."""
    return (f"graphc: 1\nname: hostile\nparams: {params}\n{extra}inputs:\n{inputs}nodes:\n{nodes}"
            f"outputs: {outputs}\n")


def expr(text: str) -> str:
    """A spec whose param ``p`` is the expression ``text`` (line 3)."""
    return spec(params=f"{{p: \"${{{text}}}\"}}")


BLOCK_B = "blocks:\n  b:\n    inputs: [x]\n    nodes:\n      fc: {op: linear, out: 4}\n    outputs: [fc]\n"
def doubling(times: int) -> str:
    """Params s0 (1 KiB) .. sN, each twice the one before: s10 is 1 MiB, s40 would be 1 TiB."""
    return "{s0: " + "a" * 1024 + ", " + ", ".join(f's{i + 1}: "${{s{i} + s{i}}}"' for i in range(times)) + "}"


DOUBLING = doubling(40)
TEMPLATE = "{s0: " + "a" * 1024 + ", " + ", ".join(f's{i + 1}: "${{s{i}}}${{s{i}}}"' for i in range(40)) + "}"
BLOCK_T = ("blocks:\n  t:\n    params: {t: str}\n    inputs: [x]\n    nodes:\n"
           '      fc: {op: linear, out: 4, doc: "${t + t + t}"}\n    outputs: [fc]\n')
WIDE = "{s: " + "b" * 1000 + ', t: "' + "${s}" * 2000 + '"}'


@dataclass
class Case:
    files: dict[str, object]  # name -> text, or FIFO
    contains: str
    arg: str = "spec.yaml"  # what `graphc check` is given
    env: dict[str, str] = field(default_factory=dict)
    codes: tuple[int, ...] = (1,)


CASES: dict[str, Case] = {
    # --- expressions: overflow, non-finite values, huge operands --------------------------
    "int_of_float_overflow": Case({"spec.yaml": expr("int(1e308*10)")}, "spec.yaml:3:"),
    "float_overflow": Case({"spec.yaml": expr("1e308 * 10")}, "not finite"),
    "round_of_inf": Case({"spec.yaml": expr("round(1e308 * 10)")}, "not finite"),
    "ceil_of_inf": Case({"spec.yaml": expr("ceil(float('inf'))")}, "not finite"),
    "floor_of_nan": Case({"spec.yaml": expr("floor(float('nan'))")}, "not finite"),
    "int_of_nan": Case({"spec.yaml": expr("int(float('nan'))")}, "not finite"),
    "float_literal_inf": Case({"spec.yaml": expr("1e999 + 1")}, "not finite"),
    "float_pow_overflow": Case({"spec.yaml": expr("(1e300) ** 2.0")}, "not finite"),
    "power_tower": Case({"spec.yaml": expr("2 ** 10 ** 10")}, "exponent is too large"),
    "int_over_64_bits": Case({"spec.yaml": expr("2 ** 40 * 2 ** 40")}, "integer result is too large"),
    "round_huge_digits": Case({"spec.yaml": expr("round(5, -2 ** 62)")}, "ndigits"),
    "shift_not_allowed": Case({"spec.yaml": expr("1 << 100000")}, "not allowed"),
    "int_of_long_digit_text": Case({"spec.yaml": spec(params="{s: '" + "9" * 5000 + "', p: \"${int(s)}\"}")}, "int()"),
    "string_doubling": Case({"spec.yaml": spec(params=DOUBLING)}, "GRAPHC_MAX_STRING"),
    "string_template_doubling": Case({"spec.yaml": spec(params=TEMPLATE)}, "GRAPHC_MAX_STRING"),
    "string_many_expressions": Case({"spec.yaml": spec(params=WIDE)}, "GRAPHC_MAX_STRING"),
    "string_doubling_in_block": Case({"spec.yaml": spec(params=doubling(10), nodes='  body: {block: t, repeat: 3, t: "${s10}"}\n',
                                                        outputs="[body]", extra=BLOCK_T)}, "GRAPHC_MAX_STRING"),
    "text_total_over_params": Case({"spec.yaml": spec(params=doubling(9)[:-1] + ", " + ", ".join(
        f'c{i}: "x${{s9}}"' for i in range(3000)) + "}")}, "GRAPHC_MAX_TEXT"),
    "text_total_over_block_copies": Case({"spec.yaml": spec(params=doubling(9), nodes='  body: {block: t, repeat: 500, t: "${s9}"}\n',
                                                            outputs="[body]", extra=BLOCK_T.replace("${t + t + t}", "x${t}"))},
                                         "GRAPHC_MAX_TEXT"),
    # --- YAML literals ---------------------------------------------------------------------
    "int_literal_5000_digits": Case({"spec.yaml": spec(params="{n: " + "9" * 5000 + "}")}, "spec.yaml:3:"),
    "hex_literal_5000_digits": Case({"spec.yaml": spec(params="{n: 0x" + "f" * 5000 + "}")}, "too large"),
    "int_literal_over_64_bits": Case({"spec.yaml": spec(nodes="  fc: {op: linear, out: 99999999999999999999999}\n")},
                                     "spec.yaml:7:"),
    "tagged_int_5000_digits": Case({"spec.yaml": spec(params="{n: !!int " + "9" * 5000 + "}")}, "too large"),
    # --- size limits -----------------------------------------------------------------------
    "repeat_million": Case({"spec.yaml": spec(nodes="  body: {block: b, repeat: 1000000}\n", outputs="[body]",
                                              extra=BLOCK_B)}, "GRAPHC_MAX_REPEAT"),
    "repeat_10_pow_18": Case({"spec.yaml": spec(nodes='  body: {block: b, repeat: "${10**18}"}\n', outputs="[body]",
                                                extra=BLOCK_B)}, "GRAPHC_MAX_REPEAT"),
    "repeat_lowered_by_env": Case({"spec.yaml": spec(nodes="  body: {block: b, repeat: 6}\n", outputs="[body]",
                                                     extra=BLOCK_B)}, "limit of 5 copies", env={"GRAPHC_MAX_REPEAT": "5"}),
    "nested_repeats_over_node_limit": Case({"spec.yaml": spec(nodes="  body: {block: c, repeat: 1000}\n", outputs="[body]",
                                                              extra=BLOCK_B + "  c:\n    inputs: [x]\n    nodes:\n"
                                                              "      inner: {block: b, repeat: 1000}\n    outputs: [inner]\n")},
                                           "GRAPHC_MAX_NODES"),
    "nested_expression_repeats": Case({"spec.yaml": spec(params="{n: 100}", nodes='  body: {block: c, repeat: 1000, n: "${n}"}\n',
                                                         outputs="[body]", extra=BLOCK_B + "  c:\n    params: {n: int}\n"
                                                         '    inputs: [x]\n    nodes:\n      inner: {block: b, repeat: "${n}"}\n'
                                                         "    outputs: [inner]\n")},
                                      "GRAPHC_MAX_NODES", env={"GRAPHC_MAX_NODES": "5000"}),
    "flat_spec_over_node_limit": Case({"spec.yaml": spec(nodes="".join(f"  n{i}: {{op: relu}}\n" for i in range(60)),
                                                         outputs="[n59]")}, "spec.yaml:6:1: error: nodes: the spec has 61 nodes",
                                      env={"GRAPHC_MAX_NODES": "50"}),
    "huge_flow_list": Case({"spec.yaml": "graphc: 1\nname: big\nv: [" + "1," * (MAX_YAML_VALUES.default + 10) + "1]\n"},
                           "GRAPHC_MAX_YAML_VALUES"),
    "file_over_size_limit": Case({"spec.yaml": spec() + "#" * (MAX_FILE_BYTES.default + 1) + "\n"}, "GRAPHC_MAX_FILE_BYTES"),
    "include_over_size_limit": Case({"spec.yaml": spec(extra="include: [lib.yaml]\n"),
                                     "lib.yaml": "graphc: 1\n" + "#" * 5000 + "\n"}, "spec.yaml:4:",
                                    env={"GRAPHC_MAX_FILE_BYTES": "4096"}),
    "limit_env_not_a_number": Case({"spec.yaml": spec(nodes="  body: {block: b, repeat: 2}\n", outputs="[body]",
                                                      extra=BLOCK_B)}, "GRAPHC_MAX_REPEAT", env={"GRAPHC_MAX_REPEAT": "lots"}),
    # --- spec and include paths --------------------------------------------------------------
    "include_dev_zero": Case({"spec.yaml": spec(extra="include: [/dev/zero]\n")}, "not a regular file"),
    "include_dev_urandom": Case({"spec.yaml": spec(extra="include: [/dev/urandom]\n")}, "not a regular file"),
    "include_fifo": Case({"spec.yaml": spec(extra="include: [pipe]\n"), "pipe": FIFO}, "spec.yaml:4:"),
    "include_folder": Case({"spec.yaml": spec(extra="include: [lib]\n"), "lib/x.yaml": "graphc: 1\n"}, "folder"),
    "include_missing": Case({"spec.yaml": spec(extra="include: [nowhere.yaml]\n")}, "No such file"),
    "spec_is_fifo": Case({"pipe": FIFO}, "pipe:1:1: error: cannot read spec", arg="pipe"),
    "spec_is_dev_zero": Case({}, "/dev/zero:1:1: error: cannot read spec", arg="/dev/zero"),
    "spec_missing_no_suffix": Case({}, "nowhere:1:1: error: cannot read spec: No such file", arg="nowhere"),
    "spec_is_folder": Case({"sub/x.yaml": "graphc: 1\n"}, "sub:1:1: error: cannot read spec", arg="sub"),
    # --- names that are one Python identifier after NFKC normalisation -----------------------
    "nfkc_node_names": Case({"spec.yaml": spec(nodes="  fc1: {op: linear, out: 4}\n  𝐟𝐜1: {op: linear, out: 4}\n",
                                               outputs="[𝐟𝐜1]")}, "'𝐟𝐜1' is the same Python identifier as 'fc1'"),
    "nfkc_input_names": Case({"spec.yaml": spec(inputs="  x: {shape: [B, 4]}\n  𝐱: {shape: [B, 4]}\n",
                                                nodes="  fc: {op: add, in: [x, 𝐱]}\n")}, "'𝐱' is the same Python identifier as 'x'"),
    "nfkc_input_and_node": Case({"spec.yaml": spec(nodes="  ｘ: {op: linear, out: 4}\n", outputs="[ｘ]")},
                                "'ｘ' is the same Python identifier as 'x'"),
    "nfkc_output_names": Case({"spec.yaml": spec(outputs="{y: fc, ｙ: fc}")}, "outputs.ｙ: 'ｙ' is the same"),
    "nfkc_param_names": Case({"spec.yaml": spec(params="{d: 4, 𝐝: 8}")}, "params.𝐝: '𝐝'"),
    "nfkc_block_names": Case({"spec.yaml": spec(nodes="  body: {block: b}\n", outputs="[body]",
                                                extra=BLOCK_B + BLOCK_B.removeprefix("blocks:\n").replace("  b:", "  𝐛:"))},
                             "blocks.𝐛: '𝐛'"),
    "nfkc_names_inside_block": Case({"spec.yaml": spec(nodes="  body: {block: b, repeat: 3}\n", outputs="[body]",
                                                       extra=BLOCK_B.replace("    outputs: [fc]", "      𝐟𝐜: {op: relu}\n    outputs: [𝐟𝐜]"))},
                                    "'𝐟𝐜' is the same Python identifier as 'fc'"),
    "nfkc_reserved_attribute": Case({"spec.yaml": spec(nodes="  ｆｏｒｗａｒｄ: {op: linear, out: 4}\n", outputs="[ｆｏｒｗａｒｄ]")},
                                    "already have 'forward'"),
}


def _make(folder: Path, files: dict[str, object]) -> None:
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is FIFO:
            os.mkfifo(path)
        else:
            assert isinstance(content, str)
            path.write_text(content, encoding="utf-8")


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_spec_fails_cleanly(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    case = CASES[name]
    _make(tmp_path, case.files)
    for limit in ALL:
        monkeypatch.delenv(limit.env, raising=False)
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    before = snapshot(tmp_path)
    r = run_guarded("check", case.arg, cwd=tmp_path)
    assert_clean(r, codes=case.codes, contains=case.contains)
    assert len(r.error_lines()) <= 2, r.err  # one mistake, one line (a clash may name both sides once)
    assert_unchanged(before, snapshot(tmp_path))


def test_enough_hostile_cases() -> None:
    assert len(CASES) >= 30


def test_a_limit_raised_by_its_variable_lets_the_spec_through(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The error says which variable raises a limit; setting it does raise it."""
    (tmp_path / "spec.yaml").write_text(spec(nodes="  body: {block: b, repeat: 6}\n", outputs="[body]", extra=BLOCK_B))
    monkeypatch.setenv("GRAPHC_MAX_REPEAT", "5")
    assert_clean(run_guarded("check", "spec.yaml", cwd=tmp_path), contains="set GRAPHC_MAX_REPEAT to raise it")
    monkeypatch.setenv("GRAPHC_MAX_REPEAT", "6")
    r = run_guarded("check", "spec.yaml", cwd=tmp_path)
    assert r.code == 0, r.err
    assert "ok: 6 nodes" in r.out


def test_a_one_line_flow_mapping_is_still_spec_text() -> None:
    """The Python API keeps reading one-line ``{...}`` text as YAML (only the CLI's words are paths)."""
    from graphc.spec.load import load_spec

    s = load_spec("{graphc: 1, name: t, inputs: {x: {shape: [2]}}, nodes: {r: {op: relu}}, outputs: [r]}")
    assert s.file == "<text>" and s.name == "t"


def test_a_param_spelled_with_compatibility_characters_is_found() -> None:
    """Python's parser NFKC-normalises ``${𝐝}`` to ``d``; the lookup follows it to the param."""
    from graphc.spec.expr import ExprError, evaluate

    assert evaluate("𝐝 * 2", {"𝐝": 4}) == 8
    with pytest.raises(ExprError, match="unknown param 'q'"):
        evaluate("q", {"𝐝": 4})
