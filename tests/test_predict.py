"""graphc predict / evaluate / generate: torch (spec + weights) and onnxruntime (compile
folder) agree; every reader and writer round-trips; every built-in dataset kind evaluates to
the figures its own predictions give; generation is deterministic for a seed."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from compiled import GPT_TINY, ROOT, compiled
from hostile import assert_clean, run_guarded, snapshot

import graphc
from graphc.errors import DataError, GraphcError

DIGITS = ROOT / "specs" / "digits_cnn.yaml"
GPT = ROOT / "specs" / "gpt_mini.yaml"


def digits_images(n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    import sklearn.datasets as skd

    b = skd.load_digits()
    return (b.data[:n] / 16.0).astype(np.float32).reshape(-1, 1, 8, 8), b.target[:n].astype(np.int64)


@pytest.fixture(scope="module")
def digits_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    x, y = digits_images()
    path = tmp_path_factory.mktemp("data") / "digits.npz"
    np.savez(path, x=x, label=y)
    return path


# --- predict -----------------------------------------------------------------------------


def test_predict_onnx_and_torch_agree(digits_npz: Path) -> None:
    folder = compiled("digits_cnn")
    onnx = graphc.predict(folder, digits_npz)["logits"]
    torch_out = graphc.predict(DIGITS, digits_npz, weights=folder / "weights.safetensors")["logits"]
    assert onnx.shape == (40, 10)
    np.testing.assert_allclose(onnx, torch_out, rtol=1e-4, atol=1e-5)


def test_labels_topk_and_logits_are_consistent(digits_npz: Path) -> None:
    folder = compiled("digits_cnn")
    logits = graphc.predict(folder, digits_npz)["logits"]
    labels = graphc.predict(folder, digits_npz, as_="labels")["logits"]
    top = graphc.predict(folder, digits_npz, as_="topk", topk=3)
    np.testing.assert_array_equal(labels, logits.argmax(-1))
    np.testing.assert_array_equal(top["logits_top"][:, 0], labels)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    np.testing.assert_allclose(top["logits_prob"], np.take_along_axis(p, top["logits_top"], -1), rtol=1e-5)
    assert (np.diff(top["logits_prob"], axis=1) <= 0).all()


def _write_inputs(tmp: Path, kind: str, x: np.ndarray) -> Path:
    flat = x.reshape(len(x), -1)
    path = tmp / f"in.{kind}"
    if kind == "npz":
        np.savez(path, image=x)
    elif kind == "safetensors":
        from safetensors.numpy import save_file

        save_file({"image": x}, str(path))
    elif kind == "csv":
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow([*(f"p{i}" for i in range(64)), "label"])
            w.writerows([[*row.tolist(), 0] for row in flat])
    elif kind == "jsonl":
        path.write_text("".join(json.dumps({"image": row.tolist()}) + "\n" for row in x))
    elif kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"image": [row.tolist() for row in flat]}), path)
    return path


@pytest.mark.parametrize("kind", ["npz", "safetensors", "csv", "jsonl", "parquet"])
def test_every_reader_gives_the_same_predictions(tmp_path: Path, kind: str) -> None:
    x, _ = digits_images(12)
    folder = compiled("digits_cnn")
    want = graphc.predict(folder, {"image": x})["logits"]
    got = graphc.predict(folder, _write_inputs(tmp_path, kind, x))["logits"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".npz"])
def test_writers_round_trip(tmp_path: Path, digits_npz: Path, suffix: str) -> None:
    out = tmp_path / f"pred{suffix}"
    res = graphc.predict(compiled("digits_cnn"), digits_npz, out, as_="topk", topk=2)
    if suffix == ".npz":
        back = dict(np.load(out))
        np.testing.assert_array_equal(back["logits_top"], res["logits_top"])
    elif suffix == ".jsonl":
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert len(rows) == 40 and rows[3]["logits_top"] == res["logits_top"][3].tolist()
    else:
        rows = list(csv.DictReader(out.open()))
        assert list(rows[0]) == ["logits_top_0", "logits_top_1", "logits_prob_0", "logits_prob_1"]
        assert int(rows[5]["logits_top_1"]) == res["logits_top"][5, 1]
        assert float(rows[5]["logits_prob_0"]) == pytest.approx(float(res["logits_prob"][5, 0]), rel=1e-6)


def test_predict_refuses_to_overwrite_without_force(tmp_path: Path, digits_npz: Path) -> None:
    out = tmp_path / "mine.csv"
    out.write_text("not graphc's\n")
    with pytest.raises(GraphcError, match=r"graphc did not write it.*--force"):
        graphc.predict(compiled("digits_cnn"), digits_npz, out)
    assert out.read_text() == "not graphc's\n"
    graphc.predict(compiled("digits_cnn"), digits_npz, out, as_="labels", force=True)
    assert out.read_text().startswith("logits\n")


def test_predict_cli_on_a_compile_folder(cli: Any, tmp_path: Path, digits_npz: Path) -> None:
    out = tmp_path / "p.jsonl"
    r = cli("predict", str(compiled("digits_cnn")), str(digits_npz), "-o", str(out), "--as", "labels", "-q")
    assert r.code == 0, r.err
    assert "predicted 40 examples" in r.out and len(out.read_text().splitlines()) == 40


def _bad_file(tmp: Path, case: str) -> Path:
    path = tmp / ("bad.npz" if case != "csv_text" else "bad.csv")
    if case == "corrupt":
        path.write_bytes(b"PK\x03\x04garbage")
    elif case == "wrong_shape":
        np.savez(path, image=np.zeros((3, 1, 8, 7), np.float32))
    elif case == "nan":
        np.savez(path, image=np.full((2, 1, 8, 8), np.nan, np.float32))
    elif case == "wrong_name":
        np.savez(path, a=np.zeros((2, 64), np.float32), b=np.zeros((2, 3)))
    elif case == "csv_text":
        path.write_text("p0,p1\nx,y\n")
    return path


@pytest.mark.parametrize(("case", "words"), [("corrupt", "cannot read input file"), ("wrong_shape", "dim 3 is 7"),
                                            ("nan", "non-finite"), ("wrong_name", "no array for input 'image'"),
                                            ("csv_text", "wrong dtype"), ("missing", "input file not found")])
def test_hostile_input_files_give_one_line(tmp_path: Path, case: str, words: str) -> None:
    data = _bad_file(tmp_path, case) if case != "missing" else tmp_path / "nope.npz"
    before = snapshot(tmp_path)
    r = run_guarded("predict", str(compiled("digits_cnn")), str(data), "-o", str(tmp_path / "out.csv"), "-q", cwd=tmp_path)
    assert_clean(r, contains=words)
    assert snapshot(tmp_path) == before


# --- evaluate ----------------------------------------------------------------------------


def test_evaluate_torch_and_onnx_agree_on_digits(cli: Any) -> None:
    folder = compiled("digits_cnn")
    torch_m = graphc.evaluate(DIGITS, weights=folder / "weights.safetensors")
    onnx_m = graphc.evaluate(DIGITS, onnx=folder)
    assert set(torch_m) == {"loss", "accuracy", "f1", "examples"} and torch_m["examples"] == 1797 - round(0.7 * 1797) - round(0.15 * 1797)
    for k in torch_m:
        assert onnx_m[k] == pytest.approx(torch_m[k], rel=1e-5, abs=1e-6), k
    r = cli("evaluate", str(DIGITS), "--onnx", str(folder), "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["metrics"]["accuracy"] == pytest.approx(onnx_m["accuracy"])


def test_evaluate_on_a_file_matches_predict(tmp_path: Path, digits_npz: Path) -> None:
    folder = compiled("digits_cnn")
    m = graphc.evaluate(DIGITS, onnx=folder, data=digits_npz)
    labels = graphc.predict(folder, digits_npz, as_="labels")["logits"]
    assert m["examples"] == 40 and m["accuracy"] == pytest.approx(float((labels == np.load(digits_npz)["label"]).mean()))


def test_evaluate_torch_and_onnx_agree_on_stdlib_chars() -> None:
    config = ROOT / "specs" / "train" / "char_gpt.yaml"
    small = "train.data.max_chars=20000"
    a = graphc.evaluate(GPT, weights=compiled("gpt_mini") / "weights.safetensors", config=config, overrides=[*GPT_TINY, small])
    b = graphc.evaluate(GPT, onnx=compiled("gpt_mini"), config=config, overrides=[*GPT_TINY, small])
    assert a["examples"] == b["examples"] > 0
    for k in ("loss", "accuracy", "perplexity"):
        assert a[k] == pytest.approx(b[k], rel=1e-5), k


TABULAR = {"iris": 4, "wine": 13, "breast_cancer": 30, "synthetic_classification": 8, "digits": 64}


def _tiny_spec(tmp: Path, dataset: str) -> Path:
    """A small spec whose recipe reads ``dataset`` (a classifier, a regressor or a sequence model)."""
    if dataset == "synthetic_regression":
        body = ("inputs: {x: {shape: [B, 8], example: {B: 4}}}\nnodes: {fc: {op: linear, in: x, out: 1}}\noutputs: {y: fc}\n"
                "train: {data: {dataset: synthetic_regression, samples: 200}, loss: {type: mse, output: y, target: y}, metrics: [mae], epochs: 1}\n")
    elif dataset == "synthetic_sequence":
        body = ("inputs: {tokens: {shape: [B, T], dtype: int64, example: {B: 2, T: 8}, range: [0, 16]}}\n"
                "nodes: {emb: {op: embedding, in: tokens, num: 16, dim: 8}, fc: {op: linear, in: emb, out: 16}}\noutputs: {logits: fc}\n"
                "train: {data: {dataset: synthetic_sequence, samples: 200}, loss: {type: cross_entropy, output: logits, target: target},"
                " metrics: [accuracy], epochs: 1}\n")
    else:
        body = (f"inputs: {{x: {{shape: [B, {TABULAR[dataset]}], example: {{B: 4}}}}}}\n"
                "nodes: {fc: {op: linear, in: x, out: 10}}\noutputs: {logits: fc}\n"
                f"train: {{data: {{dataset: {dataset}, samples: 200, classes: 10}}, loss: {{type: cross_entropy, output: logits, target: label}},"
                " metrics: [accuracy], epochs: 1}\n")
    path = tmp / f"{dataset}.yaml"
    path.write_text(f"graphc: 1\nname: tiny_{dataset}\n{body}")
    return path


@pytest.mark.parametrize("dataset", [*TABULAR, "synthetic_regression", "synthetic_sequence"])
def test_evaluate_every_builtin_dataset_matches_its_predictions(tmp_path: Path, dataset: str) -> None:
    from graphc.train.data import load_data
    from graphc.train.recipe import load_recipe

    spec = _tiny_spec(tmp_path, dataset)
    m = graphc.evaluate(spec)
    tg = graphc.check(spec)
    lr = load_recipe(tg.flat.spec)
    test = load_data(tg, lr, seed=lr.recipe.seed).test.tensors
    feeds = {k: v.numpy() for k, v in test.items() if k in tg.flat.spec.doc.inputs}
    out = next(iter(graphc.predict(spec, feeds).values()))
    assert m["examples"] == len(next(iter(feeds.values())))
    if dataset == "synthetic_regression":
        assert m["mae"] == pytest.approx(float(np.abs(out - test["y"].numpy()).mean()), rel=1e-5)
    else:
        target = test["label" if "label" in test else "target"].numpy()
        assert m["accuracy"] == pytest.approx(float((out.argmax(-1) == target).mean()), rel=1e-6)


def test_evaluate_needs_a_recipe(tmp_path: Path) -> None:
    with pytest.raises(GraphcError, match="no training recipe"):
        graphc.evaluate(ROOT / "specs" / "mlp.yaml")


# --- generate ----------------------------------------------------------------------------


def test_generate_is_deterministic_for_a_seed_and_slides_past_the_context() -> None:
    folder = compiled("gpt_mini")
    a = graphc.generate(folder, "def f(", max_new_tokens=30, temperature=1.0, top_k=40, seed=3)
    b = graphc.generate(folder, "def f(", max_new_tokens=30, temperature=1.0, top_k=40, seed=3)
    c = graphc.generate(folder, "def f(", max_new_tokens=30, temperature=1.0, top_k=40, seed=4)
    assert a.ids == b.ids and len(a.ids) == 30  # 6 + 30 tokens > ctx 16: the window slid
    assert a.ids != c.ids
    assert a.prompt_ids == list(b"def f(")


def test_generate_greedy_torch_and_onnx_agree() -> None:
    folder = compiled("gpt_mini")
    onnx = graphc.generate(folder, "import ", max_new_tokens=20, temperature=0)
    torch_g = graphc.generate(GPT, "import ", weights=folder / "weights.safetensors", overrides=GPT_TINY, max_new_tokens=20, temperature=0)
    assert onnx.ids == torch_g.ids
    top1 = graphc.generate(folder, "import ", max_new_tokens=20, temperature=1.0, top_k=1, seed=9)
    assert top1.ids == onnx.ids


def test_sampling_filters() -> None:
    from graphc.use.generate import sample

    logits = np.array([0.0, 5.0, 4.9, -3.0])
    rng = np.random.default_rng(0)
    assert {sample(logits, rng, 1.0, 2, None) for _ in range(200)} == {1, 2}
    assert {sample(logits, rng, 1.0, None, 0.01) for _ in range(50)} == {1}
    assert sample(logits, rng, 0.0, None, None) == 1


def test_generate_refuses_a_non_language_model_and_bad_settings() -> None:
    with pytest.raises(GraphcError, match="one integer token input"):
        graphc.generate(compiled("digits_cnn"), "x")
    with pytest.raises(GraphcError, match="top_p"):
        graphc.generate(compiled("gpt_mini"), "x", top_p=1.5)
    with pytest.raises(GraphcError, match="empty"):
        graphc.generate(compiled("gpt_mini"), "")


def test_generate_cli(cli: Any) -> None:
    r = cli("generate", str(compiled("gpt_mini")), "def ", "--greedy", "--max-new-tokens", "5", "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert len(doc["ids"]) == 5 and doc["prompt"] == "def "


def test_data_error_type() -> None:
    with pytest.raises(DataError, match="unsupported input file type"):
        graphc.predict(compiled("digits_cnn"), ROOT / "README.md")


def _broken_folder(tmp: Path, case: str) -> Path:
    folder = tmp / "out"
    if case == "missing":
        return folder
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"not onnx")
    (folder / "manifest.json").write_text("{not json" if case == "bad_manifest" else json.dumps(
        {"spec": {"name": "m"}, "inputs": {"x": {"shape": ["B", 2], "dtype": "float32"}}, "outputs": {"y": {"shape": ["B", 2], "dtype": "float32"}}, "dims": {}}))
    return folder


@pytest.mark.parametrize(("case", "words"), [("missing", "not a 'graphc compile' folder"), ("bad_manifest", "cannot read the manifest"),
                                            ("bad_onnx", "cannot load the ONNX model")])
def test_serve_and_predict_refuse_a_broken_compile_folder(tmp_path: Path, case: str, words: str) -> None:
    folder = _broken_folder(tmp_path, case)
    assert_clean(run_guarded("serve", str(folder), cwd=tmp_path), contains=words)
    np.savez(tmp_path / "in.npz", x=np.zeros((1, 2), np.float32))
    assert_clean(run_guarded("predict", str(folder), str(tmp_path / "in.npz"), "-o", str(tmp_path / "o.csv"), cwd=tmp_path),
                 contains=words if case != "missing" else "no such spec file or compile folder")
