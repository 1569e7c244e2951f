"""Client-side rate limits per model: requests and tokens per minute.

Algorithm: two token buckets refilled continuously (the scheme OpenAI and Anthropic describe for
their own limits). The request bucket holds ``rpm`` and refills at ``rpm / 60`` per second; the
token bucket holds ``tpm`` and refills at ``tpm / 60`` per second. A full bucket allows a burst
of ``rpm`` requests at once, after which requests flow at the steady rate: with rpm=60 the 61st
request waits one second, not a whole minute (a sliding window would make it wait 60 s). Over
any 60 s span at most about twice the limit can pass (a full burst plus a minute of refill); the
steady rate is the limit.

One limiter belongs to one event loop (its lock does): the gateway keeps one per (loop, model),
as it does for its semaphores. Waiters are served first come, first served; a waiter sleeps
exactly until the buckets hold enough (never polls), then checks again.

Not aiolimiter (1.3.0), whose AsyncLimiter is the same bucket: it has no way to settle an estimate
after the call (refund or debt, ``record``), so tpm would be charged prompt + max_tokens for good;
it refuses a request larger than its capacity; and it serves the smallest waiting amount first and
lets newcomers take free capacity ahead of waiters, so a large-prompt call can wait for as long as
smaller calls keep coming.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

_WINDOW_S = 60.0
_EPS = 1e-9


class _Bucket:
    __slots__ = ("capacity", "level", "rate", "stamp")

    def __init__(self, per_minute: int, now: float):
        self.capacity = float(per_minute)
        self.rate = per_minute / _WINDOW_S  # units per second
        self.level = self.capacity
        self.stamp = now

    def refill(self, now: float) -> None:
        if now > self.stamp:
            self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
            self.stamp = now

    def wait_for(self, amount: float) -> float:
        """Seconds until ``amount`` fits (after refill). More than the capacity waits for a full bucket."""
        need = min(amount, self.capacity)
        missing = need - self.level
        return 0.0 if missing <= _EPS * max(1.0, self.capacity) else missing / self.rate


class RateLimiter:
    """Waits until one more request, and ``tokens`` more tokens, fit the per-minute limits.

    ``rpm`` / ``tpm`` None means unlimited; with both None ``acquire`` returns at once and touches
    nothing. ``clock`` (seconds, monotonic) and ``sleep`` are injectable for tests.

    Tokens are an estimate when the call starts (prompt tokens + max_tokens is the safe one);
    ``record(actual, reserved=estimate)`` settles the difference when the reply's usage is known:
    a refund if the call used less, a debt (the bucket goes below zero and later calls wait) if
    it used more. A single request larger than ``tpm`` is let through when the bucket is full and
    leaves it in debt, rather than waiting forever.
    """

    def __init__(
        self,
        rpm: int | None = None,
        tpm: int | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ):
        for label, value in (("rpm", rpm), ("tpm", tpm)):
            if value is not None and value < 1:
                raise ValueError(f"{label} must be >= 1 or None (unlimited), got {value}")
        self.rpm, self.tpm = rpm, tpm
        self._clock, self._sleep = clock, sleep
        now = clock()
        self._requests = _Bucket(rpm, now) if rpm is not None else None
        self._tokens = _Bucket(tpm, now) if tpm is not None else None
        self._lock: asyncio.Lock | None = None

    @property
    def unlimited(self) -> bool:
        return self._requests is None and self._tokens is None

    async def acquire(self, tokens: int = 0) -> None:
        """Wait until the call fits, then charge one request and ``tokens`` tokens."""
        if tokens < 0:
            raise ValueError(f"tokens must be >= 0, got {tokens}")
        if self.unlimited:
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            while True:
                now = self._clock()
                wait = 0.0
                if self._requests is not None:
                    self._requests.refill(now)
                    wait = self._requests.wait_for(1)
                if self._tokens is not None:
                    self._tokens.refill(now)
                    wait = max(wait, self._tokens.wait_for(tokens))
                if wait <= 0:
                    break
                await self._sleep(wait)
            if self._requests is not None:
                self._requests.level -= 1
            if self._tokens is not None:
                self._tokens.level -= tokens

    def record(self, actual_tokens: int, *, reserved: int = 0) -> None:
        """Settle a call's tokens: charge ``actual_tokens - reserved`` (negative is a refund).

        ``reserved`` is what ``acquire`` was given for this call; leave it 0 to charge the whole
        usage after the fact (``acquire(0)`` before the call, ``record(usage)`` after).
        """
        if actual_tokens < 0 or reserved < 0:
            raise ValueError("token counts must be >= 0")
        if self._tokens is None:
            return
        self._tokens.refill(self._clock())
        self._tokens.level = min(self._tokens.capacity, self._tokens.level - (actual_tokens - reserved))
