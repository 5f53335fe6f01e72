import asyncio

import pytest

from operators.batching import MicroBatcher


class Recorder:
    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.delay = delay
        self.running = 0
        self.max_running = 0

    async def __call__(self, items: list[int]) -> list[int | BaseException]:
        self.batches.append(list(items))
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        await asyncio.sleep(self.delay)
        self.running -= 1
        return [ValueError(f"bad {i}") if i < 0 else i * 10 for i in items]


async def test_full_batch_flushes_without_waiting_for_max_wait() -> None:
    recorder = Recorder()
    batcher = MicroBatcher(recorder, max_batch=4, max_wait_s=3600, max_concurrency=2)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(8)))
    assert results == [i * 10 for i in range(8)]
    assert recorder.batches == [[0, 1, 2, 3], [4, 5, 6, 7]]


async def test_partial_batch_flushes_after_max_wait() -> None:
    recorder = Recorder()
    batcher = MicroBatcher(recorder, max_batch=100, max_wait_s=0.01, max_concurrency=1)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(3)))
    assert results == [0, 10, 20] and recorder.batches == [[0, 1, 2]]


async def test_concurrency_limit_holds_and_nothing_is_dropped() -> None:
    recorder = Recorder(delay=0.01)
    batcher = MicroBatcher(recorder, max_batch=2, max_wait_s=0.001, max_concurrency=2)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(20)))
    assert results == [i * 10 for i in range(20)]
    assert recorder.max_running == 2
    assert sorted(i for batch in recorder.batches for i in batch) == list(range(20))


async def test_an_item_error_reaches_only_its_submitter() -> None:
    batcher = MicroBatcher(Recorder(), max_batch=3, max_wait_s=0.01, max_concurrency=1)
    results = await asyncio.gather(batcher.submit(1), batcher.submit(-1), batcher.submit(2), return_exceptions=True)
    assert results[0] == 10 and results[2] == 20
    assert isinstance(results[1], ValueError) and "bad -1" in str(results[1])


async def test_batch_failure_reaches_every_submitter() -> None:
    async def broken(items: list[int]) -> list[int]:
        raise RuntimeError("model exploded")

    batcher = MicroBatcher(broken, max_batch=2, max_wait_s=0.01, max_concurrency=1)
    with pytest.raises(RuntimeError, match="exploded"):
        await batcher.submit(1)


async def test_batch_sizes_are_reported() -> None:
    sizes: list[int] = []
    batcher = MicroBatcher(Recorder(), max_batch=3, max_wait_s=0.01, max_concurrency=1, on_batch=sizes.append)
    await asyncio.gather(*(batcher.submit(i) for i in range(7)))
    assert sizes == [3, 3, 1]
