"""Text as training data: tokenized once into a memory-mapped token file, read as windows.

``data.text`` in the recipe (:class:`TextCfg`) names the corpus (text files, a text column of
a table, or the standard library's own sources as an offline demo) and the tokenizer: raw
``bytes`` (vocabulary 256), a byte-level ``bpe`` trained with Hugging Face ``tokenizers`` on the
train split only, or a local ``tokenizer.json``.  A tokenizer graphc trains or reads is saved
with the run (``tokenizer.json``).

Language modelling: the corpus is streamed in blocks of whole lines (never held in memory),
cut into train/val/test by byte position, and written once as uint16 (vocabulary <= 65536) or
uint32 ids to ``<cache>/tokens-<hash>/tokens.bin``, keyed by a content hash of the inputs and
the tokenizer; later runs reuse it.  Training windows of ``T + 1`` ids are read from it at
offsets drawn from ``np.random.default_rng((seed, epoch, i))``, so a corpus larger than
memory trains with bounded memory (nanoGPT's ``train.bin``, with a cache key).

Classification (a text column + a ``label`` column): each row is tokenized, cut to the length
bucket (the next power of two >= its longest row, at most ``seq_len``) and padded, with a
``mask`` (1 = token, 0 = padding); labels become class ids of the train split (classes.json).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import sysconfig
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator

from graphc.data.source import Example, Prepared
from graphc.data.tables import ArraySplit, Locator, TargetCfg, _class_ids, read_rows, resolve, split_rows
from graphc.errors import DataError, Pos

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from graphc.spec.model import InputDef

CACHE_FORMAT = "graphc.tokens/1"
BLOCK = 1 << 20  # bytes of text tokenized at a time
MAX_TOKENIZER_BYTES = 256 << 20


class TextCfg(BaseModel):
    """``data.text``: a corpus and its tokenizer (exactly one of files, table, stdlib)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    files: list[str] = Field([], description="text files or glob patterns (relative to the recipe file), read in sorted order")
    table: str | None = Field(None, description="a .csv/.parquet/.jsonl whose 'column' holds the text")
    stdlib: PositiveInt | None = Field(None, description="the Python standard library's .py files, up to N bytes (an offline corpus)")
    column: str = Field("text", description="table: the text column")
    label: str | None = Field(None, description="table: a label column -> text classification (tokens, mask, label)")
    tokenizer: str = Field("bytes", description="bytes (ids 0..255) | bpe (trained on the train split) | a path to a tokenizer.json")
    vocab_size: int = Field(1024, ge=260, le=1 << 20, description="bpe: vocabulary size (256 bytes + merges)")
    seq_len: PositiveInt | None = Field(None, description="LM: window length T (default: the spec's T); classification: longest row kept")
    cache: str | None = Field(None, description="folder for token files (default: .graphc-cache next to the data; "
                              "stdlib: ~/.cache/graphc)")

    @model_validator(mode="after")
    def _one_corpus(self) -> TextCfg:
        given = [k for k in ("files", "table", "stdlib") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(f"give exactly one of 'files', 'table' or 'stdlib' (got {', '.join(given) or 'none'})")
        if self.label is not None and self.table is None:
            raise ValueError("'label' (text classification) needs 'table'")
        return self


# --- the corpus as a stream of line-aligned blocks ------------------------------------------------


@dataclass
class Doc:
    """One input of the corpus: a file, or bytes already in memory (a table column, stdlib)."""

    name: str
    path: Path | None = None
    data: bytes | None = None

    @property
    def size(self) -> int:
        return len(self.data) if self.data is not None else self.path.stat().st_size  # type: ignore[union-attr]

    def blocks(self) -> Iterator[tuple[int, bytes]]:
        """(first line number, block of whole lines of about BLOCK bytes); a line longer than
        a block is cut between UTF-8 characters, never inside one."""
        line = 1
        rest = b""
        with io.BytesIO(self.data) if self.data is not None else self.path.open("rb") as f:  # type: ignore[union-attr]
            while chunk := f.read(BLOCK):
                chunk = rest + chunk
                cut = chunk.rfind(b"\n") + 1 or _char_start(chunk)
                chunk, rest = chunk[:cut], chunk[cut:]
                if chunk:
                    yield line, chunk
                    line += chunk.count(b"\n")
        if rest:
            yield line, rest

    def digest(self) -> str:
        h = hashlib.sha256()
        if self.data is not None:
            h.update(self.data)
        else:
            for _, b in self.blocks():
                h.update(b)
        return h.hexdigest()


def _char_start(chunk: bytes) -> int:
    """The index of the last UTF-8 character start in ``chunk`` (continuation bytes are
    10xxxxxx), so the character it begins goes whole into the next block."""
    i = len(chunk) - 1
    while i > 0 and chunk[i] & 0xC0 == 0x80:
        i -= 1
    return i if i > 0 else len(chunk)


def _pieces(docs: list[Doc], fractions: tuple[float, float, float]) -> Iterator[tuple[int, Doc, int, bytes]]:
    """(part 0/1/2, doc, first line, bytes): the corpus cut into train/val/test by byte
    position, each cut moved to the next line end so no line is split between parts."""
    total = sum(d.size for d in docs)
    bounds = [round(total * fractions[0]), round(total * (fractions[0] + fractions[1])), total + 1]
    offset, part = 0, 0
    for doc in docs:
        for line, block in doc.blocks():
            start = 0
            while start < len(block):
                while offset + start >= bounds[part]:
                    part += 1
                end = len(block)
                if offset + end > bounds[part]:
                    nl = block.find(b"\n", bounds[part] - offset)
                    end = nl + 1 if nl >= 0 else len(block)
                yield part, doc, line + block.count(b"\n", 0, start), block[start:end]
                start = end
            offset += len(block)


def _decode(doc: Doc, line: int, piece: bytes) -> str:
    try:
        return piece.decode("utf-8")
    except UnicodeDecodeError as e:
        at = line + piece.count(b"\n", 0, e.start)
        raise DataError(f"not UTF-8 text (byte {piece[e.start]:#04x})", Pos(doc.name, at)) from None


def stdlib_docs(max_bytes: int) -> list[Doc]:
    """The standard library's top-level ``.py`` files, sorted, cut at ``max_bytes`` (the same
    corpus as the ``stdlib_chars`` built-in set): real text that ships with Python."""
    root = Path(sysconfig.get_paths()["stdlib"])
    out, size = [], 0
    for path in sorted(root.glob("*.py")):
        data = path.read_bytes()[: max_bytes - size]
        out.append(Doc(str(path), data=data))
        size += len(data)
        if size >= max_bytes:
            break
    if not out:
        raise DataError(f"no .py files found under {root}")
    return out


def _file_docs(cfg: TextCfg, base: Path, where: Locator) -> list[Doc]:
    docs = []
    for i, pattern in enumerate(cfg.files):
        full = resolve(base, pattern)
        found = sorted(full.parent.glob(full.name)) if any(ch in pattern for ch in "*?[") else [full]
        if not found or not all(p.is_file() for p in found):
            bad = next((p for p in found if not p.is_file()), full)
            raise DataError(f"{where.where('data', 'text', 'files', i)}: {bad}: {'no such file' if not bad.exists() else 'not a regular file'}",
                            where.pos("data", "text", "files", i))
        docs += [Doc(str(p), path=p) for p in found]
    return docs


# --- tokenizers ---------------------------------------------------------------------------------


def read_tokenizer(path: Path) -> Tokenizer:
    """A ``tokenizer.json`` (Hugging Face format); anything else is an error naming the file
    (and the line and column where the JSON parser stopped)."""
    from tokenizers import Tokenizer

    if not path.is_file():
        raise DataError("tokenizer file not found" if not path.exists() else "tokenizer: not a regular file", Pos(str(path)))
    if path.stat().st_size > MAX_TOKENIZER_BYTES:
        raise DataError(f"tokenizer file of {path.stat().st_size:,} bytes is over the {MAX_TOKENIZER_BYTES:,}-byte limit", Pos(str(path)))
    try:
        return Tokenizer.from_str(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise DataError("not a tokenizer file: not UTF-8 JSON text", Pos(str(path))) from None
    except Exception as e:  # tokenizers raises a plain Exception with serde's message
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        m = re.search(r"at line (\d+) column (\d+)", msg)
        pos = Pos(str(path), int(m.group(1)), max(1, int(m.group(2)))) if m else Pos(str(path))
        raise DataError(f"not a tokenizer file (expected Hugging Face tokenizer.json): {msg}", pos) from None


def train_bpe(texts: Iterator[str], vocab_size: int) -> Tokenizer:
    """A byte-level BPE (GPT-2's scheme: every byte is a token, so nothing is unknown)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


@dataclass
class Encoder:
    """bytes (``tok`` None) or a Hugging Face tokenizer, and its vocabulary size."""

    tok: Tokenizer | None
    vocab: int
    identity: str  # for the cache key

    def ids(self, doc: Doc, line: int, piece: bytes) -> np.ndarray:
        if self.tok is None:
            return np.frombuffer(piece, dtype=np.uint8)
        text = _decode(doc, line, piece)
        encs = self.tok.encode_batch(text.splitlines(keepends=True), add_special_tokens=False)
        return np.fromiter((i for e in encs for i in e.ids), dtype=np.int64)

    def row(self, text: str) -> list[int]:
        if self.tok is None:
            return list(text.encode("utf-8"))
        return self.tok.encode(text, add_special_tokens=False).ids

    def artifact(self) -> dict[str, bytes]:
        return {} if self.tok is None else {"tokenizer.json": self.tok.to_str().encode()}


def _encoder(cfg: TextCfg, base: Path, train_texts: Any) -> Encoder:
    """The declared tokenizer; ``train_texts()`` yields the train split's text (bpe only)."""
    if cfg.tokenizer == "bytes":
        return Encoder(None, 256, "bytes")
    if cfg.tokenizer == "bpe":
        tok = train_bpe(train_texts(), cfg.vocab_size)
        return Encoder(tok, tok.get_vocab_size(), f"bpe:{cfg.vocab_size}")
    path = resolve(base, cfg.tokenizer)
    tok = read_tokenizer(path)
    return Encoder(tok, tok.get_vocab_size(), "file:" + hashlib.sha256(path.read_bytes()).hexdigest())


def _quiet_forks() -> None:
    """tokenizers warns in every forked DataLoader worker once its thread pool has run; the
    workers only read the token file, so turn its parallelism off for them (if unset)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# --- the token file --------------------------------------------------------------------------------


def token_dtype(vocab: int) -> np.dtype[Any]:
    return np.dtype(np.uint16 if vocab <= 1 << 16 else np.uint32)


@dataclass
class TokenFile:
    """A cache entry: ``tokens.bin`` with parts ``[start, stop)`` and what made it."""

    folder: Path
    meta: dict[str, Any]

    @property
    def path(self) -> Path:
        return self.folder / "tokens.bin"

    def part(self, name: str) -> tuple[int, int]:
        a, b = self.meta["parts"][name]
        return int(a), int(b)


def _cache_root(cfg: TextCfg, base: Path, docs: list[Doc], near: Path | None) -> Path:
    if cfg.cache:
        return resolve(base, cfg.cache)
    first = near or next((d.path for d in docs if d.path is not None), None)
    if first is not None:
        return first.parent / ".graphc-cache"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "graphc"


def _cache_key(docs: list[Doc], fractions: tuple[float, float, float], tokenizer: str) -> str:
    h = hashlib.sha256(json.dumps([CACHE_FORMAT, list(fractions), tokenizer]).encode())
    for d in docs:
        h.update(d.digest().encode())
    return h.hexdigest()[:24]


def _lookup(root: Path, key: str) -> TokenFile | None:
    """The finished entry for ``key`` (its meta.json is written last), else None; a folder of
    that name that graphc did not write is refused rather than used or replaced."""
    folder = root / f"tokens-{key}"
    if not folder.exists():
        return None
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT or meta.get("key") != key:
        raise DataError(f"{folder}: exists but is not a graphc token cache entry; remove it or set data.text.cache", Pos(str(folder)))
    return TokenFile(folder, meta)


def build_token_file(docs: list[Doc], enc: Encoder, fractions: tuple[float, float, float], root: Path, key: str) -> TokenFile:
    """Tokenize ``docs`` once into ``root/tokens-KEY`` (staged in a temp folder, renamed into
    place when complete), counting tokens per part for the unigram baseline as it goes."""
    found = _lookup(root, key)
    if found is not None:
        return found
    if root.exists() and not root.is_dir():
        raise DataError("token cache path exists and is not a folder", Pos(str(root)))
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / f".tmp-{key}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    except OSError as e:
        raise DataError(f"cannot create the token cache: {e.strerror}", Pos(str(root))) from None
    try:
        meta = _write_tokens(docs, enc, fractions, tmp / "tokens.bin")
        meta |= {"format": CACHE_FORMAT, "key": key, "tokenizer": enc.identity, "sources": [d.name for d in docs]}
        for name, data in enc.artifact().items():
            (tmp / name).write_bytes(data)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
        with contextlib.suppress(OSError):  # another run finished the same entry first: use theirs
            os.replace(tmp, root / f"tokens-{key}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    done = _lookup(root, key)
    if done is None:  # the rename was refused: something not written by graphc holds the entry's name
        raise DataError(f"tokens-{key} exists in the token cache but is not a complete graphc token file; "
                        "remove it or choose another `cache:` folder", Pos(str(root)))
    return done


def _write_tokens(docs: list[Doc], enc: Encoder, fractions: tuple[float, float, float], out: Path) -> dict[str, Any]:
    dtype = token_dtype(enc.vocab)
    counts = [np.zeros(enc.vocab, np.int64) for _ in range(3)]
    sizes = [0, 0, 0]
    with out.open("wb") as f:
        for part, doc, line, piece in _pieces(docs, fractions):
            ids = enc.ids(doc, line, piece)
            counts[part] += np.bincount(ids, minlength=enc.vocab)[: enc.vocab]
            f.write(ids.astype(dtype).tobytes())
            sizes[part] += len(ids)
    ends = np.cumsum([0, *sizes]).tolist()
    return {"dtype": dtype.name, "vocab": enc.vocab, "parts": {n: [ends[i], ends[i + 1]] for i, n in enumerate(("train", "val", "test"))},
            "unigram_val_loss": _unigram(counts[0], counts[1])}


def _unigram(train: np.ndarray, val: np.ndarray) -> float | None:
    """Validation cross-entropy (nats) of the train split's token frequencies (add-one)."""
    if not val.sum():
        return None
    logp = np.log((train + 1.0) / (train.sum() + len(train)))
    return float(-(val * logp).sum() / val.sum())


# --- sources ----------------------------------------------------------------------------------


@dataclass
class Windows:
    """Next-token windows of one part of a token file: example ``i`` is ``tokens`` = ids
    ``[o, o + T)`` and ``target`` = ``[o + 1, o + T + 1)``.  Train windows start at random
    offsets drawn from ``(seed, epoch, i)``; val/test windows tile the part in order.

    A window is read with one ``pread`` rather than through an ``np.memmap``: mapped pages
    count towards the process's RSS, and where the page cache holds the file in 2 MB folios
    (as it does for a file this process just wrote) each random window maps 2 MB, so a few
    hundred windows would hold a gigabyte.  Read pages stay in the page cache, not in RSS.
    """

    path: str
    dtype: str
    start: int
    stop: int
    t: int
    shuffle: bool
    seed: int = 0
    epoch: int = 0
    _fd: int | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return max(0, (self.stop - self.start - 1) // self.t)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, i: int) -> Example:
        if not 0 <= i < len(self):
            raise IndexError(i)
        if self.shuffle:
            span = self.stop - self.start - self.t  # window starts 0 .. span-1 leave room for T + 1 ids
            o = self.start + int(np.random.default_rng((self.seed & 0xFFFFFFFF, self.epoch, i)).integers(0, span))
        else:
            o = self.start + i * self.t
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        size = np.dtype(self.dtype).itemsize
        w = np.frombuffer(os.pread(self._fd, (self.t + 1) * size, o * size), dtype=self.dtype).astype(np.int64)
        return {"tokens": w[:-1], "target": w[1:]}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fd": None}  # each worker opens the file itself

    def __del__(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)


def _window_len(cfg: TextCfg, inputs: Mapping[str, InputDef]) -> int:
    if cfg.seq_len:
        return cfg.seq_len
    for inp in inputs.values():
        if len(inp.shape) == 2:
            d = inp.shape[1]
            return d if isinstance(d, int) else inp.example.get(d, 64)
    return 64


def _lm(cfg: TextCfg, base: Path, docs: list[Doc], inputs: Mapping[str, InputDef], split: tuple[float, float, float],
        seed: int, near: Path | None = None) -> Prepared:
    def train_texts() -> Iterator[str]:
        for part, doc, line, piece in _pieces(docs, split):
            if part == 0:
                yield _decode(doc, line, piece)

    enc = _encoder(cfg, base, train_texts) if cfg.tokenizer != "bpe" else None
    identity = enc.identity if enc else f"bpe:{cfg.vocab_size}"
    root = _cache_root(cfg, base, docs, near)
    key = _cache_key(docs, split, identity)
    tf = _lookup(root, key)
    if tf is None:
        enc = enc or _encoder(cfg, base, train_texts)
        tf = build_token_file(docs, enc, split, root, key)
    _quiet_forks()
    t = _window_len(cfg, inputs)
    src = [Windows(str(tf.path), tf.meta["dtype"], *tf.part(p), t=t, shuffle=p == "train", seed=seed) for p in ("train", "val", "test")]
    if len(src[0]) == 0:
        raise DataError(f"the train split holds {tf.part('train')[1] - tf.part('train')[0]} tokens: too few for one window of {t} + 1",
                        Pos(docs[0].name))
    artifacts = {"tokenizer.json": (tf.folder / "tokenizer.json").read_bytes()} if (tf.folder / "tokenizer.json").exists() else {}
    baselines = {"unigram_val_loss": tf.meta["unigram_val_loss"]} if tf.meta.get("unigram_val_loss") is not None else {}
    vocab = int(tf.meta["vocab"])
    files = [{"path": d.name, "bytes": d.size} for d in docs if d.path is not None]
    return Prepared(src[0], src[1], src[2], artifacts=artifacts, baselines=baselines,
                    value_bounds={"tokens": vocab, "target": vocab},
                    fingerprint={"files": files, "tokens": str(tf.path), "cache_key": tf.meta["key"]})


def _bucket(n: int, cap: int) -> int:
    """The padded length: the next power of two >= n (at least 8), at most ``cap``."""
    return min(cap, max(8, 1 << max(0, n - 1).bit_length()))


def _classify(cfg: TextCfg, base: Path, inputs: Mapping[str, InputDef], split: tuple[float, float, float], seed: int,
              where: Locator) -> Prepared:
    assert cfg.table is not None and cfg.label is not None
    rows = read_rows(resolve(base, cfg.table))
    if cfg.column not in rows.table.column_names:
        raise DataError(f"{where.where('data', 'text', 'column')}: {rows.path} has no column '{cfg.column}' "
                        f"(it has: {', '.join(rows.table.column_names[:20])})", where.pos("data", "text", "column"))
    texts = rows.table.column(cfg.column).to_pylist()
    for i, v in enumerate(texts):
        if not isinstance(v, str):
            raise DataError(f"column '{cfg.column}' {rows.at(i)}: {'empty' if v is None else type(v).__name__} where text is expected",
                            rows.pos(i))
    parts = split_rows(len(texts), split, seed)
    target, label = _class_ids(rows, "label", TargetCfg(column=cfg.label), parts, where)
    enc = _encoder(cfg, base, lambda: (texts[i] for i in parts[0].tolist()))
    ids = [enc.row(t) for t in texts]
    fixed = next((inp.shape[1] for inp in inputs.values() if len(inp.shape) == 2 and isinstance(inp.shape[1], int)), None)
    length = fixed or _bucket(max(map(len, ids)), cfg.seq_len or 512)
    tokens = np.zeros((len(ids), length), np.int64)
    mask = np.zeros((len(ids), length), np.int64)
    for i, row in enumerate(ids):
        row = row[:length]
        tokens[i, :len(row)] = row
        mask[i, :len(row)] = 1
    splits = [ArraySplit({"tokens": tokens[p], "mask": mask[p], "label": label[p]}) for p in parts]
    artifacts = {**enc.artifact(), "classes.json": (json.dumps({"label": target["classes"]}, indent=1) + "\n").encode()}
    top = int(np.bincount(label[parts[0]]).argmax())
    baselines = {f"majority_{n}_accuracy": float((label[p] == top).mean()) for n, p in zip(("val", "test"), parts[1:], strict=True) if len(p)}
    return Prepared(splits[0], splits[1], splits[2], artifacts=artifacts, baselines=baselines, value_bounds={"tokens": enc.vocab},
                    fingerprint={"files": [{"path": str(rows.path), "bytes": rows.path.stat().st_size}]})


def prepare(cfg: TextCfg, base: Path, inputs: Mapping[str, InputDef], split: tuple[float, float, float], seed: int,
            where: Locator) -> Prepared:
    """The text corpus of ``cfg`` as next-token windows (or, with ``label``, classified rows).

    Raises:
        DataError: a missing or unreadable file, text that is not UTF-8 (naming the line), a
            tokenizer file that is not one, or a corpus too small for one window.
    """
    if cfg.label is not None:
        return _classify(cfg, base, inputs, split, seed, where)
    if cfg.stdlib:
        docs = stdlib_docs(cfg.stdlib)
    elif cfg.table:
        rows = read_rows(resolve(base, cfg.table))
        if cfg.column not in rows.table.column_names:
            raise DataError(f"{where.where('data', 'text', 'column')}: {rows.path} has no column '{cfg.column}'", where.pos("data", "text", "column"))
        text = "\n".join(v for v in rows.table.column(cfg.column).to_pylist() if isinstance(v, str)) + "\n"
        return _lm(cfg, base, [Doc(str(rows.path), data=text.encode())], inputs, split, seed, near=rows.path)
    else:
        docs = _file_docs(cfg, base, where)
    return _lm(cfg, base, docs, inputs, split, seed)
