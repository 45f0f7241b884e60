"""Dynamic micro-batching: concurrent requests become one onnxruntime call.

Requests wait in a bounded queue (full: the app answers 503 with Retry-After, so memory stays
bounded under overload).  One worker takes the oldest request, then gathers more whose
non-batch dims match (same key) until ``max_batch`` examples or ``max_wait_ms`` have passed
(it waits only while other requests are queued or still arriving: a lone client is not
delayed),
concatenates them along the batch dim, runs the session once in a worker thread and splits
the outputs back.  Requests of another shape wait for the next round, in order.  If a combined
run fails, each request is re-run alone, so one bad request cannot fail its neighbours.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from graphc.serve.runtime import OnnxModel

Arrays = dict[str, np.ndarray]


class QueueFull(Exception):
    """The request queue is at its bound."""


class RunFailed(Exception):
    """onnxruntime refused a request's inputs (e.g. an id outside the embedding table)."""


@dataclass
class _Job:
    arrays: Arrays
    size: int
    key: Any
    future: asyncio.Future[Arrays]
    queued: float = field(default_factory=time.perf_counter)


class Batcher:
    """Queue + worker over one :class:`OnnxModel`.  ``on_batch(n)`` reports each run's size."""

    def __init__(self, model: OnnxModel, max_batch: int = 32, max_wait_ms: float = 2.0, queue_size: int = 256,
                 on_batch: Callable[[int], None] | None = None) -> None:
        self.model = model
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.queue_size = queue_size
        self.on_batch = on_batch or (lambda n: None)
        self.batch_dim = model.manifest.batch_dim
        self._queue: deque[_Job] = deque()
        self.arriving = 0  # requests whose bodies are being read or checked (the app counts them)
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def depth(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._worker())

    async def stop(self, timeout: float = 30.0) -> None:
        """Finish what is queued (for at most ``timeout`` s), then end the worker (graceful shutdown)."""
        deadline = time.perf_counter() + timeout
        while self._queue and time.perf_counter() < deadline and self._task is not None and not self._task.done():
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def submit(self, arrays: Arrays) -> Arrays:
        """Queue one checked request and wait for its outputs.

        Raises:
            QueueFull: the queue holds ``queue_size`` requests already.
            RunFailed: onnxruntime refused the inputs.
        """
        if len(self._queue) >= self.queue_size:
            raise QueueFull
        first = next(iter(arrays.values()))
        batchable = self.batch_dim is not None
        size = int(first.shape[0]) if batchable else 1
        key = tuple((n, a.shape[1:], a.dtype.str) for n, a in arrays.items()) if batchable else object()
        job = _Job(arrays, size, key, asyncio.get_running_loop().create_future())
        self._queue.append(job)
        assert self._wake is not None, "Batcher.start() was not called"
        self._wake.set()
        return await job.future

    def _take(self, key: Any, room: int) -> list[_Job]:
        """Queued jobs of ``key`` that fit in ``room`` examples, oldest first."""
        taken = []
        for job in list(self._queue):
            if job.key == key and job.size <= room:
                taken.append(job)
                self._queue.remove(job)
                room -= job.size
        return taken

    async def _worker(self) -> None:
        assert self._wake is not None
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
            first = self._queue.popleft()
            jobs = [first]
            room = self.max_batch - first.size
            deadline = first.queued + self.max_wait
            while room > 0 and self.batch_dim is not None and (self._queue or self.arriving):
                more = self._take(first.key, room)
                jobs += more
                room -= sum(j.size for j in more)
                left = deadline - time.perf_counter()
                if room <= 0 or left <= 0:
                    break
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), left)
                except TimeoutError:
                    jobs += self._take(first.key, room)
                    break
            try:
                await self._run(jobs)
            except Exception as e:  # a bug must fail these requests, never stop the worker
                for j in jobs:
                    if not j.future.done():
                        j.future.set_exception(RunFailed(f"internal error: {type(e).__name__}"))

    async def _run(self, jobs: list[_Job]) -> None:
        live = [j for j in jobs if not j.future.done()]  # a client that went away is skipped
        if not live:
            return
        self.on_batch(sum(j.size for j in live))
        if len(live) == 1:
            await self._run_alone(live[0])
            return
        try:
            feeds = {n: np.concatenate([j.arrays[n] for j in live]) for n in live[0].arrays}
            outs = await asyncio.to_thread(self.model.run, feeds)
        except Exception:
            for j in live:
                await self._run_alone(j)
            return
        start = 0
        for j in live:
            if not j.future.done():
                j.future.set_result({n: o[start:start + j.size] for n, o in outs.items()})
            start += j.size

    async def _run_alone(self, job: _Job) -> None:
        try:
            outs = await asyncio.to_thread(self.model.run, job.arrays)
        except Exception as e:
            if not job.future.done():
                job.future.set_exception(RunFailed(str(e).splitlines()[0] if str(e) else type(e).__name__))
            return
        if not job.future.done():
            job.future.set_result(outs)
