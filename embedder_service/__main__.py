"""`python -m embedder_service`: run the embedder until SIGTERM/SIGINT (settings from EMBEDDER_*)."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import sys

from embedder_service.config import EmbedderSettings
from embedder_service.models import ModelPackError
from embedder_service.server import start_server
from facesearch.memory import release_large_buffers_to_os
from facesearch.observability import configure_logging
from facesearch.serving import run_until_signalled

log = logging.getLogger("embedder_service")


async def serve(settings: EmbedderSettings) -> None:
    server = await start_server(settings)
    await run_until_signalled([server.grpc], settings.shutdown_grace_s, on_stopped=server.engine.close)


_M_MMAP_THRESHOLD = -3  # glibc mallopt parameter


def return_image_memory_to_the_os() -> None:
    """Large buffers (decoded images) get pages of their own that go back to the OS when freed.
    glibc otherwise raises its mmap threshold after the first freed image and serves later ones from
    heap arenas that it keeps: about 280 MB more peak RSS with 32 24 MP photos in flight."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name or not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(libc_name).mallopt(_M_MMAP_THRESHOLD, 256 * 1024)
    except (OSError, AttributeError):  # not glibc (musl has no mallopt): nothing to tune
        pass


def main() -> int:
    return_image_memory_to_the_os()
    settings = EmbedderSettings()
    configure_logging(settings.log_level)
    release_large_buffers_to_os()
    try:
        asyncio.run(serve(settings))
    except ModelPackError as exc:
        log.error("cannot start: %s", exc)
        print(f"embedder_service: cannot start.\n{exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
