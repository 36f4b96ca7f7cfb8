"""`python -m embedder_service`: run the embedder until SIGTERM/SIGINT (settings from EMBEDDER_*)."""

from __future__ import annotations

import asyncio
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


def main() -> int:
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
