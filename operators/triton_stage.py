"""Scoring through Triton (``tritonclient.grpc.aio``), batched across streams, resilient to Triton being down.

I/O contracts (names fixed, shared with the model helpers):

- ``ts_diffusion``: inputs ``WINDOW`` FP32 [-1, L, C] (raw values, channels in model-card order), ``STREAM`` BYTES
  [-1, 1] (asset id), ``MODE`` BYTES [-1, 1] (``imputation`` | ``reconstruction``); outputs ``SCORE`` FP32 [-1],
  ``STEP_SCORES`` FP32 [-1, L], ``CHANNEL_SCORES`` FP32 [-1, C].
- ``video_diffusion``: input ``FRAMES`` UINT8 [-1, K+1, H, W]; outputs ``SCORE`` FP32 [-1], ``MAP`` FP32 [-1, h, w].

Replicas: one gRPC client and one circuit breaker per Triton server (``triton.grpc_urls``). Each request goes to
the replica with the fewest requests in flight among those whose breaker is closed (ties in turn), so a slow or
hung replica gets less work before its breaker opens; when none is closed, a replica whose breaker lets a half-open
trial through; when none does, the request waits for the first breaker to reopen.

Failure policy: Triton unreachable, overloaded, timing out (per-request ``client_timeout``) or a model not loaded
yet are transient: the failure counts against that replica's breaker and the request is retried with exponential
backoff, on whichever replica is healthy then (another one at once if there is one), without limit, so upstream
messages wait. A replica whose breaker opened is skipped and tried again, by one trial call, after the breaker's
reset time. ``INVALID_ARGUMENT`` (e.g. a wrong shape) and malformed outputs are permanent: the batch is split and
each item scored alone, so that only the bad items fail, with :class:`PermanentScoringError`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from core import metrics
from operators.resilience import (
    Backoff,
    BreakerState,
    CircuitBreaker,
    PermanentError,
    breaker_gauge,
    call_with_retry,
)
from triton_models.names import FRAMES, MAP, MODE, SCORE, STREAM, TS_OUTPUTS, VIDEO_OUTPUTS, WINDOW

PERMANENT_STATUSES = frozenset({"StatusCode.INVALID_ARGUMENT"})


class PermanentScoringError(PermanentError):
    """Triton rejected this input (or answered nonsense for it): retrying cannot help; dead-letter it."""


def is_transient(error: BaseException) -> bool:
    if isinstance(error, PermanentError):
        return False
    if isinstance(error, InferenceServerException):
        return error.status() not in PERMANENT_STATUSES
    return True  # connection errors, timeouts, cancellations of the channel: the service, not the input


def _per_item(score: np.ndarray | None, n: int) -> np.ndarray | None:
    """``SCORE`` as [n]; a model configured with ``dims: [1]`` (Triton needs a non-empty shape for batched
    outputs unless it reshapes) answers [n, 1], which carries the same values."""
    if score is not None and score.shape == (n, 1):
        return score.reshape(n)
    return score


@dataclass(frozen=True)
class TsRequest:
    stream: str
    values: np.ndarray  # float32 [L, C]
    mode: str


@dataclass(frozen=True)
class TsResult:
    score: float
    step_scores: np.ndarray  # [L]
    channel_scores: np.ndarray  # [C]


@dataclass(frozen=True)
class VideoResult:
    score: float
    map: np.ndarray  # [h, w]


class TritonReplica:
    """One Triton server: its client, its breaker, and how many requests it has in flight from this process."""

    def __init__(self, url: str, breaker: CircuitBreaker) -> None:
        self.url = url
        self.client = grpcclient.InferenceServerClient(url)
        self.breaker = breaker
        self.in_flight = 0


class ReplicaBreakers:
    """The replicas' breakers seen as the one service the health endpoint reports: closed while any replica's is
    (the worker can score), failing since the last replica stopped being closed."""

    def __init__(self, replicas: Sequence[TritonReplica]) -> None:
        self.replicas = replicas

    @property
    def state(self) -> BreakerState:
        states = {replica.breaker.state for replica in self.replicas}
        return "closed" if "closed" in states else "half_open" if "half_open" in states else "open"

    def failing_for(self) -> float:
        return min(replica.breaker.failing_for() for replica in self.replicas)


def replica_breaker_gauge(url: str) -> Callable[[BreakerState], None]:
    """``BREAKER_OPEN`` for the replica (service ``triton <url>``)."""
    return breaker_gauge(f"triton {url}")


class TritonStage:
    """One client and breaker per Triton replica; ``score_ts`` / ``score_video`` are MicroBatcher batch fns.

    ``breaker(url)`` makes each replica's breaker (default: the breaker's defaults, shown as ``BREAKER_OPEN``)."""

    def __init__(
        self,
        urls: Sequence[str],
        ts_model: str,
        video_model: str,
        ts_version: str = "",
        video_version: str = "",
        request_timeout_s: float = 10.0,
        backoff: Backoff | None = None,
        breaker: Callable[[str], CircuitBreaker] | None = None,
    ) -> None:
        if not urls:
            raise ValueError("TritonStage needs at least one Triton URL")
        make_breaker = breaker or (lambda url: CircuitBreaker(on_state=replica_breaker_gauge(url)))
        self.replicas = [TritonReplica(url, make_breaker(url)) for url in urls]
        self.breaker = ReplicaBreakers(self.replicas)
        self.ts_model, self.ts_version = ts_model, ts_version
        self.video_model, self.video_version = video_model, video_version
        self.request_timeout_s = request_timeout_s
        self.backoff = backoff or Backoff()
        self._turn = 0

    async def close(self) -> None:
        await asyncio.gather(*(replica.client.close() for replica in self.replicas))

    def _pick(self) -> TritonReplica | None:
        """The replica the next request goes to now, or None while every breaker is open (or holds its trial).

        A half-open replica's trial comes first, even while others are healthy: otherwise a replica that came back
        would get no work until every other one failed."""
        self._turn += 1
        count = len(self.replicas)
        in_turn = [self.replicas[(self._turn + i) % count] for i in range(count)]
        for replica in in_turn:
            if replica.breaker.state == "half_open" and replica.breaker.allow():
                return replica
        closed = [replica for replica in in_turn if replica.breaker.state == "closed"]
        return min(closed, key=lambda replica: replica.in_flight) if closed else None  # min: first of equals

    async def _replica(self) -> TritonReplica:
        while (replica := self._pick()) is None:
            await asyncio.sleep(max(0.01, min(replica.breaker.reopens_in() for replica in self.replicas)))
        return replica

    async def _infer(
        self, model: str, version: str, inputs: list[grpcclient.InferInput], outputs: list[str]
    ) -> grpcclient.InferResult:
        async def once() -> grpcclient.InferResult:
            replica = await self._replica()
            started = time.perf_counter()
            replica.in_flight += 1
            try:
                result = await replica.client.infer(
                    model,
                    inputs,
                    model_version=version,
                    outputs=[grpcclient.InferRequestedOutput(name) for name in outputs],
                    client_timeout=self.request_timeout_s,
                )
            except Exception as error:
                transient = is_transient(error)
                metrics.TRITON_ERRORS.labels(model, "transient" if transient else "permanent").inc()
                # A rejected input says the replica is up; only a failure of the service counts against it.
                await (replica.breaker.record_failure() if transient else replica.breaker.record_success())
                raise
            finally:
                replica.in_flight -= 1
            await replica.breaker.record_success()
            metrics.TRITON_LATENCY.labels(model).observe(time.perf_counter() - started)
            return result

        return await call_with_retry(once, self.backoff, is_transient)

    async def _split_on_permanent(self, items: Sequence, score_batch) -> list:
        try:
            return await score_batch(items)
        except PermanentError as error:
            if len(items) == 1:
                return [error if isinstance(error, PermanentScoringError) else PermanentScoringError(str(error))]
        results: list = []
        for item in items:
            try:
                results.extend(await score_batch([item]))
            except PermanentError as error:
                results.append(PermanentScoringError(str(error)))
        return results

    async def score_ts(self, items: list[TsRequest]) -> list[TsResult | BaseException]:
        return await self._split_on_permanent(items, self._score_ts_batch)

    async def _score_ts_batch(self, items: Sequence[TsRequest]) -> list[TsResult]:
        try:
            windows = np.stack([item.values for item in items]).astype(np.float32, copy=False)
        except ValueError as error:  # windows of different shapes cannot share a request
            raise PermanentScoringError(f"windows of different shapes in one batch: {error}") from error
        streams = np.array([[item.stream.encode()] for item in items], dtype=np.object_)
        modes = np.array([[item.mode.encode()] for item in items], dtype=np.object_)
        inputs = [
            grpcclient.InferInput(WINDOW, list(windows.shape), "FP32"),
            grpcclient.InferInput(STREAM, list(streams.shape), "BYTES"),
            grpcclient.InferInput(MODE, list(modes.shape), "BYTES"),
        ]
        for tensor, array in zip(inputs, (windows, streams, modes), strict=True):
            tensor.set_data_from_numpy(array)
        try:
            result = await self._infer(self.ts_model, self.ts_version, inputs, list(TS_OUTPUTS))
        except InferenceServerException as error:
            raise PermanentScoringError(f"{self.ts_model} rejected the input: {error}") from error
        metrics.BATCH_SIZE.labels(self.ts_model).observe(len(items))
        outs = score, steps, channels = [result.as_numpy(name) for name in TS_OUTPUTS]
        n, length, width = windows.shape
        score = _per_item(score, n)
        if (
            score is None
            or steps is None
            or channels is None
            or score.shape != (n,)
            or steps.shape != (n, length)
            or channels.shape != (n, width)
        ):
            raise PermanentScoringError(
                f"{self.ts_model} returned outputs of unexpected shapes for {n} windows of {length}x{width}: "
                + ", ".join(f"{name} {getattr(out, 'shape', None)}" for name, out in zip(TS_OUTPUTS, outs, strict=True))
            )
        return [TsResult(float(score[i]), steps[i], channels[i]) for i in range(n)]

    async def score_video(self, stacks: list[np.ndarray]) -> list[VideoResult | BaseException]:
        return await self._split_on_permanent(stacks, self._score_video_batch)

    async def _score_video_batch(self, stacks: Sequence[np.ndarray]) -> list[VideoResult]:
        try:
            frames = np.stack(stacks).astype(np.uint8, copy=False)
        except ValueError as error:
            raise PermanentScoringError(f"frame stacks of different shapes in one batch: {error}") from error
        tensor = grpcclient.InferInput(FRAMES, list(frames.shape), "UINT8")
        tensor.set_data_from_numpy(frames)
        try:
            result = await self._infer(self.video_model, self.video_version, [tensor], list(VIDEO_OUTPUTS))
        except InferenceServerException as error:
            raise PermanentScoringError(f"{self.video_model} rejected the input: {error}") from error
        metrics.BATCH_SIZE.labels(self.video_model).observe(len(stacks))
        n = frames.shape[0]
        score, heat = _per_item(result.as_numpy(SCORE), n), result.as_numpy(MAP)
        if score is None or heat is None or score.shape != (n,) or heat.ndim != 3 or heat.shape[0] != n:
            raise PermanentScoringError(f"{self.video_model} returned outputs of unexpected shapes for {n} stacks")
        return [VideoResult(float(score[i]), heat[i]) for i in range(n)]
