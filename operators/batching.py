"""Micro-batching across streams: many concurrent ``submit(item)`` calls become few ``score_batch(items)`` calls.

A batch is flushed when it holds ``max_batch`` items or ``max_wait_s`` after its first item arrived, whichever
comes first. At most ``max_concurrency`` batches are being scored at once; later batches wait for a slot (they
are never dropped). ``score_batch`` returns one result per item, in order; an item's result may be an exception,
which is raised to that item's submitter only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

BatchFn = Callable[[list[T]], Awaitable[list[R | BaseException]]]


class MicroBatcher(Generic[T, R]):
    def __init__(
        self,
        score_batch: BatchFn[T, R],
        max_batch: int,
        max_wait_s: float,
        max_concurrency: int,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        if max_batch < 1 or max_concurrency < 1 or max_wait_s < 0:
            raise ValueError("max_batch and max_concurrency must be >= 1 and max_wait_s >= 0")
        self._score_batch = score_batch
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._slots = asyncio.Semaphore(max_concurrency)
        self._on_batch = on_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._running: set[asyncio.Task[None]] = set()

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if len(self._pending) >= self.max_batch:
            self._flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.max_wait_s, self._flush)
        return await future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
        if self._pending:
            self._timer = asyncio.get_running_loop().call_later(self.max_wait_s, self._flush)
        if batch:
            task = asyncio.create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        async with self._slots:
            if self._on_batch is not None:
                self._on_batch(len(batch))
            try:
                results = await self._score_batch([item for item, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"score_batch returned {len(results)} results for {len(batch)} items")
            except Exception as error:  # the whole batch failed: every submitter learns why
                results = [error] * len(batch)
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():  # the submitter was cancelled
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    async def aclose(self) -> None:
        """Flush what is pending and wait for every batch in flight."""
        self._flush()
        while self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
