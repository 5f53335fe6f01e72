"""A gRPC client that scores frame windows through Triton, as several cameras would (``evaluate video`` measures
Triton throughput with it on a server started by :func:`infra.stack.triton_only`)."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import tritonclient.grpc.aio as grpcclient

from triton_models.names import FRAMES, MAP, SCORE, VIDEO_OUTPUTS


async def score_through_triton(
    grpc_url: str, model: str, windows: np.ndarray, concurrency: int = 16, frames_per_request: int = 1
) -> tuple[np.ndarray, np.ndarray, float]:
    """Send windows [N, K+1, H, W] uint8 as ``concurrency`` parallel streams of requests (as several cameras would);
    returns scores [N], maps [N, h, w] and the wall-clock seconds."""
    client = grpcclient.InferenceServerClient(grpc_url)
    scores: list[np.ndarray | None] = [None] * len(windows)
    maps: list[np.ndarray | None] = [None] * len(windows)
    starts = list(range(0, len(windows), frames_per_request))

    async def worker(offset: int) -> None:
        for start in starts[offset::concurrency]:
            batch = windows[start : start + frames_per_request]
            request = grpcclient.InferInput(FRAMES, list(batch.shape), "UINT8")
            request.set_data_from_numpy(np.ascontiguousarray(batch))
            result = await client.infer(
                model, [request], outputs=[grpcclient.InferRequestedOutput(n) for n in VIDEO_OUTPUTS]
            )
            for index, (score, anomaly_map) in enumerate(
                zip(result.as_numpy(SCORE)[:, 0], result.as_numpy(MAP), strict=True)
            ):
                scores[start + index], maps[start + index] = score, anomaly_map

    try:
        started = time.perf_counter()
        await asyncio.gather(*(worker(offset) for offset in range(concurrency)))
        seconds = time.perf_counter() - started
    finally:
        await client.close()
    return np.asarray(scores, dtype=np.float32), np.stack(maps).astype(np.float32), seconds
