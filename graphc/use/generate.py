"""``graphc generate``: sample text from a language-model spec (output ``[B, T, V]`` over a
token input ``[B, T]``).

The prompt is UTF-8 bytes as token ids (the character corpus ``stdlib_chars`` uses byte ids).
Each step runs the whole window again: there is no KV cache (graphc's attention op has no
cache input, and the compiled ONNX graph takes whole sequences).  When the sequence reaches
the model's context length (the proven range of ``T``), the window slides: the model sees the
last ``ctx`` tokens.  Sampling is numpy with a seeded generator, identical for both backends,
so one seed gives the same text every time (and greedy decoding the same text in torch and
onnxruntime).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from graphc.errors import GraphcError
from graphc.serve.manifest import TensorSig
from graphc.use.backends import Overrides, open_backend


@dataclass
class Generated:
    """The prompt's ids, the new ids, and the new text (bytes decoded as UTF-8, lossy)."""

    prompt_ids: list[int]
    ids: list[int]

    @property
    def text(self) -> str:
        return bytes(i for i in self.ids if 0 <= i < 256).decode("utf-8", errors="replace")


def _token_io(inputs: dict[str, TensorSig], outputs: dict[str, TensorSig]) -> tuple[str, str, int]:
    ints = [s for s in inputs.values() if not s.is_float and len(s.shape) == 2]
    seqs = [s for s in outputs.values() if s.is_float and len(s.shape) == 3 and isinstance(s.shape[2], int)]
    if len(inputs) != 1 or not ints or not seqs:
        raise GraphcError("generate needs one integer token input [B, T] and an output [B, T, V] "
                          f"(this model: inputs {[f'{s.name} {list(s.shape)}' for s in inputs.values()]}, "
                          f"outputs {[f'{s.name} {list(s.shape)}' for s in outputs.values()]})")
    return ints[0].name, seqs[0].name, int(seqs[0].shape[2])  # type: ignore[arg-type]


def sample(logits: np.ndarray, rng: np.random.Generator, temperature: float, top_k: int | None, top_p: float | None) -> int:
    """One id from the last position's logits: greedy at temperature 0, else softmax sampling
    after top-k (keep the k most likely) and top-p (keep the smallest set with mass >= p)."""
    x = logits.astype(np.float64)
    if temperature <= 0:
        return int(x.argmax())
    x = x / temperature
    if top_k is not None and top_k < len(x):
        kth = np.sort(x)[-top_k]
        x = np.where(x < kth, -np.inf, x)
    p = np.exp(x - x.max())
    p /= p.sum()
    if top_p is not None and top_p < 1.0:
        order = np.argsort(-p, kind="stable")
        cum = np.cumsum(p[order])
        keep = order[: int(np.searchsorted(cum, top_p) + 1)]
        mask = np.zeros_like(p)
        mask[keep] = p[keep]
        p = mask / mask.sum()
    return int(rng.choice(len(p), p=p))


def generate(target: str | Path, prompt: str | bytes | Sequence[int], *, weights: str | Path | None = None,
             overrides: Overrides = None, max_new_tokens: int = 64, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, seed: int = 0) -> Generated:
    """Continue ``prompt`` by ``max_new_tokens`` ids from ``target`` (a compile folder, or a spec
    with ``weights``).  ``temperature=0`` is greedy decoding.

    Example:
        >>> graphc.generate("out/char_gpt", "def ", max_new_tokens=40, temperature=0.8, top_k=20, seed=1).text

    Raises:
        GraphcError: the model is not a token-in, logits-out model, or the prompt has ids
            outside its vocabulary.
    """
    if temperature < 0 or (top_k is not None and top_k < 1) or (top_p is not None and not 0 < top_p <= 1):
        raise GraphcError("generate: temperature must be >= 0, top_k >= 1 and top_p in (0, 1]")
    backend = open_backend(target, weights, overrides)
    name, out_name, vocab = _token_io(backend.inputs, backend.outputs)
    sig = backend.inputs[name]
    ids = list(prompt.encode("utf-8") if isinstance(prompt, str) else prompt)
    if not ids:
        raise GraphcError("generate: the prompt is empty (give at least one character)")
    hi = min(vocab, int(sig.range[1])) if sig.range is not None else vocab
    if max(ids) >= hi or min(ids) < 0:
        raise GraphcError(f"generate: prompt id {max(ids)} is outside the vocabulary [0, {hi})")
    ctx = backend.dim_range(str(sig.shape[1]))[1] if isinstance(sig.shape[1], str) else int(sig.shape[1])
    rng = np.random.default_rng(seed)
    seq = list(ids)
    for _ in range(max_new_tokens):
        window = np.asarray([seq[-ctx:]], dtype=sig.dtype)
        logits = backend.run({name: window})[out_name][0, -1, :hi]
        seq.append(sample(logits, rng, temperature, top_k, top_p))
    return Generated(ids, seq[len(ids):])
