"""``--set``: one override module, the spec's rule (keys must exist, typed like the old value)
and the recipe's rule (``create=True``: missing mappings made, text read as YAML)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ROOT, run_cli

from graphc.errors import SpecError
from graphc.spec.load import load_spec
from graphc.spec.overrides import apply_overrides, parse_overrides, split_overrides, yaml_value
from graphc.spec.yaml_loader import load_yaml
from graphc.train.recipe import load_recipe

MLP = str(ROOT / "specs" / "mlp.yaml")
SPEC = "graphc: 1\nparams: {hidden: 5, rate: 0.5, act: relu, on: true}\nnodes:\n  fc: {op: linear, out: 4}\n"


def test_parse_overrides_takes_lists_and_mappings() -> None:
    assert parse_overrides(["a=1", " b.c =x=y"]) == {"a": "1", "b.c": "x=y"}
    assert parse_overrides({"a": 2}) == {"a": 2}
    assert parse_overrides(None) == {}
    with pytest.raises(SpecError, match="--set expects KEY=VALUE, got 'a'"):
        parse_overrides(["a"])


def test_split_overrides_routes_train_keys_to_the_recipe() -> None:
    spec, recipe = split_overrides(["hidden=4", "train.steps=3", "train", " train.optimizer.lr = 1e-3"])
    assert spec == ["hidden=4", "train"]
    assert recipe == {"steps": "3", "optimizer.lr": " 1e-3"}


def test_spec_rule_types_text_like_the_value_it_replaces() -> None:
    raw = load_yaml(SPEC, "s.yaml")
    apply_overrides(raw, {"hidden": "7", "rate": "2", "act": "12", "on": "False", "nodes.fc.out": "${hidden}"})
    assert raw["params"] == {"hidden": 7, "rate": 2.0, "act": "12", "on": False}
    assert raw["nodes"]["fc"]["out"] == "${hidden}"


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("hiden", "--set hiden: 'hiden' is neither a param nor a top-level key of the spec (did you mean 'hidden'?)"),
        ("nodes.fcc.out", "--set nodes.fcc.out: 'nodes.fcc' is not in the spec (did you mean 'fc'?)"),
        ("nodes.fc.²", "--set nodes.fc.²: 'nodes.fc.²' is not in the spec"),  # a digit to isdigit(), not to int()
    ],
)
def test_spec_rule_refuses_unknown_keys(key: str, message: str) -> None:
    with pytest.raises(SpecError) as e:
        apply_overrides(load_yaml(SPEC, "s.yaml"), {key: "1"})
    assert str(e.value) == f"<--set>:1:1: error: {message}"


def test_a_non_ascii_digit_in_a_key_is_a_clean_error() -> None:
    res = run_cli("check", MLP, "--set", "nodes.²=3")
    assert res.code == 1 and "'nodes.²' is not in the spec" in res.err and "Traceback" not in res.err


def test_recipe_rule_creates_mappings_and_reads_yaml() -> None:
    values: dict[str, object] = {"optimizer": {"type": "sgd"}, "loss": "x"}
    apply_overrides(values, {"optimizer.lr": "3e-4", "lora.targets": "[fc1, fc2]", "loss.type": "mse", "steps": 5}, create=True)
    assert values == {"optimizer": {"type": "sgd", "lr": 3e-4}, "lora": {"targets": ["fc1", "fc2"]}, "loss": {"type": "mse"}, "steps": 5}


def test_yaml_value() -> None:
    assert yaml_value("{rank: 4}") == {"rank": 4}
    assert yaml_value("[unclosed") == "[unclosed"  # stays text: validation names the field
    assert yaml_value("null") is None and yaml_value("true") is True and yaml_value("gelu") == "gelu"


def test_a_huge_integer_in_a_recipe_override_is_a_clean_error(tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("data: {dataset: iris}\nloss: {type: mse, output: logits, target: label}\nsteps: 1\n")
    with pytest.raises(SpecError) as e:
        load_recipe(load_spec(MLP), recipe, {"steps": "9" * 30})
    assert str(e.value) == "<--set>:1:1: error: --set train.steps: integer of 30 digits is too large (at most 64 bits)"
