import asyncio

import pytest

from operators.resilience import Backoff, CircuitBreaker, PermanentError, call_with_retry

NO_WAIT = Backoff(initial_s=0.0, jitter=0.0)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def failing(times: int, error: Exception, result: str = "ok"):
    """An async call that raises ``error`` ``times`` times, then returns ``result``; ``.calls`` counts calls."""

    async def call() -> str:
        call.calls += 1
        if call.calls <= times:
            raise error
        return result

    call.calls = 0
    return call


def test_backoff_grows_exponentially_up_to_the_cap() -> None:
    backoff = Backoff(initial_s=0.1, factor=2.0, max_s=1.0, jitter=0.0)
    assert [backoff.delay(a) for a in range(1, 6)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0])


def test_jitter_scales_each_delay_within_its_bounds() -> None:
    backoff = Backoff(initial_s=1.0, factor=2.0, max_s=4.0, jitter=0.1)
    for attempt, base in [(1, 1.0), (2, 2.0), (5, 4.0)]:
        delays = [backoff.delay(attempt) for _ in range(500)]
        assert all(0.9 * base <= delay <= 1.1 * base for delay in delays)
        assert max(delays) - min(delays) > 0.1 * base  # spread, not one value: callers do not retry in lockstep


def test_exhausted_counts_attempts_and_none_never_gives_up() -> None:
    assert not Backoff(max_attempts=3).exhausted(2) and Backoff(max_attempts=3).exhausted(3)
    assert not Backoff(max_attempts=None).exhausted(10**6)


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


async def test_retry_then_success_returns_the_result_and_reports_each_retry() -> None:
    flaky = failing(6, ConnectionError("down"))
    retries: list[tuple[str, int]] = []
    result = await call_with_retry(
        flaky,
        NO_WAIT,
        is_transient=lambda e: isinstance(e, ConnectionError),
        on_retry=lambda error, attempt: retries.append((str(error), attempt)),
    )
    assert result == "ok" and flaky.calls == 7
    assert retries == [("down", attempt) for attempt in range(1, 7)]


async def test_retry_behind_the_breaker_waits_out_an_outage() -> None:
    flaky = failing(6, ConnectionError("down"))
    states: list[str] = []
    breaker = CircuitBreaker(failure_threshold=2, reset_timeout_s=0.01, on_state=states.append)
    result = await call_with_retry(flaky, NO_WAIT, lambda e: isinstance(e, ConnectionError), breaker=breaker)
    assert result == "ok" and flaky.calls == 7
    assert breaker.state == "closed" and "open" in states and states[-1] == "closed"


async def test_permanent_error_is_raised_at_once_and_does_not_open_the_breaker() -> None:
    bad_input = failing(1, PermanentError("wrong shape"))
    breaker = CircuitBreaker(failure_threshold=1)
    with pytest.raises(PermanentError):
        await call_with_retry(
            bad_input, NO_WAIT, is_transient=lambda e: not isinstance(e, PermanentError), breaker=breaker
        )
    assert bad_input.calls == 1 and breaker.state == "closed"


async def test_max_attempts_then_the_last_error_is_raised() -> None:
    down = failing(100, ConnectionError("down"))
    retries: list[int] = []
    with pytest.raises(ConnectionError, match="down"):
        await call_with_retry(
            down,
            Backoff(initial_s=0.0, max_attempts=3),
            lambda e: True,
            on_retry=lambda error, attempt: retries.append(attempt),
        )
    assert down.calls == 3 and retries == [1, 2]


async def test_attempts_made_before_continue_the_count() -> None:
    down = failing(100, ConnectionError("down"))
    retries: list[int] = []
    with pytest.raises(ConnectionError):
        await call_with_retry(
            down,
            Backoff(initial_s=0.0, max_attempts=5),
            lambda e: True,
            on_retry=lambda error, attempt: retries.append(attempt),
            attempts_made=3,
        )
    assert down.calls == 2 and retries == [4]


async def test_a_cancellation_is_never_retried() -> None:
    cancelled = failing(100, asyncio.CancelledError())  # type: ignore[arg-type]
    with pytest.raises(asyncio.CancelledError):
        await call_with_retry(cancelled, NO_WAIT, is_transient=lambda e: True)
    assert cancelled.calls == 1


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
