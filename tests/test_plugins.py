"""User ops register through the same API as built-ins and are used by name in specs."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import graphc
from graphc.ops.registry import REGISTRY, unregister

SPEC = """
graphc: 1
name: plugin
inputs: {x: {shape: [B, 4]}}
nodes:
  act: {op: scaled_swish, in: x, beta: 2.0}
outputs: {y: act}
"""


@pytest.fixture
def plugin() -> Iterator[None]:
    sys.path.insert(0, str(Path(__file__).parent / "plugins"))
    import swish_plugin  # noqa: F401  (registers the op)

    yield
    unregister("scaled_swish")
    sys.modules.pop("swish_plugin", None)
    sys.path.pop(0)


def test_user_op_is_validated_built_and_in_the_schema(plugin: None) -> None:
    gm = graphc.build(SPEC, seed=0)
    x = torch.randn(3, 4)
    torch.testing.assert_close(gm(x), x * torch.sigmoid(2 * x))
    assert REGISTRY["scaled_swish"].source == "tests.plugins.swish_plugin"
    from graphc.spec.schema import spec_schema

    assert "ScaledSwishNode" in spec_schema()["$defs"]
    with pytest.raises(graphc.GraphcError, match="beta"):
        graphc.check(SPEC.replace("beta: 2.0", "beta: -1"))


def test_unknown_op_without_the_plugin() -> None:
    assert "scaled_swish" not in REGISTRY
    with pytest.raises(graphc.GraphcError, match="unknown op 'scaled_swish'"):
        graphc.check(SPEC)


def test_cli_plugin_flag(tmp_path: Path, cli: object) -> None:
    spec = tmp_path / "p.yaml"
    spec.write_text(SPEC)
    sys.path.insert(0, str(Path(__file__).parent / "plugins"))
    try:
        res = cli("--plugin", "swish_plugin", "check", str(spec))  # type: ignore[operator]
        assert res.code == 0, res.err
        bad = cli("--plugin", "no_such_module_xyz", "check", str(spec))  # type: ignore[operator]
        assert bad.code == 1 and "--plugin no_such_module_xyz: cannot import it" in bad.err
    finally:
        unregister("scaled_swish")
        sys.modules.pop("swish_plugin", None)
        sys.path.pop(0)
