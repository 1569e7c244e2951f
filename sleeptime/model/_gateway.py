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


def configure_litellm() -> None:
    """The process-wide litellm settings the gateway wants; applied when this module is imported, so in
    every process that makes model calls (driver, Ray workers, tests). Idempotent.

    Where litellm's client CPU goes, per call (bench/results/litellm_client.md): the OpenAI SDK building
    and sending the request (~40 %), litellm pricing every response itself (~15 %, see
    :func:`_register_price`), the executor-thread hop of ``acompletion`` (~15 %), its success-logging
    payload (~6 %), parsing the reply (~5 %). litellm 1.106 has no switch for most of it. Measured and
    deliberately not set: ``turn_off_message_logging``, ``disable_streaming_logging``,
    ``disable_token_counter`` (no measurable change); ``disable_aiohttp_transport`` (httpx costs more);
    ``EXPERIMENTAL_OPENAI_BASE_LLM_HTTP_HANDLER`` (skips the OpenAI SDK, about a quarter less CPU a call,
    but a malformed body then raises ``litellm.APIError`` with status 200, which the retry policy and the
    contract pinned in tests/testing/test_fake_openai.py do not expect). ``litellm.callbacks`` and the
    other callback lists are empty and stay so (a test checks): each callback costs every call.
    """
    # Otherwise every failed call prints a "Give Feedback / Get Help" banner to stdout: once per
    # retried error under faults, noise in every worker's log. The error raised is the same.
    litellm.suppress_debug_info = True


configure_litellm()

# Models this module put into litellm's price map (not there before): their prices are some gateway's
# configuration, not litellm's, so they never make an unpriced spec acceptable (_check_priced).
_REGISTERED_PRICES: set[str] = set()

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
        for spec in self.models.values():  # after every check: a price registered here prices no other spec
            _register_price(spec)
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
        usage = usage_of(raw_usage)
        if not limiter.unlimited:
            limiter.record(usage.prompt_tokens + usage.completion_tokens, reserved=estimate)
        cost = price(spec, usage)
        self.counters.record_call(usage, cost, cache_savings(spec, usage))
        if cache_key is not None:
            self.cache.put(cache_key, CachedReply(text=text, usage=usage))  # type: ignore[union-attr]
        return Completion(model=name, text=text, usage=usage, cost_usd=cost, latency_s=latency, attempts=attempts)


async def continuation_logprob(gateway: ModelGateway, name: str, prefix: str, continuation: str) -> float | None:
    """log P(continuation | prefix) under model ``name``: the sum of the continuation's token
    log-probabilities, from a text completion that echoes the prompt with its log-probabilities
    (OpenAI's legacy completions API; llama.cpp's server and vLLM give it). None when the provider
    gives no prompt log-probabilities, so callers fall back to another measure. The paper's
    predictability score is this with prefix = the context and continuation = the question.

    A model served by llama-cpp-python needs ``local_server.bos_text``: its server scores echoed
    prompt tokens correctly only after a BOS token (see LocalServerSpec), which it drops from the
    echo, so offsets stay those of ``prefix + continuation``.

    One attempt, within the model's concurrency limit; a failed call is a ModelError."""
    spec = gateway.spec(name)
    bos = ""
    if spec.local_server is not None:
        if spec.local_server.bos_text is None:
            raise ModelError(name, "llama-cpp-python's server scores echoed prompt tokens one token off unless the "
                                   "prompt starts with the model's BOS token: set local_server.bos_text", 0)
        bos = spec.local_server.bos_text
    kwargs: dict[str, Any] = {"max_tokens": 1, "echo": True, "logprobs": 1, "temperature": 0.0}
    if spec.api_base:
        kwargs["api_base"] = spec.api_base
    if spec.api_key is not None:
        kwargs["api_key"] = spec.api_key.get_secret_value()
    async with gateway._semaphore(name):
        try:
            response = await litellm.atext_completion(
                model=spec.model, prompt=bos + prefix + continuation, timeout=spec.timeout_s, num_retries=0, **kwargs)
        except Exception as exc:
            raise ModelError(name, f"{type(exc).__name__}: {_short(exc)}", 1) from exc
    logprobs = getattr(response.choices[0], "logprobs", None)
    if logprobs is None:
        return None
    get = logprobs.get if isinstance(logprobs, dict) else lambda key: getattr(logprobs, key, None)
    tokens = get("tokens") or []
    if bos and (not tokens or tokens[0] == "" or not "".join(tokens).startswith(prefix + continuation)):
        # The server dropped no BOS token (another special token echoes as "", plain text as
        # itself), so the echo is scored one token off.
        raise ModelError(name, f"local_server.bos_text {bos!r} is not this model's BOS token (the echo kept it)", 1)
    offsets, values = get("text_offset") or [], get("token_logprobs") or []
    start, end = len(prefix), len(prefix) + len(continuation)
    # A token that straddles the boundary belongs to the continuation when it ends inside it.
    picked = [v for i, (o, v) in enumerate(zip(offsets, values))
              if v is not None and o < end and (o >= start or (i + 1 < len(offsets) and offsets[i + 1] > start))]
    return float(sum(picked)) if picked else None


def count_message_tokens(messages: list[dict[str, Any]]) -> int:
    """cl100k tokens of the message texts: an estimate for rate limiting, not billing."""
    return sum(count_tokens(str(m.get("content") or "")) for m in messages)


def usage_of(raw: Any) -> Usage:
    """litellm's usage as ours. Cached prompt tokens: ``prompt_tokens_details.cached_tokens``
    (OpenAI, and litellm's mapping of Anthropic's cache reads); cache writes:
    ``cache_creation_input_tokens`` (Anthropic). Both are part of ``prompt_tokens``."""
    details = getattr(raw, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None) if details is not None else None
    if cached is None:
        cached = getattr(raw, "cache_read_input_tokens", None)
    written = getattr(raw, "cache_creation_input_tokens", None)
    prompt = int(raw.prompt_tokens or 0)
    cached, written = min(int(cached or 0), prompt), int(written or 0)
    return Usage(prompt_tokens=prompt, completion_tokens=int(raw.completion_tokens or 0),
                 cached_prompt_tokens=cached, cache_write_tokens=min(written, prompt - cached))


def _cache_prices(spec: ModelSpec) -> tuple[float, float, float]:
    """USD per token: (input, cache read, cache write). Configured prices win; a configured model
    with no cache price pays the input price for cached tokens (no discount known); otherwise
    litellm's map, whose cache prices default to the input price too."""
    if spec.input_cost_per_million is not None:
        base = spec.input_cost_per_million / 1_000_000
        read = spec.cache_read_cost_per_million / 1_000_000 if spec.cache_read_cost_per_million is not None else base
        write = spec.cache_write_cost_per_million / 1_000_000 if spec.cache_write_cost_per_million is not None else base
        return base, read, write
    info = litellm.get_model_info(spec.model)
    base = float(info.get("input_cost_per_token") or 0.0)
    read = info.get("cache_read_input_token_cost")
    write = info.get("cache_creation_input_token_cost")
    if spec.cache_read_cost_per_million is not None:
        read = spec.cache_read_cost_per_million / 1_000_000
    if spec.cache_write_cost_per_million is not None:
        write = spec.cache_write_cost_per_million / 1_000_000
    return base, float(base if read is None else read), float(base if write is None else write)


def price(spec: ModelSpec, usage: Usage) -> float:
    """USD for ``usage``: configured prices win, litellm's map otherwise; cached and cache-written
    prompt tokens at their own prices."""
    if spec.input_cost_per_million is not None and spec.output_cost_per_million is not None:
        cost = (usage.prompt_tokens * spec.input_cost_per_million
                + usage.completion_tokens * spec.output_cost_per_million) / 1_000_000
    else:
        prompt_cost, completion_cost = litellm.cost_per_token(
            model=spec.model, prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens
        )
        cost = float(prompt_cost + completion_cost)
    if usage.cached_prompt_tokens or usage.cache_write_tokens:
        base, read, write = _cache_prices(spec)
        cost += usage.cached_prompt_tokens * (read - base) + usage.cache_write_tokens * (write - base)
    return cost


def cache_savings(spec: ModelSpec, usage: Usage) -> float:
    """What the cached prompt tokens saved against paying the input price for them (net of what
    writing to the cache cost above it)."""
    if not (usage.cached_prompt_tokens or usage.cache_write_tokens):
        return 0.0
    base, read, write = _cache_prices(spec)
    return usage.cached_prompt_tokens * (base - read) - usage.cache_write_tokens * (write - base)


def _check_priced(name: str, spec: ModelSpec) -> None:
    if spec.input_cost_per_million is not None and spec.output_cost_per_million is not None:
        return
    # A price some gateway registered (_register_price) is configuration, not litellm's map.
    if spec.model in _REGISTERED_PRICES or not _in_price_map(spec.model):
        raise ValueError(
            f"model {name!r} ({spec.model}) has no price in litellm's map; set input_cost_per_million and "
            "output_cost_per_million in its configuration (0 is allowed)"
        )


def _in_price_map(model: str) -> bool:
    try:
        litellm.cost_per_token(model=model, prompt_tokens=1, completion_tokens=1)
    except Exception:
        return False
    return True


def _register_price(spec: ModelSpec) -> None:
    """Give litellm the configured price of a model its price map lacks (a local server's alias, the
    reference reasoner, a model newer than the map), once per gateway. litellm prices every response
    itself, whatever we do (``response._hidden_params["response_cost"]``, reused by its logging payload);
    for a model missing from its map that lookup walks all its fallback rules and fails, each call
    (0.27 ms against 0.12 ms for a direct hit, measured alone; litellm's pricing went from 15 % to 9 % of
    the client's CPU samples). The gateway still prices every call itself (:func:`price`). A model already
    in the map keeps litellm's entry. Cache reads and writes at the input price unless configured."""
    if spec.input_cost_per_million is None or spec.output_cost_per_million is None or "/" not in spec.model:
        return
    if spec.model not in _REGISTERED_PRICES and _in_price_map(spec.model):
        return
    per_token_in = spec.input_cost_per_million / 1_000_000
    cache_read = spec.cache_read_cost_per_million
    cache_write = spec.cache_write_cost_per_million
    litellm.register_model({spec.model: {
        "litellm_provider": spec.model.split("/", 1)[0],
        "mode": "chat",
        "input_cost_per_token": per_token_in,
        "output_cost_per_token": spec.output_cost_per_million / 1_000_000,
        # Given explicitly, also so that register_model does not warn that they default to 0.
        "cache_read_input_token_cost": per_token_in if cache_read is None else cache_read / 1_000_000,
        "cache_creation_input_token_cost": per_token_in if cache_write is None else cache_write / 1_000_000,
    }})
    _REGISTERED_PRICES.add(spec.model)


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
