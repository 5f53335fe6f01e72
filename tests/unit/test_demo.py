"""The demo's summary: latency per modality, what was stopped and kept, and the URLs it prints."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp import web

from core.contracts import Alert
from core.settings import ApiSettings, InfluxSettings, Settings, StreamSettings, TritonSettings
from operators.webhook_receiver import ReceiverCounts
from pipeline.demo_report import DemoRun, Link, Snapshot, links, report
from pipeline.prometheus_text import parse_metrics
from pipeline.worker_process import WorkerProcess

EXPOSITION = """diffsentry_messages_total{topic="r"} 120.0
diffsentry_scores_total{anomaly="false",modality="sensor"} 90.0
diffsentry_scores_total{anomaly="true",modality="sensor"} 10.0
diffsentry_scores_total{anomaly="false",modality="video"} 20.0
diffsentry_end_to_end_seconds_bucket{le="0.1",modality="sensor"} 50.0
diffsentry_end_to_end_seconds_bucket{le="1.0",modality="sensor"} 100.0
diffsentry_end_to_end_seconds_bucket{le="+Inf",modality="sensor"} 100.0
diffsentry_end_to_end_seconds_bucket{le="0.1",modality="video"} 20.0
diffsentry_end_to_end_seconds_bucket{le="1.0",modality="video"} 20.0
diffsentry_end_to_end_seconds_bucket{le="+Inf",modality="video"} 20.0
diffsentry_alerts_total{modality="sensor",state="firing"} 1.0
"""


def test_latency_and_counts_are_read_per_modality() -> None:
    snapshot = Snapshot.read(parse_metrics(EXPOSITION), {"delivered": 1, "pending": 0})
    sensor, video = snapshot.modalities["sensor"], snapshot.modalities["video"]
    assert (sensor.scored, video.scored, snapshot.scored) == (100, 20, 120)
    assert sensor.p50_s == pytest.approx(0.1) and sensor.p99_s == pytest.approx(0.982)
    assert video.p50_s == pytest.approx(0.05) and video.p99_s == pytest.approx(0.099)
    assert snapshot.alerts == 1 and snapshot.resolved == 0
    assert "sensor 100 p99 0.98 s | video 20 p99 0.10 s" in snapshot.line()


def demo_run(tmp_path: Path) -> DemoRun:
    settings = Settings(
        state_dir=tmp_path / "run",
        influx=InfluxSettings(url="http://127.0.0.1:18428"),
        triton=TritonSettings(http_url="127.0.0.1:18000"),
        stream=StreamSettings(metrics_port=19464),
        api=ApiSettings(port=18088, token="t0ken"),
    )
    alert = Alert(
        alert_id="al-1",
        modality="sensor",
        stream="valve1-13",
        state="firing",
        severity="critical",
        started_at=1.0,
        event_time=2.0,
        score=2.5,
        threshold=1.0,
        model="ts_diffusion",
        top_channels=["Volume Flow RateRMS"],
    )
    return DemoRun(
        run="demo-1",
        settings=settings,
        worker=WorkerProcess(settings),
        asset="valve1-13",
        camera="ped2-04",
        expected={"sensor": 100, "video": 20},
        snapshot=Snapshot.read(parse_metrics(EXPOSITION), {"delivered": 1, "pending": 0}),
        stored_windows=100,
        last_event_ms=1_600_000_000_000,
        alerts=[alert],
        receiver_counts=ReceiverCounts(requests=1, accepted=1),
        replay_seconds=30.0,
    )


def test_the_urls_name_the_store_triton_the_metrics_and_the_api(tmp_path: Path) -> None:
    printed = {link.label: link for link in links(demo_run(tmp_path))}
    assert printed["sensor scores"].url.startswith("http://127.0.0.1:18428/api/v1/export?match[]=sensor_scores_score")
    promql = parse_qs(urlsplit(printed["PromQL"].url).query)
    assert promql == {"query": ['sensor_scores_score{asset="valve1-13"}'], "time": ["1600000000.000"]}
    assert printed["Triton"].url == "http://127.0.0.1:18000/v2/models/ts_diffusion/ready"
    assert printed["metrics"].url == "http://127.0.0.1:19464/metrics" and printed["metrics"].owner == "worker"
    assert printed["API"].url == "http://127.0.0.1:18088/v1/deliveries" and printed["API"].token == "t0ken"
    console = printed["console"]
    assert console.url == "http://127.0.0.1:18088/console/" and console.owner == "worker"
    assert console.token is None and console.note == "(log in with the API token t0ken)"  # a browser logs in
    assert {link.owner for link in printed.values() if link.url.startswith("http://127.0.0.1:18")} == {
        "stack",
        "worker",
    }


def test_without_keep_the_summary_says_what_stopped_and_offers_keep(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert report(demo_run(tmp_path), stack_kept=False, stack_started=True, keep=False, state_dir=tmp_path)
    out = capsys.readouterr().out
    assert "sensor valve1-13: 100/100 windows scored, 100 in the store; produce -> stored p50 0.10 s, p99 0.98 s" in out
    assert "video ped2-04: 20/20 frames scored (sent at 10 fps); produce -> stored p50 0.05 s, p99 0.10 s" in out
    assert "firing critical valve1-13 at 1970-01-01 00:00:02 (event time)" in out
    assert (
        f"stopped: the worker (pid None), the webhook receiver, the local stack (its data stays in {tmp_path})" in out
    )
    assert "kept running" not in out and "http://" not in out
    assert out.rstrip().endswith("prints where to query the scores, the alerts, the API and the metrics")
    assert "--keep` leaves the stack and the worker running, the console with them" in out


@asynccontextmanager
async def worker_like_server() -> AsyncIterator[int]:
    """The worker's URLs as the summary checks them: the console sends a browser without a session to its login
    page, the API wants the bearer token."""

    async def console(request: web.Request) -> web.StreamResponse:
        raise web.HTTPSeeOther("/console/login")

    async def login(request: web.Request) -> web.Response:
        return web.Response(text="<form method=post>token</form>", content_type="text/html")

    async def deliveries(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Bearer t0ken":
            raise web.HTTPUnauthorized()
        return web.json_response({"summary": {}})

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text=EXPOSITION)

    app = web.Application()
    app.router.add_get("/console/", console)
    app.router.add_get("/console/login", login)
    app.router.add_get("/v1/deliveries", deliveries)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def test_a_link_answers_after_redirects_and_says_why_not_otherwise() -> None:
    async with worker_like_server() as port:
        base = f"http://127.0.0.1:{port}"
        assert await asyncio.to_thread(Link("console", f"{base}/console/", "worker").check) == "answers"
        assert await asyncio.to_thread(Link("API", f"{base}/v1/deliveries", "worker", "t0ken").check) == "answers"
        unauthorised = Link("API", f"{base}/v1/deliveries", "worker", "wrong")
        assert await asyncio.to_thread(unauthorised.check) == "NO ANSWER (HTTP 401)"
        assert await asyncio.to_thread(Link("x", f"{base}/nothing", "worker").check) == "NO ANSWER (HTTP 404)"


async def test_with_the_worker_kept_the_summary_prints_the_console_and_how_to_stop_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = demo_run(tmp_path)
    async with worker_like_server() as port:
        ports = {"stream": {"metrics_port": port}, "api": {"port": port}}
        settings = run.settings.model_copy(
            update={name: getattr(run.settings, name).model_copy(update=value) for name, value in ports.items()}
        )
        run.settings, run.worker = settings, WorkerProcess(settings)
        run.worker.process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # kept worker
        try:
            answered = await asyncio.to_thread(
                report, run, stack_kept=False, stack_started=True, keep=True, state_dir=tmp_path
            )
        finally:
            run.worker.process.kill()
            run.worker.process.wait()
    out = capsys.readouterr().out
    assert answered, out
    base = f"http://127.0.0.1:{port}"
    lines = out.splitlines()
    kept = next(i for i, line in enumerate(lines) if "kept running:" in line)
    assert "the worker and its console (pid" in lines[kept] and "diffsentry stack down` stops it" in lines[kept]
    assert lines[kept + 1] == f"    console:       {base}/console/ (log in with the API token t0ken)  answers"
    assert f"    API:           {base}/v1/deliveries (bearer token)  answers" in lines
    assert f"    metrics:       {base}/metrics  answers" in lines
    assert "stopped: the webhook receiver (its subscription deleted), the local stack" in out
    assert "sensor scores" not in out  # the stack was not kept: none of its URLs
