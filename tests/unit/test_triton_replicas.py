"""TritonStage over several Triton replicas: balancing, failover, recovery and waiting, against real gRPC servers.

Each replica is an in-process ``grpc.aio`` server implementing Triton's ``ModelInfer`` (the service definition
tritonclient ships) for the ts_diffusion contract; it answers every window with its own score, so a result tells
which replica computed it. Starting real tritonservers is the integration tests' job (test_stream_pipeline.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from operators.resilience import Backoff, CircuitBreaker
from operators.triton_stage import TritonStage, TsRequest
from triton_models.names import CHANNEL_SCORES, SCORE, STEP_SCORES

LENGTH, CHANNELS = 4, 2


class StandInTriton(service_pb2_grpc.GRPCInferenceServiceServicer):
    """One replica: answers each window with ``score``, after ``delay_s``; counts the requests it received."""

    def __init__(self, score: float, port: int = 0) -> None:
        self.score = score
        self.port = port
        self.delay_s = 0.0
        self.requests = 0
        self.server: grpc.aio.Server | None = None

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.server = grpc.aio.server()
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        await self.server.start()

    async def stop(self) -> None:
        assert self.server is not None
        await self.server.stop(grace=None)  # in-flight calls are cancelled, like a killed process's

    async def ModelInfer(self, request, context):
        self.requests += 1
        await asyncio.sleep(self.delay_s)
        n = request.inputs[0].shape[0]
        response = service_pb2.ModelInferResponse(model_name=request.model_name, model_version="1")
        for name, dims in ((SCORE, [n, 1]), (STEP_SCORES, [n, LENGTH]), (CHANNEL_SCORES, [n, CHANNELS])):
            tensor = response.outputs.add(name=name, datatype="FP32")
            tensor.shape.extend(dims)
            response.raw_output_contents.append(np.full(dims, self.score, dtype=np.float32).tobytes())
        return response


@contextlib.asynccontextmanager
async def two_replicas() -> AsyncIterator[list[StandInTriton]]:
    """Replicas answering 1.0 and 2.0; a test may replace one (a restart), the list's servers are stopped at the end.
    (Not a fixture: async fixtures run on the session's event loop, the servers must run on the test's.)"""
    servers = [StandInTriton(1.0), StandInTriton(2.0)]
    for server in servers:
        await server.start()
    try:
        yield servers
    finally:
        for server in servers:
            await server.stop()


def stage_over(servers: list[StandInTriton], timeout_s: float = 2.0, reset_s: float = 0.3) -> TritonStage:
    return TritonStage(
        [server.url for server in servers],
        "ts_diffusion",
        "video_diffusion",
        request_timeout_s=timeout_s,
        backoff=Backoff(initial_s=0.01, max_s=0.1),
        breaker=lambda _: CircuitBreaker(failure_threshold=2, reset_timeout_s=reset_s),
    )


REQUEST = TsRequest("pump-1", np.zeros((LENGTH, CHANNELS), dtype=np.float32), "reconstruction")


async def scores(stage: TritonStage, count: int) -> list[float]:
    """``count`` single-window requests at once; the score of each (which replica answered it)."""
    results = await asyncio.gather(*(stage.score_ts([REQUEST]) for _ in range(count)))
    return [result[0].score for result in results]  # type: ignore[union-attr]


async def test_requests_are_spread_over_the_healthy_replicas() -> None:
    async with two_replicas() as replicas:
        stage = stage_over(replicas)
        try:
            answered = await scores(stage, 40)
        finally:
            await stage.close()
    assert sorted(set(answered)) == [1.0, 2.0]
    assert all(server.requests >= 10 for server in replicas), [server.requests for server in replicas]


async def test_a_stopped_replica_is_skipped_and_used_again_once_it_is_back() -> None:
    async with two_replicas() as replicas:
        stage = stage_over(replicas)
        first = replicas[0]
        try:
            await scores(stage, 4)  # both channels connected
            await first.stop()
            assert set(await scores(stage, 30)) == {2.0}  # every request answered, by the survivor
            assert stage.replicas[0].breaker.state in ("open", "half_open")
            assert stage.replicas[1].breaker.state == "closed" and stage.breaker.state == "closed"

            comeback = StandInTriton(1.0, first.port)
            await comeback.start()
            replicas[0] = comeback  # the fixture stops it

            async def served_by_both() -> bool:
                return set(await scores(stage, 10)) == {1.0, 2.0}

            for _ in range(100):
                if await served_by_both():
                    break
                await asyncio.sleep(0.1)
            assert comeback.requests > 0 and stage.replicas[0].breaker.state == "closed"
        finally:
            await stage.close()


async def test_a_hung_replica_times_out_and_its_requests_are_answered_by_the_other() -> None:
    async with two_replicas() as replicas:
        stage = stage_over(replicas, timeout_s=0.3, reset_s=30.0)
        replicas[0].delay_s = 5.0
        try:
            answered = await asyncio.wait_for(scores(stage, 20), timeout=10)
        finally:
            await stage.close()
        assert set(answered) == {2.0}
        assert stage.replicas[0].breaker.state == "open"  # after two timeouts it gets no more requests


async def test_with_every_replica_down_requests_wait_and_complete_when_one_returns() -> None:
    async with two_replicas() as replicas:
        stage = stage_over(replicas)
        try:
            await scores(stage, 2)
            for server in replicas:
                await server.stop()
            pending = asyncio.create_task(scores(stage, 5))
            await asyncio.sleep(1.5)
            assert not pending.done()  # waiting, not failed
            assert stage.breaker.state in ("open", "half_open") and stage.breaker.failing_for() > 0
            back = StandInTriton(2.0, replicas[1].port)
            await back.start()
            replicas[1] = back
            assert set(await asyncio.wait_for(pending, timeout=30)) == {2.0}
            assert stage.breaker.state == "closed"
        finally:
            await stage.close()


def test_a_stage_needs_a_replica() -> None:
    with pytest.raises(ValueError, match="at least one Triton URL"):
        TritonStage([], "ts_diffusion", "video_diffusion")
