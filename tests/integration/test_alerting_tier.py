"""Scale-out roles on the real local stack (tansu, tritonserver with the stand-in models, VictoriaMetrics): scoring
workers, alerting instances on faust-streaming whose alert state follows its partitions, an API instance.

The streams replay SKAB's valve1/0.csv timeline (its times and its anomaly labels) with synthetic values the
stand-in model scores cleanly: Gaussian noise (stand-in scores below 4.4, threshold 6) and, on the labelled
anomaly, a spike on every fourth row (scores far above 6 for the whole labelled interval), so "the anomaly fires
once and resolves once" is decided by the pipeline, not by the data.
"""

from __future__ import annotations

import asyncio
import csv
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import murmur2
from sqlalchemy import select

from core.contracts import Alert, decode
from core.settings import AlertingSettings, AlertingTierSettings, DatabaseSettings, Settings
from infra.faust_app import faust_app
from infra.kafka import create_declared_topics
from operators.model_cards import card_path, load_ts_card
from operators.state_db import StateDatabase, notification_deliveries, state_database_url
from operators.webhook_receiver import WebhookReceiver
from pipeline.ingest_sensors import ReplayTable, publish_streams, read_sensor_csv
from pipeline.worker_process import WorkerProcess
from tests.integration.test_stream_pipeline import (
    MODELS,
    SKAB_FILE,
    Stack,
    count_points,
    expected_window_ends,
    stored_points,
)

pytestmark = pytest.mark.integration

QUICK = AlertingSettings(
    for_s=5,
    for_points=2,
    video_for_points=2,
    resolve_for_s=20,
    cooldown_s=60,
    group_wait_s=0,
    repeat_interval_s=None,
    max_gap_s=600,
)
PARTITIONS = 4
SECRET = "alerting-tier-secret"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    local = Stack(tmp_path_factory.mktemp("tier-stack"))
    try:
        local.up(postgres=True)  # the instances share subscriptions, silences and the journal as in production
        yield local
    finally:
        local.down()


def tier_settings(stack: Stack) -> Settings:
    base = stack.settings(alerting=QUICK)
    suffix = base.kafka.consumer_group.removeprefix("worker-")
    return base.model_copy(
        update={
            "kafka": base.kafka.model_copy(update={"broker": "tansu"}),
            "topics": base.topics.model_copy(update={"partitions": PARTITIONS}),
            "alerting_tier": AlertingTierSettings(app_id=f"alerting-{suffix}", session_timeout_s=3.0),
            "delivery": base.delivery.model_copy(update={"allowed_targets": ["127.0.0.1/32"], "backoff_max_s": 0.5}),
            "database": DatabaseSettings(url=stack.database_url()),
        }
    )


def replay_tables() -> tuple[ReplayTable, ReplayTable, tuple[float, float]]:
    """(anomalous, normal of seed 0) tables on SKAB's timeline, and the labelled anomaly's first and last time."""
    skab = read_sensor_csv(SKAB_FILE)
    with SKAB_FILE.open() as handle:
        labels = [float(row["anomaly"]) > 0.5 for row in csv.DictReader(handle, delimiter=";")]
    channels = list(load_ts_card(card_path(MODELS, "ts_diffusion")).channels)
    rng = np.random.default_rng(7)
    noise = 10 + rng.normal(size=(len(labels), len(channels)))
    spikes = np.array([40.0 if label and i % 4 == 0 else 0.0 for i, label in enumerate(labels)])[:, None]
    anomalous = ReplayTable(channels, skab.times, (noise + spikes).tolist())
    normal = ReplayTable(channels, skab.times, noise.tolist())
    times = [t for t, label in zip(skab.times, labels, strict=True) if label]
    return anomalous, normal, (times[0], times[-1])


def partition_of(stream: str) -> int:
    return (murmur2(stream.encode()) & 0x7FFFFFFF) % PARTITIONS


async def health(process: WorkerProcess) -> dict:
    async with httpx.AsyncClient(timeout=2) as client:
        return (await client.get(f"{process.metrics_url}/healthz")).json()


async def owner_of(partition: int, instances: list[WorkerProcess], timeout_s: float = 60) -> WorkerProcess:
    """The running alerting instance that owns ``partition`` once the group is settled (every partition owned)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            states = [(p, await health(p)) for p in instances if p.running()]
        except httpx.HTTPError:
            states = []
        owned = [part for _, state in states for part in state["partitions"]]
        if states and all(s["status"] == "ok" for _, s in states) and sorted(owned) == list(range(PARTITIONS)):
            return next(p for p, s in states if partition in s["partitions"])
        await asyncio.sleep(0.5)
    raise AssertionError(f"partition {partition} has no settled owner after {timeout_s} s")


async def alerts_on_topic(settings: Settings, quiet_s: float = 3.0) -> list[Alert]:
    """Every alert transition on the alerts topic so far (lifecycle events left out)."""
    consumer = AIOKafkaConsumer(
        settings.topics.alerts, bootstrap_servers=settings.kafka.bootstrap_servers, auto_offset_reset="earliest"
    )
    await consumer.start()
    found: list[Alert] = []
    try:
        last = time.monotonic()
        while time.monotonic() - last < quiet_s:
            batch = await consumer.getmany(timeout_ms=500)
            records = [r for rs in batch.values() for r in rs]
            if records:
                last = time.monotonic()
            found += [decode(Alert, r.value) for r in records if json.loads(r.value)["schema"] == "alert"]
    finally:
        await consumer.stop()
    return found


async def wait_until(condition, timeout_s: float, interval_s: float = 1.0):
    deadline = time.monotonic() + timeout_s
    while True:
        value = await condition()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(interval_s)


async def subscribe(api: WorkerProcess, receiver: WebhookReceiver, stream: str) -> None:
    headers = {"Authorization": f"Bearer {api.settings.api.token}"}
    body = {
        "name": f"tier-{stream}",
        "selector": {"stream": stream, "modality": "sensor"},
        "delivery": {"webhook_url": receiver.url},
        "secret": receiver.secret,
    }
    async with httpx.AsyncClient(base_url=api.api_url, headers=headers, timeout=5) as client:
        (await client.post("/v1/subscriptions", json=body)).raise_for_status()


async def console_phases(api: WorkerProcess) -> dict[str, str]:
    """The API instance's console view: stream -> phase (``GET /v1/streams``, fed there by the topics)."""
    headers = {"Authorization": f"Bearer {api.settings.api.token}"}
    async with httpx.AsyncClient(base_url=api.api_url, headers=headers, timeout=5) as client:
        response = await client.get("/v1/streams")
        response.raise_for_status()
    return {view["stream"]: view["phase"] for view in response.json()["streams"]}


def journal_rows(settings: Settings) -> list[tuple]:
    """The delivery journal as the instances share it: who claimed what, with which outcome."""
    database = StateDatabase.open(state_database_url(settings.database.url, settings.state_dir))
    try:
        with database.engine.connect() as connection:
            rows = connection.execute(select(notification_deliveries)).mappings().all()
        return [(row["grp"], row["outcome"], row["claimed_by"], row["attempts"], row["last_error"]) for row in rows]
    finally:
        database.close()


def stop_all(processes: list[WorkerProcess]) -> None:
    for process in processes:
        process.stop(timeout_s=15)


def assert_one_episode(on_topic: list[Alert], stream: str) -> Alert:
    """The stream's transitions: one alert_id, firing (re-sent copies allowed) then resolved, nothing after."""
    mine = [a for a in on_topic if a.stream == stream]
    assert {a.alert_id for a in mine} == {mine[0].alert_id}, [(a.alert_id, a.state) for a in mine]
    states = [a.state for a in mine]
    assert (
        "resolved" in states
        and states.index("resolved") > 0
        and set(states[states.index("resolved") :]) == {"resolved"}
    ), states
    return mine[0]


async def test_table_recovery_on_tansu_restores_every_key(stack: Stack, tmp_path: Path) -> None:
    """The compatibility fix: a fresh instance restores the whole changelog, though its newest batch holds many
    records (where tansu's ListOffsets(LATEST) points into the middle of it)."""
    settings = tier_settings(stack)
    app_id, source_name = f"recovery-{uuid.uuid4().hex[:8]}", f"recovery-in-{uuid.uuid4().hex[:8]}"
    kafka = settings.kafka
    keys = [f"stream-{i}" for i in range(60)]

    def build(datadir: Path):
        app = faust_app(app_id, kafka, datadir=datadir, session_timeout_s=3.0, topic_partitions=1)
        table = app.Table("states", partitions=1, key_type=str, value_type=int)
        source = app.topic(source_name, partitions=1, value_type=bytes, value_serializer="raw")

        @app.agent(source)
        async def fill(stream):
            async for _ in stream:
                for i, key in enumerate(keys):  # one event, many changelog records: they leave as one batch
                    table[key] = i

        return app, table, source

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(source_name, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    writer, written, source = build(tmp_path / "writer")
    await writer.start()
    try:
        await source.send(value=b"go")
        for _ in range(120):
            if len(written) == len(keys):
                break
            await asyncio.sleep(0.25)
        await asyncio.sleep(1.0)  # the changelog flushed
    finally:
        await writer.stop()
    reader, restored, _ = build(tmp_path / "reader")
    await reader.start()
    try:
        await asyncio.wait_for(reader.tables.recovery.completed.wait(), timeout=60)
        assert dict(restored.items()) == {key: i for i, key in enumerate(keys)}
    finally:
        await reader.stop()


async def test_scaling_alerting_mid_alert_moves_the_state_and_the_alert_resolves_on_the_new_owner(
    stack: Stack, tmp_path: Path
) -> None:
    if not SKAB_FILE.exists():
        pytest.skip(f"SKAB data not found at {SKAB_FILE}")
    settings = tier_settings(stack)
    anomalous, _, (start, end) = replay_tables()
    # One anomalous stream per partition: whichever partitions the new instance takes, one of them is firing.
    streams: dict[int, str] = {}
    while len(streams) < PARTITIONS:
        name = f"scale-{uuid.uuid4().hex[:6]}"
        streams.setdefault(partition_of(name), name)
    await create_declared_topics(settings)
    scoring = WorkerProcess(settings, tmp_path, "INFO", role="scoring")
    first, second = (WorkerProcess(settings, tmp_path, "INFO", role="alerting") for _ in range(2))
    processes = [scoring, first, second]
    half = next(i for i, t in enumerate(anomalous.times) if t > (start + end) / 2)
    head = ReplayTable(anomalous.channels, anomalous.times[:half], anomalous.rows[:half])
    tail = ReplayTable(anomalous.channels, anomalous.times[half:], anomalous.rows[half:])
    try:
        scoring.start()
        first.start()
        await asyncio.gather(scoring.wait_ready(90), first.wait_ready(90))
        await publish_streams(settings, dict.fromkeys(streams.values(), head), 0, False, progress=False)

        async def all_firing() -> bool:
            return {a.stream for a in await alerts_on_topic(settings, 1.0) if a.state == "firing"} == set(
                streams.values()
            )

        assert await wait_until(all_firing, 120), "every anomalous stream fires on the first instance"
        second.start()
        await second.wait_ready(90)
        await owner_of(0, [first, second])  # the group settled with both
        moved = (await health(second))["partitions"]
        assert moved, "the second instance took partitions"
        await publish_streams(settings, dict.fromkeys(streams.values(), tail), 0, False, progress=False)

        async def all_resolved() -> bool:
            return {a.stream for a in await alerts_on_topic(settings, 1.0) if a.state == "resolved"} == set(
                streams.values()
            )

        assert await wait_until(all_resolved, 180), [first.log_tail(), second.log_tail()]
        second_stats = (await health(second))["transitions"]
    finally:
        stop_all(processes)
    on_topic = await alerts_on_topic(settings)
    for stream in streams.values():
        assert_one_episode(on_topic, stream)
    # The moved streams fired on the first instance and resolved on the second: it resolved, never fired.
    assert second_stats["resolved"] == len(moved) and second_stats["fired"] == 0, second_stats


async def test_killing_a_scoring_worker_and_an_alerting_instance_loses_no_window_and_no_episode(
    stack: Stack, tmp_path: Path
) -> None:
    if not SKAB_FILE.exists():
        pytest.skip(f"SKAB data not found at {SKAB_FILE}")
    started = time.monotonic()
    settings = tier_settings(stack)
    anomalous, normal, (start, end) = replay_tables()
    suffix = uuid.uuid4().hex[:6]
    anomaly, normals = f"anomaly-{suffix}", [f"normal-{i}-{suffix}" for i in range(9)]
    tables = {anomaly: anomalous, **{stream: normal for stream in normals}}
    expected = expected_window_ends(normal, anomaly)  # the same timeline for every stream
    await create_declared_topics(settings)

    def role(name: str) -> WorkerProcess:
        return WorkerProcess(settings, tmp_path, "INFO", role=name)

    api, scoring, alerting = role("api"), [role("scoring") for _ in range(3)], [role("alerting") for _ in range(2)]
    replacements = [role("scoring"), role("alerting")]
    processes = [api, *scoring, *alerting, *replacements]
    half = next(i for i, t in enumerate(anomalous.times) if t > (start + end) / 2)

    def part(rows: slice) -> dict[str, ReplayTable]:
        return {s: ReplayTable(t.channels, t.times[rows], t.rows[rows]) for s, t in tables.items()}

    receiver = WebhookReceiver(SECRET)
    await receiver.start()
    try:
        for process in (api, *scoring, *alerting):
            process.start()
        await asyncio.gather(*(p.wait_ready(120) for p in (api, *scoring, *alerting)))
        await subscribe(api, receiver, anomaly)
        await publish_streams(settings, part(slice(0, half)), 0, False, progress=False)

        async def fired() -> bool:
            return any(a.stream == anomaly for a in await alerts_on_topic(settings, 1.0))

        assert await wait_until(fired, 120), "the anomaly fires"

        async def shown_firing() -> bool:
            phases = await console_phases(api)
            return phases.get(anomaly) == "firing" and set(normals) <= set(phases)

        assert await wait_until(shown_firing, 30), f"the API instance's console: {await console_phases(api)}"
        owner = await owner_of(partition_of(anomaly), alerting)
        replay = asyncio.create_task(publish_streams(settings, part(slice(half, None)), 40, False, progress=False))
        await asyncio.sleep(2.0)
        scoring[0].kill()  # SIGKILL, mid-replay: uncommitted readings are scored again by the others
        owner.kill()  # the owner of the firing stream's state
        for process in replacements:
            process.start()
        await replay
        await asyncio.gather(*(p.wait_ready(120) for p in replacements))

        async def missing_windows() -> dict[str, list[int]]:
            stored = {s: set(await stored_points(stack.store_url, "sensor_scores_score", asset=s)) for s in tables}
            return {s: sorted(expected - windows) for s, windows in stored.items() if expected - windows}

        async def resolved_and_delivered() -> bool:
            on_topic = await alerts_on_topic(settings, 1.0)
            done = {a.state for a in on_topic if a.stream == anomaly} == {"firing", "resolved"}
            return done and {a.state for a in receiver.alerts} == {"firing", "resolved"}

        deadline = time.monotonic() + 240
        while (missing := await missing_windows()) and time.monotonic() < deadline:
            await asyncio.sleep(1.0)
        assert not missing, f"windows (end times, ms) missing from the store: {missing}"
        if not await wait_until(resolved_and_delivered, 180):
            on_topic = [(a.state, a.alert_id) for a in await alerts_on_topic(settings, 1.0) if a.stream == anomaly]
            journal = await asyncio.to_thread(journal_rows, settings)
            pytest.fail(f"topic: {on_topic}; receiver: {[a.state for a in receiver.alerts]}; journal: {journal}")
        phases = await console_phases(api)
        assert phases[anomaly] == "resolved" and {phases[s] for s in normals} == {"ok"}, phases
    finally:
        stop_all(processes)
        await receiver.stop()
    for stream in tables:  # each window once: re-scored windows only overwrite their own event time
        assert set(await stored_points(stack.store_url, "sensor_scores_score", asset=stream)) == expected
        assert await count_points(stack.store_url, "sensor_scores_score", asset=stream) == len(expected)
    on_topic = await alerts_on_topic(settings)
    assert {a.stream for a in on_topic} == {anomaly}, "the normal streams never alert"
    first = assert_one_episode(on_topic, anomaly)
    assert start <= first.started_at <= end
    # Each transition reached the subscriber at least once, always under one idempotency key.
    keys_by_transition: dict[str, set[str]] = {}
    for key, notification in zip(receiver.keys, receiver.notifications, strict=True):
        for alert in notification.alerts:
            assert alert.alert_id == first.alert_id
            keys_by_transition.setdefault(alert.state, set()).add(key)
    assert {state: len(keys) for state, keys in keys_by_transition.items()} == {"firing": 1, "resolved": 1}
    assert receiver.counts.bad_signatures == 0
    print(f"kill test wall time {time.monotonic() - started:.0f} s")
