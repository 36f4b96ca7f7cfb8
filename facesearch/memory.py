"""Allocator settings both services use so that memory large requests (multi-MiB images, long ids)
used goes back to the OS once they are done: a pinned mmap threshold at start-up, a heap trim
when a stream ends."""

from __future__ import annotations

import asyncio
import ctypes
import functools
import logging

log = logging.getLogger(__name__)

# glibc's mallopt parameter number for the mmap threshold (malloc.h: M_MMAP_THRESHOLD).
_M_MMAP_THRESHOLD = -3
# Allocations from this size up are mmapped and unmapped on free (glibc's starting default).
MMAP_THRESHOLD_BYTES = 128 * 1024


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None)  # the process's own symbols: libc's malloc functions among them
    except OSError:
        return None


def release_large_buffers_to_os() -> bool:
    """Pins glibc's mmap threshold. By default glibc raises it after each large free (up to 32
    MiB), so after the first burst every 2 MiB image buffer comes from heap arenas that are rarely
    trimmed: a burst of large requests then kept ~500 MB resident for good. Pinned, such buffers
    stay mmapped and are returned the moment they are freed. False where there is no glibc."""
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    if mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) != 1:
        log.warning("mallopt(M_MMAP_THRESHOLD) failed; freed request buffers may stay resident")
        return False
    return True


_trimming: set[asyncio.Future[None]] = set()


def _malloc_trim() -> None:
    malloc_trim = getattr(_libc(), "malloc_trim", None)
    if malloc_trim is not None:
        malloc_trim(0)


def trim_soon() -> None:
    """Hands the heap's free pages back to the OS (glibc malloc_trim), on a worker thread and at
    most one at a time. Called when a stream ends: its many mid-sized buffers (long ids, replies)
    free memory scattered over the heap that glibc would otherwise keep."""
    if _trimming or getattr(_libc(), "malloc_trim", None) is None:
        return
    future = asyncio.get_running_loop().run_in_executor(None, _malloc_trim)
    _trimming.add(future)
    future.add_done_callback(_trimming.discard)
