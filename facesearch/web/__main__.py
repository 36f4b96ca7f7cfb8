"""`python -m facesearch.web`: the web gateway on FACESEARCH_WEB_HOST:FACESEARCH_WEB_PORT until SIGTERM."""

from __future__ import annotations

import uvicorn

from facesearch.observability import configure_logging
from facesearch.web.app import create_app
from facesearch.web.config import WebSettings


def main() -> None:
    settings = WebSettings()
    configure_logging(settings.log_level)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        # Uploads are batches of photos: bounded by the batch size and max_image_bytes per photo.
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
