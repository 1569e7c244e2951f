"""Sleep time through a provider's batch API: the same work at the batch price (OpenAI and
Anthropic sell it at half the online price, answered within 24 hours).

One step per run (``BatchStep.run``):

1. collect: every batch the lake records as open is retrieved; a finished one's output lines
   become variants (matched by ``custom_id``, the item's deterministic key), its error lines
   ``failures``; the items an expired or cancelled batch left unfinished are sent again once, in
   a new batch (a second time they fail). The batch's row then says ``collected``.
2. submit: the pending sleep jobs that no open batch holds go into one new batch. Its row (provider
   id, input hash, item keys) is committed to the lake *before* anything waits on it, so a run
   killed after the submit finds it and never pays twice for an item in a live batch.
3. wait (optional): poll the open batches until they finish, then collect them.

All calls go through litellm (``acreate_file``, ``acreate_batch``, ``aretrieve_batch``,
``afile_content``). Nothing here imports Prefect or Ray.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import litellm

from sleeptime import _failpoints
from sleeptime.compute import Failure, SleepJob
from sleeptime.domain import CallCounters, Variant
from sleeptime.model import ModelSpec, price
from sleeptime.model._gateway import cache_savings, usage_of
from sleeptime.prompts import PROMPT_VERSION, clip_memory, sleep_messages
from sleeptime.storage import Lake

FINISHED = ("completed", "expired", "cancelled", "failed")
OPEN = "submitted"  # a batch row's status until its results are collected


@dataclass
class BatchOutcome:
    variants: list[Variant] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    counters: CallCounters = field(default_factory=CallCounters)
    submitted: int = 0  # new batches this run
    items_submitted: int = 0
    resubmitted: int = 0  # items of expired or cancelled batches sent again
    collected: int = 0  # batches whose results this run collected
    pending: int = 0  # batches still running when the step ended

    def as_dict(self) -> dict[str, int]:
        return {"submitted": self.submitted, "items_submitted": self.items_submitted, "resubmitted": self.resubmitted,
                "collected": self.collected, "pending": self.pending}


class BatchAPI:
    """The provider's files and batches endpoints for one model, through litellm."""

    def __init__(self, spec: ModelSpec):
        self.spec = spec
        provider, _, name = spec.model.partition("/")
        self.provider, self.model_name = provider, name or provider
        self._kw: dict[str, Any] = {"custom_llm_provider": provider}
        if spec.api_base:
            self._kw["api_base"] = spec.api_base
        if spec.api_key is not None:
            self._kw["api_key"] = spec.api_key.get_secret_value()

    async def submit(self, lines: Sequence[dict[str, Any]]) -> tuple[str, str]:
        """(batch id, input file id) for a new batch of chat-completion requests."""
        data = "\n".join(json.dumps(line, sort_keys=True) for line in lines).encode()
        uploaded = await litellm.acreate_file(file=("sleeptime-batch.jsonl", data), purpose="batch", **self._kw)
        batch = await litellm.acreate_batch(completion_window="24h", endpoint="/v1/chat/completions",
                                            input_file_id=uploaded.id, **self._kw)
        return batch.id, uploaded.id

    async def retrieve(self, batch_id: str) -> Any:
        return await litellm.aretrieve_batch(batch_id=batch_id, **self._kw)

    async def lines(self, file_id: str | None) -> list[dict[str, Any]]:
        if not file_id:
            return []
        content = await litellm.afile_content(file_id=file_id, **self._kw)
        raw = content.content if hasattr(content, "content") else content
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        return [json.loads(line) for line in text.splitlines() if line.strip()]


def request_line(spec: ModelSpec, model_name: str, job: SleepJob, key: str) -> dict[str, Any]:
    max_tokens, effort, thinking = spec.call_params(job.budget)
    body: dict[str, Any] = {**spec.params, "model": model_name, "messages": sleep_messages(job.context.text),
                            "max_tokens": max_tokens, "seed": job.sample_index}
    if effort is not None:
        body["reasoning_effort"] = effort
    if thinking is not None:
        body["thinking"] = {"type": "enabled", "budget_tokens": thinking}
    return {"custom_id": key, "method": "POST", "url": "/v1/chat/completions", "body": body}


class BatchStep:
    """Collect, submit and optionally wait, for the sleep jobs of one run."""

    def __init__(self, lake: Lake, spec: ModelSpec, model: str, run_id: str, api: BatchAPI | None = None,
                 poll_s: float = 5.0, progress: Callable[[int], None] | None = None):
        self.lake, self.spec, self.model, self.run_id = lake, spec, model, run_id
        self.api = api or BatchAPI(spec)
        self.poll_s = poll_s
        self.progress = progress

    # --- the lake's record of batches ------------------------------------------------------------

    def open_batches(self) -> list[dict[str, Any]]:
        rows = self.lake.read("batches").to_pylist()
        return [r for r in rows if r["status"] == OPEN and r["model"] == self.model and r["stage"] == "sleep"]

    def _record(self, row: dict[str, Any], status: str, **detail: Any) -> None:
        merged = {**json.loads(row.get("detail_json") or "{}"), **detail}
        self.lake.write("batches", [{**row, "status": status, "updated_at": datetime.now(timezone.utc),
                                     "detail_json": json.dumps(merged, default=str)}], run_id=self.run_id, kind="batch")

    # --- the step ----------------------------------------------------------------------------------

    async def run(self, jobs: Sequence[SleepJob], submit: bool = True, wait: bool = False) -> BatchOutcome:
        out = BatchOutcome()
        by_key = {j.key(self.model): j for j in jobs}
        done: set[str] = set()
        await self._collect(by_key, done, out)
        if submit:
            held = {k for b in self.open_batches() for k in json.loads(b["item_keys_json"])}
            fresh = [j for k, j in by_key.items() if k not in held and k not in done]
            if fresh:
                await self._submit(fresh, attempt=1, out=out)
        while wait and self.open_batches():
            await asyncio.sleep(self.poll_s)
            await self._collect(by_key, done, out)
        out.pending = len(self.open_batches())
        return out

    async def _submit(self, jobs: Sequence[SleepJob], attempt: int, out: BatchOutcome, parent: str | None = None) -> None:
        keys = [j.key(self.model) for j in jobs]
        lines = [request_line(self.spec, self.api.model_name, j, k) for j, k in zip(jobs, keys)]
        digest = hashlib.sha256("\n".join(json.dumps(line, sort_keys=True) for line in lines).encode()).hexdigest()
        batch_id, file_id = await self.api.submit(lines)
        now = datetime.now(timezone.utc)
        # Recorded before anything waits on it: a run killed from here on finds the batch and
        # collects it instead of paying for its items again.
        self.lake.write("batches", [{
            "batch_id": batch_id, "model": self.model, "stage": "sleep", "input_file_id": file_id,
            "input_sha256": digest, "item_keys_json": json.dumps(keys),
            "context_ids_json": json.dumps(sorted({j.context.id for j in jobs})), "items": len(keys), "attempt": attempt,
            "status": OPEN, "submitted_at": now, "updated_at": now, "run_id": self.run_id,
            "detail_json": json.dumps({"resubmits": parent} if parent else {}),
        }], run_id=self.run_id, kind="batch")
        _failpoints.failpoint(_failpoints.BATCH_AFTER_SUBMIT)
        out.submitted += 1
        out.items_submitted += len(keys)

    async def _collect(self, by_key: dict[str, SleepJob], done: set[str], out: BatchOutcome) -> None:
        for row in self.open_batches():
            batch = await self.api.retrieve(row["batch_id"])
            status = str(batch.status)
            if status not in FINISHED:
                continue
            keys = json.loads(row["item_keys_json"])
            answered = await self._read_output(batch, row, by_key, out)
            errors = await self.api.lines(getattr(batch, "error_file_id", None))
            unfinished: list[str] = []
            for line in errors:
                key = line.get("custom_id")
                error = line.get("error") or ((line.get("response") or {}).get("body") or {}).get("error") or {}
                if error.get("code") == "batch_expired":
                    unfinished.append(key)
                    continue
                code = (line.get("response") or {}).get("status_code")
                self._fail(by_key, key, f"batch {row['batch_id']}: {code} {error.get('message', 'error')}", out)
                answered.add(key)
            # Items in neither file never ran (a cancelled batch's, or all of a failed one's).
            unfinished += [k for k in keys if k not in answered and k not in unfinished]
            done.update(answered)
            retry = [by_key[k] for k in unfinished if k in by_key]
            if retry and row["attempt"] == 1:
                await self._submit(retry, attempt=2, out=out, parent=row["batch_id"])
                out.resubmitted += len(retry)
            else:
                for k in unfinished:
                    self._fail(by_key, k, f"batch {row['batch_id']} {status}: unfinished after it was sent again", out)
                done.update(unfinished)
            self._record(row, "collected", provider_status=status, answered=len(answered), unfinished=len(unfinished))
            out.collected += 1
            if self.progress:
                self.progress(len(keys))

    async def _read_output(self, batch: Any, row: dict[str, Any], by_key: dict[str, SleepJob],
                           out: BatchOutcome) -> set[str]:
        answered: set[str] = set()
        created = getattr(batch, "created_at", None)
        finished = getattr(batch, "completed_at", None) or getattr(batch, "expired_at", None) or \
            getattr(batch, "cancelled_at", None)
        latency = float(finished - created) if created and finished else 0.0
        for line in await self.api.lines(getattr(batch, "output_file_id", None)):
            key = line.get("custom_id")
            response = line.get("response") or {}
            body = response.get("body") or {}
            answered.add(key)
            job = by_key.get(key)
            if job is None:  # its context changed or was removed since the submit: nothing to keep
                continue
            if response.get("status_code") != 200 or not body.get("choices"):
                self._fail(by_key, key, f"batch {row['batch_id']}: status {response.get('status_code')}", out)
                continue
            usage = usage_of(litellm.Usage(**body.get("usage", {})))
            factor = self.spec.price_factor("sleep")
            cost = price(self.spec, usage) * factor
            text = body["choices"][0].get("message", {}).get("content") or ""
            out.variants.append(Variant(
                context_id=job.context.id, context_hash=job.context.content_hash, model=self.model,
                sleep_budget=job.budget.name, sample_index=job.sample_index, prompt_version=PROMPT_VERSION,
                text=clip_memory(text), usage=usage, cost_usd=cost, latency_s=latency,
            ))
            out.counters.record_call(usage, cost, cache_savings(self.spec, usage) * factor)
        return answered

    def _fail(self, by_key: dict[str, SleepJob], key: str, reason: str, out: BatchOutcome) -> None:
        job = by_key.get(key)
        if job is None:
            return
        out.counters.failed_calls += 1
        out.failures.append(Failure(stage="sleep", key=key, context_id=job.context.id, reason=f"{self.model}: {reason}"))


def run_batch_step(lake: Lake, spec: ModelSpec, model: str, run_id: str, jobs: Sequence[SleepJob], submit: bool,
                   wait: bool, poll_s: float = 5.0, progress: Callable[[int], None] | None = None) -> BatchOutcome:
    """``BatchStep.run`` from synchronous code (a Prefect task)."""
    return asyncio.run(BatchStep(lake, spec, model, run_id, poll_s=poll_s, progress=progress).run(jobs, submit, wait))
