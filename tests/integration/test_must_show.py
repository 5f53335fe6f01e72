"""The must-show with a REAL trained model: a SKAB experiment replayed through Kafka, scored by a small
``ts_diffusion`` trained here (the demo's recipe: SKAB's anomaly-free file plus the first 400 rows of the replayed
experiment, 3 epochs), served by the real Triton; scores in the store, an alert during the anomaly delivered once
with a valid signature to a webhook subscriber, and its resolution after the anomaly.

The module runs its own local stack: its model repository holds this trained ``ts_diffusion`` and must not meet
the session stack's models of the same name."""

from __future__ import annotations

import asyncio
import csv
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from core.contracts import Alert, decode
from core.settings import Settings
from core.stack_state import running_stack_addresses
from infra import stack as local_stack
from infra.kafka import create_declared_topics
from infra.victoria_metrics import export_series
from operators.webhook_receiver import WebhookReceiver
from pipeline.demo import DEMO_ALERTING, expected_window_count, run_settings
from pipeline.demo_models import DemoModels, data_dir, train_ts
from pipeline.ingest_sensors import publish, read_sensor_csv
from pipeline.worker import Worker

pytestmark = pytest.mark.integration

MODELS = DemoModels()


@pytest.fixture(scope="module")
def trained_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A local stack whose Triton serves a ts_diffusion trained (tiny) on SKAB at the start of this module."""
    work = tmp_path_factory.mktemp("must-show")
    paths = {"state_dir": work / "stack", "model_repository": work / "models"}
    settings = Settings(**paths)
    sensor_file = data_dir(settings) / MODELS.sensor_file
    if not sensor_file.exists():
        pytest.skip(f"SKAB not found at {sensor_file} (set DIFFSENTRY_DATA_DIR or place it at ../shared/data)")
    train_ts(settings, MODELS)
    local_stack.up(settings)
    try:
        yield Settings(**paths, **running_stack_addresses(paths["state_dir"]))
    finally:
        local_stack.down(settings)


def anomaly_interval(path: Path) -> tuple[float, float]:
    """Event times of the first and last row SKAB labels anomalous."""
    with path.open() as handle:
        rows = [row for row in csv.DictReader(handle, delimiter=";") if float(row["anomaly"]) > 0.5]
    times = [datetime.fromisoformat(row["datetime"]).replace(tzinfo=UTC).timestamp() for row in rows]
    return times[0], times[-1]


async def alerts_on_topic(settings: Settings) -> list[Alert]:
    """Every alert transition on the alerts topic (read until it stays quiet for 2 s; alert_event records, the
    lifecycle's, are left out)."""
    consumer = AIOKafkaConsumer(
        settings.topics.alerts, bootstrap_servers=settings.kafka.bootstrap_servers, auto_offset_reset="earliest"
    )
    await consumer.start()
    found: list[Alert] = []
    try:
        quiet = 0
        while quiet < 4:
            batch = await consumer.getmany(timeout_ms=500)
            records = [record for records in batch.values() for record in records]
            found += [decode(Alert, r.value) for r in records if json.loads(r.value)["schema"] == "alert"]
            quiet = 0 if records or not found else quiet + 1
    finally:
        await consumer.stop()
    return found


async def test_skab_anomaly_is_scored_alerted_delivered_and_resolved(trained_stack: Settings) -> None:
    settings = run_settings(trained_stack, f"must-show-{uuid.uuid4().hex[:8]}")
    settings = settings.model_copy(update={"stream": settings.stream.model_copy(update={"metrics_port": 0})})
    assert settings.alerting == DEMO_ALERTING
    sensor_file = data_dir(settings) / MODELS.sensor_file
    table = read_sensor_csv(sensor_file)
    anomaly_start, anomaly_end = anomaly_interval(sensor_file)
    expected_windows = expected_window_count(settings, table, MODELS.asset)
    assert expected_windows > 1000  # 1140 rows at 1 Hz with gaps, window 32, stride 1

    await create_declared_topics(settings)
    receiver = WebhookReceiver("must-show-secret")
    await receiver.start()
    worker = Worker(settings)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        await asyncio.wait_for(worker.ready.wait(), timeout=60)
        assert worker.alerting is not None
        headers = {"Authorization": f"Bearer {settings.api.token}"}
        async with httpx.AsyncClient(base_url=worker.alerting.api_url, headers=headers, timeout=5) as api:
            subscription = {
                "name": "must-show",
                "selector": {"stream": MODELS.asset, "modality": "sensor"},
                "delivery": {"webhook_url": receiver.url},
                "secret": receiver.secret,
            }
            (await api.post("/v1/subscriptions", json=subscription)).raise_for_status()
            assert await publish(settings, table, MODELS.asset, speed=0, loop=False) == len(table.rows)

            selector = f'sensor_scores_score{{asset="{MODELS.asset}"}}'
            for _ in range(240):
                stored = await asyncio.to_thread(export_series, settings.influx.url, selector, 1.0)
                timestamps = {t for series in stored for t in series["timestamps"]}
                if len(timestamps) >= expected_windows:
                    break
                await asyncio.sleep(0.5)
            assert len(timestamps) == expected_windows, "a score in the store for every window, each once"

            # The anomaly fires, then resolves: at least one firing and one resolved transition on the topic,
            # each delivered to the subscriber.
            on_topic = await asyncio.wait_for(alerts_on_topic(settings), timeout=60)
            for _ in range(60):
                pending = (await api.get("/v1/deliveries")).json()["summary"]["pending"]
                if pending == 0 and len(receiver.alerts) >= len(on_topic):
                    break
                await asyncio.sleep(0.5)
    finally:
        stop.set()
        await asyncio.wait_for(running, timeout=60)
        await receiver.stop()

    firing = [a for a in on_topic if a.state == "firing"]
    resolved = [a for a in on_topic if a.state == "resolved"]
    assert firing and resolved, [a.state for a in on_topic]
    assert {a.alert_id for a in on_topic} == {firing[0].alert_id}, "one episode: the anomaly"
    assert anomaly_start <= firing[0].started_at <= firing[0].event_time <= anomaly_end, "fires within the anomaly"
    assert resolved[-1].event_time > anomaly_end, "resolves after the anomaly ends"
    # Delivered once per transition, signature verified by the receiver (a bad one is answered 401 and counted).
    assert receiver.counts.bad_signatures == 0 and receiver.counts.duplicates == 0
    assert receiver.counts.requests == len(on_topic)
    assert [(a.alert_id, a.state, a.severity) for a in receiver.alerts] == [
        (a.alert_id, a.state, a.severity) for a in on_topic
    ]
