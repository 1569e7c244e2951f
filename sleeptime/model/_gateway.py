"""The model gateway: the one door every model call goes through.

Calls ``litellm.acompletion`` and returns text, usage, cost and latency; bounds concurrency per
model; retries retryable errors with exponential backoff (honouring Retry-After); prices every
call from configuration or litellm's price map. A model without a price is refused up front:
token accounting is not optional.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import litellm
import tenacity
from pydantic import BaseModel, ConfigDict, Field

from sleeptime.domain import CallCounters, Usage
from sleeptime.model._cache import CachedReply, ResponseCache, request_key
from sleeptime.model._ratelimit import RateLimiter
from sleeptime.model._spec import ModelSpec
from sleeptime.model.providers import reference
from sleeptime.tokens import count_tokens

log = logging.getLogger(__name__)

RETRYABLE_ERRORS: tuple[type[BaseException], ...] = (
    litellm.RateLimitError,
    litellm.APIConnectionError,
    litellm.Timeout,
    litellm.InternalServerError,
    litellm.ServiceUnavailableError,
    litellm.BadGatewayError,
)


class ModelError(RuntimeError):
    """A model call failed for good (after retries, or with a non-retryable error)."""

    def __init__(self, model: str, reason: str, attempts: int):
        super().__init__(f"{model}: {reason} (after {attempts} attempt{'s' if attempts != 1 else ''})")
        self.model = model
        self.reason = reason
        self.attempts = attempts


class Completion(BaseModel):
    """What one model call produced, and what it cost."""

    model_config = ConfigDict(frozen=True)

    model: str  # the configured name, not the provider string
    text: str
    usage: Usage
    cost_usd: float = Field(ge=0)
    latency_s: float = Field(ge=0)
    attempts: int = 1
    cached: bool = False  # answered from the response cache: no call made, nothing spent now


class ModelGateway:
    """Holds the configured models and the per-model concurrency limits."""

    def __init__(self, models: dict[str, ModelSpec], cache: ResponseCache | None = None,
                 uncached_models: tuple[str, ...] | list[str] = ()):
        self.models = dict(models)
        self.cache = cache
        self.uncached_models = frozenset(uncached_models)
        for name, spec in self.models.items():
            _check_priced(name, spec)
        if any(spec.model.startswith(f"{reference.PROVIDER}/") for spec in self.models.values()):
            reference.register()
        self._semaphores: dict[tuple[int, str], asyncio.Semaphore] = {}
        self._limiters: dict[tuple[int, str], RateLimiter] = {}
        self.counters = CallCounters()  # every call since the gateway was made

    def spec(self, name: str) -> ModelSpec:
        try:
            return self.models[name]
        except KeyError:
            raise KeyError(f"unknown model {name!r}; configured: {sorted(self.models)}") from None

    def _semaphore(self, name: str) -> asyncio.Semaphore:
        # One semaphore per event loop: Ray workers and tests each run their own loop.
        key = (id(asyncio.get_running_loop()), name)
        if key not in self._semaphores:
            self._semaphores[key] = asyncio.Semaphore(self.spec(name).max_concurrency)
        return self._semaphores[key]

    def _retrying(self, name: str, spec: ModelSpec) -> tenacity.AsyncRetrying:
        """The retry policy of one call: retryable errors only, at most ``max_retries`` retries; before
        retry n the provider's Retry-After when it gives one, else a random wait in
        [0, min(backoff_max_s, backoff_base_s * 2^(n-1))] (full jitter: concurrent callers spread out)."""
        backoff = tenacity.wait_random_exponential(multiplier=spec.backoff_base_s, max=spec.backoff_max_s)

        def wait(state: tenacity.RetryCallState) -> float:
            retry_after = _retry_after(state.outcome.exception())  # type: ignore[union-attr]
            return min(retry_after, spec.backoff_max_s) if retry_after is not None else backoff(state)

        def count_error(state: tenacity.RetryCallState) -> None:
            self.counters.retryable_errors += 1  # the last one too, when no retry is left

        def before_sleep(state: tenacity.RetryCallState) -> None:
            self.counters.retries += 1
            log.warning("%s: %s, retry %d in %.2fs", name, type(state.outcome.exception()).__name__,  # type: ignore[union-attr]
                        state.attempt_number, state.upcoming_sleep)

        return tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception_type(RETRYABLE_ERRORS),
            stop=tenacity.stop_after_attempt(spec.max_retries + 1),
            wait=wait,
            after=count_error,
            before_sleep=before_sleep,
            reraise=True,  # the provider's error itself, not tenacity's RetryError, becomes the reason
        )

    def _limiter(self, name: str) -> RateLimiter:
        key = (id(asyncio.get_running_loop()), name)
        if key not in self._limiters:
            spec = self.spec(name)
            self._limiters[key] = RateLimiter(spec.rpm, spec.tpm)
        return self._limiters[key]

    async def complete(
        self,
        name: str,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        seed: int | None = None,
        reasoning_effort: str | None = None,
        thinking_tokens: int | None = None,
    ) -> Completion:
        spec = self.spec(name)
        kwargs: dict[str, Any] = {**spec.params, "max_tokens": max_tokens}
        if seed is not None:
            kwargs["seed"] = seed
        if reasoning_effort is not None:
            kwargs["reasoning_effort"] = reasoning_effort
        if thinking_tokens is not None:
            kwargs["thinking"] = {"type": "enabled", "budget_tokens": thinking_tokens}

        cache_key = None
        if self.cache is not None and name not in self.uncached_models:
            cache_key = request_key(spec.model, spec.api_base, messages, kwargs)
            hit = self.cache.get(cache_key)
            if hit is not None:
                self.counters.cache_hits += 1
                # The row still carries what producing the reply cost; the run spent nothing on it.
                return Completion(model=name, text=hit.text, usage=hit.usage, cost_usd=price(spec, hit.usage),
                                  latency_s=0.0, attempts=0, cached=True)
        if spec.api_base:
            kwargs["api_base"] = spec.api_base
        if spec.api_key is not None:
            kwargs["api_key"] = spec.api_key.get_secret_value()

        limiter = self._limiter(name)
        # The tpm bucket is charged the worst case up front and settled with the real usage after.
        estimate = 0 if limiter.unlimited else count_message_tokens(messages) + max_tokens
        retrying = self._retrying(name, spec)
        async with self._semaphore(name):
            try:
                async for attempt in retrying:
                    with attempt:
                        await limiter.acquire(estimate)
                        started = time.perf_counter()
                        response = await litellm.acompletion(
                            model=spec.model, messages=messages, timeout=spec.timeout_s, num_retries=0, **kwargs
                        )
            except Exception as exc:  # non-retryable (bad request, auth, malformed reply), or out of retries
                self.counters.failed_calls += 1
                raise ModelError(name, f"{type(exc).__name__}: {_short(exc)}", retrying.statistics["attempt_number"]) from exc
            latency = time.perf_counter() - started
        attempts = retrying.statistics["attempt_number"]

        text = response.choices[0].message.content or ""
        raw_usage = getattr(response, "usage", None)
        if raw_usage is None:
            self.counters.failed_calls += 1
            raise ModelError(name, "provider returned no token usage", attempts)
        usage = Usage(prompt_tokens=int(raw_usage.prompt_tokens or 0), completion_tokens=int(raw_usage.completion_tokens or 0))
        if not limiter.unlimited:
            limiter.record(usage.prompt_tokens + usage.completion_tokens, reserved=estimate)
        cost = price(spec, usage)
        self.counters.calls += 1
        self.counters.prompt_tokens += usage.prompt_tokens
        self.counters.completion_tokens += usage.completion_tokens
        self.counters.cost_usd += cost
        if cache_key is not None:
            self.cache.put(cache_key, CachedReply(text=text, usage=usage))  # type: ignore[union-attr]
        return Completion(model=name, text=text, usage=usage, cost_usd=cost, latency_s=latency, attempts=attempts)


async def continuation_logprob(gateway: ModelGateway, name: str, prefix: str, continuation: str) -> float | None:
    """log P(continuation | prefix) under model ``name``: the sum of the continuation's token
    log-probabilities, from a text completion that echoes the prompt with its log-probabilities
    (OpenAI's legacy completions API; llama.cpp's server and vLLM give it). None when the provider
    gives no prompt log-probabilities, so callers fall back to another measure. The paper's
    predictability score is this with prefix = the context and continuation = the question.

    One attempt, within the model's concurrency limit; a failed call is a ModelError."""
    spec = gateway.spec(name)
    kwargs: dict[str, Any] = {"max_tokens": 1, "echo": True, "logprobs": 1, "temperature": 0.0}
    if spec.api_base:
        kwargs["api_base"] = spec.api_base
    if spec.api_key is not None:
        kwargs["api_key"] = spec.api_key.get_secret_value()
    async with gateway._semaphore(name):
        try:
            response = await litellm.atext_completion(
                model=spec.model, prompt=prefix + continuation, timeout=spec.timeout_s, num_retries=0, **kwargs)
        except Exception as exc:
            raise ModelError(name, f"{type(exc).__name__}: {_short(exc)}", 1) from exc
    logprobs = getattr(response.choices[0], "logprobs", None)
    if logprobs is None:
        return None
    get = logprobs.get if isinstance(logprobs, dict) else lambda key: getattr(logprobs, key, None)
    offsets, values = get("text_offset") or [], get("token_logprobs") or []
    start, end = len(prefix), len(prefix) + len(continuation)
    # A token that straddles the boundary belongs to the continuation when it ends inside it.
    picked = [v for i, (o, v) in enumerate(zip(offsets, values))
              if v is not None and o < end and (o >= start or (i + 1 < len(offsets) and offsets[i + 1] > start))]
    return float(sum(picked)) if picked else None


def count_message_tokens(messages: list[dict[str, Any]]) -> int:
    """cl100k tokens of the message texts: an estimate for rate limiting, not billing."""
    return sum(count_tokens(str(m.get("content") or "")) for m in messages)


def price(spec: ModelSpec, usage: Usage) -> float:
    """USD for ``usage``: configured prices win, litellm's map otherwise."""
    if spec.input_cost_per_million is not None and spec.output_cost_per_million is not None:
        return (
            usage.prompt_tokens * spec.input_cost_per_million + usage.completion_tokens * spec.output_cost_per_million
        ) / 1_000_000
    prompt_cost, completion_cost = litellm.cost_per_token(
        model=spec.model, prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens
    )
    return float(prompt_cost + completion_cost)


def _check_priced(name: str, spec: ModelSpec) -> None:
    if spec.input_cost_per_million is not None and spec.output_cost_per_million is not None:
        return
    try:
        litellm.cost_per_token(model=spec.model, prompt_tokens=1, completion_tokens=1)
    except Exception as exc:
        raise ValueError(
            f"model {name!r} ({spec.model}) has no price in litellm's map; set input_cost_per_million and "
            "output_cost_per_million in its configuration (0 is allowed)"
        ) from exc


def _retry_after(exc: BaseException) -> float | None:
    # litellm 1.106 keeps the provider's real headers in litellm_response_headers; exc.response is
    # a stand-in with none (tests/testing/test_fake_openai.py pins this down).
    response = getattr(exc, "response", None)
    for headers in (getattr(exc, "litellm_response_headers", None), getattr(response, "headers", None),
                    getattr(exc, "headers", None)):
        if not headers:
            continue
        try:
            value = headers.get("retry-after") or headers.get("Retry-After")
            if value is not None:
                return float(value)
        except (TypeError, ValueError, AttributeError):
            continue
    return None


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text[:300]
