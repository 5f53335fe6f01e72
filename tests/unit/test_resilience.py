import asyncio
import random

import pytest

from operators.resilience import Backoff, CircuitBreaker, PermanentError, call_with_retry


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_backoff_grows_exponentially_up_to_the_cap() -> None:
    backoff = Backoff(initial_s=0.1, factor=2.0, max_s=1.0, jitter=0.0)
    assert [backoff.delay(a) for a in range(1, 6)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0])
    jittered = Backoff(initial_s=1.0, jitter=0.1).delay(1, random.Random(0))
    assert 0.9 <= jittered <= 1.1


async def test_breaker_opens_after_threshold_then_half_opens_then_closes() -> None:
    clock = Clock()
    states: list[str] = []
    breaker = CircuitBreaker(failure_threshold=3, reset_timeout_s=5.0, clock=clock, on_state=states.append)
    for _ in range(2):
        await breaker.record_failure()
    assert breaker.state == "closed" and breaker.allow()
    await breaker.record_failure()
    assert breaker.state == "open" and not breaker.allow()
    clock.now = 5.0
    assert breaker.state == "half_open"
    assert breaker.allow()  # the single trial
    assert not breaker.allow()  # everyone else waits for its outcome
    await breaker.record_success()
    assert breaker.state == "closed" and breaker.allow()
    assert states == ["open", "half_open", "closed"]


async def test_failed_trial_reopens_the_breaker() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout_s=1.0, clock=clock)
    await breaker.record_failure()
    clock.now = 1.0
    assert breaker.allow()
    await breaker.record_failure()
    assert breaker.state == "open"
    clock.now = 1.5
    assert not breaker.allow()


async def test_retry_waits_out_an_outage_and_returns_the_result() -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls <= 6:
            raise ConnectionError("down")
        return "ok"

    breaker = CircuitBreaker(failure_threshold=2, reset_timeout_s=0.01)
    retries: list[int] = []
    result = await call_with_retry(
        flaky,
        breaker,
        Backoff(initial_s=0.001, max_s=0.005),
        is_transient=lambda e: isinstance(e, ConnectionError),
        on_retry=lambda e, attempt: retries.append(attempt),
    )
    assert result == "ok" and calls == 7 and retries == [1, 2, 3, 4, 5, 6]
    assert breaker.state == "closed"


async def test_permanent_error_is_raised_at_once_and_does_not_open_the_breaker() -> None:
    calls = 0

    async def bad_input() -> None:
        nonlocal calls
        calls += 1
        raise PermanentError("wrong shape")

    breaker = CircuitBreaker(failure_threshold=1)
    with pytest.raises(PermanentError):
        await call_with_retry(bad_input, breaker, Backoff(), is_transient=lambda e: not isinstance(e, PermanentError))
    assert calls == 1 and breaker.state == "closed"


async def test_waiting_callers_proceed_when_the_breaker_closes() -> None:
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout_s=0.05)
    await breaker.record_failure()
    waiters = [asyncio.create_task(breaker.acquire()) for _ in range(3)]
    await asyncio.sleep(0.01)
    assert not any(w.done() for w in waiters)
    await asyncio.sleep(0.06)  # one waiter takes the half-open trial
    assert sum(w.done() for w in waiters) == 1
    await breaker.record_success()
    await asyncio.wait_for(asyncio.gather(*waiters), timeout=2)


async def test_max_attempts_bounds_retries_when_asked() -> None:
    async def down() -> None:
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        await call_with_retry(
            down, CircuitBreaker(failure_threshold=100), Backoff(initial_s=0.001), lambda e: True, max_attempts=3
        )
