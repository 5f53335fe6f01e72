"""The streaming worker against real services: tansu, tritonserver, VictoriaMetrics (InfluxDB v2 write API).

Triton serves the deterministic stand-ins of tests/integration/models (tiny python-backend models honouring the
ts_diffusion and video_diffusion I/O contracts), so these tests check the pipeline, not a trained model. The module
runs its own local stack (infra/stack.py) rather than the session's ``local_stack``: its fault tests stop and
restart single services, and its model repository must not mix with trained models of the same names."""

from __future__ import annotations

import asyncio
import io
import json
import math
import os
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner
from PIL import Image

from core.contracts import FRAME_HEADER, Alert, AlertEvent, DeadLetter, SensorReading, VideoFrame, decode
from core.settings import (
    AlertingSettings,
    ApiSettings,
    InfluxSettings,
    KafkaSettings,
    LocalStackSettings,
    SensorSettings,
    Settings,
    StreamSettings,
    TopicSettings,
    TritonSettings,
)
from core.stack_state import POSTGRES, TRITON, VICTORIA_METRICS, StackState
from infra import stack as local_stack_services
from infra.kafka import create_declared_topics
from infra.processes import free_port, stop_process
from infra.services import grpc_url, start_triton_replica, stop_service
from operators.model_cards import card_path, load_ts_card
from operators.resilience import Backoff, CircuitBreaker
from operators.triton_stage import PermanentScoringError, TritonStage, TsRequest
from operators.windowing import SensorWindower
from pipeline.demo_models import data_dir
from pipeline.ingest_sensors import publish, read_sensor_csv, readings
from pipeline.prometheus_text import parse_metrics, total
from pipeline.worker import Worker
from pipeline.worker_process import WorkerProcess
from tests.state import fresh_postgres_database

pytestmark = pytest.mark.integration

MODELS = Path(__file__).parent / "models"
SKAB_FILE = data_dir(Settings()) / "skab" / "valve1" / "0.csv"


class Stack:
    """The local stack (infra/stack.py) serving the stand-in models, on ports pinned at creation so that a service
    stopped by a fault test comes back at the same address."""

    def __init__(self, work: Path) -> None:
        self.work = work
        ports = LocalStackSettings(
            kafka_port=free_port(),
            triton_http_port=free_port(),
            triton_grpc_port=free_port(),
            triton_metrics_port=free_port(),
            victoria_metrics_port=free_port(),
        )
        self.base = Settings(state_dir=work / "stack", model_repository=MODELS, stack=ports)
        self.bootstrap = f"127.0.0.1:{ports.kafka_port}"
        self.triton_url = f"127.0.0.1:{ports.triton_grpc_port}"
        self.store_url = f"http://127.0.0.1:{ports.victoria_metrics_port}"

    def up(self, postgres: bool = False) -> None:
        """Starts whatever is not running (all at first, a stopped service later); PostgreSQL too if asked."""
        local_stack_services.up(self.base, postgres=postgres)

    def database_url(self) -> str:
        """A new database of its own on the stack's PostgreSQL (started by ``up(postgres=True)``)."""
        server = StackState.load(self.base.state_dir).services[POSTGRES].url.rsplit("/", 1)[0]
        return fresh_postgres_database(server)

    def down(self) -> None:
        local_stack_services.down(self.base)

    def stop(self, service: str) -> None:
        record = StackState.load(self.base.state_dir).services[service]
        stop_process(record.pid, record.executable, self.base.stack.stop_timeout_s)

    def settings(self, alerting: AlertingSettings | None = None, **sensor_overrides) -> Settings:
        suffix = uuid.uuid4().hex[:8]
        topics = TopicSettings().suffixed(suffix, partitions=2)
        return Settings(
            kafka=KafkaSettings(bootstrap_servers=self.bootstrap, consumer_group=f"worker-{suffix}"),
            topics=topics,
            triton=TritonSettings(grpc_urls=[self.triton_url], request_timeout_s=5.0),
            influx=InfluxSettings(url=self.store_url),
            sensors=SensorSettings(**sensor_overrides),
            stream=StreamSettings(metrics_port=0, breaker_reset_s=0.5, backoff_max_s=0.5, session_timeout_ms=3000),
            model_repository=MODELS,
            state_dir=self.work / f"state-{suffix}",
            api=ApiSettings(port=0, allow_dev_token=True),
            alerting=alerting or AlertingSettings(),
        )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    local = Stack(tmp_path_factory.mktemp("stream-stack"))
    try:
        local.up()
        yield local
    finally:
        local.down()


class RunningWorker:
    def __init__(self, settings: Settings) -> None:
        self.worker = Worker(settings)
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Worker:
        await create_declared_topics(self.worker.settings)
        self.task = asyncio.create_task(self.worker.run(self.stop))
        ready = asyncio.create_task(self.worker.ready.wait())
        await asyncio.wait({ready, self.task}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        if self.task.done():
            self.task.result()
        assert self.worker.ready.is_set(), "worker did not start consuming"
        return self.worker

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        assert self.task is not None
        await asyncio.wait_for(self.task, timeout=60)


@pytest.fixture
async def worker_factory() -> AsyncIterator:
    yield RunningWorker


async def exported(store_url: str, measurement_field: str, **labels: str) -> list[dict]:
    """The stored series of one family, read back through VictoriaMetrics' export API after a flush."""
    matcher = ",".join([f'__name__="{measurement_field}"', *(f'{k}="{v}"' for k, v in labels.items())])
    async with httpx.AsyncClient(base_url=store_url, timeout=10) as client:
        await client.get("/internal/force_flush")
        response = await client.post("/api/v1/export", data={"match[]": "{" + matcher + "}"})
    response.raise_for_status()
    return [json.loads(line) for line in response.text.splitlines()]


async def stored_points(store_url: str, measurement_field: str, **labels: str) -> dict[int, float]:
    """timestamp (ms) -> value of one stored series family."""
    points: dict[int, float] = {}
    for series in await exported(store_url, measurement_field, **labels):
        points.update(zip(series["timestamps"], series["values"], strict=True))
    return points


async def count_points(store_url: str, measurement_field: str, **labels: str) -> int:
    """Every stored point of a series family, duplicates included (not unique timestamps)."""
    return sum(len(series["timestamps"]) for series in await exported(store_url, measurement_field, **labels))


async def read_dead_letters(bootstrap: str, topic: str, count: int, timeout_s: float = 60.0) -> list[DeadLetter]:
    """The topic's dead letters once ``count`` arrived (or the timeout passed), and a second more."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    letters: list[DeadLetter] = []
    deadline = asyncio.get_running_loop().time() + timeout_s
    try:
        while len(letters) < count and asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=1000)
            letters += [decode(DeadLetter, r.value) for records in batch.values() for r in records]
        batch = await consumer.getmany(timeout_ms=1000)  # and nothing more arrives
        letters += [decode(DeadLetter, r.value) for records in batch.values() for r in records]
    finally:
        await consumer.stop()
    return letters


async def wait_for(condition, timeout_s: float = 60.0, interval_s: float = 0.5):
    """Poll ``condition`` until it returns something truthy (returned) or the timeout (the last value)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        value = await condition()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            return value
        await asyncio.sleep(interval_s)


def expected_window_ends(table, asset: str) -> set[int]:
    card = load_ts_card(card_path(MODELS, "ts_diffusion"))
    windower = SensorWindower(card.channels, card.window, card.stride, card.sample_period_s)
    ends = set()
    for reading in readings(table, asset, loop=False):
        ends.update(round(w.end_time * 1000) for w in windower.add(reading))
    return ends


@pytest.fixture(scope="module")
def skab_table():
    if not SKAB_FILE.exists():
        pytest.skip(f"SKAB data not found at {SKAB_FILE} (set DIFFSENTRY_DATA_DIR or place it at ../shared/data)")
    return read_sensor_csv(SKAB_FILE)


async def test_skab_replay_writes_a_score_for_every_window(stack: Stack, skab_table, worker_factory) -> None:
    settings = stack.settings()
    asset = f"valve1-0-{uuid.uuid4().hex[:6]}"
    expected = expected_window_ends(skab_table, asset)
    assert len(expected) > 250  # 1147 rows with gaps: ~280 windows of 16 with stride 4
    async with worker_factory(settings) as worker:
        sent = await publish(settings, skab_table, asset, speed=0, loop=False)
        assert sent == len(skab_table.rows)

        async def all_scored() -> bool:
            return set(await stored_points(stack.store_url, "sensor_scores_score", asset=asset)) >= expected

        assert await wait_for(all_scored, timeout_s=120), "not every window has a score in the store"
        assert worker.engine.lanes[settings.topics.sensor_readings].windower.late_readings == 0
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{worker.health_port}", timeout=5) as client:
            health = (await client.get("/healthz")).json()
            exposition = (await client.get("/metrics")).text
        assert health["status"] == "ok" and health["triton_breaker"] == "closed"
        for name in ("diffsentry_consumer_lag", "diffsentry_batch_size", "diffsentry_triton_latency_seconds"):
            assert name in exposition
    scores = await stored_points(stack.store_url, "sensor_scores_score", asset=asset)
    assert set(scores) == expected  # exactly the windows, each once (event-time timestamps)
    thresholds = await stored_points(stack.store_url, "sensor_scores_threshold", asset=asset)
    assert set(thresholds.values()) == {6.0}
    anomalies = await stored_points(stack.store_url, "sensor_scores_is_anomaly", asset=asset)
    assert set(anomalies.values()) <= {0.0, 1.0} and len(anomalies) == len(expected)
    # Offsets are committed after the writes: a fresh consumer of the group starts behind everything processed.
    committed = await committed_total(stack.bootstrap, settings)
    assert committed >= len(skab_table.rows) - 16  # at most the last, unfinished window


async def test_bad_inputs_go_to_dead_letter_with_reasons_and_the_pipeline_continues(
    stack: Stack, worker_factory
) -> None:
    settings = stack.settings(assets=["pump-*"])
    card = load_ts_card(card_path(MODELS, "ts_diffusion"))
    good = {name: 1.0 for name in card.channels}
    bad_messages = [
        b"{not json",
        json.dumps({"asset": "pump-1", "event_time": 1.0, "values": {"Current": 1.0}}).encode(),
        json.dumps({"asset": "pump-1", "event_time": 2.0, "values": {**good, "Current": math.nan}}).encode(),
        SensorReading(asset="boiler-9", event_time=3.0, values=good).to_json(),
    ]
    async with worker_factory(settings):
        producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, enable_idempotence=False)
        await producer.start()
        try:
            for raw in bad_messages:
                key = b"boiler-9" if b"boiler-9" in raw else b"pump-1"
                await producer.send_and_wait(settings.topics.sensor_readings, raw, key=key)
            unkeyed = SensorReading(asset="pump-1", event_time=4.0, values=good).to_json()
            await producer.send_and_wait(settings.topics.sensor_readings, unkeyed, key=b"pump-2")
            rng = np.random.default_rng(0)
            for t in range(40):
                values = {name: float(rng.normal()) for name in card.channels}
                reading = SensorReading(asset="pump-1", event_time=1000.0 + t, values=values)
                await producer.send_and_wait(settings.topics.sensor_readings, reading.to_json(), key=b"pump-1")
        finally:
            await producer.stop()

        async def scored() -> int:
            return len(await stored_points(stack.store_url, "sensor_scores_score", asset="pump-1"))

        async def all_scored() -> bool:
            return await scored() >= 7

        await wait_for(all_scored)
        assert await scored() == 7  # slots 1000..1039: windows starting 1000, 1004, ..., 1024
    letters = await read_dead_letters(stack.bootstrap, settings.topics.dead_letter, len(bad_messages) + 1)
    reasons = sorted(letter.reason for letter in letters)
    assert len(letters) == 5
    assert any("malformed JSON" in r for r in reasons)
    assert any("missing" in r and "Pressure" in r for r in reasons)
    assert any("numbers must be finite" in r for r in reasons)
    assert any("unknown asset 'boiler-9'" in r for r in reasons)
    assert any("keyed 'pump-2'" in r for r in reasons)
    assert all(letter.source_topic == settings.topics.sensor_readings for letter in letters)


async def test_triton_stage_rejects_a_wrong_shape_permanently_and_scores_the_rest(stack: Stack) -> None:
    stage = TritonStage([stack.triton_url], "ts_diffusion", "video_diffusion")
    try:
        good = TsRequest("a", np.zeros((16, 8), dtype=np.float32), "reconstruction")
        wrong = TsRequest("b", np.zeros((15, 8), dtype=np.float32), "reconstruction")
        results = await stage.score_ts([good, good])
        assert len(results) == 2 and all(r.step_scores.shape == (16,) for r in results)
        mixed = await stage.score_ts([good, wrong, good])
        assert isinstance(mixed[1], PermanentScoringError)
        assert not isinstance(mixed[0], BaseException) and not isinstance(mixed[2], BaseException)
        alone = await stage.score_ts([wrong])
        assert isinstance(alone[0], PermanentScoringError) and "INVALID_ARGUMENT" in str(alone[0])
        assert stage.breaker.state == "closed"
    finally:
        await stage.close()


async def test_scoring_waits_while_triton_is_down_and_completes_after_restart(stack: Stack) -> None:
    stage = TritonStage(
        [stack.triton_url],
        "ts_diffusion",
        "video_diffusion",
        request_timeout_s=2.0,
        backoff=Backoff(initial_s=0.05, max_s=0.5),
        breaker=lambda _: CircuitBreaker(failure_threshold=2, reset_timeout_s=0.5),
    )
    request = TsRequest("a", np.ones((16, 8), dtype=np.float32), "reconstruction")
    try:
        stack.stop(TRITON)
        pending = asyncio.create_task(stage.score_ts([request]))
        await asyncio.sleep(3)
        assert not pending.done()  # waiting, not failed
        assert stage.breaker.state in ("open", "half_open")
        await asyncio.to_thread(stack.up)
        results = await asyncio.wait_for(pending, timeout=60)
        assert not isinstance(results[0], BaseException) and results[0].score >= 0
        assert stage.breaker.state == "closed"
    finally:
        await stage.close()
        await asyncio.to_thread(stack.up)  # whatever happened, the next tests need Triton


def metric_total(name: str) -> float:
    """Sum of a counter over all its labels in this process (the in-process worker's metrics)."""
    from prometheus_client import REGISTRY

    return sum(
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == name
        for sample in metric.samples
        if sample.name == f"{name}_total"
    )


async def replay_with_fault(stack: Stack, table, settings: Settings, asset: str, fault) -> set[int]:
    """Replay at 250x real time while ``fault`` runs; return the stored window timestamps."""
    expected = expected_window_ends(table, asset)
    dead_before = metric_total("diffsentry_dead_letters")
    async with RunningWorker(settings):
        replay = asyncio.create_task(publish(settings, table, asset, speed=250, loop=False))
        await asyncio.sleep(1.0)
        await fault()
        await replay

        async def all_scored() -> bool:
            return set(await stored_points(stack.store_url, "sensor_scores_score", asset=asset)) >= expected

        await wait_for(all_scored, timeout_s=120)
    assert metric_total("diffsentry_dead_letters") == dead_before  # an outage is not a reason to dead-letter anything
    stored = set(await stored_points(stack.store_url, "sensor_scores_score", asset=asset))
    assert stored == expected, f"{len(expected - stored)} windows lost, {len(stored - expected)} unexpected"
    return stored


async def test_triton_outage_mid_stream_loses_no_window(stack: Stack, skab_table) -> None:
    async def restart_triton() -> None:
        await asyncio.to_thread(stack.stop, TRITON)
        await asyncio.sleep(2.0)
        await asyncio.to_thread(stack.up)

    errors_before = metric_total("diffsentry_triton_errors")
    await replay_with_fault(stack, skab_table, stack.settings(), f"triton-fault-{uuid.uuid4().hex[:6]}", restart_triton)
    assert metric_total("diffsentry_triton_errors") > errors_before  # the outage did hit the worker


async def test_a_triton_replica_killed_mid_stream_loses_no_window(stack: Stack, skab_table, tmp_path: Path) -> None:
    replica = await asyncio.to_thread(start_triton_replica, MODELS, tmp_path / "replica")
    settings = stack.settings()
    settings = settings.model_copy(
        update={"triton": settings.triton.model_copy(update={"grpc_urls": [stack.triton_url, grpc_url(replica)]})}
    )

    async def answered_by_the_replica() -> float:
        async with httpx.AsyncClient(timeout=5) as client:
            text = (await client.get(f"http://127.0.0.1:{replica.ports['metrics']}/metrics")).text
        return total(parse_metrics(text), "nv_inference_request_success", 'model="ts_diffusion"')

    async def kill_the_replica() -> None:
        assert await wait_for(answered_by_the_replica, timeout_s=30, interval_s=0.1), "the replica got no request"
        os.kill(replica.pid, signal.SIGKILL)

    errors_before = metric_total("diffsentry_triton_errors")
    try:
        await replay_with_fault(stack, skab_table, settings, f"replica-kill-{uuid.uuid4().hex[:6]}", kill_the_replica)
    finally:
        stop_service(replica, 10.0)
    assert metric_total("diffsentry_triton_errors") > errors_before  # the kill did hit the worker


async def test_store_outage_mid_stream_loses_no_point(stack: Stack, skab_table) -> None:
    async def restart_store() -> None:
        await asyncio.to_thread(stack.stop, VICTORIA_METRICS)
        await asyncio.sleep(3.0)
        await asyncio.to_thread(stack.up)

    errors_before = metric_total("diffsentry_sink_errors")
    await replay_with_fault(stack, skab_table, stack.settings(), f"store-fault-{uuid.uuid4().hex[:6]}", restart_store)
    assert metric_total("diffsentry_sink_errors") > errors_before  # the outage did hit the worker


async def committed_total(bootstrap: str, settings: Settings) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=settings.kafka.consumer_group)
    await consumer.start()
    try:
        topic = settings.topics.sensor_readings
        partitions = consumer.partitions_for_topic(topic) or set()
        return sum([(await consumer.committed(TopicPartition(topic, p))) or 0 for p in partitions])
    finally:
        await consumer.stop()


async def test_killed_worker_resumes_from_committed_offsets_without_gap(
    stack: Stack, skab_table, tmp_path: Path
) -> None:
    settings = stack.settings()
    asset = f"kill-{uuid.uuid4().hex[:6]}"
    expected = expected_window_ends(skab_table, asset)
    await create_declared_topics(settings)
    first, second = WorkerProcess(settings, tmp_path, "INFO"), WorkerProcess(settings, tmp_path, "INFO")
    try:
        first.start()
        await first.wait_ready(60)
        replay = asyncio.create_task(publish(settings, skab_table, asset, speed=250, loop=False))
        await asyncio.sleep(2.5)
        first.kill()  # SIGKILL: no graceful shutdown, no final commit
        committed_at_kill = await committed_total(stack.bootstrap, settings)
        await replay
        stored_at_kill = set(await stored_points(stack.store_url, "sensor_scores_score", asset=asset))
        assert 0 < committed_at_kill < len(skab_table.rows) and stored_at_kill < expected
        second.start()
        await second.wait_ready(60)

        async def all_scored() -> bool:
            return set(await stored_points(stack.store_url, "sensor_scores_score", asset=asset)) >= expected

        assert await wait_for(all_scored, timeout_s=120), second.log.read_text()[-3000:]
    finally:
        first.stop()
        second.stop()
    assert set(await stored_points(stack.store_url, "sensor_scores_score", asset=asset)) == expected
    assert "dead letter" not in second.log.read_text()


def jpeg(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


async def test_video_frames_are_scored_per_camera_and_corrupt_jpeg_is_dead_lettered(
    stack: Stack, worker_factory
) -> None:
    settings = stack.settings()
    camera = f"cam-{uuid.uuid4().hex[:6]}"
    async with worker_factory(settings) as worker:
        assert settings.topics.video_frames in worker.engine.lanes
        producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, enable_idempotence=False)
        await producer.start()
        try:
            for seq in range(12):
                image = np.full((96, 128), 40, dtype=np.uint8)
                if seq == 8:
                    image[20:70, 80:120] = 250  # something appears in the right half
                frame = VideoFrame(camera=camera, seq=seq, event_time=100.0 + seq / 10, width=128, height=96)
                headers = [(FRAME_HEADER, frame.to_json())]
                await producer.send_and_wait(
                    settings.topics.video_frames, jpeg(image), key=camera.encode(), headers=headers
                )
            broken = VideoFrame(camera="cam-broken", seq=0, event_time=1.0, width=128, height=96)
            await producer.send_and_wait(
                settings.topics.video_frames,
                b"\xff\xd8\xff\xe0not a jpeg at all",
                key=b"cam-broken",
                headers=[(FRAME_HEADER, broken.to_json())],
            )
        finally:
            await producer.stop()

        async def scored() -> int:
            return len(await stored_points(stack.store_url, "video_scores_score", camera=camera))

        async def all_scored() -> bool:
            return await scored() >= 10

        await wait_for(all_scored)
        assert await scored() == 10  # 12 frames, the first 2 are only context
    scores = await stored_points(stack.store_url, "video_scores_score", camera=camera)
    anomalies = await stored_points(stack.store_url, "video_scores_is_anomaly", camera=camera)
    peak = max(scores, key=scores.get)
    assert peak == 100_800 and anomalies[peak] == 1.0 and sum(anomalies.values()) <= 3
    location_x = await stored_points(stack.store_url, "video_scores_location_x", camera=camera)
    assert location_x[peak] > 0.5
    consumer = AIOKafkaConsumer(
        settings.topics.dead_letter, bootstrap_servers=stack.bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        batch = await consumer.getmany(timeout_ms=5000)
        letters = [decode(DeadLetter, r.value) for records in batch.values() for r in records]
    finally:
        await consumer.stop()
    assert len(letters) == 1 and "corrupt JPEG" in letters[0].reason and letters[0].key == "cam-broken"


async def test_a_sustained_anomaly_fires_an_alert_to_the_topic_and_the_store(stack: Stack, worker_factory) -> None:
    alerting = AlertingSettings(for_s=0, for_points=2, video_for_points=2, resolve_for_s=0, cooldown_s=0)
    settings = stack.settings(alerting=alerting)
    card = load_ts_card(card_path(MODELS, "ts_diffusion"))
    asset = f"pump-{uuid.uuid4().hex[:6]}"
    rng = np.random.default_rng(1)
    async with worker_factory(settings):
        producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, enable_idempotence=False)
        await producer.start()
        try:
            for t in range(80):
                values = {name: float(rng.normal()) for name in card.channels}
                if 40 <= t < 43:
                    values["Current"] = 500.0  # a 3-sample spike: every window holding it scores high
                reading = SensorReading(asset=asset, event_time=2000.0 + t, values=values)
                await producer.send_and_wait(settings.topics.sensor_readings, reading.to_json(), key=asset.encode())
        finally:
            await producer.stop()

        async def fired() -> bool:
            return 1.0 in (await stored_points(stack.store_url, "alerts_firing", stream=asset)).values()

        await wait_for(fired)
        transitions = await stored_points(stack.store_url, "alerts_firing", stream=asset)
    assert 1.0 in transitions.values(), transitions
    anomalies = await stored_points(stack.store_url, "sensor_scores_is_anomaly", asset=asset)
    assert sum(anomalies.values()) >= 2

    async def event_stored() -> bool:  # the notifier's "fired" event, published by the worker after the alert
        return bool(await stored_points(stack.store_url, "alert_events_count", kind="fired", stream=asset))

    await wait_for(event_stored)
    consumer = AIOKafkaConsumer(settings.topics.alerts, bootstrap_servers=stack.bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        batch = await consumer.getmany(timeout_ms=5000)
        values = [r.value for records in batch.values() for r in records]
        # the topic also carries the lifecycle's alert_event records
        alerts = [decode(Alert, value) for value in values if json.loads(value)["schema"] == "alert"]
    finally:
        await consumer.stop()
    assert [a.state for a in alerts][:1] == ["firing"] and alerts[0].stream == asset
    assert "Current" in alerts[0].top_channels
    events = [decode(AlertEvent, value) for value in values if json.loads(value)["schema"] == "alert_event"]
    assert (events[0].kind, events[0].alert_id) == ("fired", alerts[0].alert_id)


def jpeg_claiming(height: int, width: int) -> bytes:
    """A small valid JPEG whose frame header (SOF0) claims ``height`` x ``width`` pixels."""
    data = bytearray(jpeg(np.full((8, 8), 128, dtype=np.uint8)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


async def test_a_mixed_hostile_replay_is_fully_accounted_for_and_the_worker_stays_up(
    stack: Stack, worker_factory
) -> None:
    """produced = stored + dead-lettered: every hostile message is one dead letter with its reason, every window of
    the normal stream is one stored point (all points counted), and the worker keeps consuming."""
    settings = stack.settings()
    card = load_ts_card(card_path(MODELS, "ts_diffusion"))
    good = dict.fromkeys(card.channels, 1.0)
    asset, camera = f"hostile-{uuid.uuid4().hex[:6]}", f"cam-{uuid.uuid4().hex[:6]}"
    base = 1_600_000_000.0

    def raw(ts: str, values: dict = good) -> bytes:
        return f'{{"asset": "{asset}", "event_time": {ts}, "values": {json.dumps(values)}}}'.encode()

    hostile = [
        raw("NaN"),
        raw("Infinity"),
        b"[" * 100_000,
        raw('"1600000010"'),  # a number as a string
        raw(str(base + 11), {**good, "Current": "1.5"}),
        raw(str(base + 12), {**good, "Current": True}),
        raw(str(base + 1e9)),  # 31 years ahead
        raw("-5.0"),
        raw("1e16"),
        raw(str(base + 13)) + b" " * 10 + json.dumps({"padding": "x" * 2_000_000}).encode(),  # 2 MB, trailing data
    ]
    normal = [SensorReading(asset=asset, event_time=base + t, values=good).to_json() for t in range(60)]
    windower = SensorWindower(card.channels, card.window, card.stride, card.sample_period_s)
    expected = sum(len(windower.add(SensorReading(asset=asset, event_time=base + t, values=good))) for t in range(60))
    frame_header = VideoFrame(camera=camera, seq=0, event_time=base, height=96, width=128).to_json()
    async with worker_factory(settings) as worker:
        producer = AIOKafkaProducer(
            bootstrap_servers=stack.bootstrap, enable_idempotence=False, max_request_size=4_000_000
        )
        await producer.start()
        try:
            for position, message in enumerate(normal):
                await producer.send_and_wait(settings.topics.sensor_readings, message, key=asset.encode())
                if position % 6 == 0 and hostile:
                    await producer.send_and_wait(settings.topics.sensor_readings, hostile.pop(), key=asset.encode())
            bomb = jpeg_claiming(65000, 65000)
            await producer.send_and_wait(
                settings.topics.video_frames, bomb, key=camera.encode(), headers=[(FRAME_HEADER, frame_header)]
            )
        finally:
            await producer.stop()
        assert not hostile, "the replay is longer than the hostile list"
        letters = await read_dead_letters(stack.bootstrap, settings.topics.dead_letter, 11)

        async def all_scored() -> bool:
            return await count_points(stack.store_url, "sensor_scores_score", asset=asset) >= expected

        await wait_for(all_scored)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{worker.health_port}", timeout=5) as client:
            assert (await client.get("/healthz")).status_code == 200
    assert await count_points(stack.store_url, "sensor_scores_score", asset=asset) == expected
    assert len(letters) == 11, [letter.reason for letter in letters]
    by_offset = sorted(letters, key=lambda letter: (letter.source_topic, letter.offset or 0))
    assert all(letter.reason for letter in by_offset)
    assert any(letter.payload_truncated and letter.payload_bytes > 2_000_000 for letter in letters)
    assert any(letter.source_topic == settings.topics.video_frames for letter in letters)


def same_partition_name(prefix: str, other: str, partitions: int) -> str:
    """A stream id whose records land in the same partition as ``other``'s (the producer's default partitioner)."""
    partitioner = DefaultPartitioner()
    everything = list(range(partitions))
    target = partitioner(other.encode(), everything, everything)
    for n in range(1000):
        if partitioner(f"{prefix}-{n}".encode(), everything, everything) == target:
            return f"{prefix}-{n}"
    raise AssertionError("no name found")


async def test_a_quiet_stream_does_not_pin_its_partition_across_a_kill(stack: Stack, tmp_path: Path) -> None:
    """One asset sends five readings (a third of a window) and goes quiet while another asset of the same partition
    goes on. After SIGKILL the restarted worker re-reads at most the documented bound (2 windows per active stream
    of the partition), not the partition's history, and the store holds exactly one point per window."""
    settings = stack.settings()
    card = load_ts_card(card_path(MODELS, "ts_diffusion"))
    good = dict.fromkeys(card.channels, 1.0)
    busy = f"busy-{uuid.uuid4().hex[:6]}"
    quiet = same_partition_name(f"quiet-{uuid.uuid4().hex[:6]}", busy, settings.topics.partitions)
    base = 1_600_000_000.0
    messages = [(quiet, SensorReading(asset=quiet, event_time=base + t, values=good)) for t in range(5)]
    messages += [(busy, SensorReading(asset=busy, event_time=base + t, values=good)) for t in range(300)]
    windower = SensorWindower(card.channels, card.window, card.stride, card.sample_period_s)
    expected = sum(len(windower.add(reading)) for name, reading in messages if name == busy)
    await create_declared_topics(settings)
    first, second = WorkerProcess(settings, tmp_path, "INFO"), WorkerProcess(settings, tmp_path, "INFO")
    try:
        first.start()
        await first.wait_ready(60)
        producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, enable_idempotence=False)
        await producer.start()
        try:
            for key, reading in messages:
                await producer.send(settings.topics.sensor_readings, reading.to_json(), key=key.encode())
            await producer.flush()
        finally:
            await producer.stop()

        async def all_scored() -> bool:
            return await count_points(stack.store_url, "sensor_scores_score", asset=busy) >= expected

        assert await wait_for(all_scored), first.log_tail()
        await asyncio.sleep(3 * settings.stream.commit_interval_s + 1.0)  # the idle flush and a commit after it
        committed = await committed_total(stack.bootstrap, settings)
        first.kill()
        bound = 2 * card.window * 1  # one active stream in the partition
        assert len(messages) - committed <= bound, f"a restart would re-read {len(messages) - committed} records"
        second.start()
        await second.wait_ready(60)
        await asyncio.sleep(2.0)
        samples = await second.metrics()
        reread = sum(v for k, v in samples.items() if k.startswith("diffsentry_messages_total"))
        assert reread <= bound
    finally:
        first.stop()
        second.stop()
    assert await count_points(stack.store_url, "sensor_scores_score", asset=busy) == expected
    assert await count_points(stack.store_url, "sensor_scores_score", asset=quiet) == 0  # too few readings: skipped
