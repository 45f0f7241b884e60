"""Tables as training data (graphc/data/tables.py): reading, train-split vocabularies, missing
values, the wine recipe against its majority-class baseline, predict with the run's vocab, and
bad tables refused with one line naming the file and row."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hostile import assert_clean, assert_unchanged, run_guarded, snapshot

from graphc.data import tables
from graphc.data.demos import wine_table, write_table
from graphc.errors import DataError, Pos

ROOT = Path(__file__).resolve().parent.parent
WINE = ROOT / "specs" / "train" / "wine_table.yaml"
MARGIN = 0.3  # the wine recipe's test accuracy must beat the majority-class baseline by this much


class Loc:
    """A stand-in for LoadedRecipe's positions."""

    def where(self, *path: str | int) -> str:
        return ".".join(map(str, ("train", *path)))

    def pos(self, *path: str | int) -> Pos:
        return Pos("recipe.yaml", 3)


def _prepare(path: Path, split: tuple[float, float, float] = (0.6, 0.2, 0.2), **cfg: Any) -> Any:
    spec = {"path": str(path), **cfg}
    return tables.prepare(tables.TableCfg.model_validate(spec), path.parent, {k: None for k in spec["inputs"]},  # type: ignore[misc]
                          split, 0, Loc())


def _small(tmp: Path, name: str = "t.csv", **extra: list[Any]) -> Path:
    cols: dict[str, list[Any]] = {"a": [1.0, 2.0, None, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0],
                                  "color": ["red", "blue", "red", None, "green", "blue", "red", "blue", "red", "blue"],
                                  "y": ["p", "q", "p", "q", "p", "q", "p", "q", "p", "q"], **extra}
    return write_table(pa.table(cols), tmp / name)


def test_categories_are_fitted_on_the_train_split_only(tmp_path: Path) -> None:
    p = _prepare(_small(tmp_path), split=(0.5, 0.3, 0.2), missing="mean",
                 inputs={"x": ["a"], "c": {"columns": ["color"], "encode": "ids"}}, targets={"label": "y"})
    vocab = json.loads(p.artifacts["vocab.json"])
    rows = tables.read_rows(tmp_path / "t.csv").table.to_pylist()
    train_rows = [rows[i] for i in tables.split_rows(10, (0.5, 0.3, 0.2), 0)[0]]
    assert vocab["inputs"]["c"]["vocab"]["color"] == ["<unk>", *sorted({r["color"] for r in train_rows if r["color"]})]
    assert json.loads(p.artifacts["classes.json"]) == {"label": ["p", "q"]}
    assert p.value_bounds == {"c": len(vocab["inputs"]["c"]["vocab"]["color"])}
    assert p.train.arrays["x"].shape == (5, 1) and p.train.arrays["x"].dtype == np.float32
    assert p.train.arrays["c"].shape == (5,) and p.train.arrays["c"].dtype == np.int64


def test_missing_values_follow_the_declared_policy(tmp_path: Path) -> None:
    path = _small(tmp_path)
    split = (1.0, 0.0, 0.0)
    kept = _prepare(path, split, missing="drop", inputs={"x": ["a"]}, targets={"label": "y"})
    assert len(kept.train) == 9 and not np.isnan(kept.train.arrays["x"]).any()
    filled = _prepare(path, split, missing="constant", fill=-7.0, inputs={"x": ["a"]}, targets={"label": "y"})
    assert sorted(filled.train.arrays["x"][:, 0].tolist())[0] == -7.0
    mean = _prepare(path, split, missing="mean", inputs={"x": ["a"]}, targets={"label": "y"})
    assert np.isclose(mean.train.arrays["x"][2, 0], np.mean([1, 2, 4, 5, 6, 7, 8, 9, 10]))
    with pytest.raises(DataError, match=r"column 'a' data row 3: empty value \(missing: error") as e:
        _prepare(path, split, inputs={"x": ["a"]}, targets={"label": "y"})
    assert e.value.diagnostics[0].pos.line == 4  # header + 3rd data row


def test_unknown_category_is_unk_or_an_error(tmp_path: Path) -> None:
    path = _small(tmp_path, color=["red"] * 9 + ["violet"])
    split = (0.9, 0.1, 0.0)
    cols = {"x": ["a"], "c": {"columns": ["color"], "encode": "ids", "missing": "mean"}}
    ok = _prepare(path, split, missing="mean", inputs=cols, targets={})
    order = tables.split_rows(10, split, 0)
    if 9 in order[1]:  # the violet row landed in val: it has the <unk> id
        assert ok.val.arrays["c"].tolist() == [0]
    with pytest.raises(DataError, match="category 'violet' does not occur in the training split"):
        _prepare(path, (0.0001, 0.0, 0.9999), missing="mean", unknown="error", inputs=cols, targets={})


def test_onehot_and_several_id_columns(tmp_path: Path) -> None:
    path = _small(tmp_path, shape=["o", "x"] * 5)
    p = _prepare(path, (1.0, 0.0, 0.0), missing="mean", inputs={"h": {"columns": ["color", "shape"], "encode": "onehot"},
                                                             "i": {"columns": ["color", "shape"], "encode": "ids"}})
    assert p.train.arrays["h"].shape == (10, 4 + 3) and set(np.unique(p.train.arrays["h"])) == {0.0, 1.0}
    assert p.train.arrays["h"].sum(1).tolist() == [2.0] * 10
    assert p.train.arrays["i"].shape == (10, 2)


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_parquet_and_jsonl_read_like_csv(tmp_path: Path, fmt: str) -> None:
    csv = wine_table(tmp_path / "wine.csv")
    other = wine_table(tmp_path / f"wine.{fmt}")
    cols = {"x": {"columns": ["alcohol", "magnesium", "proline"], "scale": "standard"}, "r": {"columns": ["region"], "encode": "ids"}}
    a = _prepare(csv, missing="mean", inputs=cols, targets={"label": "cultivar"})
    b = _prepare(other, missing="mean", inputs=cols, targets={"label": "cultivar"})
    for k in ("x", "r", "label"):
        np.testing.assert_allclose(a.train.arrays[k], b.train.arrays[k], rtol=1e-5)
    assert a.artifacts["classes.json"] == b.artifacts["classes.json"]


def _wine_run(tmp_path: Path, run: str = "run") -> tuple[Any, Path]:
    import graphc.train

    data = wine_table(tmp_path / "wine.csv")
    spec = tmp_path / "wine_table.yaml"
    shutil.copy(WINE, spec)
    return graphc.train.train(spec, tmp_path / run, overrides=[f"train.data.table.path={data}"], quiet=True), data


def test_wine_recipe_beats_the_majority_class_baseline(tmp_path: Path) -> None:
    result, data = _wine_run(tmp_path)
    from graphc.spec.load import load_spec
    from graphc.train.recipe import load_recipe

    recipe = load_recipe(load_spec(str(tmp_path / "wine_table.yaml")), overrides={"data.table.path": str(data)}).recipe
    assert recipe.data.table is not None
    base = tables.prepare(recipe.data.table, tmp_path, {"x": None, "region": None}, recipe.data.split, recipe.seed, Loc())  # type: ignore[dict-item]
    majority = base.baselines["majority_test_accuracy"]
    assert 0.2 < majority < 0.5
    assert result.test["test_accuracy"] >= majority + MARGIN, (result.test, majority)
    run = tmp_path / "run"
    assert json.loads((run / "classes.json").read_text()) == {"label": ["barbera", "barolo", "grignolino"]}
    assert (run / "vocab.json").read_bytes() == base.artifacts["vocab.json"]


def test_predict_applies_the_runs_vocabulary(tmp_path: Path) -> None:
    import graphc.use.predict as predict

    _wine_run(tmp_path)
    run = tmp_path / "run"
    out = predict.predict(tmp_path / "wine_table.yaml", tmp_path / "wine.csv", weights=run / "best.safetensors", vocab=run, as_="labels")
    classes = json.loads((run / "classes.json").read_text())["label"]
    truth = tables.read_rows(tmp_path / "wine.csv").table.column("cultivar").to_pylist()
    accuracy = np.mean([classes[i] == t for i, t in zip(out["logits"].tolist(), truth, strict=True)])
    assert accuracy > 0.85


# --- bad tables: one line naming the file and row, exit 1, nothing written -------------------------

SPEC = """graphc: 1
name: t
inputs:
  x: {shape: [B, 2], dtype: float32, example: {B: 4}}
nodes:
  head: {op: linear, in: x, out: 2}
outputs: {logits: head}
train:
  data:
    table: {path: DATA, inputs: {x: [a, b]}, targets: {label: y}}
    split: [0.5, 0.25, 0.25]
  loss: {type: cross_entropy, output: logits, target: label}
  steps: 2
  batch_size: 2
"""


def _csv_wrong_fields(tmp: Path) -> tuple[str, str]:
    (tmp / "t.csv").write_text("a,b,y\n1,2,p\n3,4\n5,6,q\n")
    return "t.csv", "t.csv:3:1: error: row has 2 field(s), but the header has 3"


def _jsonl_not_json(tmp: Path) -> tuple[str, str]:
    (tmp / "t.jsonl").write_text('{"a": 1, "b": 2, "y": "p"}\n{"a": 3, "b": 4, "y": "q"\n')
    return "t.jsonl", "t.jsonl:2:"


def _parquet_wrong_type(tmp: Path) -> tuple[str, str]:
    write_table(pa.table({"a": ["1", "2", "3", "4"], "b": [1.0, 2, 3, 4], "y": ["p", "q", "p", "q"]}), tmp / "t.parquet")
    return "t.parquet", "t.parquet:1:1: error: column 'a' has type string, but input 'x' needs numbers"


def _label_unseen_in_training(tmp: Path) -> tuple[str, str]:
    rows = "".join(f"{i},{i},p\n" for i in range(7)) + "7,7,zzz\n"
    (tmp / "t.csv").write_text("a,b,y\n" + rows)
    return "t.csv", "label 'zzz' does not occur in the training split"


def _csv_not_a_number(tmp: Path) -> tuple[str, str]:
    (tmp / "t.csv").write_text("a,b,y\n1,2,p\n3,abc,q\n5,6,q\n7,8,p\n")
    return "t.csv", "t.csv:3:1: error: column 'b' data row 2: 'abc' is not a number"


BAD = {"csv_wrong_fields": _csv_wrong_fields, "jsonl_not_json": _jsonl_not_json, "parquet_wrong_type": _parquet_wrong_type,
       "label_unseen_in_training": _label_unseen_in_training, "csv_not_a_number": _csv_not_a_number}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_table_is_one_line_naming_the_file(tmp_path: Path, case: str) -> None:
    name, message = BAD[case](tmp_path)
    (tmp_path / "spec.yaml").write_text(SPEC.replace("DATA", name))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "mine.txt").write_text("the user's")
    before = snapshot(tmp_path)
    r = run_guarded("train", "spec.yaml", "-o", "run", "--force", cwd=tmp_path, torch=True)
    assert_clean(r, codes=(1,), positioned=True, contains=message)
    assert name in r.error_lines()[0]
    assert_unchanged(before, snapshot(tmp_path))


def test_label_unseen_in_training_names_its_row(tmp_path: Path) -> None:
    _label_unseen_in_training(tmp_path)
    with pytest.raises(DataError) as e:
        _prepare(tmp_path / "t.csv", (0.5, 0.25, 0.25), inputs={"x": ["a", "b"]}, targets={"label": "y"})
    assert str(e.value).startswith(f"{tmp_path / 't.csv'}:9:1: error: column 'y' data row 8: label 'zzz'")


def test_predict_vocab_refuses_a_file_that_is_not_one(tmp_path: Path) -> None:
    (tmp_path / "vocab.json").write_text('{"a": 1}')
    with pytest.raises(DataError, match="not a graphc table vocabulary"):
        tables.load_plan(tmp_path / "vocab.json")


def test_evaluate_applies_the_runs_vocabulary_and_refuses_unseen_labels(tmp_path: Path) -> None:
    from graphc.errors import GraphcError
    from graphc.use.evaluate import evaluate

    _wine_run(tmp_path)
    spec, run = tmp_path / "wine_table.yaml", tmp_path / "run"
    r = evaluate(spec, weights=run / "best.safetensors", data=tmp_path / "wine.csv", vocab=run)
    assert r["accuracy"] > 0.85 and r["examples"] == 178
    with pytest.raises(GraphcError, match="needs --vocab RUN"):
        evaluate(spec, weights=run / "best.safetensors", data=tmp_path / "wine.csv")
    rows = (tmp_path / "wine.csv").read_text().splitlines()
    rows[5] = rows[5].replace('"barolo"', '"nebbiolo"')
    (tmp_path / "new.csv").write_text("\n".join(rows) + "\n")
    before = snapshot(tmp_path)
    g = run_guarded("evaluate", "wine_table.yaml", "--weights", "run/best.safetensors", "--data", "new.csv", "--vocab", "run",
                    cwd=tmp_path, torch=True)
    assert_clean(g, codes=(1,), positioned=True, contains="new.csv:6:1: error: column 'cultivar' data row 5: label 'nebbiolo' "
                 "does not occur in the training split")
    assert_unchanged(before, snapshot(tmp_path))
