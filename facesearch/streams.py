"""Request streams that stop early when the server starts shutting down, so a long stream answers
what it has taken and ends with a "resend the rest" status instead of being cut at the grace's end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Generic, TypeVar

T = TypeVar("T")


class UntilDraining(Generic[T]):
    """Iterates `requests` until they end or `draining` is set; `interrupted` then says whether the
    client still had requests the server did not take. An item already read is never dropped."""

    def __init__(self, requests: AsyncIterator[T], draining: asyncio.Event) -> None:
        self._requests = requests
        self._draining = draining
        self.interrupted = False

    async def __aiter__(self) -> AsyncIterator[T]:
        stop = asyncio.ensure_future(self._draining.wait())
        step: asyncio.Future[T] | None = None
        try:
            while not self._draining.is_set():
                step = asyncio.ensure_future(anext(self._requests))
                await asyncio.wait({step, stop}, return_when=asyncio.FIRST_COMPLETED)
                if not step.done():
                    break
                try:
                    item = step.result()
                except StopAsyncIteration:
                    return
                finally:
                    step = None
                yield item
            self.interrupted = True
        finally:
            stop.cancel()
            if step is not None:
                # A read still pending when draining started or the call ended: end it here, so no
                # task outlives the call ("Task was destroyed but it is pending!").
                step.cancel()
                await asyncio.gather(step, return_exceptions=True)
