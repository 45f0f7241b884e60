"""Declarable initialization: global schemes, node overrides, `only`, and seeding."""

from __future__ import annotations

import torch

import graphc


def _spec(node_init: object) -> dict[str, object]:
    return {
        "graphc": 1,
        "name": "init",
        "inputs": {"x": {"shape": ["B", 64]}},
        "init": {"weight": "normal", "std": 0.5, "bias": "zeros"},
        "nodes": {
            "a": {"op": "linear", "in": "x", "out": 256},
            "attn": {"op": "attention", "in": "a", "heads": 4, "init": node_init},
        },
        "outputs": {"y": "attn"},
    }


def test_global_init_then_node_init_only_on_matching_params() -> None:
    spec = {**_spec({"weight": "normal", "std": 0.5, "scale": 0.1, "only": ["proj.weight"]})}
    spec["inputs"] = {"x": {"shape": ["B", "T", 64]}}
    gm = graphc.build(spec, seed=0)
    assert abs(gm.a.weight.std().item() - 0.5) < 0.02
    assert abs(gm.attn.qkv.weight.std().item() - 0.5) < 0.02, "qkv keeps the global init"
    assert abs(gm.attn.proj.weight.std().item() - 0.05) < 0.005, "proj gets the node init, scaled"
    assert torch.all(gm.attn.qkv.bias == 0) and torch.all(gm.a.bias == 0)


def test_node_init_scheme_by_name() -> None:
    spec = _spec("zeros")
    spec["inputs"] = {"x": {"shape": ["B", "T", 64]}}
    gm = graphc.build(spec, seed=0)
    assert torch.all(gm.attn.qkv.weight == 0) and torch.all(gm.attn.proj.weight == 0)
    assert gm.a.weight.abs().sum() > 0


def test_seeded_build_is_deterministic() -> None:
    a = graphc.build("specs/mlp.yaml", seed=3).state_dict()
    b = graphc.build("specs/mlp.yaml", seed=3).state_dict()
    c = graphc.build("specs/mlp.yaml", seed=4).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
