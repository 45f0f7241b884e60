"""graphc.errors: the Collector that gathers one phase's diagnostics."""

from __future__ import annotations

import pytest

from graphc.errors import Collector, Pos, ShapeError, SpecError


def test_collector_extend_takes_another_errors_diagnostics() -> None:
    found = SpecError.many([SpecError("b", Pos("f", 3)).diagnostics[0], SpecError("a", Pos("f", 1)).diagnostics[0]])
    errors = Collector()
    errors.error("c", Pos("f", 2))
    errors.extend(found.diagnostics)
    with pytest.raises(ShapeError) as e:
        errors.raise_if_any(ShapeError)
    assert [d.message for d in e.value.diagnostics] == ["a", "c", "b"]  # sorted by position


def test_an_empty_collector_raises_nothing() -> None:
    errors = Collector()
    errors.extend([])
    errors.raise_if_any()
    assert errors.errors == []
