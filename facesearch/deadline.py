"""The deadline of the RPC being served, carried in a context variable so calls made on its behalf
(search -> embedder) can finish inside it. The shared server interceptor sets it."""

from __future__ import annotations

import contextvars
import time

# time.monotonic() by which the served call must end; None = the caller set no deadline.
_CALL_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("call_deadline", default=None)


def set_call_deadline(time_remaining_s: float | None) -> None:
    """Records the served call's deadline (`context.time_remaining()`); tasks started from here on
    inherit it."""
    _CALL_DEADLINE.set(None if time_remaining_s is None else time.monotonic() + time_remaining_s)


def remaining_s() -> float | None:
    """Seconds left of the served call; None without a deadline (or outside a served call)."""
    deadline = _CALL_DEADLINE.get()
    return None if deadline is None else deadline - time.monotonic()
