"""One loading pipeline for every source: a torch DataLoader over whole micro-batches.

The sampler, not the DataLoader's shuffling, decides which examples make a batch: micro-batch
``j`` of optimizer step ``s`` is a slice of epoch ``s // steps_per_epoch``'s permutation, drawn
from a generator seeded by (seed, epoch).  So the batch order is a pure function of (seed,
epoch, step), whatever the number of workers, and ``--resume`` at step N starts the sampler at
N and sees exactly the batches an uninterrupted run would.  Each item the sampler yields is a
:class:`BatchKey` (epoch + indices); a worker turns it into one collated batch, calling the
source's ``set_epoch`` first so random train transforms draw from (seed, epoch, index).

For distributed training the sampler takes ``rank`` and ``world``: every rank computes the same
global micro-batch and keeps its own contiguous part of it (:func:`shard`), so the ranks' parts
are disjoint and together are exactly the global batch.

In-memory sources (:class:`ArraySource`: the built-in sets, .npz, .safetensors, CSV) keep their
arrays as tensors and gather a batch with one index operation (no per-example Python).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from graphc.data.source import Example, Source
from graphc.errors import GraphcError


class ArraySource:
    """In-memory examples: named tensors with examples along the first axis."""

    def __init__(self, tensors: Mapping[str, torch.Tensor]) -> None:
        self.tensors = dict(tensors)

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values()))) if self.tensors else 0

    def __getitem__(self, i: int) -> Example:
        return {k: v[i].numpy() for k, v in self.tensors.items()}

    def column(self, name: str) -> np.ndarray | None:
        t = self.tensors.get(name)
        return None if t is None else t.numpy()

    def gather(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """The fast path: a batch by one index per array."""
        return {k: v[idx] for k, v in self.tensors.items()}

    def subset(self, idx: torch.Tensor) -> ArraySource:
        return ArraySource(self.gather(idx))


@dataclass(frozen=True)
class BatchKey:
    """One micro-batch to load: which epoch (for random transforms) and which examples."""

    epoch: int
    indices: torch.Tensor


def shard(indices: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """Rank ``rank``'s contiguous part of a global batch (sizes differ by at most one)."""
    return indices if world == 1 else torch.tensor_split(indices, world)[rank]


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """Epoch ``epoch``'s permutation of ``n`` examples (the generator rule since graphc 0.1)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


class StepSampler(Sampler[BatchKey]):
    """The micro-batches of optimizer steps ``start`` .. ``stop - 1``, in order.

    Step ``s`` has ``grad_accum`` micro-batches of ``batch_size`` examples: micro-batches
    ``pos * grad_accum`` .. of epoch ``s // steps_per_epoch``'s permutation (``pos`` = the
    step's place in its epoch); the last partial micro-batch of an epoch is never used, so
    every batch has the same (compile-friendly) shape.
    """

    def __init__(self, n: int, batch_size: int, grad_accum: int, seed: int, start: int, stop: int,
                 rank: int = 0, world: int = 1) -> None:
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not in [0, {world})")
        self.n, self.bs, self.ga, self.seed = n, batch_size, grad_accum, seed
        self.start, self.stop, self.rank, self.world = start, stop, rank, world
        self.steps_per_epoch = max(1, (n // batch_size) // grad_accum)

    def global_batch(self, step: int, j: int) -> tuple[int, torch.Tensor]:
        """(epoch, indices) of micro-batch ``j`` of step ``step``, before sharding."""
        epoch, pos = divmod(step, self.steps_per_epoch)
        i = pos * self.ga + j
        return epoch, epoch_order(self.n, self.seed, epoch)[i * self.bs : (i + 1) * self.bs]

    def __iter__(self) -> Iterator[BatchKey]:
        order, order_epoch = None, -1
        for step in range(self.start, self.stop):
            epoch, pos = divmod(step, self.steps_per_epoch)
            if epoch != order_epoch:  # one permutation per epoch, not per step
                order, order_epoch = epoch_order(self.n, self.seed, epoch), epoch
            assert order is not None
            for j in range(self.ga):
                i = pos * self.ga + j
                yield BatchKey(epoch, shard(order[i * self.bs : (i + 1) * self.bs], self.rank, self.world))

    def __len__(self) -> int:
        return max(0, self.stop - self.start) * self.ga


class InOrder(Sampler[BatchKey]):
    """Evaluation: consecutive batches of ``batch_size`` (the last may be smaller), at most ``limit``."""

    def __init__(self, n: int, batch_size: int, limit: int | None = None) -> None:
        self.parts = list(torch.arange(n).split(batch_size))[:limit] if n else []

    def __iter__(self) -> Iterator[BatchKey]:
        return (BatchKey(0, p) for p in self.parts)

    def __len__(self) -> int:
        return len(self.parts)


class Batches(Dataset[dict[str, torch.Tensor]]):
    """Map-style over :class:`BatchKey` s: one collated batch of tensors per key."""

    def __init__(self, source: Source, dtypes: Mapping[str, torch.dtype]) -> None:
        self.source, self.dtypes = source, dict(dtypes)

    def __getitem__(self, key: BatchKey) -> dict[str, torch.Tensor]:  # type: ignore[override]
        try:
            return self._batch(key)
        except GraphcError as e:  # raised in a worker, torch would re-raise it with the worker's traceback as its text
            return {FAILED: e}  # type: ignore[dict-item]

    def _batch(self, key: BatchKey) -> dict[str, torch.Tensor]:
        if isinstance(self.source, ArraySource):
            return self.source.gather(key.indices)
        set_epoch = getattr(self.source, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(key.epoch)
        examples = [self.source[int(i)] for i in key.indices]
        return {k: torch.from_numpy(np.stack([e[k] for e in examples])).to(self.dtypes.get(k, _default_dtype(examples[0][k])))
                for k in examples[0]}


def _default_dtype(a: np.ndarray) -> torch.dtype:
    return torch.long if np.issubdtype(a.dtype, np.integer) else torch.float32


def _keep(batch: Any) -> Any:
    """The DataLoader's collate: the batch is already collated by :class:`Batches`."""
    return batch


class Loader:
    """Iterates a DataLoader's batches; a source's own error (a file that went bad after it
    was prepared) is raised again here as the one-line error it was."""

    def __init__(self, loader: DataLoader[dict[str, torch.Tensor]]) -> None:
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for batch in self.loader:
            failed = batch.get(FAILED)
            if failed is not None:
                raise failed  # type: ignore[misc]
            yield batch


FAILED = "__graphc_error__"  # the key a batch that could not be made carries its error under


def make_loader(source: Source, sampler: Sampler[BatchKey], dtypes: Mapping[str, torch.dtype], workers: int = 0,
                prefetch: int = 2, pin: bool = False) -> Loader:
    """A DataLoader yielding ``sampler``'s batches of ``source`` with ``workers`` processes."""
    # Its own generator: a DataLoader iterator draws a base seed for its workers, and from
    # torch's global generator that draw would shift the dropout stream of a resumed run.
    return Loader(DataLoader(Batches(source, dtypes), sampler=sampler, batch_size=None, collate_fn=_keep, num_workers=workers,
                             prefetch_factor=prefetch if workers else None, pin_memory=pin, persistent_workers=False,
                             generator=torch.Generator().manual_seed(0)))
