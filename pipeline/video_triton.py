"""Scores frame windows through Triton with the worker's client (:class:`operators.triton_stage.TritonStage`), as
several cameras would (``evaluate video`` measures Triton throughput with it on a server started by
:func:`infra.services.triton_only`)."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from operators.resilience import Backoff
from operators.triton_stage import TritonStage

# A measurement reports a server that stays away rather than waiting for it as the worker does.
EVALUATION_BACKOFF = Backoff(initial_s=0.1, max_s=2.0, max_attempts=5)


async def score_through_triton(
    grpc_url: str, model: str, windows: np.ndarray, concurrency: int = 16, frames_per_request: int = 1
) -> tuple[np.ndarray, np.ndarray, float]:
    """Send windows [N, K+1, H, W] uint8 as ``concurrency`` parallel streams of requests (as several cameras would);
    returns scores [N], maps [N, h, w] and the wall-clock seconds."""
    stage = TritonStage([grpc_url], ts_model="", video_model=model, backoff=EVALUATION_BACKOFF)  # video only
    scores: list[float] = [0.0] * len(windows)
    maps: list[np.ndarray | None] = [None] * len(windows)
    starts = list(range(0, len(windows), frames_per_request))

    async def worker(offset: int) -> None:
        for start in starts[offset::concurrency]:
            results = await stage.score_video(list(windows[start : start + frames_per_request]))
            for index, result in enumerate(results, start):
                if isinstance(result, BaseException):
                    raise result
                scores[index], maps[index] = result.score, result.map

    try:
        started = time.perf_counter()
        await asyncio.gather(*(worker(offset) for offset in range(concurrency)))
        seconds = time.perf_counter() - started
    finally:
        await stage.close()
    return np.asarray(scores, dtype=np.float32), np.stack(maps).astype(np.float32), seconds
