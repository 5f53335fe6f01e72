"""Scoring through Triton (``tritonclient.grpc.aio``), batched across streams, resilient to Triton being down.

I/O contracts (names fixed, shared with the model helpers):

- ``ts_diffusion``: inputs ``WINDOW`` FP32 [-1, L, C] (raw values, channels in model-card order), ``STREAM`` BYTES
  [-1, 1] (asset id), ``MODE`` BYTES [-1, 1] (``imputation`` | ``reconstruction``); outputs ``SCORE`` FP32 [-1],
  ``STEP_SCORES`` FP32 [-1, L], ``CHANNEL_SCORES`` FP32 [-1, C].
- ``video_diffusion``: input ``FRAMES`` UINT8 [-1, K+1, H, W]; outputs ``SCORE`` FP32 [-1], ``MAP`` FP32 [-1, h, w].

Failure policy: Triton unreachable, overloaded, timing out (per-request ``client_timeout``) or a model not loaded
yet are transient: the request is retried with exponential backoff behind a circuit breaker, without limit, so
upstream messages wait. ``INVALID_ARGUMENT`` (e.g. a wrong shape) and malformed outputs are permanent: the batch is
split and each item scored alone, so that only the bad items fail, with :class:`PermanentScoringError`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from core import metrics
from operators.resilience import Backoff, CircuitBreaker, PermanentError, breaker_gauge, call_with_retry
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


class TritonStage:
    """One gRPC client, one breaker per Triton server; ``score_ts`` / ``score_video`` are MicroBatcher batch fns."""

    def __init__(
        self,
        url: str,
        ts_model: str,
        video_model: str,
        ts_version: str = "",
        video_version: str = "",
        request_timeout_s: float = 10.0,
        backoff: Backoff | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.client = grpcclient.InferenceServerClient(url)
        self.ts_model, self.ts_version = ts_model, ts_version
        self.video_model, self.video_version = video_model, video_version
        self.request_timeout_s = request_timeout_s
        self.backoff = backoff or Backoff()
        self.breaker = breaker or CircuitBreaker(on_state=breaker_gauge("triton"))

    async def close(self) -> None:
        await self.client.close()

    async def _infer(
        self, model: str, version: str, inputs: list[grpcclient.InferInput], outputs: list[str]
    ) -> grpcclient.InferResult:
        async def once() -> grpcclient.InferResult:
            started = time.perf_counter()
            try:
                result = await self.client.infer(
                    model,
                    inputs,
                    model_version=version,
                    outputs=[grpcclient.InferRequestedOutput(name) for name in outputs],
                    client_timeout=self.request_timeout_s,
                )
            except Exception as error:
                kind = "permanent" if not is_transient(error) else "transient"
                metrics.TRITON_ERRORS.labels(model, kind).inc()
                raise
            metrics.TRITON_LATENCY.labels(model).observe(time.perf_counter() - started)
            return result

        return await call_with_retry(once, self.backoff, is_transient, breaker=self.breaker)

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
