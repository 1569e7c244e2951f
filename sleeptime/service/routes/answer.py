"""POST /v1/answer: the cheapest adequate (variant, test budget) for a question, through the
failure chain when a model call fails, with one query-log row per request."""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, HTTPException

from sleeptime.compute import answer_query
from sleeptime.domain import Answer
from sleeptime.domain import Query as DomainQuery
from sleeptime.model import ModelError, ModelGateway
from sleeptime.service.api_models import ERRORS, AnswerRequest, AnswerResponse, AttemptOut, ChoiceOut, Problem, UsageOut
from sleeptime.service.auth import Caller
from sleeptime.service.dependencies import Gateway, Holder, Metrics, QueryLogDep, Settings, serving_snapshot
from sleeptime.service.errors import problem
from sleeptime.service.keys import Principal
from sleeptime.service.metrics import ServiceMetrics
from sleeptime.service.querylog import partition, question_digest
from sleeptime.service.selection import Selection, Step, Unsatisfiable, infer_kind, select
from sleeptime.service.snapshot import ContextEntry, ServingSnapshot

log = logging.getLogger("sleeptime.service")

router = APIRouter(tags=["answer"])


@dataclass
class Outcome:
    """Where the failure chain ended: the answer and the step that gave it (both None when every
    option failed), and each option tried."""

    attempts: list[AttemptOut] = field(default_factory=list)
    result: Answer | None = None
    used: Step | None = None


@router.post(
    "/v1/answer", response_model=AnswerResponse,
    responses={
        **ERRORS,
        408: {"model": Problem, "description": "The body did not arrive within body_timeout_s."},
        413: {"model": Problem, "description": "Body over max_body_bytes, or question over max_question_chars."},
        422: {"description": "Invalid body (the field is named in `detail[].loc`), or caps no option meets."},
        503: {"model": Problem, "description": "Every option failed (the reason says why), or no snapshot is loaded."},
    },
)
async def answer(body: AnswerRequest, caller: Caller, settings: Settings, holder: Holder, gateway: Gateway,
                 querylog: QueryLogDep, metrics: Metrics) -> AnswerResponse:
    """Answer ``question`` about ``context_id`` with the cheapest adequate (variant, test budget).

    A model error (after the gateway's retries) moves to the next-cheapest adequate option,
    then to the raw context at the largest test budget; when all fail: 503 with the reason."""
    started = time.perf_counter()
    received_at = datetime.now(timezone.utc)
    if len(body.question) > settings.max_question_chars:
        raise problem(413, f"question longer than {settings.max_question_chars} characters",
                      field="question", limit_chars=settings.max_question_chars)
    snapshot = serving_snapshot(holder)
    entry = snapshot.context_for(caller.tenant, body.context_id)
    if entry is None:
        raise problem(404, f"unknown context {body.context_id!r}")

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
    outcome = await _failure_chain(gateway, settings.config.test_model, entry, query, selection, metrics, request_id)
    latency_ms = (time.perf_counter() - started) * 1000
    used, result = outcome.used, outcome.result
    fallback = selection.fallback or (used is not None and used is not selection.primary)
    querylog.add(_log_row(
        request_id=request_id, received_at=received_at, caller=caller, entry=entry, kind=kind, question=body.question,
        selection=selection, outcome=outcome, fallback=fallback, latency_ms=latency_ms, selection_s=selection_s,
        snapshot=snapshot, test_model=settings.config.test_model,
    ))
    if result is None or used is None:
        metrics.answers.labels(outcome="failed").inc()
        reason = "every option failed: " + "; ".join(f"{a.sleep_budget}/{a.test_budget}: {a.error}" for a in outcome.attempts)
        raise problem(503, reason, request_id=request_id, attempts=[a.model_dump() for a in outcome.attempts])
    _count_answer(metrics, result, used, fallback)
    return AnswerResponse(
        request_id=request_id,
        context_id=entry.id,
        answer=result.parsed_answer,
        reply=result.raw_reply,
        choice=ChoiceOut.of(selection, used, fallback, reason=(
            selection.reason if used is selection.primary else
            f"{selection.reason}; that option failed, answered by step {len(outcome.attempts)} of the failure chain "
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
        attempts=outcome.attempts,
        policy_version=snapshot.policy_version,
        snapshot=snapshot.name,
    )


async def _failure_chain(gateway: ModelGateway, model: str, entry: ContextEntry, query: DomainQuery,
                         selection: Selection, metrics: ServiceMetrics, request_id: str) -> Outcome:
    """Each step of the selection in order until one answers."""
    outcome = Outcome()
    for step in selection.steps:
        try:
            outcome.result = await answer_query(gateway, model, entry.context, query, step.test_budget, step.variant)
        except ModelError as exc:
            metrics.model_errors.inc()
            log.warning("request %s: %s/%s failed: %s", request_id, step.option.sleep_budget, step.option.test_budget, exc)
            outcome.attempts.append(AttemptOut.of(step, error=str(exc)[:300]))
            continue
        outcome.used = step
        outcome.attempts.append(AttemptOut.of(step))
        break
    return outcome


def _count_answer(metrics: ServiceMetrics, result: Answer, used: Step, fallback: bool) -> None:
    metrics.answers.labels(outcome="fallback" if fallback else "answered").inc()
    metrics.tokens.labels(kind="prompt").inc(result.usage.prompt_tokens)
    metrics.tokens.labels(kind="completion").inc(result.usage.completion_tokens)
    metrics.cost.inc(result.cost_usd)
    metrics.choices.labels(sleep_budget=used.option.sleep_budget, test_budget=used.option.test_budget).inc()


def _log_row(*, request_id: str, received_at: datetime, caller: Principal, entry: ContextEntry, kind: str | None,
             question: str, selection: Selection, outcome: Outcome, fallback: bool, latency_ms: float,
             selection_s: float, snapshot: ServingSnapshot, test_model: str) -> dict[str, Any]:
    """The request's query-log row: the choice and its cost, never the question's text."""
    result, used = outcome.result, outcome.used
    step = used or selection.primary
    return {
        "request_id": request_id, "received_at": received_at, "tenant": entry.tenant, "key_id": caller.key_id,
        "context_id": entry.id, "context_hash": entry.context.content_hash, "kind": kind,
        "question_sha256": question_digest(question), "question_chars": len(question),
        "variant_id": step.variant.id if (used and step.variant) else None,
        "sleep_budget": step.option.sleep_budget if used else None,
        "test_budget": step.option.test_budget if used else None,
        "test_model": test_model, "scope": selection.scope, "scope_value": selection.scope_value,
        "fallback": fallback, "target_accuracy": selection.target_accuracy,
        "predicted_accuracy": step.option.estimate if used else None,
        "predicted_cost_weighted": step.option.cost_weighted if used else None,
        "prompt_tokens": result.usage.prompt_tokens if result else 0,
        "completion_tokens": result.usage.completion_tokens if result else 0,
        "cost_usd": result.cost_usd if result else 0.0,
        "latency_ms": latency_ms, "model_latency_ms": (result.latency_s * 1000) if result else None,
        "selection_us": selection_s * 1e6, "status": "answered" if result else "failed",
        "attempts": len(outcome.attempts), "error": next((a.error for a in reversed(outcome.attempts) if a.error), None),
        "policy_version": snapshot.policy_version, "snapshot": snapshot.name, "run_id": partition(received_at),
    }
