"""Text as training data (graphc/data/text.py): the memory-mapped token cache, windows, BPE
trained on the train split, text classification, GPT-mini against its unigram baseline, and
bad text inputs refused with one line naming the file (or the spec's line)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hostile import assert_clean, assert_unchanged, run_guarded, snapshot

from graphc.data import text
from graphc.data.demos import write_table
from graphc.errors import DataError, Pos
from graphc.spec.model import InputDef

ROOT = Path(__file__).resolve().parent.parent
GPT = ROOT / "specs" / "gpt_mini.yaml"
INPUTS = {"tokens": InputDef(shape=["B", "T"], dtype="int64", example={"B": 2, "T": 8})}
TINY = ["--set", "layers=1", "--set", "d=32", "--set", "heads=2", "--set", "ctx=16"]


class Loc:
    def where(self, *path: str | int) -> str:
        return ".".join(map(str, ("train", *path)))

    def pos(self, *path: str | int) -> Pos:
        return Pos("recipe.yaml", 3)


def _prepare(tmp: Path, split: tuple[float, float, float] = (0.8, 0.1, 0.1), **cfg: Any) -> Any:
    c = text.TextCfg.model_validate({"cache": str(tmp / "cache"), "seq_len": 8, **cfg})
    return text.prepare(c, tmp, INPUTS, split, 0, Loc())


def _corpus(tmp: Path, lines: int = 400) -> Path:
    path = tmp / "corpus.txt"
    path.write_text("".join(f"line {i}: the quick brown fox {i % 7} jumps\n" for i in range(lines)))
    return path


def test_bytes_windows_read_the_token_file(tmp_path: Path) -> None:
    path = _corpus(tmp_path)
    p = _prepare(tmp_path, files=["corpus.txt"])
    data = np.frombuffer(path.read_bytes(), np.uint8)
    assert p.value_bounds == {"tokens": 256, "target": 256}
    ex = p.val[0]
    assert ex["tokens"].dtype == np.int64 and ex["tokens"].shape == (8,)
    np.testing.assert_array_equal(ex["tokens"][1:], ex["target"][:-1])
    np.testing.assert_array_equal(ex["tokens"], data[p.val.start:p.val.start + 8])
    tokens = np.memmap(p.train.path, dtype=p.train.dtype, mode="r")
    assert tokens.dtype == np.uint16 and len(tokens) == len(data)  # one id per byte, all parts in one file
    train_end, val_end = p.train.stop, p.val.stop
    assert data[train_end - 1] == ord("\n") and data[val_end - 1] == ord("\n")  # parts cut at line ends
    assert abs(train_end / len(data) - 0.8) < 0.01
    assert "unigram_val_loss" in p.baselines and 0 < p.baselines["unigram_val_loss"] < np.log(256)


def test_train_windows_are_seeded_by_epoch_and_index_and_pickle(tmp_path: Path) -> None:
    _corpus(tmp_path)
    p = _prepare(tmp_path, files=["corpus.txt"])
    src = p.train
    first = [src[i]["tokens"].tolist() for i in range(4)]
    assert first == [src[i]["tokens"].tolist() for i in range(4)]
    clone = pickle.loads(pickle.dumps(src))
    assert [clone[i]["tokens"].tolist() for i in range(4)] == first
    src.set_epoch(1)
    assert [src[i]["tokens"].tolist() for i in range(4)] != first
    with pytest.raises(IndexError):
        src[len(src)]


def test_the_token_file_is_cached_by_content_and_tokenizer(tmp_path: Path) -> None:
    path = _corpus(tmp_path)
    a = _prepare(tmp_path, files=["corpus.txt"])
    mtime = Path(a.train.path).stat().st_mtime_ns
    b = _prepare(tmp_path, files=["corpus.txt"])
    assert b.train.path == a.train.path and Path(b.train.path).stat().st_mtime_ns == mtime  # reused, not rewritten
    c = _prepare(tmp_path, files=["corpus.txt"], tokenizer="bpe", vocab_size=300)
    assert c.train.path != a.train.path
    path.write_text(path.read_text() + "one more line\n")
    d = _prepare(tmp_path, files=["corpus.txt"])
    assert d.train.path != a.train.path
    entries = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(entries) == 3 and all(e.startswith("tokens-") for e in entries)


def test_default_cache_is_next_to_the_data(tmp_path: Path) -> None:
    _corpus(tmp_path)
    c = text.TextCfg.model_validate({"files": ["corpus.txt"], "seq_len": 8})
    p = text.prepare(c, tmp_path, INPUTS, (0.8, 0.1, 0.1), 0, Loc())
    assert Path(p.train.path).parent.parent == tmp_path / ".graphc-cache"


def test_a_foreign_folder_in_the_cache_is_not_used_or_replaced(tmp_path: Path) -> None:
    _corpus(tmp_path)
    p = _prepare(tmp_path, files=["corpus.txt"])
    folder = Path(p.train.path).parent
    (folder / "meta.json").write_text("{}")
    with pytest.raises(DataError, match="is not a graphc token cache entry"):
        _prepare(tmp_path, files=["corpus.txt"])
    assert (folder / "meta.json").read_text() == "{}"


def test_bpe_is_trained_on_the_train_split_and_saved(tmp_path: Path) -> None:
    _corpus(tmp_path)
    p = _prepare(tmp_path, files=["corpus.txt"], tokenizer="bpe", vocab_size=300)
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(p.artifacts["tokenizer.json"].decode())
    assert tok.get_vocab_size() == p.value_bounds["tokens"] <= 300
    ids = tok.encode("line 3: the quick brown fox").ids
    assert tok.decode(ids) == "line 3: the quick brown fox" and len(ids) < 20  # merges learned


def test_a_local_tokenizer_file_is_used_and_saved(tmp_path: Path) -> None:
    _corpus(tmp_path)
    tok = text.train_bpe(iter(["hello world " * 50]), 280)
    (tmp_path / "tok.json").write_text(tok.to_str())
    p = _prepare(tmp_path, files=["corpus.txt"], tokenizer="tok.json")
    assert p.value_bounds["tokens"] == tok.get_vocab_size()
    assert json.loads(p.artifacts["tokenizer.json"]) == json.loads(tok.to_str())


def test_text_that_is_not_utf8_names_its_line(tmp_path: Path) -> None:
    (tmp_path / "bad.txt").write_bytes(b"ok\nfine\nbad \xff here\n" * 3)
    with pytest.raises(DataError) as e:
        _prepare(tmp_path, files=["bad.txt"], tokenizer="bpe", vocab_size=300)
    assert str(e.value).startswith(f"{tmp_path / 'bad.txt'}:3:1: error: not UTF-8 text")


def test_text_classification_pads_to_a_bucket_with_a_mask(tmp_path: Path) -> None:
    texts = [("good " * (1 + i % 5)) if i % 2 else ("bad " * (1 + i % 3)) for i in range(40)]
    write_table(pa.table({"review": texts, "stars": ["pos" if i % 2 else "neg" for i in range(40)]}), tmp_path / "r.csv")
    p = _prepare(tmp_path, table="r.csv", column="review", label="stars", seq_len=None)
    tokens, mask = p.train.arrays["tokens"], p.train.arrays["mask"]
    assert tokens.shape[1] == 32 and mask.shape == tokens.shape  # longest row: 25 bytes -> bucket 32
    lengths = mask.sum(1)
    assert (tokens[np.arange(32)[None, :] >= lengths[:, None]] == 0).all()
    assert json.loads(p.artifacts["classes.json"]) == {"label": ["neg", "pos"]}
    assert p.value_bounds == {"tokens": 256}


def _train_gpt(tmp: Path, recipe: str, *extra: str) -> Any:
    import graphc.train

    (tmp / "recipe.yaml").write_text(recipe)
    over = [a for a in [*TINY, *extra] if a != "--set"]
    return graphc.train.train(GPT, tmp / "run", config=tmp / "recipe.yaml", overrides=over, quiet=True)


BPE_RECIPE = """train:
  data:
    text: {stdlib: 300000, tokenizer: bpe, vocab_size: 512, cache: cache}
    split: [0.9, 0.05, 0.05]
  loss: {type: cross_entropy, output: logits, target: target}
  optimizer: {type: adamw, lr: 0.003}
  steps: 150
  batch_size: 16
  eval_every: 150
  eval_batches: 4
"""


def test_bpe_gpt_mini_beats_its_unigram_baseline(tmp_path: Path) -> None:
    r = _train_gpt(tmp_path, BPE_RECIPE, "vocab=512")
    assert r.unigram_loss is not None
    assert r.best["val_loss"] < r.unigram_loss - 0.3, (r.best, r.unigram_loss)
    assert (tmp_path / "run" / "tokenizer.json").is_file()
    assert json.loads((tmp_path / "run" / "results.json").read_text())["unigram_val_loss"] == r.unigram_loss


# --- bad inputs: one line, exit 1, nothing written to the run folder ----------------------------------

RECIPE = """train:
  data:
    text: {files: [corpus.txt], tokenizer: TOKENIZER, cache: cache}
  loss: {type: cross_entropy, output: logits, target: target}
  steps: 2
  batch_size: 2
"""


def _run_bad(tmp: Path, tokenizer: str, *extra: str) -> Any:
    _corpus(tmp)
    (tmp / "recipe.yaml").write_text(RECIPE.replace("TOKENIZER", tokenizer))
    (tmp / "run").mkdir()
    (tmp / "run" / "mine.txt").write_text("the user's")
    before = snapshot(tmp)
    r = run_guarded("train", str(GPT), "--config", "recipe.yaml", "-o", "run", "--force", *TINY, *extra, cwd=tmp, torch=True)
    after = snapshot(tmp)
    assert_unchanged(before, after, allowed=("cache",))
    return r


@pytest.mark.parametrize("content", ['{"not": "a tokenizer"}', "not json at all", ""])
def test_a_tokenizer_file_that_is_not_one(tmp_path: Path, content: str) -> None:
    (tmp_path / "tok.json").write_text(content)
    r = _run_bad(tmp_path, "tok.json")
    assert_clean(r, codes=(1,), positioned=True, contains="not a tokenizer file")
    assert r.error_lines()[0].startswith("tok.json:")


def test_token_ids_beyond_the_specs_vocabulary_name_the_spec_line(tmp_path: Path) -> None:
    r = _run_bad(tmp_path, "bytes", "--set", "vocab=100")
    assert_clean(r, codes=(1,), positioned=True, contains="declares range [0, 100) but train.data.text's vocabulary gives ids up to 255")
    line = r.error_lines()[0]
    assert line.startswith(f"{GPT}:16:")  # the `tokens` input's range


def test_embedding_smaller_than_the_vocabulary_is_caught_by_the_op(tmp_path: Path) -> None:
    """No declared range: the embedding's own check names its node."""
    spec = tmp_path / "lm.yaml"
    spec.write_text("""graphc: 1
name: lm
inputs:
  tokens: {shape: [B, T], dtype: int64, example: {B: 2, T: 8}}
nodes:
  tok: {op: embedding, in: tokens, num: 100, dim: 8}
  head: {op: linear, out: 256}
outputs: {logits: head}
""")
    _corpus(tmp_path)
    (tmp_path / "recipe.yaml").write_text(RECIPE.replace("TOKENIZER", "bytes"))
    r = run_guarded("train", str(spec), "--config", "recipe.yaml", "-o", "run", cwd=tmp_path, torch=True)
    assert_clean(r, codes=(1,), positioned=True, contains="nodes.tok: with train.data.text's vocabulary: its input's range [0, 256)")
    assert r.error_lines()[0].startswith(f"{spec}:6:")
    assert not (tmp_path / "run").exists()


CLASSIFIER = """graphc: 1
name: bag_of_bytes
inputs:
  tokens: {shape: [B, T], dtype: int64, example: {B: 4, T: 32}, range: [0, 256]}
  mask: {shape: [B, T], dtype: float32, example: {B: 4, T: 32}}
nodes:
  emb:  {op: embedding, in: tokens, num: 256, dim: 16}
  m:    {op: reshape, in: mask, shape: [B, T, 1]}
  kept: {op: mul, in: [emb, m]}
  tot:  {op: sum, in: kept, dims: 1}
  n:    {op: sum, in: m, dims: 1}
  avg:  {op: div, in: [tot, n]}
  head: {op: linear, out: 2}
outputs: {logits: head}
train:
  data:
    text: {table: reviews.csv, column: review, label: stars}
    split: [0.6, 0.2, 0.2]
  loss: {type: cross_entropy, output: logits, target: label}
  metrics: [accuracy]
  optimizer: {lr: 0.05}
  epochs: 15
  batch_size: 8
"""


def test_text_classification_trains_with_the_mask(tmp_path: Path) -> None:
    """Masked mean of byte embeddings: 'good'/'bad' reviews padded to one bucket separate."""
    import graphc.train

    rng = np.random.default_rng(0)
    words = {"pos": ["good", "great", "fine"], "neg": ["bad", "awful", "poor"]}
    stars = [("pos", "neg")[i % 2] for i in range(120)]
    texts = [" ".join(rng.choice(words[s], int(rng.integers(1, 6)))) for s in stars]
    write_table(pa.table({"review": texts, "stars": stars}), tmp_path / "reviews.csv")
    (tmp_path / "spec.yaml").write_text(CLASSIFIER)
    r = graphc.train.train(tmp_path / "spec.yaml", tmp_path / "run", quiet=True)
    assert r.test["test_accuracy"] >= 0.9, r.test
    assert json.loads((tmp_path / "run" / "classes.json").read_text()) == {"label": ["neg", "pos"]}


def test_blocks_never_cut_inside_a_character(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A line longer than a block is cut between UTF-8 characters, so BPE decodes every block."""
    monkeypatch.setattr(text, "BLOCK", 7)
    body = "héllo wörld\n" + "€" * 40 + "\nend"
    (tmp_path / "u.txt").write_text(body, encoding="utf-8")
    blocks = list(text.Doc("u.txt", path=tmp_path / "u.txt").blocks())
    assert b"".join(b for _, b in blocks).decode() == body
    assert all(b.decode() for _, b in blocks)
    assert [n for n, b in blocks if b.startswith(b"end")] == [3]
