"""``diffsentry demo``: the whole job on this machine, with real trained models, in a few minutes.

1. local stack up (``infra.stack``; the demo takes it down at the end only if it brought it up, and not with --keep);
2. small ``ts_diffusion`` and ``video_diffusion`` models trained into the model repository, or taken from the cache
   (``pipeline.demo_models``), then loaded into Triton;
3. ``diffsentry run`` started as a subprocess (``pipeline.worker_process``): the worker and its subscriptions API,
   exactly as in production, so the demo watches it from outside like an operator (Prometheus ``/metrics``,
   ``/v1/deliveries``) and the replay, the webhook receiver and the live summary in this process do not compete
   with the worker's event loop;
4. a local webhook receiver (``operators.webhook_receiver``) subscribed through the REST API with its own secret;
5. a SKAB experiment replayed fast-forwarded (event time kept) and a Ped2 test clip at its frame rate (the
   ``ingest video --realtime`` path, as a camera would send it) through Kafka, with live progress;
6. a summary: per modality what was scored and stored and the produce-to-stored latency (p50/p99), the alerts the
   subscriber received, what was stopped and what was kept; with ``--keep`` the stack and the worker stay up (until
   ``diffsentry stack down``), the worker's console with them, and the demo prints the console's URL and where to
   query the rest, each URL checked to answer.

The console's URL and login (the run's API token) are printed as soon as the worker is up, so it can be watched
during the replay.

Exit code 0 only if alerts reached the subscriber with a verified signature (and, with --keep, every printed URL
answered).

Each run gets its own topics, consumer group and worker state dir (``<state_dir>/demo/<run>``): a kept stack still
holds the previous run's records, and the alert state deduplicates by event time, so a replay of the same file into
shared state would (rightly) emit nothing.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import time
from pathlib import Path
from typing import Annotated

import httpx
import typer

from core.settings import AlertingSettings, Settings
from core.stack_state import ServiceRecord, StackState
from infra import stack as local_stack
from infra.kafka import create_declared_topics
from infra.victoria_metrics import export_series
from operators.webhook_receiver import WebhookReceiver
from pipeline.demo_models import DemoModels, data_dir, ensure_models
from pipeline.demo_report import DemoRun, Snapshot, console_login, console_url, report
from pipeline.ingest_sensors import ReplayTable, publish, read_sensor_csv, readings
from pipeline.worker_process import WorkerProcess
from triton_models.progress import progress_bar
from triton_models.progress import write as progress_write
from triton_models.video.frames import frame_files

# Event-time alerting for SKAB's 1 Hz readings and 10 fps video: fire after 5 s anomalous (at least 3 scores),
# resolve after 30 s below the default hysteresis level, and no second alert on a stream within the replay.
DEMO_ALERTING = AlertingSettings(for_s=5.0, for_points=3, resolve_for_s=30.0, cooldown_s=600.0)


def run_settings(settings: Settings, run: str, alerting: AlertingSettings = DEMO_ALERTING) -> Settings:
    """The worker's settings for one demo run: own topics, group and state dir, free ports (0: chosen when the
    worker process is set up), a token of its own, demo alerting, and webhooks allowed to the local receiver."""
    return settings.model_copy(
        update={
            "topics": settings.topics.suffixed(run, partitions=1),
            "kafka": settings.kafka.model_copy(update={"consumer_group": f"diffsentry-{run}"}),
            "stream": settings.stream.model_copy(update={"metrics_port": 0, "session_timeout_ms": 3000}),
            "api": settings.api.model_copy(update={"port": 0, "token": secrets.token_hex(16)}),
            # The demo's webhook receiver listens on loopback, which the outbound policy refuses unless allowed.
            "delivery": settings.delivery.model_copy(update={"allowed_targets": ["127.0.0.1/32"]}),
            "alerting": alerting,
            "state_dir": (settings.state_dir / "demo" / run).resolve(),
            "model_repository": settings.model_repository.resolve(),
        }
    )


async def replay_video(settings: Settings, clip: Path, camera: str) -> int:
    """The ``diffsentry ingest video --realtime`` path: folder of frames -> model-size grayscale -> video-frames
    topic, paced at the folder's frame rate (``video.fps``) as a camera would send it."""
    from operators.video_source import SourceStats, sampled_model_frames
    from pipeline.video_ingest import open_frames, publish_frames

    stats = SourceStats()
    video = settings.video
    frames = sampled_model_frames(
        iter(open_frames(str(clip), video.fps, False, stats)), video.fps, video.width, video.height, stats
    )
    return await publish_frames(settings, frames, camera, video.encoding, live=False, realtime=True, progress=False)


async def orchestrate(
    settings: Settings, models: DemoModels, clip: str, speed: float, timeout_s: float, keep: bool
) -> DemoRun:
    """Worker, receiver and subscription up; both replays; watch until done. The worker is stopped unless ``keep``
    (and the replay finished); the receiver always is, and with ``keep`` its subscription is deleted first."""
    root = data_dir(settings)
    run = f"demo-{int(time.time())}"
    worker = WorkerProcess(run_settings(settings, run))
    worker_settings = worker.settings  # with the ports chosen
    table = read_sensor_csv(root / models.sensor_file)
    clip_dir = root / "ped2" / "testing" / clip
    expected = {
        "sensor": expected_window_count(settings, table, models.asset),
        "video": len(frame_files(clip_dir)) - _video_context(settings),
    }
    camera = f"ped2-{clip}"

    await create_declared_topics(worker_settings)
    receiver = WebhookReceiver(secrets.token_hex(16))
    await receiver.start()
    worker.start()
    finished = False
    headers = {"Authorization": f"Bearer {worker_settings.api.token}"}
    async with httpx.AsyncClient(timeout=5, headers=headers) as client:
        subscription_url = None
        try:
            await worker.wait_ready()
            subscription = {
                "name": "demo receiver",
                "selector": {"stream": "*", "min_severity": "warning"},
                "delivery": {"webhook_url": receiver.url},
                "secret": receiver.secret,
            }
            created = (await client.post(f"{worker.api_url}/v1/subscriptions", json=subscription)).raise_for_status()
            subscription_url = f"{worker.api_url}/v1/subscriptions/{created.json()['id']}"
            typer.echo(
                f"replaying {models.sensor_file} as asset {models.asset} at {speed:g}x real time and Ped2 clip {clip} "
                f"as camera {camera} at {worker_settings.video.fps:g} fps, alerts to a webhook receiver "
                f"(worker log {worker.log})"
            )
            lasts = "after the summary (--keep)" if keep else "until the summary; --keep leaves it up"
            typer.echo(f"console: {console_url(worker.api_url)} {console_login(worker_settings.api.token)}, up {lasts}")
            started = time.monotonic()
            replays = {
                "sensor": asyncio.create_task(
                    publish(worker_settings, table, models.asset, speed, False, progress=False)
                ),
                "video": asyncio.create_task(replay_video(worker_settings, clip_dir, camera)),
            }
            snapshot = await _watch(worker, client, sum(expected.values()), timeout_s, replays)
            replay_seconds = time.monotonic() - started
            stored, last_event_ms = await asyncio.to_thread(_stored_windows, worker_settings, models.asset)
            finished = True
        finally:
            if not (keep and finished):
                worker.stop()
            elif subscription_url is not None:  # the worker stays, the receiver does not: no deliveries into the void
                await client.delete(subscription_url)
            await receiver.stop()
    return DemoRun(
        run=run,
        settings=worker_settings,
        worker=worker,
        asset=models.asset,
        camera=camera,
        expected=expected,
        snapshot=snapshot,
        stored_windows=stored,
        last_event_ms=last_event_ms,
        alerts=list(receiver.alerts),
        receiver_counts=receiver.counts,
        replay_seconds=replay_seconds,
    )


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


def _stored_windows(settings: Settings, asset: str) -> tuple[int, int | None]:
    """Sensor scores of ``asset`` in the store, every point counted (the store keeps one per series and event time,
    so a rerun over a kept store overwrites rather than adds), and the newest one's event time in ms."""
    series = export_series(settings.influx.url, f'sensor_scores_score{{asset="{asset}"}}')
    stamps = [t for s in series for t in s["timestamps"]]
    return len(stamps), max(stamps, default=None)


async def _watch(
    worker: WorkerProcess,
    client: httpx.AsyncClient,
    expected: int,
    timeout_s: float,
    replays: dict[str, asyncio.Task[int]],
) -> Snapshot:
    """Live progress until everything is replayed and scored and no webhook is pending (or the timeout). The alert
    engine sees each score as it is written, so by then every alert transition has been emitted."""
    started = deadline = time.monotonic()
    deadline += timeout_s
    announced: set[str] = set()
    with progress_bar(total=expected, desc="scored", unit="item", dynamic_ncols=True) as bar:
        while True:
            metrics = await worker.metrics(client)
            deliveries = (await client.get(f"{worker.api_url}/v1/deliveries")).raise_for_status().json()["summary"]
            snapshot = Snapshot.read(metrics, deliveries)
            bar.update(int(snapshot.scored) - bar.n)
            bar.set_postfix_str(snapshot.line(), refresh=True)
            for name, task in replays.items():
                if task.done() and name not in announced:
                    announced.add(name)
                    sent = task.result()  # raises what the replay raised
                    unit = "readings" if name == "sensor" else "frames"
                    progress_write(f"{name} replay done: {sent} {unit} in {time.monotonic() - started:.0f} s")
            replayed = len(announced) == len(replays)
            if replayed and snapshot.scored >= expected and deliveries.get("pending", 0) == 0:
                return snapshot
            if time.monotonic() > deadline:
                progress_write(f"timeout after {timeout_s:.0f} s: reporting what arrived")
                return snapshot
            await asyncio.sleep(1.0)


def demo(
    keep: Annotated[
        bool, typer.Option("--keep", help="Leave the local stack and the worker running, and print their URLs.")
    ] = False,
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
    state_dir = settings.state_dir.resolve()
    started_stack = not StackState.load(state_dir).running()
    wall = time.monotonic()
    typer.echo(f"{'starting the' if started_stack else 'using the running'} local stack (state dir {state_dir})")
    local_stack.up(settings)
    run: DemoRun | None = None
    try:
        settings = Settings()  # now with the running stack's addresses
        outcome = ensure_models(settings, DemoModels(), force=retrain)
        for model, how in outcome.items():
            local_stack.load_model(settings, model)
            typer.echo(f"{model}: {how}, loaded into Triton at {settings.triton.http_url}")
        run = asyncio.run(orchestrate(settings, DemoModels(), clip, speed, timeout_s, keep))
    finally:
        stack_kept = keep or not started_stack
        if not stack_kept:
            local_stack.down(settings)
    assert run is not None  # orchestrate returned (an exception would have left above)
    if run.worker.running():
        _attach_worker(settings, run)
    answered = report(run, stack_kept, started_stack, keep, state_dir)
    code = 0 if run.delivered and answered else 1
    verdict = "alerts reached the subscriber" if run.delivered else "NO alert reached the subscriber"
    if not answered:
        verdict += "; a printed URL did not answer"
    typer.echo(f"\ndemo finished in {time.monotonic() - wall:.0f} s: {verdict}")
    raise typer.Exit(code)


def _attach_worker(settings: Settings, run: DemoRun) -> None:
    """The kept worker becomes part of the stack's state, so that ``diffsentry stack down`` stops it too."""
    assert run.worker.pid is not None
    ports = {"metrics": run.worker.settings.stream.metrics_port, "api": run.worker.settings.api.port}
    record = ServiceRecord(f"demo-worker-{run.run}", run.worker.pid, sys.executable, ports, str(run.worker.log))
    local_stack.attach(settings, record)
