"""`python -m search_service`: runs the search service with settings from SEARCH_* variables."""

from __future__ import annotations

import asyncio

from facesearch.memory import release_large_buffers_to_os
from facesearch.observability import configure_logging
from search_service.config import SearchSettings
from search_service.server import serve


def main() -> None:
    settings = SearchSettings()
    configure_logging(settings.log_level)
    release_large_buffers_to_os()
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
