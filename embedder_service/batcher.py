"""A small, explicit dynamic batcher (Triton's idea): callers submit one item and await its
result; a dispatcher forms batches of up to `max_batch_size` items, waiting at most
`max_queue_delay` after the oldest item arrived, and runs them on worker threads so inference
never blocks the event loop. A full queue answers RESOURCE_EXHAUSTED."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from facesearch.errors import ResourceExhausted, Unavailable

log = logging.getLogger(__name__)

In = TypeVar("In")
Out = TypeVar("Out")


@dataclass
class _Pending(Generic[In, Out]):
    item: In
    future: asyncio.Future[Out]
    enqueued: float


class BatchObserver:
    """Hooks for metrics; the default does nothing."""

    def batch_ran(self, name: str, size: int, seconds: float) -> None: ...

    def queue_depth(self, name: str, depth: int) -> None: ...

    def waited(self, name: str, seconds: float) -> None:
        """One item's time from being queued to its batch starting."""


class DynamicBatcher(Generic[In, Out]):
    """`run_batch(items) -> results` (same length, same order) runs on one of `workers` threads.

    A batch is formed only when a worker is free, so while inference runs the queue keeps filling
    and the next batch is as large as the load allows: batches grow with load without any delay
    being spent when the server is idle beyond `max_queue_delay_s`.
    """

    def __init__(
        self,
        name: str,
        run_batch: Callable[[Sequence[In]], Sequence[Out]],
        *,
        max_batch_size: int,
        max_queue_delay_s: float,
        max_queue_size: int,
        workers: int = 1,
        observer: BatchObserver | None = None,
    ) -> None:
        self.name = name
        self._run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_s
        self.max_queue_size = max_queue_size
        self._workers = workers
        self._observer = observer or BatchObserver()
        self._queue: collections.deque[_Pending[In, Out]] = collections.deque()
        self._wakeup = asyncio.Event()
        self._free_workers = asyncio.Semaphore(workers)
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"infer-{name}")
        self._dispatcher: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def depth(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        if self._dispatcher is None:
            self._dispatcher = asyncio.get_running_loop().create_task(self._dispatch(), name=f"batcher-{self.name}")

    async def submit(self, item: In) -> Out:
        """The result for `item`; ResourceExhausted at once when the queue is full."""
        if self._closed:
            raise Unavailable("server is shutting down")
        if len(self._queue) >= self.max_queue_size:
            raise ResourceExhausted(f"{self.name} queue is full ({self.max_queue_size} items); retry later")
        future: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(item, future, time.perf_counter()))
        self._observer.queue_depth(self.name, len(self._queue))
        self._wakeup.set()
        return await future

    async def submit_many(self, items: Sequence[In]) -> list[Out]:
        """Results for all `items`, queued together: either all fit in the queue or none is queued."""
        if self._closed:
            raise Unavailable("server is shutting down")
        if len(self._queue) + len(items) > self.max_queue_size:
            raise ResourceExhausted(
                f"{self.name} queue is full ({len(self._queue)} of {self.max_queue_size} items waiting, "
                f"{len(items)} more asked); retry later"
            )
        loop = asyncio.get_running_loop()
        now = time.perf_counter()
        futures: list[asyncio.Future[Out]] = []
        for item in items:
            future: asyncio.Future[Out] = loop.create_future()
            self._queue.append(_Pending(item, future, now))
            futures.append(future)
        self._observer.queue_depth(self.name, len(self._queue))
        self._wakeup.set()
        try:
            return list(await asyncio.gather(*futures))
        finally:
            for future in futures:  # one failed or we were cancelled: the rest need not run
                future.cancel()

    async def _dispatch(self) -> None:
        while True:
            await self._free_workers.acquire()
            try:
                batch = await self._next_batch()
            except BaseException:
                self._free_workers.release()
                raise
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _next_batch(self) -> list[_Pending[In, Out]]:
        while True:
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            if len(self._queue) < self.max_batch_size:
                deadline = self._queue[0].enqueued + self.max_queue_delay_s
                while len(self._queue) < self.max_batch_size:
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0:
                        break
                    self._wakeup.clear()
                    try:
                        await asyncio.wait_for(self._wakeup.wait(), remaining)
                    except TimeoutError:
                        break
            batch: list[_Pending[In, Out]] = []
            while self._queue and len(batch) < self.max_batch_size:
                pending = self._queue.popleft()
                if not pending.future.done():  # its caller went away: don't spend inference on it
                    batch.append(pending)
            self._observer.queue_depth(self.name, len(self._queue))
            if batch:
                return batch

    async def _run(self, batch: list[_Pending[In, Out]]) -> None:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        for pending in batch:
            self._observer.waited(self.name, started - pending.enqueued)
        try:
            results = await loop.run_in_executor(self._executor, self._run_batch, [p.item for p in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{self.name}: {len(results)} results for {len(batch)} items")
        except Exception as exc:
            log.exception("%s batch of %d failed", self.name, len(batch))
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
        else:
            for pending, result in zip(batch, results, strict=True):
                if not pending.future.done():
                    pending.future.set_result(result)
        finally:
            self._free_workers.release()
            self._observer.batch_ran(self.name, len(batch), time.perf_counter() - started)

    async def close(self) -> None:
        """Finishes the batches already running, fails what is still queued, stops the threads."""
        self._closed = True
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            await asyncio.gather(self._dispatcher, return_exceptions=True)
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        while self._queue:
            pending = self._queue.popleft()
            if not pending.future.done():
                pending.future.set_exception(Unavailable("server is shutting down"))
        self._executor.shutdown(wait=True)
