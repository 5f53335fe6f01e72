"""The worker's ``/healthz`` and Prometheus ``/metrics`` endpoint."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from core.settings import StreamSettings
from operators.engine import StreamEngine
from operators.resilience import CircuitBreaker


async def serve_health(settings: StreamSettings, engine: StreamEngine, triton: CircuitBreaker) -> web.AppRunner:
    async def health(_: web.Request) -> web.Response:
        consuming = engine.ready.is_set()
        body = {
            "status": "ok" if consuming and triton.state == "closed" else "degraded",
            "consuming": consuming,
            "triton_breaker": triton.state,
            "in_flight": engine.in_flight,
            "topics": sorted(engine.lanes),
        }
        return web.json_response(body, status=200 if consuming else 503)

    async def prometheus(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.add_routes([web.get("/healthz", health), web.get("/metrics", prometheus)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.metrics_host, settings.metrics_port).start()
    return runner
