"""`python -m search_service`: runs the search service with settings from SEARCH_* variables."""

from __future__ import annotations

import asyncio
import logging
import sys

from facesearch.memory import release_large_buffers_to_os
from facesearch.observability import configure_logging
from search_service.config import SearchSettings
from search_service.server import serve


def main() -> None:
    settings = SearchSettings()
    configure_logging(settings.log_level)
    release_large_buffers_to_os()
    try:
        asyncio.run(serve(settings))
    except RuntimeError as exc:
        # A refusal to start (unsafe settings, wrong model width) is a message, not a traceback.
        logging.getLogger("search_service").error("cannot start: %s", exc)
        sys.exit(1)


if __name__ == "__main__":
    main()
