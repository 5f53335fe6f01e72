"""``diffsentry demo``: the whole job on this machine, with real trained models, in a few minutes.

1. local stack up (``infra.stack``; the demo takes it down at the end only if it brought it up, and not with --keep);
2. small ``ts_diffusion`` and ``video_diffusion`` models trained into the model repository, or taken from the cache
   (``pipeline.demo_models``), then loaded into Triton;
3. ``diffsentry run`` started as a subprocess: the worker and its subscriptions API, exactly as in production, so the
   demo watches it from outside like an operator (Prometheus ``/metrics``, ``/v1/deliveries``) and the replay, the
   webhook receiver and the live summary in this process do not compete with the worker's event loop;
4. a local webhook receiver (``operators.webhook_receiver``) subscribed through the REST API with its own secret;
5. a SKAB experiment replayed fast-forwarded (event time kept) and a Ped2 test clip (the ``ingest video`` path)
   through Kafka, with a live summary every second;
6. where the scores are (VictoriaMetrics export / PromQL, and the Flux query for real InfluxDB) and a final summary.

Exit code 0 only if alerts reached the subscriber with a verified signature.

Each run gets its own topics, consumer group and worker state dir (``<state_dir>/demo/<run>``): a kept stack still
holds the previous run's records, and the alert state deduplicates by event time, so a replay of the same file into
shared state would (rightly) emit nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

import httpx
import typer
import yaml
from tqdm import tqdm

from core.private_files import write_private_text
from core.settings import AlertingSettings, Settings
from core.stack_state import StackState
from infra import stack as local_stack
from infra.kafka import create_declared_topics
from infra.processes import free_port
from infra.victoria_metrics import export_series
from operators.webhook_receiver import WebhookReceiver
from pipeline.demo_models import REPO_ROOT, DemoModels, data_dir, ensure_models
from pipeline.ingest_sensors import ReplayTable, publish, read_sensor_csv, readings
from pipeline.prometheus_text import histogram, parse_metrics, quantile, total
from triton_models.video.frames import frame_files

# Event-time alerting for SKAB's 1 Hz readings and 10 fps video: fire after 5 s anomalous (at least 3 scores),
# resolve after 30 s below the default hysteresis level, and no second alert on a stream within the replay.
DEMO_ALERTING = AlertingSettings(for_s=5.0, for_points=3, resolve_for_s=30.0, cooldown_s=600.0)


def run_settings(settings: Settings, run: str, alerting: AlertingSettings = DEMO_ALERTING) -> Settings:
    """The worker's settings for one demo run: own topics, group and state dir, free ports, demo alerting, and
    webhooks allowed to the local receiver."""
    topics = {
        name: f"{value}.{run}"
        for name, value in settings.topics.model_dump().items()
        if name in ("sensor_readings", "video_frames", "scores", "alerts", "dead_letter")
    }
    return settings.model_copy(
        update={
            "topics": settings.topics.model_copy(update={**topics, "partitions": 1}),
            "kafka": settings.kafka.model_copy(update={"consumer_group": f"diffsentry-{run}"}),
            "stream": settings.stream.model_copy(update={"metrics_port": free_port(), "session_timeout_ms": 3000}),
            "api": settings.api.model_copy(update={"port": free_port(), "token": secrets.token_hex(16)}),
            # The demo's webhook receiver listens on loopback, which the outbound policy refuses unless allowed.
            "delivery": settings.delivery.model_copy(update={"allowed_targets": ["127.0.0.1/32"]}),
            "alerting": alerting,
            "state_dir": (settings.state_dir / "demo" / run).resolve(),
            "model_repository": settings.model_repository.resolve(),
        }
    )


class WorkerProcess:
    """``diffsentry run`` in a subprocess configured by a YAML file (``DIFFSENTRY_CONFIG``)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        self.config = settings.state_dir / "worker.yaml"
        write_private_text(self.config, yaml.safe_dump(settings.model_dump(mode="json")))  # it holds the API token
        self.log = settings.state_dir / "worker.log"
        self.metrics_url = f"http://{settings.stream.metrics_host}:{settings.stream.metrics_port}"
        self.api_url = f"http://{settings.api.host}:{settings.api.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**os.environ, "DIFFSENTRY_CONFIG": str(self.config), "PYTHONPATH": str(REPO_ROOT)}
        env = {k: v for k, v in env.items() if not k.startswith("DIFFSENTRY_") or k == "DIFFSENTRY_CONFIG"}
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pipeline.cli", "run", "--log-level", "WARNING"],
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def wait_ready(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(timeout=1) as client:
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{self.metrics_url}/healthz")).status_code == 200:
                        return
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(f"the worker exited:\n{self.log.read_text()[-3000:]}")
                await asyncio.sleep(0.2)
        raise RuntimeError(f"the worker was not consuming after {timeout_s:.0f} s; see {self.log}")

    async def metrics(self, client: httpx.AsyncClient) -> dict[str, float]:
        return parse_metrics((await client.get(f"{self.metrics_url}/metrics")).text)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class Snapshot:
    messages: float = 0
    windows: float = 0
    frames: float = 0
    p50_s: float = float("nan")
    p99_s: float = float("nan")
    alerts: float = 0
    resolved: float = 0
    dead_letters: float = 0
    deliveries: dict[str, int] | None = None

    @classmethod
    def read(cls, metrics: dict[str, float], deliveries: dict[str, int]) -> Snapshot:
        latency = histogram(metrics, "diffsentry_end_to_end_seconds")
        return cls(
            messages=total(metrics, "diffsentry_messages_total"),
            windows=total(metrics, "diffsentry_scores_total", 'modality="sensor"'),
            frames=total(metrics, "diffsentry_scores_total", 'modality="video"'),
            p50_s=quantile(latency, 0.5),
            p99_s=quantile(latency, 0.99),
            alerts=total(metrics, "diffsentry_alerts_total", 'state="firing"'),
            resolved=total(metrics, "diffsentry_alerts_total", 'state="resolved"'),
            dead_letters=total(metrics, "diffsentry_dead_letters_total"),
            deliveries=deliveries,
        )

    def line(self) -> str:
        d = self.deliveries or {}
        return (
            f"in {self.messages:.0f} msg | scored {self.windows:.0f} windows, {self.frames:.0f} frames | "
            f"latency p50 {self.p50_s:.2f}s p99 {self.p99_s:.2f}s | alerts {self.alerts:.0f} firing, "
            f"{self.resolved:.0f} resolved | webhooks {d.get('delivered', 0)} delivered, {d.get('pending', 0)} pending"
            f" | dead letters {self.dead_letters:.0f}"
        )


async def replay_video(settings: Settings, clip: Path, camera: str) -> int:
    """The ``diffsentry ingest video`` path: folder of frames -> model-size grayscale -> video-frames topic."""
    from operators.video_source import SourceStats, sampled_model_frames
    from pipeline.video_ingest import open_frames, publish_frames

    stats = SourceStats()
    video = settings.video
    frames = sampled_model_frames(
        iter(open_frames(str(clip), video.fps, False, stats)), video.fps, video.width, video.height, stats
    )
    return await publish_frames(settings, frames, camera, video.encoding, live=False, progress=False)


async def orchestrate(settings: Settings, models: DemoModels, clip: str, speed: float, timeout_s: float) -> int:
    root = data_dir(settings)
    run = f"demo-{int(time.time())}"
    worker_settings = run_settings(settings, run)
    table = read_sensor_csv(root / models.sensor_file)
    clip_dir = root / "ped2" / "testing" / clip
    frame_count = len(frame_files(clip_dir))
    expected_windows = expected_window_count(settings, table, models.asset)
    expected_frames = frame_count - _video_context(settings)
    camera = f"ped2-{clip}"

    await create_declared_topics(worker_settings)
    worker = WorkerProcess(worker_settings)
    receiver = WebhookReceiver(secrets.token_hex(16))
    await receiver.start()
    worker.start()
    try:
        await worker.wait_ready()
        headers = {"Authorization": f"Bearer {worker_settings.api.token}"}
        async with httpx.AsyncClient(timeout=5, headers=headers) as client:
            subscription = {
                "name": "demo receiver",
                "selector": {"stream": "*", "min_severity": "warning"},
                "delivery": {"webhook_url": receiver.url},
                "secret": receiver.secret,
            }
            created = (await client.post(f"{worker.api_url}/v1/subscriptions", json=subscription)).raise_for_status()
            typer.echo(f"subscribed {receiver.url} through {worker.api_url}/v1/subscriptions ({created.json()['id']})")
            typer.echo(
                f"replaying {models.sensor_file} as asset {models.asset} at {speed:g}x and Ped2 clip {clip} as "
                f"camera {camera} (worker log: {worker.log})"
            )
            sensors = asyncio.create_task(publish(worker_settings, table, models.asset, speed, loop=False))
            video = asyncio.create_task(replay_video(worker_settings, clip_dir, camera))
            snapshot = await _watch(worker, client, expected_windows + expected_frames, timeout_s, sensors, video)
            await asyncio.gather(sensors, video)
        _report(worker_settings, models, camera, snapshot, receiver, expected_windows, expected_frames)
    finally:
        worker.stop()
        await receiver.stop()
    delivered_firing = [a for a in receiver.alerts if a.state == "firing"]
    return 0 if delivered_firing and receiver.counts.bad_signatures == 0 else 1


def expected_window_count(settings: Settings, table: ReplayTable, asset: str) -> int:
    """Windows the worker will emit for this replay: the same windowing operator, run here on the same readings
    (windows lie on an absolute event-time grid, so gaps in the file add windows)."""
    from operators.model_cards import card_path, load_ts_card
    from operators.windowing import SensorWindower

    card = load_ts_card(card_path(settings.model_repository, settings.triton.ts_model))
    sensors = settings.sensors
    windower = SensorWindower(
        card.channels,
        card.window,
        card.stride,
        card.sample_period_s,
        sensors.allowed_lateness,
        sensors.min_observed_fraction,
    )
    return sum(len(windower.add(reading, ref=i)) for i, reading in enumerate(readings(table, asset, loop=False)))


def _video_context(settings: Settings) -> int:
    from operators.model_cards import card_path, load_video_card

    return load_video_card(card_path(settings.model_repository, settings.triton.video_model)).context


async def _watch(
    worker: WorkerProcess,
    client: httpx.AsyncClient,
    expected: int,
    timeout_s: float,
    *replays: asyncio.Task,
) -> Snapshot:
    """Live summary every second until everything is replayed and scored and no webhook is pending (or the timeout).
    The alert engine sees each score as it is written, so by then every alert transition has been emitted."""
    deadline = time.monotonic() + timeout_s
    snapshot = Snapshot()
    with tqdm(total=expected, desc="scored", unit="item", dynamic_ncols=True) as progress:
        while True:
            metrics = await worker.metrics(client)
            deliveries = (await client.get(f"{worker.api_url}/v1/deliveries")).json()
            snapshot = Snapshot.read(metrics, deliveries)
            progress.update(int(snapshot.windows + snapshot.frames) - progress.n)
            progress.set_postfix_str(snapshot.line(), refresh=True)
            replayed = all(task.done() for task in replays)
            for task in replays:
                if task.done() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            scored = snapshot.windows + snapshot.frames >= expected
            if replayed and scored and deliveries.get("pending", 0) == 0:
                return snapshot
            if time.monotonic() > deadline:
                tqdm.write(f"timeout after {timeout_s:.0f} s: reporting what arrived")
                return snapshot
            await asyncio.sleep(1.0)


def _report(
    settings: Settings,
    models: DemoModels,
    camera: str,
    snapshot: Snapshot,
    receiver: WebhookReceiver,
    expected_windows: int,
    expected_frames: int,
) -> None:
    influx = settings.influx.url
    selector = f'sensor_scores_score{{asset="{models.asset}"}}'
    stored = export_series(influx, selector)
    points = len({t for series in stored for t in series["timestamps"]})  # a kept store may hold earlier runs too
    flux = (
        f'from(bucket: "{settings.influx.bucket}") |> range(start: 0) |> filter(fn: (r) => '
        f'r._measurement == "sensor_scores" and r.asset == "{models.asset}" and r._field == "score")'
    )
    typer.echo("\nWhere the scores are")
    typer.echo(f"  VictoriaMetrics export: {influx}/api/v1/export?match[]={quote(selector)}")
    typer.echo(f"  PromQL:                 {influx}/api/v1/query?query={quote(selector)}")
    video_selector = f'video_scores_score{{camera="{camera}"}}'
    alerts_selector = '{__name__=~"alerts_.*"}'
    typer.echo(f"  video:                  {influx}/api/v1/export?match[]={quote(video_selector)}")
    typer.echo(f"  alerts:                 {influx}/api/v1/export?match[]={quote(alerts_selector)}")
    typer.echo(f"  on real InfluxDB (Flux): {flux}")
    typer.echo("\nSummary")
    typer.echo(f"  sensor windows scored {snapshot.windows:.0f}/{expected_windows}, in the store {points}")
    typer.echo(f"  video frames scored   {snapshot.frames:.0f}/{expected_frames}")
    typer.echo(f"  end-to-end latency    p50 {snapshot.p50_s:.2f} s, p99 {snapshot.p99_s:.2f} s (produce -> stored)")
    typer.echo(f"  alerts                {snapshot.alerts:.0f} firing, {snapshot.resolved:.0f} resolved")
    typer.echo(f"  webhook deliveries    {json.dumps(snapshot.deliveries)}")
    typer.echo(
        f"  subscriber received   {len(receiver.alerts)} alerts, signatures verified "
        f"({receiver.counts.bad_signatures} bad, {receiver.counts.duplicates} duplicates):"
    )
    for alert in receiver.alerts:
        where = alert.top_channels or alert.location
        typer.echo(
            f"    {alert.state:8} {alert.severity:8} {alert.modality:6} {alert.stream:12} event time "
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(alert.ts))} score {alert.score:.2f} "
            f"(threshold {alert.threshold:.2f}) {where}"
        )
    typer.echo(f"  dead letters          {snapshot.dead_letters:.0f}")


def demo(
    keep: Annotated[bool, typer.Option("--keep", help="Leave the local stack running afterwards.")] = False,
    speed: Annotated[float, typer.Option(help="Sensor replay speed (x real time; event time kept).")] = 50.0,
    clip: Annotated[str, typer.Option(help="Ped2 test clip to replay (04: anomalous from frame 30).")] = "04",
    retrain: Annotated[bool, typer.Option("--retrain", help="Train again even when cached models match.")] = False,
    timeout_s: Annotated[float, typer.Option(help="Give up waiting for scores and deliveries after this.")] = 300.0,
) -> None:
    """Stack up, train (or reuse) small models, replay SKAB and Ped2 through Kafka, alert a webhook subscriber."""
    settings = Settings()
    root = data_dir(settings)
    if not (root / "skab").is_dir() or not (root / "ped2").is_dir():
        typer.echo(f"no SKAB/Ped2 data under {root}: set DIFFSENTRY_DATA_DIR (settings.data_dir)", err=True)
        raise typer.Exit(2)
    started_stack = not StackState.load(settings.state_dir.resolve()).running()
    wall = time.monotonic()
    typer.echo("starting the local stack" if started_stack else "using the running local stack")
    local_stack.up(settings)
    code = 1
    try:
        settings = Settings()  # now with the running stack's addresses
        outcome = ensure_models(settings, DemoModels(), force=retrain)
        for model, how in outcome.items():
            local_stack.load_model(settings, model)
            typer.echo(f"{model}: {how}, loaded into Triton at {settings.triton.http_url}")
        code = asyncio.run(orchestrate(settings, DemoModels(), clip, speed, timeout_s))
    finally:
        if started_stack and not keep:
            local_stack.down(settings)
            typer.echo("local stack stopped (the demo started it)")
        elif keep:
            typer.echo("local stack left running (`diffsentry stack down` stops it)")
    verdict = "alerts reached the subscriber" if code == 0 else "NO alert reached the subscriber"
    typer.echo(f"\ndemo finished in {time.monotonic() - wall:.0f} s: {verdict}")
    raise typer.Exit(code)
