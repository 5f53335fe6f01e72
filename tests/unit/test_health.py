import asyncio
from types import SimpleNamespace

import httpx

from core.settings import StreamSettings
from operators.resilience import CircuitBreaker
from pipeline.health import serve_health


async def test_healthz_turns_unhealthy_once_a_service_has_failed_too_long() -> None:
    now = [0.0]
    store = CircuitBreaker(failure_threshold=1, reset_timeout_s=1000.0, clock=lambda: now[0])
    triton = CircuitBreaker(failure_threshold=1, reset_timeout_s=1000.0, clock=lambda: now[0])
    engine = SimpleNamespace(ready=asyncio.Event(), in_flight=0, lanes={"readings": None})
    runner = await serve_health(
        StreamSettings(metrics_port=0, unhealthy_after_s=30.0), engine, {"triton": triton, "store": store}
    )
    port = runner.addresses[0][1]
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert (await client.get("/healthz")).status_code == 503  # not consuming yet
            engine.ready.set()
            assert (await client.get("/healthz")).json()["status"] == "ok"
            await store.record_failure()  # the store is away: degraded, still up
            now[0] = 29.0
            answer = await client.get("/healthz")
            assert answer.status_code == 200 and answer.json()["status"] == "degraded"
            now[0] = 31.0  # ... for longer than unhealthy_after_s
            answer = await client.get("/healthz")
            assert answer.status_code == 503 and answer.json()["failing"] == ["store"]
            await store.record_success()
            assert (await client.get("/healthz")).json()["status"] == "ok"
    finally:
        await runner.cleanup()
