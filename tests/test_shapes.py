"""Symbolic dims: opaque ``//`` and ``%`` atoms print as before and evaluate themselves."""

from __future__ import annotations

import pytest

from graphc.shapes import FloorDiv, Mod, Sym, dim_value

H, W = Sym.var("H"), Sym.var("W")


def test_an_opaque_floor_division_prints_like_python_and_evaluates_without_a_parser() -> None:
    d = (H - 3) // 2
    assert isinstance(d, Sym) and d.atoms() == {FloorDiv(H - 3, 2)}
    assert str(d) == "((H - 3)//2)"
    assert str(d * W + 1) == "((H - 3)//2)*W + 1"
    assert dim_value(d * W + 1, {"H": 11, "W": 5}) == 4 * 5 + 1


def test_nested_atoms_keep_python_semantics() -> None:
    d = ((H - 3) // 2 - 1) // 2 % 3
    assert str(d) == "(((((H - 3)//2) - 1)//2)%3)"
    for h in range(3, 40):
        assert dim_value(d, {"H": h}) == ((h - 3) // 2 - 1) // 2 % 3


def test_a_product_denominator_divides_by_the_whole_product() -> None:
    # the printed text "(W//3*H)" reads as (W//3)*H in Python; the atom means W // (3*H)
    d = W // (3 * H)
    assert str(d) == "(W//3*H)"
    assert dim_value(d, {"W": 50, "H": 2}) == 50 // 6


def test_equal_atoms_are_one_symbol_and_distinct_ones_are_not() -> None:
    assert (H - 3) // 2 == (H - 3) // 2 and hash((H - 3) // 2) == hash((H - 3) // 2)
    assert (H - 3) // 2 != (H - 3) % 2
    assert ((H - 3) // 2) - ((H - 3) // 2) == 0
    assert Sym.atom(Mod(H, 4)) == H % 4


def test_a_zero_divisor_is_a_value_error_naming_the_dim() -> None:
    with pytest.raises(ValueError, match=r"\(H//W\)"):
        dim_value(H // W, {"H": 3, "W": 0})
