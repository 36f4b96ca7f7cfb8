"""Process-wide allocator setting both services apply at start-up, so memory that large requests
(multi-MiB images) used goes back to the OS once they are done."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

# glibc's mallopt parameter number for the mmap threshold (malloc.h: M_MMAP_THRESHOLD).
_M_MMAP_THRESHOLD = -3
# Allocations from this size up are mmapped and unmapped on free (glibc's starting default).
MMAP_THRESHOLD_BYTES = 128 * 1024


def release_large_buffers_to_os() -> bool:
    """Pins glibc's mmap threshold. By default glibc raises it after each large free (up to 32
    MiB), so after the first burst every 2 MiB image buffer comes from heap arenas that are rarely
    trimmed: a burst of large requests then kept ~500 MB resident for good. Pinned, such buffers
    stay mmapped and are returned the moment they are freed. False where there is no glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs without mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    if mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) != 1:
        log.warning("mallopt(M_MMAP_THRESHOLD) failed; freed request buffers may stay resident")
        return False
    return True
