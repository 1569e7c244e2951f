"""The per-model rate limiter, on a fake clock: no real waiting."""

import asyncio

import pytest

from sleeptime.model import RateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        assert seconds > 0, "a limiter must never poll with zero sleeps"
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def _limiter(clock: FakeClock, rpm=None, tpm=None) -> RateLimiter:
    return RateLimiter(rpm, tpm, clock=clock, sleep=clock.sleep)


def test_rpm_allows_a_burst_then_the_steady_rate():
    async def main():
        clock = FakeClock()
        limiter = _limiter(clock, rpm=60)
        await asyncio.gather(*(limiter.acquire() for _ in range(60)))
        assert clock.now == 0 and clock.sleeps == []
        await limiter.acquire()  # the 61st waits for one request's refill: 60/min = 1 per second
        assert clock.now == pytest.approx(1.0)
        await asyncio.gather(*(limiter.acquire() for _ in range(3)))  # then one a second, in order
        assert clock.now == pytest.approx(4.0)
        clock.now += 120  # idle: the bucket refills to 60, not beyond
        await asyncio.gather(*(limiter.acquire() for _ in range(60)))
        assert clock.now == pytest.approx(124.0)
        await limiter.acquire()
        assert clock.now == pytest.approx(125.0)

    asyncio.run(main())


def test_tpm_limits_by_tokens_and_record_settles_the_estimate():
    async def main():
        clock = FakeClock()
        limiter = _limiter(clock, tpm=600)  # 10 tokens a second
        await limiter.acquire(500)
        await limiter.acquire(100)
        assert clock.now == 0
        await limiter.acquire(200)  # empty bucket: 200 tokens take 20 s
        assert clock.now == pytest.approx(20.0)
        limiter.record(50, reserved=200)  # it used only 50: 150 come back
        await limiter.acquire(150)
        assert clock.now == pytest.approx(20.0)
        limiter.record(300)  # charged after the fact: the bucket is 300 in debt
        await limiter.acquire(10)
        assert clock.now == pytest.approx(20.0 + 31.0)

    asyncio.run(main())


def test_a_request_bigger_than_tpm_waits_for_a_full_bucket_not_forever():
    async def main():
        clock = FakeClock()
        limiter = _limiter(clock, tpm=100)
        await limiter.acquire(40)
        await limiter.acquire(1000)  # waits until the bucket is full again (4 s), then goes
        assert clock.now == pytest.approx(40 / (100 / 60))

    asyncio.run(main())


def test_rpm_and_tpm_together_wait_for_the_slower():
    async def main():
        clock = FakeClock()
        limiter = _limiter(clock, rpm=600, tpm=60)  # 10 requests/s but 1 token/s
        await limiter.acquire(60)
        await limiter.acquire(5)
        assert clock.now == pytest.approx(5.0)

    asyncio.run(main())


def test_unlimited_is_a_no_op():
    async def main():
        clock = FakeClock()
        limiter = _limiter(clock)
        assert limiter.unlimited
        await asyncio.gather(*(limiter.acquire(10**9) for _ in range(10_000)))
        limiter.record(10**9)
        assert clock.sleeps == [] and limiter._lock is None

    asyncio.run(main())


def test_bad_limits_are_refused():
    with pytest.raises(ValueError, match="rpm must be >= 1"):
        RateLimiter(rpm=0)
    with pytest.raises(ValueError, match="tokens must be >= 0"):
        asyncio.run(RateLimiter(rpm=1).acquire(-1))


def test_cancelled_waiter_takes_nothing():
    async def main():
        limiter = RateLimiter(rpm=1)  # the real clock: the second call would wait a minute
        await limiter.acquire()
        waiter = asyncio.ensure_future(limiter.acquire())
        await asyncio.sleep(0.01)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert limiter._requests.level == pytest.approx(0, abs=0.01)

    asyncio.run(main())


def test_waiters_are_served_in_arrival_order_whatever_their_size():
    """A large-prompt call that asked first is not overtaken by smaller ones that could fit sooner
    (the reason this limiter is not aiolimiter's, which serves the smallest request first)."""
    async def main():
        clock = FakeClock()
        limiter = _limiter(clock, tpm=600)  # 10 tokens a second
        await limiter.acquire(600)
        done: list[tuple[str, float]] = []

        async def call(label: str, tokens: int) -> None:
            await limiter.acquire(tokens)
            done.append((label, clock.now))

        await asyncio.gather(call("big", 300), *(call(f"small{i}", 10) for i in range(3)))
        assert done == [("big", pytest.approx(30.0)), ("small0", pytest.approx(31.0)),
                        ("small1", pytest.approx(32.0)), ("small2", pytest.approx(33.0))]

    asyncio.run(main())
