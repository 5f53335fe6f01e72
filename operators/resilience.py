"""Retries with exponential backoff and a circuit breaker, for calls to services that may be down.

The pipeline's rule while a service is down: messages wait, none are dropped. So :func:`call_with_retry` retries
transient failures without a limit (unless ``max_attempts`` is given) and only a :class:`PermanentError` (the input
itself is bad) escapes to the caller, which sends the input to the dead-letter topic.

The breaker: ``closed`` (calls flow) -> after ``failure_threshold`` consecutive failures ``open`` (no call for
``reset_timeout_s``; callers wait in :meth:`CircuitBreaker.acquire`) -> ``half_open`` (one trial call) ->
``closed`` on success, ``open`` again on failure. While open, the service is not hammered by every waiting caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

T = TypeVar("T")
BreakerState = Literal["closed", "open", "half_open"]


class PermanentError(Exception):
    """Retrying cannot help: the input is bad."""


@dataclass(frozen=True)
class Backoff:
    initial_s: float = 0.05
    factor: float = 2.0
    max_s: float = 5.0
    jitter: float = 0.1  # +- fraction, so that many waiting callers do not retry in lockstep

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Delay before retry number ``attempt`` (1-based)."""
        base = min(self.max_s, self.initial_s * self.factor ** (attempt - 1))
        spread = (rng or random).uniform(-self.jitter, self.jitter)
        return max(0.0, base * (1 + spread))


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

    @property
    def state(self) -> BreakerState:
        if self._state == "open" and self._clock() - self._opened_at >= self.reset_timeout_s:
            self._set("half_open")
        return self._state

    def _set(self, state: BreakerState) -> None:
        if state != self._state:
            self._state = state
            if self._on_state is not None:
                self._on_state(state)

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
            wait = max(0.01, self.reset_timeout_s - (self._clock() - self._opened_at)) if self._state == "open" else 1.0
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


async def call_with_retry(
    call: Callable[[], Awaitable[T]],
    breaker: CircuitBreaker,
    backoff: Backoff,
    is_transient: Callable[[BaseException], bool],
    max_attempts: int | None = None,
    on_retry: Callable[[BaseException, int], None] | None = None,
) -> T:
    """Run ``call`` until it succeeds; transient failures back off and retry, anything else is raised."""
    attempt = 0
    while True:
        await breaker.acquire()
        attempt += 1
        try:
            result = await call()
        except Exception as error:
            if not is_transient(error):
                # The service answered (it is up); only this input is bad.
                await breaker.record_success()
                raise
            await breaker.record_failure()
            if max_attempts is not None and attempt >= max_attempts:
                raise
            if on_retry is not None:
                on_retry(error, attempt)
            await asyncio.sleep(backoff.delay(attempt))
            continue
        await breaker.record_success()
        return result
