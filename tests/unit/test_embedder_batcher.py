"""Unit tests of the dynamic batcher: flush at max batch size or after the oldest item's delay,
items from concurrent callers share batches, a full queue answers RESOURCE_EXHAUSTED, failures
reach every caller of the batch, and callers that went away cost no inference."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import pytest

from embedder_service.batcher import DynamicBatcher
from facesearch.errors import ResourceExhausted, Unavailable


class Recorder:
    """run_batch that doubles numbers, records batch sizes and the thread it ran on."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.threads: set[str] = set()
        self.delay_s = delay_s

    def __call__(self, items: Sequence[int]) -> list[int]:
        self.batches.append(list(items))
        self.threads.add(threading.current_thread().name)
        if self.delay_s:
            time.sleep(self.delay_s)
        return [2 * i for i in items]


def make(recorder: Recorder, **kwargs: object) -> DynamicBatcher[int, int]:
    options = {"max_batch_size": 4, "max_queue_delay_s": 0.05, "max_queue_size": 100, "workers": 1} | kwargs
    batcher = DynamicBatcher[int, int]("test", recorder, **options)  # type: ignore[arg-type]
    batcher.start()
    return batcher


async def test_concurrent_callers_share_batches_and_get_their_own_results() -> None:
    recorder = Recorder()
    batcher = make(recorder, max_batch_size=8, max_queue_delay_s=0.02)
    try:
        results = await asyncio.gather(*(batcher.submit(i) for i in range(20)))
        assert results == [2 * i for i in range(20)]
        assert sorted(i for batch in recorder.batches for i in batch) == list(range(20))
        assert max(len(b) for b in recorder.batches) == 8
        assert len(recorder.batches) == 3  # 8 + 8 + 4
        assert all(name.startswith("infer-test") for name in recorder.threads)  # never the event loop's thread
    finally:
        await batcher.close()


async def test_full_batch_flushes_without_waiting_for_the_delay() -> None:
    recorder = Recorder()
    batcher = make(recorder, max_batch_size=4, max_queue_delay_s=5.0)
    try:
        started = time.perf_counter()
        await asyncio.gather(*(batcher.submit(i) for i in range(4)))
        assert time.perf_counter() - started < 1.0
        assert recorder.batches == [[0, 1, 2, 3]]
    finally:
        await batcher.close()


async def test_lone_item_waits_at_most_the_queue_delay() -> None:
    recorder = Recorder()
    batcher = make(recorder, max_batch_size=64, max_queue_delay_s=0.1)
    try:
        started = time.perf_counter()
        assert await batcher.submit(21) == 42
        waited = time.perf_counter() - started
        assert 0.09 <= waited < 1.0
        first = asyncio.create_task(batcher.submit(1))
        await asyncio.sleep(0.03)
        second = asyncio.create_task(batcher.submit(2))  # joins the first's batch before its delay ends
        assert await asyncio.gather(first, second) == [2, 4]
        assert recorder.batches[-1] == [1, 2]
    finally:
        await batcher.close()


async def test_batches_grow_while_the_worker_is_busy() -> None:
    recorder = Recorder(delay_s=0.1)
    batcher = make(recorder, max_batch_size=16, max_queue_delay_s=0.0)
    try:
        first = asyncio.create_task(batcher.submit(0))
        await asyncio.sleep(0.02)  # the worker is now busy with [0]
        rest = [asyncio.create_task(batcher.submit(i)) for i in range(1, 10)]
        await asyncio.gather(first, *rest)
        assert recorder.batches == [[0], list(range(1, 10))]
    finally:
        await batcher.close()


async def test_full_queue_answers_resource_exhausted() -> None:
    recorder = Recorder(delay_s=0.2)
    batcher = make(recorder, max_batch_size=1, max_queue_delay_s=0.0, max_queue_size=2)
    try:
        running = asyncio.create_task(batcher.submit(0))
        await asyncio.sleep(0.05)  # 0 is running; the queue is empty
        queued = [asyncio.create_task(batcher.submit(i)) for i in (1, 2)]
        await asyncio.sleep(0)
        with pytest.raises(ResourceExhausted, match="queue is full"):
            await batcher.submit(3)
        with pytest.raises(ResourceExhausted):
            await batcher.submit_many([4])
        assert await asyncio.gather(running, *queued) == [0, 2, 4]
        assert await batcher.submit(5) == 10  # room again
    finally:
        await batcher.close()


async def test_submit_many_is_all_or_nothing() -> None:
    recorder = Recorder()
    batcher = make(recorder, max_batch_size=4, max_queue_size=5, max_queue_delay_s=0.01)
    try:
        with pytest.raises(ResourceExhausted):
            await batcher.submit_many(list(range(6)))
        assert batcher.depth == 0 and recorder.batches == []
        assert await batcher.submit_many([1, 2, 3, 4, 5]) == [2, 4, 6, 8, 10]
    finally:
        await batcher.close()


async def test_a_failing_batch_fails_each_of_its_callers_and_the_batcher_goes_on() -> None:
    calls = 0

    def flaky(items: Sequence[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError("boom")
        return list(items)

    batcher = DynamicBatcher[int, int]("flaky", flaky, max_batch_size=4, max_queue_delay_s=0.02, max_queue_size=10)
    batcher.start()
    try:
        results = await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)
        assert all(isinstance(r, ValueError) for r in results)
        assert await batcher.submit(7) == 7
    finally:
        await batcher.close()


async def test_cancelled_callers_are_not_run() -> None:
    recorder = Recorder(delay_s=0.1)
    batcher = make(recorder, max_batch_size=8, max_queue_delay_s=0.0)
    try:
        busy = asyncio.create_task(batcher.submit(0))
        await asyncio.sleep(0.02)
        gone = asyncio.create_task(batcher.submit(99))
        kept = asyncio.create_task(batcher.submit(1))
        await asyncio.sleep(0)
        gone.cancel()
        assert await asyncio.gather(busy, kept) == [0, 2]
        assert all(99 not in batch for batch in recorder.batches)
    finally:
        await batcher.close()


async def test_close_fails_queued_items_and_refuses_new_ones() -> None:
    recorder = Recorder(delay_s=0.1)
    batcher = make(recorder, max_batch_size=1, max_queue_delay_s=0.0)
    running = asyncio.create_task(batcher.submit(1))
    await asyncio.sleep(0.02)
    queued = asyncio.create_task(batcher.submit(2))
    await asyncio.sleep(0)
    await batcher.close()
    assert await running == 2  # in flight: finished
    with pytest.raises(Unavailable):
        await queued
    with pytest.raises(Unavailable):
        await batcher.submit(3)
