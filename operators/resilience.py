"""The project's one retry policy (:class:`Backoff`) and one circuit breaker, for calls to services that may be down.

:func:`call_with_retry` runs a call under a :class:`Backoff` (tenacity does the looping), behind a
:class:`CircuitBreaker` when one is given. Who uses what:

- Triton (``operators.triton_stage``) and the store (``operators.influx_sink``): the pipeline's rule while a service
  is down is that messages wait and none are dropped, so transient failures are retried without limit behind a
  breaker; only a :class:`PermanentError` (the input itself is bad) escapes, and the caller dead-letters the input.
- Webhook delivery (``operators.delivery``): up to ``delivery.max_attempts``, then the dead-letter topic.
- Video sources (``operators.video_source``): a stream is reopened with the policy's delays, up to its attempt limit.

The breaker: ``closed`` (calls flow) -> after ``failure_threshold`` consecutive failures ``open`` (no call for
``reset_timeout_s``; callers wait in :meth:`CircuitBreaker.acquire`) -> ``half_open`` (one trial call) ->
``closed`` on success, ``open`` again on failure. While open, the service is not hammered by every waiting caller.
This breaker is the project's own: the library ones (purgatory, aiobreaker, pybreaker) fail calls at once while open,
turning an outage into errors for each caller to handle, and purgatory lets every caller through when half-open.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from core import metrics

T = TypeVar("T")
BreakerState = Literal["closed", "open", "half_open"]


class PermanentError(Exception):
    """Retrying cannot help: the input is bad."""


@dataclass(frozen=True)
class Backoff:
    """The retry policy: waits of ``initial_s * factor ** (attempt - 1)`` capped at ``max_s``, each scaled by
    ``1 ± jitter`` at random, and at most ``max_attempts`` attempts in a row (``None``: no limit)."""

    initial_s: float = 0.05
    factor: float = 2.0
    max_s: float = 5.0
    jitter: float = 0.1  # so that many waiting callers do not retry in lockstep
    max_attempts: int | None = None

    def delay(self, attempt: int) -> float:
        """Wait after failed attempt number ``attempt`` (1-based)."""
        base = min(self.max_s, self.initial_s * self.factor ** (attempt - 1))
        return max(0.0, base * random.uniform(1 - self.jitter, 1 + self.jitter))

    def exhausted(self, attempts: int) -> bool:
        """Whether ``attempts`` failed attempts in a row are all this policy allows."""
        return self.max_attempts is not None and attempts >= self.max_attempts


class CircuitBreaker:
    def __init__(
        self,
        failure_threshold: int = 5,
        reset_timeout_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        on_state: Callable[[BreakerState], None] | None = None,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self._clock = clock
        self._on_state = on_state
        self._state: BreakerState = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._trial_in_flight = False
        self._changed = asyncio.Condition()
        self.failing_since: float | None = None  # clock time it last left "closed"; None while closed

    def failing_for(self) -> float:
        """Seconds since the breaker last left "closed" (0 while closed)."""
        return 0.0 if self.failing_since is None else self._clock() - self.failing_since

    @property
    def state(self) -> BreakerState:
        if self._state == "open" and self._clock() - self._opened_at >= self.reset_timeout_s:
            self._set("half_open")
        return self._state

    def _set(self, state: BreakerState) -> None:
        if state != self._state:
            if self._state == "closed":
                self.failing_since = self._clock()
            elif state == "closed":
                self.failing_since = None
            self._state = state
            if self._on_state is not None:
                self._on_state(state)

    def reopens_in(self) -> float:
        """Seconds until an open breaker lets a trial call through; 0 when it is not open."""
        if self.state != "open":
            return 0.0
        return max(0.0, self.reset_timeout_s - (self._clock() - self._opened_at))

    def allow(self) -> bool:
        """Whether a call may go now (taking the single half-open trial slot if that is what is free)."""
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self._trial_in_flight:
            self._trial_in_flight = True
            return True
        return False

    async def acquire(self) -> None:
        """Wait until a call may go."""
        while not self.allow():
            wait = max(0.01, self.reopens_in()) if self._state == "open" else 1.0
            async with self._changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout=wait)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def record_success(self) -> None:
        self._failures = 0
        self._trial_in_flight = False
        if self._state != "closed":
            self._set("closed")
            await self._notify()

    async def record_failure(self) -> None:
        self._failures += 1
        was_trial = self._trial_in_flight
        self._trial_in_flight = False
        if was_trial or self._state == "half_open" or self._failures >= self.failure_threshold:
            self._opened_at = self._clock()
            self._set("open")
        await self._notify()


class BreakerView(Protocol):
    """What health checks read of a breaker (or of several seen as one service)."""

    @property
    def state(self) -> BreakerState: ...

    def failing_for(self) -> float: ...


def breaker_gauge(service: str) -> Callable[[BreakerState], None]:
    """An ``on_state`` hook that shows the breaker to ``service`` as ``BREAKER_OPEN``."""
    return lambda state: metrics.BREAKER_OPEN.labels(service).set(state != "closed")


async def call_with_retry(
    call: Callable[[], Awaitable[T]],
    backoff: Backoff,
    is_transient: Callable[[Exception], bool],
    *,
    breaker: CircuitBreaker | None = None,
    on_retry: Callable[[Exception, int], None] | None = None,
    attempts_made: int = 0,
) -> T:
    """Run ``call`` until it succeeds or ``backoff`` gives up; a failure that is not transient is raised at once.

    ``on_retry(error, attempt)`` runs before each wait; ``attempts_made`` (failed attempts of an earlier run, e.g.
    before a restart) continues the policy's delays and attempt count from there.
    """

    async def attempt() -> T:
        if breaker is None:
            return await call()
        await breaker.acquire()
        try:
            result = await call()
        except Exception as error:
            if is_transient(error):
                await breaker.record_failure()
            else:
                await breaker.record_success()  # the service answered (it is up); only this input is bad
            raise
        await breaker.record_success()
        return result

    def attempts(state: RetryCallState) -> int:
        return attempts_made + state.attempt_number

    def before_wait(state: RetryCallState) -> None:
        assert on_retry is not None and state.outcome is not None
        error = state.outcome.exception()
        assert isinstance(error, Exception)
        on_retry(error, attempts(state))

    retrying = AsyncRetrying(
        # tenacity sees every BaseException; a cancellation must end the call, never be retried.
        retry=retry_if_exception(lambda error: isinstance(error, Exception) and is_transient(error)),
        wait=lambda state: backoff.delay(attempts(state)),
        stop=lambda state: backoff.exhausted(attempts(state)),
        before_sleep=None if on_retry is None else before_wait,
        reraise=True,
    )
    return await retrying(attempt)
