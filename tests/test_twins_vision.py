"""Specs against hand-written PyTorch twins: same parameters, same outputs, same weights."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from conftest import ROOT
from twins_vision import MLP, SimpleCNN, SmallResNet

import graphc

CASES: list[tuple[str, list[str], Callable[[], torch.nn.Module]]] = [
    ("mlp.yaml", [], MLP),
    ("cifar_simplecnn.yaml", [], SimpleCNN),
    ("resnet_block.yaml", ["layers=2", "width=8"], lambda: SmallResNet(width=8, layers=2)),
]


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def built(spec: str, overrides: list[str]) -> tuple[torch.nn.Module, tuple[torch.Tensor, ...]]:
    tg = graphc.check(ROOT / "specs" / spec, overrides)
    return graphc.build(tg, seed=0), graphc.example_inputs(tg, B=3)


def output(y: object) -> torch.Tensor:
    out = next(iter(y.values())) if isinstance(y, dict) else y
    assert isinstance(out, torch.Tensor)
    return out


@pytest.mark.parametrize(("spec", "overrides", "make"), CASES, ids=[c[0] for c in CASES])
def test_twin_matches(spec: str, overrides: list[str], make: Callable[[], torch.nn.Module]) -> None:
    gm, xs = built(spec, overrides)
    twin = make()
    assert n_params(gm) == n_params(twin)
    sd = gm.state_dict()
    assert set(sd) == set(twin.state_dict())
    assert {k: v.shape for k, v in sd.items()} == {k: v.shape for k, v in twin.state_dict().items()}
    twin.load_state_dict(sd)
    for train in (False, True):
        gm.train(train)
        twin.train(train)
        torch.testing.assert_close(output(gm(*xs)), twin(*xs), rtol=1e-5, atol=1e-5, msg=lambda m, train=train: f"train={train}: {m}")
    for (k, a), b in zip(gm.state_dict().items(), twin.state_dict().values(), strict=True):  # BN running stats moved alike
        torch.testing.assert_close(a, b, msg=lambda m, k=k: f"{k}: {m}")


def test_twin_weights_load_into_the_spec_model() -> None:
    """The reverse direction: a hand-trained twin's weights drive the compiled model."""
    gm, xs = built("cifar_simplecnn.yaml", [])
    twin = SimpleCNN()
    gm.load_state_dict(twin.state_dict())
    gm.eval()
    torch.testing.assert_close(output(gm(*xs)), twin.eval()(*xs))
    assert output(gm(*xs)).shape == (3, 10)
