"""The query service: the cheapest adequate (variant, test budget) per query, over HTTP.

``create_app(settings)`` builds the FastAPI app; ``sleeptime serve`` runs it under uvicorn.

Endpoints (the README's "Query service" section documents bodies and errors):

    POST /v1/answer                    answer a question about a context
    GET  /v1/contexts                  the caller's contexts
    GET  /v1/contexts/{id}/variants    a context's variants and the policy's default choice
    GET  /healthz                      200 while the process runs
    GET  /readyz                       200 once a snapshot is loaded, else 503
    GET  /metrics                      Prometheus text
    GET  /docs, /redoc, /openapi.json  the OpenAPI description
"""

from __future__ import annotations

import logging
import time
import re
import uuid
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, AsyncIterator

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, field_validator

from sleeptime.compute import answer_query
from sleeptime.config import RunConfig, load_config
from sleeptime.domain import Query as DomainQuery
from sleeptime.model import ModelError, ModelGateway, ResponseCache
from sleeptime.service import metrics as metrics_mod
from sleeptime.service.keys import KeyFileError, KeyStore, Principal
from sleeptime.service.limits import BodySizeLimit
from sleeptime.service.querylog import QueryLog, partition, question_digest
from sleeptime.service.selection import Selection, Step, Unsatisfiable, infer_kind, select
from sleeptime.service.snapshot import SnapshotHolder

log = logging.getLogger("sleeptime.service")

API_VERSION = "1"


# --- settings ------------------------------------------------------------------------------------


class ServiceSettings(BaseModel):
    """How the service runs. ``config`` is a RunConfig or the path of its YAML file; paths left
    None follow it: the published warehouse, ``<output_dir>/service/api_keys.json``, the lake."""

    model_config = ConfigDict(extra="forbid")

    config: RunConfig = Field(default_factory=RunConfig)
    warehouse_path: Path | None = None
    keys_path: Path | None = None
    query_log_dir: Path | None = None  # the spool root; the log goes to <spool>/query_log/
    query_log: bool = True
    # Off by default: live questions rarely repeat exactly, and a cached reply would hide a model
    # change from users. When on, it uses the path of config.response_cache (or <output_dir>/cache).
    response_cache: bool = False
    auth: bool = True
    reload_interval_s: float = Field(default=2.0, gt=0)
    log_batch_size: int = Field(default=50, ge=1)
    log_flush_s: float = Field(default=5.0, gt=0)
    max_question_chars: int = Field(default=4000, ge=1)
    max_body_bytes: int = Field(default=16384, ge=256)
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)

    @field_validator("config", mode="before")
    @classmethod
    def _config_from_path(cls, value: Any) -> Any:
        if isinstance(value, (str, Path)):
            return load_config(Path(value))
        return value

    @property
    def resolved_warehouse(self) -> Path:
        return self.warehouse_path or self.config.warehouse_path

    @property
    def resolved_keys(self) -> Path:
        return self.keys_path or default_keys_path(self.config)

    @property
    def resolved_lake(self) -> Path:
        return self.query_log_dir or self.config.spool_dir


def default_keys_path(config: RunConfig) -> Path:
    return config.output_dir / "service" / "api_keys.json"


# --- API models ----------------------------------------------------------------------------------

def _utf8(value: str) -> str:
    """Text that can be encoded: a lone surrogate (JSON's "\\ud800") cannot be hashed, logged or
    sent to a model, so it is a client error here rather than a failure later."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (it holds a lone surrogate)") from None
    return value


Question = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1), AfterValidator(_utf8)]


class AnswerRequest(BaseModel):
    # NaN, Infinity and 1e999 (which JSON parsers read as infinity) are not numbers a cap or a
    # target can take.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    context_id: Annotated[str, StringConstraints(min_length=1, max_length=256), AfterValidator(_utf8)] = Field(
        description="A context id of the caller's tenant (GET /v1/contexts)."
    )
    question: Question = Field(description="The question, at most max_question_chars characters (default 4000; 413 beyond).")
    target_accuracy: float | None = Field(
        default=None, gt=0, le=1,
        description="Overrides the published policy's target for this query: the cheapest option whose estimated "
        "accuracy's lower bound (for an average context of the query's kind) reaches it.",
    )
    max_cost: float | None = Field(
        default=None, gt=0,
        description="Cap on the policy's cost per query (weighted tokens: amortized sleep tokens + t x test tokens).",
    )
    max_latency_ms: float | None = Field(
        default=None, gt=0,
        description="Cap on the option's measured mean model latency in the evaluation, in milliseconds.",
    )
    kind: Annotated[str, StringConstraints(min_length=1, max_length=64), AfterValidator(_utf8)] | None = Field(
        default=None,
        description="The query kind for the policy's kind scope; inferred from the question when left out.",
    )


class ChoiceOut(BaseModel):
    variant_id: str | None = Field(description="The c' used; null for the raw context.")
    sleep_budget: str
    test_budget: str
    scope: str = Field(description="context | kind | corpus: the policy scope the option came from.")
    scope_value: str
    kind: str | None
    fallback: bool = Field(description="True for the policy's fallback or a later option of the failure chain.")
    reason: str


class UsageOut(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AttemptOut(BaseModel):
    sleep_budget: str
    test_budget: str
    variant_id: str | None
    ok: bool
    error: str | None = None


class AnswerResponse(BaseModel):
    request_id: str
    context_id: str
    answer: str | None = Field(description="The extracted final answer (a number), null when none was found.")
    reply: str = Field(description="The model's full reply.")
    choice: ChoiceOut
    predicted_accuracy: float | None = Field(
        description="The policy's estimate of the chosen option's accuracy for this context and kind (shrunk from "
        "the corpus to the kind to the context)."
    )
    predicted_accuracy_lower: float | None = Field(description="A lower confidence bound of that estimate.")
    target_accuracy: float
    predicted_cost_weighted: float | None
    usage: UsageOut
    cost_usd: float
    latency_ms: float = Field(description="Time in the service for this request, selection and model call included.")
    model_latency_ms: float
    selection_us: float
    attempts: list[AttemptOut]
    policy_version: str | None
    snapshot: str


class ContextOut(BaseModel):
    context_id: str
    source: str
    chars: int
    sleep_budgets: list[str] = Field(description="Sleep budgets with a c' for the current text.")


class ContextList(BaseModel):
    tenant: str | None
    total: int
    offset: int
    limit: int
    contexts: list[ContextOut]


class VariantOut(BaseModel):
    variant_id: str
    sleep_budget: str
    sample_index: int
    model: str
    completion_tokens: int
    text: str


class VariantList(BaseModel):
    context_id: str
    variants: list[VariantOut]
    default_choice: ChoiceOut | None = Field(description="What the policy picks for a question of no particular kind.")


class Problem(BaseModel):
    detail: dict[str, Any]


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Missing, wrong or revoked API key."},
    404: {"model": Problem, "description": "Unknown context, or a context of another tenant."},
}


# --- authentication ------------------------------------------------------------------------------

_bearer = HTTPBearer(auto_error=False, description="An API key from `sleeptime keys create TENANT`.")
_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="The same key, in this header.")


def _principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key_header)],
) -> Principal:
    """The caller's tenant from ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``; 401 otherwise."""
    settings: ServiceSettings = request.app.state.settings
    if not settings.auth:
        return Principal(tenant=None)
    bearer = credentials.credentials if credentials is not None else None
    if bearer and api_key and bearer.strip() != api_key.strip():
        # Two different keys: serving either could act for the wrong tenant.
        raise HTTPException(400, {"reason": "conflicting credentials: send one key, in Authorization or in X-API-Key"})
    secret = bearer or api_key
    if not secret:
        raise HTTPException(401, {"reason": "missing API key"}, headers={"WWW-Authenticate": "Bearer"})
    try:
        info = request.app.state.keys.verify(secret)
    except KeyFileError:
        raise HTTPException(503, {"reason": "API keys unavailable: the key file cannot be read"}) from None
    if info is None:
        raise HTTPException(401, {"reason": "invalid or revoked API key"}, headers={"WWW-Authenticate": "Bearer"})
    return Principal(tenant=info.tenant, key_id=info.key_id)


Caller = Annotated[Principal, Depends(_principal)]


# --- ASGI middleware: request metrics ------------------------------------------------------------


class RequestMetrics:
    def __init__(self, app: Any, metrics: metrics_mod.ServiceMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "other"
            self.metrics.requests.inc(path=path, status=str(status["code"]))
            self.metrics.latency.observe(time.perf_counter() - started, path=path)


# --- the app -------------------------------------------------------------------------------------


def _problem(status: int, reason: str, **extra: Any) -> HTTPException:
    return HTTPException(status_code=status, detail={"reason": reason, **extra})


def _choice_out(selection: Selection, step: Step, fallback: bool, reason: str | None = None) -> ChoiceOut:
    return ChoiceOut(
        variant_id=step.variant.id if step.variant else None,
        sleep_budget=step.option.sleep_budget,
        test_budget=step.option.test_budget,
        scope=selection.scope,
        scope_value=selection.scope_value,
        kind=selection.kind,
        fallback=fallback,
        reason=reason or selection.reason,
    )


_PATH = re.compile(r"(?:[A-Za-z]:)?(?:[\\/][^\s'\";,\\/:]+){2,}[\\/]?")


def _public(message: str | None) -> str | None:
    """An error for unauthenticated endpoints: file system paths replaced (the log keeps them)."""
    return _PATH.sub("<path>", message) if message else message


def _printable(value: Any) -> Any:
    """A location or message part that JSON can carry (a lone surrogate escaped)."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 naming each bad field, without echoing the input: FastAPI's own handler repeats it,
    which fails for NaN or a lone surrogate (a 500, with the body in the traceback) and would put
    a client's question in any log that records responses."""
    detail = [{"loc": [_printable(part) for part in error.get("loc", ())], "msg": _printable(str(error.get("msg", ""))),
               "type": _printable(str(error.get("type", "")))} for error in exc.errors()]
    return JSONResponse({"detail": detail}, status_code=422)


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    settings = settings or ServiceSettings()
    config = settings.config
    metrics = metrics_mod.ServiceMetrics()
    holder = SnapshotHolder(
        settings.resolved_warehouse, config, settings.reload_interval_s,
        on_reload=lambda result: metrics.reloads.inc(result=result),
    )
    keys = KeyStore(settings.resolved_keys)
    querylog = QueryLog(
        settings.resolved_lake, settings.log_batch_size, settings.log_flush_s,
        on_written=lambda n: metrics.log_rows.inc(n), on_error=lambda: metrics.log_errors.inc(),
        enabled=settings.query_log,
    )
    cache_path = config.response_cache.path or config.output_dir / "cache" / "responses.sqlite"
    gateway = ModelGateway(
        config.models, cache=ResponseCache(cache_path) if settings.response_cache else None,
        uncached_models=config.response_cache.exclude_models,
    )
    metrics.add_gauge(
        "sleeptime_snapshot_info", "The snapshot being served (value 1).",
        lambda: {(holder.current.name, holder.current.policy_version or ""): 1.0} if holder.current else {},
        ("snapshot", "policy_version"),
    )
    metrics.add_gauge(
        "sleeptime_snapshot_contexts", "Contexts in the snapshot being served.",
        lambda: {(): float(len(holder.current.contexts)) if holder.current else 0.0},
    )
    metrics.add_gauge("sleeptime_query_log_pending_rows", "Query-log rows not yet written.", lambda: {(): float(querylog.pending)})

    if not settings.auth:
        log.warning(
            "authentication is OFF (--no-auth): every caller sees and queries every tenant's contexts; "
            "listening on %s", settings.host,
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        holder.start()
        querylog.start()
        try:
            yield
        finally:
            await holder.stop()
            await querylog.stop()

    app = FastAPI(
        title="sleeptime query service",
        version=API_VERSION,
        description=(
            "Answers questions about persistent contexts with the (variant, test budget) the published selection "
            "policy plans for the context and query kind: the cheapest plan whose expected accuracy over the "
            "query mix reaches the policy's target. Authenticate with `Authorization: Bearer <key>` or `X-API-Key: <key>`."
        ),
        lifespan=lifespan,
    )
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.state.settings = settings
    app.state.holder = holder
    app.state.keys = keys
    app.state.querylog = querylog
    app.state.metrics = metrics
    app.state.gateway = gateway

    def snapshot_or_503():
        snapshot = holder.current
        if snapshot is None:
            raise _problem(503, f"no warehouse snapshot loaded yet ({holder.last_error or 'loading'})")
        return snapshot

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        """Liveness: 200 while the process serves HTTP."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], responses={503: {"description": "No snapshot loaded yet."}})
    def readyz() -> JSONResponse:
        """Readiness: 200 once a warehouse snapshot is loaded (and while one is), else 503."""
        snapshot = holder.current
        if snapshot is None:
            return JSONResponse({"status": "not ready", "reason": _public(holder.last_error) or "loading the warehouse snapshot"}, 503)
        return JSONResponse({
            "status": "ready",
            "snapshot": snapshot.name,
            "policy_version": snapshot.policy_version,
            "contexts": len(snapshot.contexts),
            "loaded_at": snapshot.loaded_at.isoformat(),
            "reloads": holder.reloads,
            "last_error": _public(holder.last_error),
        })

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
    def prometheus() -> PlainTextResponse:
        """Prometheus text exposition: requests, latencies, tokens, cost, choices, reloads."""
        return PlainTextResponse(metrics.render(), media_type=metrics_mod.CONTENT_TYPE)

    @app.get("/v1/contexts", response_model=ContextList, tags=["contexts"], responses=ERRORS)
    def list_contexts(
        caller: Caller,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> ContextList:
        """The contexts the caller's tenant owns (every context without auth), by id."""
        snapshot = snapshot_or_503()
        ids = snapshot.context_ids(caller.tenant)
        page = []
        for context_id in ids[offset: offset + limit]:
            entry = snapshot.contexts[context_id]
            page.append(ContextOut(
                context_id=context_id, source=entry.context.source, chars=len(entry.context.text),
                sleep_budgets=sorted(entry.variants),
            ))
        return ContextList(tenant=caller.tenant, total=len(ids), offset=offset, limit=limit, contexts=page)

    @app.get("/v1/contexts/{context_id}/variants", response_model=VariantList, tags=["contexts"], responses=ERRORS)
    def list_variants(context_id: str, caller: Caller) -> VariantList:
        """A context's current c' (sample 0 per sleep budget) and the policy's default choice."""
        snapshot = snapshot_or_503()
        entry = snapshot.context_for(caller.tenant, context_id)
        if entry is None:
            raise _problem(404, f"unknown context {context_id!r}")
        variants = [
            VariantOut(variant_id=v.id, sleep_budget=v.sleep_budget, sample_index=v.sample_index, model=v.model,
                       completion_tokens=v.usage.completion_tokens, text=v.text)
            for v in sorted(entry.variants.values(), key=lambda v: v.usage.completion_tokens)
        ]
        try:
            selection = select(snapshot, entry, None)
            default = _choice_out(selection, selection.primary, selection.fallback)
        except Unsatisfiable:
            default = None
        return VariantList(context_id=context_id, variants=variants, default_choice=default)

    @app.post(
        "/v1/answer", response_model=AnswerResponse, tags=["answer"],
        responses={
            **ERRORS,
            413: {"model": Problem, "description": "Body over max_body_bytes, or question over max_question_chars."},
            422: {"description": "Invalid body (the field is named in `detail[].loc`), or caps no option meets."},
            503: {"model": Problem, "description": "Every option failed (the reason says why), or no snapshot is loaded."},
        },
    )
    async def answer(body: AnswerRequest, caller: Caller) -> AnswerResponse:
        """Answer ``question`` about ``context_id`` with the cheapest adequate (variant, test budget).

        A model error (after the gateway's retries) moves to the next-cheapest adequate option,
        then to the raw context at the largest test budget; when all fail: 503 with the reason."""
        started = time.perf_counter()
        received_at = datetime.now(timezone.utc)
        if len(body.question) > settings.max_question_chars:
            raise _problem(413, f"question longer than {settings.max_question_chars} characters",
                           field="question", limit_chars=settings.max_question_chars)
        snapshot = snapshot_or_503()  # this request keeps this snapshot to the end, reloads or not
        entry = snapshot.context_for(caller.tenant, body.context_id)
        if entry is None:
            raise _problem(404, f"unknown context {body.context_id!r}")

        t0 = time.perf_counter()
        kind = body.kind or infer_kind(body.question)
        try:
            selection = select(snapshot, entry, kind, body.target_accuracy, body.max_cost, body.max_latency_ms)
        except Unsatisfiable as exc:
            raise HTTPException(422, [{"type": "unsatisfiable", "loc": ["body", exc.field], "msg": str(exc)}]) from exc
        selection_s = time.perf_counter() - t0
        metrics.selection.observe(selection_s)

        request_id = uuid.uuid4().hex
        query = DomainQuery(id=f"q_{request_id[:16]}", context_id=entry.id, text=body.question, kind=kind)
        attempts: list[AttemptOut] = []
        result = None
        used: Step | None = None
        for step in selection.steps:
            try:
                result = await answer_query(gateway, config.test_model, entry.context, query, step.test_budget, step.variant)
            except ModelError as exc:
                metrics.model_errors.inc()
                log.warning("request %s: %s/%s failed: %s", request_id, step.option.sleep_budget, step.option.test_budget, exc)
                attempts.append(AttemptOut(sleep_budget=step.option.sleep_budget, test_budget=step.option.test_budget,
                                           variant_id=step.variant.id if step.variant else None, ok=False, error=str(exc)[:300]))
                continue
            used = step
            attempts.append(AttemptOut(sleep_budget=step.option.sleep_budget, test_budget=step.option.test_budget,
                                       variant_id=step.variant.id if step.variant else None, ok=True))
            break
        latency_ms = (time.perf_counter() - started) * 1000
        step = used or selection.primary
        fallback = selection.fallback or (used is not None and used is not selection.primary)
        record = {
            "request_id": request_id, "received_at": received_at, "tenant": entry.tenant, "key_id": caller.key_id,
            "context_id": entry.id, "context_hash": entry.context.content_hash, "kind": kind,
            "question_sha256": question_digest(body.question), "question_chars": len(body.question),
            "variant_id": step.variant.id if (used and step.variant) else None,
            "sleep_budget": step.option.sleep_budget if used else None,
            "test_budget": step.option.test_budget if used else None,
            "test_model": config.test_model, "scope": selection.scope, "scope_value": selection.scope_value,
            "fallback": fallback, "target_accuracy": selection.target_accuracy,
            "predicted_accuracy": step.option.estimate if used else None,
            "predicted_cost_weighted": step.option.cost_weighted if used else None,
            "prompt_tokens": result.usage.prompt_tokens if result else 0,
            "completion_tokens": result.usage.completion_tokens if result else 0,
            "cost_usd": result.cost_usd if result else 0.0,
            "latency_ms": latency_ms, "model_latency_ms": (result.latency_s * 1000) if result else None,
            "selection_us": selection_s * 1e6, "status": "answered" if result else "failed",
            "attempts": len(attempts), "error": next((a.error for a in reversed(attempts) if a.error), None),
            "policy_version": snapshot.policy_version, "snapshot": snapshot.name, "run_id": partition(received_at),
        }
        querylog.add(record)
        if result is None or used is None:
            metrics.answers.inc(outcome="failed")
            reason = "every option failed: " + "; ".join(
                f"{a.sleep_budget}/{a.test_budget}: {a.error}" for a in attempts
            )
            raise _problem(503, reason, request_id=request_id, attempts=[a.model_dump() for a in attempts])
        metrics.answers.inc(outcome="fallback" if fallback else "answered")
        metrics.tokens.inc(result.usage.prompt_tokens, kind="prompt")
        metrics.tokens.inc(result.usage.completion_tokens, kind="completion")
        metrics.cost.inc(result.cost_usd)
        metrics.choices.inc(sleep_budget=used.option.sleep_budget, test_budget=used.option.test_budget)
        return AnswerResponse(
            request_id=request_id,
            context_id=entry.id,
            answer=result.parsed_answer,
            reply=result.raw_reply,
            choice=_choice_out(selection, used, fallback, reason=(
                selection.reason if used is selection.primary else
                f"{selection.reason}; that option failed, answered by step {len(attempts)} of the failure chain "
                "(next-cheapest adequate option, then the raw context at the largest test budget)"
            )),
            predicted_accuracy=used.option.estimate,
            predicted_accuracy_lower=used.option.estimate_lower,
            target_accuracy=selection.target_accuracy,
            predicted_cost_weighted=used.option.cost_weighted,
            usage=UsageOut(prompt_tokens=result.usage.prompt_tokens, completion_tokens=result.usage.completion_tokens,
                           total_tokens=result.usage.total_tokens),
            cost_usd=result.cost_usd,
            latency_ms=latency_ms,
            model_latency_ms=result.latency_s * 1000,
            selection_us=selection_s * 1e6,
            attempts=attempts,
            policy_version=snapshot.policy_version,
            snapshot=snapshot.name,
        )

    app.add_middleware(BodySizeLimit, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=metrics)  # outermost: counts the 413s too
    return app


def app_from_env() -> FastAPI:
    """An app factory for ``uvicorn --factory sleeptime.service.app:app_from_env``: settings from
    the JSON in ``SLEEPTIME_SERVICE_SETTINGS`` (a ServiceSettings; ``config`` may be a YAML path)."""
    import json
    import os

    raw = os.environ.get("SLEEPTIME_SERVICE_SETTINGS", "{}")
    return create_app(ServiceSettings.model_validate(json.loads(raw)))
