"""Activation checkpointing per block call: identical gradients, real recomputation, and the
two ways to ask for it (``checkpoint: true`` on a call, ``train.activation_checkpointing``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import ROOT

GPT = str(ROOT / "specs" / "gpt_mini.yaml")
SMALL = {"layers": "2", "d": "32", "heads": "2", "ctx": "16", "dropout": "0.1"}  # dropout: the RNG must replay too


def _typed(spec: str | Path = GPT, overrides: dict[str, str] = SMALL) -> object:
    from graphc.graph.check import as_spec, check

    return check(as_spec(spec, overrides))


def _grads(names: list[str]) -> tuple[dict[str, torch.Tensor], int]:
    """Gradients of one backward with ``names`` checkpointed, and how often body.0's fc ran."""
    from graphc.lower.built import lower_spec
    from graphc.train import activations

    gm = lower_spec(_typed(), seed=0).module  # type: ignore[arg-type]
    activations.apply(gm, names)
    calls = [0]
    gm.get_submodule("body.0.fc").register_forward_hook(lambda *a: calls.__setitem__(0, calls[0] + 1))
    torch.manual_seed(1)
    gm.train()
    out = gm(torch.randint(0, 256, (2, 16)))
    out.float().pow(2).mean().backward()
    return {n: p.grad for n, p in gm.named_parameters() if p.grad is not None}, calls[0]


def test_checkpointed_blocks_give_identical_gradients_and_recompute() -> None:
    plain, ran_plain = _grads([])
    ckpt, ran_ckpt = _grads(["body.0", "body.1"])
    assert plain.keys() == ckpt.keys() and len(plain) > 20
    assert all(torch.equal(plain[k], ckpt[k]) for k in plain), "bit-identical, dropout masks included"
    assert (ran_plain, ran_ckpt) == (1, 2), "the block ran again in backward: its activations were not kept"


def _loaded(tmp_path: Path, call_extra: str, recipe_extra: str) -> tuple[object, object]:
    from graphc.graph.check import as_spec, check
    from graphc.train.recipe import load_recipe

    text = (ROOT / "specs" / "gpt_mini.yaml").read_text()
    text = text.replace('dropout: "${dropout}"}\n  lnf', f'dropout: "${{dropout}}"{call_extra}}}\n  lnf')
    text += f"train:\n  data: {{dataset: synthetic_sequence}}\n  loss: {{type: cross_entropy, output: logits, target: target}}\n  steps: 1\n{recipe_extra}"
    spec = tmp_path / "gpt.yaml"
    spec.write_text(text)
    s = as_spec(spec, {"layers": "3"})
    return check(s), load_recipe(s)


@pytest.mark.parametrize(("call_extra", "recipe_extra", "expected"), [
    ("", "", []),
    (", checkpoint: true", "", ["body.0", "body.1", "body.2"]),
    ("", "  activation_checkpointing: [body]\n", ["body.0", "body.1", "body.2"]),
    ("", "  activation_checkpointing: ['body.[02]']\n", ["body.0", "body.2"]),
])
def test_which_block_instances_are_checkpointed(tmp_path: Path, call_extra: str, recipe_extra: str, expected: list[str]) -> None:
    from graphc.train import activations

    tg, loaded = _loaded(tmp_path, call_extra, recipe_extra)
    assert activations.chosen(tg, loaded) == expected  # type: ignore[arg-type]


def test_a_pattern_that_selects_no_block_call_is_a_positioned_error(tmp_path: Path) -> None:
    from graphc.errors import SpecError
    from graphc.train import activations

    tg, loaded = _loaded(tmp_path, "", "  activation_checkpointing: [bdy]\n")
    with pytest.raises(SpecError) as e:
        activations.chosen(tg, loaded)  # type: ignore[arg-type]
    assert str(e.value).endswith("error: train.activation_checkpointing.0: 'bdy' matches no block call (did you mean 'body'?)")
    assert str(e.value).startswith(f"{tmp_path / 'gpt.yaml'}:")


def test_a_call_that_shares_checkpoints_the_module_it_runs(tmp_path: Path) -> None:
    from graphc.lower.built import lower_spec
    from graphc.train import activations
    from graphc.train.recipe import load_recipe

    spec = tmp_path / "twins.yaml"
    spec.write_text("""\
graphc: 1
name: twins
inputs:
  a: {shape: [B, 4], example: {B: 2}}
  b: {shape: [B, 4], example: {B: 2}}
blocks:
  mlp:
    inputs: [x]
    nodes:
      fc: {op: linear, in: x, out: 4}
      act: {op: gelu}
    outputs: [act]
nodes:
  left: {block: mlp, in: a}
  right: {block: mlp, in: b, shares: left, checkpoint: true}
  sum: {op: add, in: [left, right]}
outputs: {y: sum}
train:
  data: {dataset: synthetic_regression}
  loss: {type: mse, output: y, target: y}
  steps: 1
""")
    from graphc.graph.check import as_spec, check

    s = as_spec(spec)
    tg = check(s)
    names = activations.chosen(tg, load_recipe(s))
    assert names == ["left"], "right has no module of its own: it runs left's"
    gm = lower_spec(tg, seed=0).module
    activations.apply(gm, names)
    calls = [0]
    gm.get_submodule("left.fc").register_forward_hook(lambda *a: calls.__setitem__(0, calls[0] + 1))
    gm(torch.randn(2, 4), torch.randn(2, 4)).sum().backward()
    assert calls[0] == 4, "two calls of the shared block, each run again in backward"
