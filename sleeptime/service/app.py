"""The query service: the cheapest adequate (variant, test budget) per query, over HTTP.

``create_app(settings)`` builds the FastAPI app; ``sleeptime serve`` runs it under uvicorn.

Endpoints (the README's "Query service" section documents bodies and errors):

    POST /v1/answer                    answer a question about a context       routes/answer.py
    GET  /v1/contexts                  the caller's contexts                   routes/contexts.py
    GET  /v1/contexts/{id}/variants    a context's variants and the policy's default choice
    GET  /healthz                      200 while the process runs              routes/ops.py
    GET  /readyz                       200 once a snapshot is loaded, else 503
    GET  /metrics                      Prometheus text
    GET  /docs, /redoc, /openapi.json  the OpenAPI description (docs.py: no CDN)
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError

from sleeptime.service.dependencies import ServiceParts
from sleeptime.service.docs import add_offline_docs
from sleeptime.service.errors import validation_error
from sleeptime.service.limits import RequestBodyLimits
from sleeptime.service.metrics import RequestMetrics
from sleeptime.service.routes import answer, contexts, ops
from sleeptime.service.settings import ServiceSettings

log = logging.getLogger("sleeptime.service")

API_VERSION = "1"

DESCRIPTION = (
    "Answers questions about persistent contexts with the (variant, test budget) the published selection "
    "policy plans for the context and query kind: the cheapest plan whose expected accuracy over the "
    "query mix reaches the policy's target. Authenticate with `Authorization: Bearer <key>` or `X-API-Key: <key>`."
)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    parts: ServiceParts = app.state.parts
    parts.holder.start()
    parts.querylog.start()
    try:
        yield
    finally:
        await parts.holder.stop()
        await parts.querylog.stop()  # writes what is pending


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    settings = settings or ServiceSettings()
    if not settings.auth:
        log.warning(
            "authentication is OFF (auth: false): every caller sees and queries every tenant's contexts; "
            "listening on %s", settings.host,
        )
    app = FastAPI(title="sleeptime query service", version=API_VERSION, description=DESCRIPTION,
                  lifespan=_lifespan, docs_url=None, redoc_url=None)
    app.state.parts = parts = ServiceParts.build(settings)
    app.add_exception_handler(RequestValidationError, validation_error)
    for module in (answer, contexts, ops):
        app.include_router(module.router)
    add_offline_docs(app)
    app.add_middleware(RequestBodyLimits, max_body_bytes=settings.max_body_bytes, timeout_s=settings.body_timeout_s)
    app.add_middleware(RequestMetrics, metrics=parts.metrics)  # outermost: counts the 413s and 408s too
    return app
