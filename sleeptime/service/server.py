"""The service under uvicorn: one ``uvicorn.Config`` from the settings, so ``sleeptime serve`` and
the tests run the same server.

uvicorn's own limits, with the settings that set them: an idle keep-alive connection is closed
after ``keep_alive_timeout_s``; at shutdown, requests still running after ``graceful_shutdown_s``
are cancelled (uvicorn's default waits for ever); beyond ``limit_concurrency`` connections and
requests, new ones get 503. A body too slow to arrive is the app's to refuse (``limits.py``: 408).
uvicorn has no timeout for a request's headers: a client that connects and sends nothing, or its
headers a byte at a time, holds its connection until it stops; ``limit_concurrency`` bounds how
many such connections matter, and a reverse proxy in front (nginx's ``client_header_timeout``)
closes them.
"""

from __future__ import annotations

import uvicorn

from sleeptime.service.app import create_app
from sleeptime.service.settings import ServiceSettings


def uvicorn_config(settings: ServiceSettings) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=settings.access_log,
        timeout_keep_alive=settings.keep_alive_timeout_s,
        timeout_graceful_shutdown=settings.graceful_shutdown_s,
        limit_concurrency=settings.limit_concurrency,
    )
