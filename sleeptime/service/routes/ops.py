"""Operations endpoints: liveness, readiness and Prometheus metrics. /healthz and /readyz need no
key (probes have none), so what they say leaves out file system paths."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from sleeptime.service.auth import metrics_access
from sleeptime.service.dependencies import Holder, Metrics
from sleeptime.service.errors import public_message

router = APIRouter(tags=["ops"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """Liveness: 200 while the process serves HTTP."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "No snapshot loaded yet."}})
def readyz(holder: Holder) -> JSONResponse:
    """Readiness: 200 once a warehouse snapshot is loaded (and while one is), else 503."""
    snapshot = holder.current
    if snapshot is None:
        reason = public_message(holder.last_error) or "loading the warehouse snapshot"
        return JSONResponse({"status": "not ready", "reason": reason}, 503)
    return JSONResponse({
        "status": "ready",
        "snapshot": snapshot.name,
        "policy_version": snapshot.policy_version,
        "contexts": len(snapshot.contexts),
        "loaded_at": snapshot.loaded_at.isoformat(),
        "reloads": holder.reloads,
        "last_error": public_message(holder.last_error),
    })


@router.get(
    "/metrics", response_class=Response, dependencies=[Depends(metrics_access)],
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text (OpenMetrics when asked for)."},
               401: {"description": "A metrics token is set and the request did not bring it."}},
)
def prometheus(request: Request, metrics: Metrics) -> Response:
    """Prometheus exposition: requests, latencies, tokens, cost, choices, reloads, the snapshot served."""
    body, content_type = metrics.exposition(request.headers.get("accept"))
    return Response(body, media_type=content_type)
