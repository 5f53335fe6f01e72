"""The ``/healthz`` and Prometheus ``/metrics`` endpoint of every role of ``diffsentry run``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from core.settings import StreamSettings
from operators.engine import StreamEngine
from operators.resilience import BreakerView


async def serve_health(
    settings: StreamSettings, engine: StreamEngine, breakers: dict[str, BreakerView]
) -> web.AppRunner:
    """``/healthz``: 200 while consuming ("degraded" while a breaker is not closed); 503 before consuming starts and
    once a service has been failing for ``unhealthy_after_s``, so an orchestrator restarts a worker that cannot
    work (for example one that still dials a service that moved)."""

    async def health(_: web.Request) -> web.Response:
        consuming = engine.ready.is_set()
        failing = sorted(name for name, b in breakers.items() if b.failing_for() > settings.unhealthy_after_s)
        degraded = any(b.state != "closed" for b in breakers.values())
        body = {
            "status": "unhealthy" if failing else "degraded" if degraded or not consuming else "ok",
            "consuming": consuming,
            **{f"{name}_breaker": breaker.state for name, breaker in breakers.items()},
            "failing": failing,
            "in_flight": engine.in_flight,
            "topics": sorted(engine.lanes),
        }
        return web.json_response(body, status=200 if consuming and not failing else 503)

    return await _serve(settings, health)


async def _prometheus(_: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _serve(settings: StreamSettings, health: Callable[[web.Request], Any]) -> web.AppRunner:
    app = web.Application()
    app.add_routes([web.get("/healthz", health), web.get("/metrics", _prometheus)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.metrics_host, settings.metrics_port).start()
    return runner


async def serve_status(settings: StreamSettings, status: Callable[[], tuple[bool, dict[str, Any]]]) -> web.AppRunner:
    """``/healthz`` and ``/metrics`` of a role without a scoring engine (alerting, api): ``status()`` says whether
    it is ready (200, else 503) and what to report."""

    async def health(_: web.Request) -> web.Response:
        ready, body = status()
        return web.json_response(body, status=200 if ready else 503)

    return await _serve(settings, health)
