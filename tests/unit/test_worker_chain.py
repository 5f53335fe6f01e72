"""The whole worker chain without a broker: in-memory source, scorer and sink drive readings and frames through
windowing, scoring, thresholds, alerting, store writes, dead letters and offset commits (``operators.engine``)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiokafka import ConsumerRecord, TopicPartition
from influxdb_client import Point

from core.contracts import FRAME_HEADER, Alert, ContractError, SensorReading, VideoFrame
from core.settings import AlertingSettings, Settings, StreamSettings
from operators.alerting import AlertEngine, MemoryAlertStateStore
from operators.engine import StreamEngine
from operators.lanes import ClockJumps, SensorLane, VideoLane
from operators.model_cards import TsModelCard, VideoModelCard
from operators.triton_stage import PermanentScoringError, TsRequest, TsResult, VideoResult

READINGS, FRAMES = "readings", "frames"
CHANNELS = ("flow", "pressure")
WINDOW = 4
BROKEN_ASSET = "pump-broken"  # the scorer refuses its windows for good


class Log:
    """A topic's partitions as lists of records, and the group's committed offsets: what survives a restart."""

    def __init__(self) -> None:
        self.partitions: dict[TopicPartition, list[ConsumerRecord]] = {}
        self.committed: dict[TopicPartition, int] = {}

    def append(self, topic: str, partition: int, key: str, value: bytes, headers: tuple = ()) -> int:
        tp = TopicPartition(topic, partition)
        records = self.partitions.setdefault(tp, [])
        offset = len(records)
        records.append(ConsumerRecord(topic, partition, offset, 1_000_000, 0, key.encode(), value, None, 0, 0, headers))
        return offset


class MemorySource:
    def __init__(self, log: Log, batch: int = 5) -> None:
        self.log, self.batch = log, batch
        self.position = {tp: log.committed.get(tp, 0) for tp in log.partitions}
        self.on_revoked: Callable[[list[TopicPartition]], Awaitable[None]] | None = None

    async def start(self, topics: list[str], on_revoked: Callable[[list[TopicPartition]], Awaitable[None]]) -> None:
        self.on_revoked = on_revoked

    async def fetch(self, timeout_ms: int) -> dict[TopicPartition, list[ConsumerRecord]]:
        out = {}
        for tp, position in self.position.items():
            records = self.log.partitions[tp][position : position + self.batch]
            if records:
                out[tp] = records
                self.position[tp] = position + len(records)
        if not out:
            await asyncio.sleep(timeout_ms / 1000)
        return out

    async def revoke(self, tp: TopicPartition) -> None:
        assert self.on_revoked is not None
        await self.on_revoked([tp])
        del self.position[tp]

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.log.committed.update(offsets)

    def highwater(self, tp: TopicPartition) -> int | None:
        return len(self.log.partitions[tp])

    async def stop(self) -> None:
        pass

    def drained(self) -> bool:
        return all(position == len(self.log.partitions[tp]) for tp, position in self.position.items())


class MemoryPublisher:
    def __init__(self) -> None:
        self.sent: dict[str, list[tuple[bytes | None, dict[str, Any]]]] = {}

    async def start(self) -> None:
        pass

    async def send(self, topic: str, value: bytes, key: bytes | None) -> Awaitable[Any]:
        self.sent.setdefault(topic, []).append((key, json.loads(value)))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def stop(self) -> None:
        pass


class MemoryStore:
    """Keeps points by series and timestamp, as InfluxDB does: a rewrite of the same point overwrites it."""

    def __init__(self) -> None:
        self.points: dict[tuple[str, int], str] = {}
        self.writes = 0

    async def start(self) -> None:
        pass

    def write(self, points: list[Point]) -> asyncio.Future[None]:
        for point in points:
            line = point.to_line_protocol()
            series, fields, timestamp = line.rsplit(" ", 2)
            self.points[(series, int(timestamp))] = fields
            self.writes += 1
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def aclose(self, timeout_s: float) -> None:
        pass

    def series(self, prefix: str) -> list[int]:
        return sorted(timestamp for series, timestamp in self.points if series.startswith(prefix))


class Scorer:
    """Sensor windows score as their largest value; the first batch answers last (out-of-order results)."""

    def __init__(self) -> None:
        self.batches = 0

    async def score_ts(self, items: list[TsRequest]) -> list[TsResult | BaseException]:
        self.batches += 1
        await asyncio.sleep(0.05 if self.batches == 1 else 0.0)
        return [
            PermanentScoringError("model refuses this asset")
            if item.stream == BROKEN_ASSET
            else TsResult(float(item.values.max()), np.zeros(WINDOW), item.values.max(axis=0))
            for item in items
        ]

    async def score_video(self, stacks: list[np.ndarray]) -> list[VideoResult | BaseException]:
        return [VideoResult(float(stack[-1].mean()) / 255, np.eye(2, dtype=np.float32)) for stack in stacks]


class Alerting:
    def __init__(self, settings: AlertingSettings) -> None:
        self.engine = AlertEngine(settings, MemoryAlertStateStore())
        self.seen: list[tuple[str, float]] = []

    def observe(self, score: Any) -> list[Alert]:
        self.seen.append((score.stream, score.event_time))
        return self.engine.observe(score)

    def recover(self) -> list[Alert]:
        return self.engine.unpublished()

    def acknowledge(self, alert: Alert) -> None:
        self.engine.acknowledge(alert)


def settings(tmp_path: Path) -> Settings:
    return Settings(
        state_dir=tmp_path,
        stream=StreamSettings(max_batch=3, max_wait_ms=1.0, commit_interval_s=0.01),
        alerting=AlertingSettings(for_s=0.0, for_points=1, video_for_points=1, resolve_for_s=0.0, cooldown_s=0.0),
    )


def engine(
    config: Settings, log: Log, store: MemoryStore, publisher: MemoryPublisher, known: tuple[str, ...] = ()
) -> StreamEngine:
    config = config.model_copy(
        update={"topics": config.topics.model_copy(update={"sensor_readings": READINGS, "video_frames": FRAMES})}
    )
    scorer = Scorer()
    sensor_card = TsModelCard(
        window=WINDOW,
        stride=WINDOW,
        channels=CHANNELS,
        thresholds={"reconstruction": 5.0},
        default_mode="reconstruction",
        streams=known,
    )
    video_card = VideoModelCard(context=2, height=4, width=6, threshold=0.5)
    lanes = [
        SensorLane(config, sensor_card, scorer.score_ts),
        VideoLane(config, video_card, scorer.score_video),
    ]
    return StreamEngine(config, lanes, MemorySource(log), publisher, store)


def reading(asset: str, time: float, value: float) -> bytes:
    return SensorReading(asset=asset, event_time=time, values=dict.fromkeys(CHANNELS, value)).to_json()


def frame(seq: int, brightness: int, size: int = 24) -> tuple[bytes, tuple]:
    header = VideoFrame(camera="cam-1", seq=seq, event_time=1000.0 + seq, height=4, width=6, encoding="raw")
    return bytes([brightness]) * size, ((FRAME_HEADER, header.to_json()),)


def fill(log: Log) -> None:
    """Partition 0: pump-1 with an anomaly in its second window, and two bad records. Partition 1: the broken asset
    and a camera whose fourth frame has the wrong size."""
    for step in range(12):
        log.append(READINGS, 0, "pump-1", reading("pump-1", 100.0 + step, 9.0 if 4 <= step < 8 else 1.0))
        if step == 2:
            log.append(READINGS, 0, "pump-1", b'{"asset": "pump-1", "event_time": ')  # cut short
            log.append(READINGS, 0, "someone-else", reading("pump-1", 200.0, 1.0))  # keyed by another stream
    for step in range(4):
        log.append(READINGS, 1, BROKEN_ASSET, reading(BROKEN_ASSET, 100.0 + step, 1.0))
    for seq in range(8):
        value, headers = frame(seq, 250 if seq >= 6 else 10, size=23 if seq == 3 else 24)
        log.append(FRAMES, 0, "cam-1", value, headers)


async def run_until_drained(worker: StreamEngine, alerts: Alerting) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(alerts, stop))
    source = worker.source
    assert isinstance(source, MemorySource)
    for _ in range(500):
        await asyncio.sleep(0.01)
        if source.drained() and worker.in_flight == 0:
            break
    stop.set()
    await asyncio.wait_for(task, 10)


@pytest.fixture
def log() -> Log:
    content = Log()
    fill(content)
    return content


async def test_the_whole_chain_stores_scores_alerts_dead_letters_and_commits(tmp_path: Path, log: Log) -> None:
    store, publisher, alerts = MemoryStore(), MemoryPublisher(), Alerting(settings(tmp_path).alerting)
    worker = engine(settings(tmp_path), log, store, publisher)
    await worker.start()
    await run_until_drained(worker, alerts)

    # One score per complete window at its last reading's event time; windows of pump-1 end at 103, 107, 111 s.
    assert store.series("sensor_scores,asset=pump-1") == [103_000, 107_000, 111_000]
    # Video: a score for every frame with two frames of context; the bad frame 3 breaks the context, so frames 4 and
    # 5 only rebuild it.
    assert store.series("video_scores,camera=cam-1") == [1_002_000, 1_006_000, 1_007_000]
    scores = [(key, body["event_time"], body["is_anomaly"]) for key, body in publisher.sent["diffsentry.scores"]]
    assert [s for s in scores if s[0] == b"pump-1"] == [
        (b"pump-1", 103.0, False), (b"pump-1", 107.0, True), (b"pump-1", 111.0, False),
    ]  # fmt: skip
    # Thresholding and alerting saw each stream in emission order although the first batch answered last.
    pump = [time for stream, time in alerts.seen if stream == "pump-1"]
    assert pump == sorted(pump)
    fired = [(body["stream"], body["state"]) for _, body in publisher.sent["diffsentry.alerts"]]
    assert ("pump-1", "firing") in fired and ("pump-1", "resolved") in fired and ("cam-1", "firing") in fired
    assert len(store.series("alerts,")) == len(fired)

    letters = {
        (body["source_topic"], body["partition"], body["offset"]): body
        for _, body in publisher.sent["diffsentry.dead-letter"]
    }
    assert sorted(letters) == [(FRAMES, 0, 3), (READINGS, 0, 3), (READINGS, 0, 4), (READINGS, 1, 3)]
    assert "malformed JSON" in letters[READINGS, 0, 3]["reason"]
    assert "keyed 'someone-else'" in letters[READINGS, 0, 4]["reason"]
    assert "raw frame has 23 bytes" in letters[FRAMES, 0, 3]["reason"]
    broken = letters[READINGS, 1, 3]  # the window that completed at the broken asset's fourth reading
    assert "model refuses this asset" in broken["reason"]
    assert json.loads(broken["payload"])["asset"] == BROKEN_ASSET  # the window itself travels with it

    # Commits stop at what the lanes still need: the newest reading of each asset seeds its next window, and the
    # camera's last two frames are the context of its next stack.
    assert log.committed == {
        TopicPartition(READINGS, 0): 13,  # pump-1's reading at 111 s
        TopicPartition(READINGS, 1): 3,  # the broken asset's last reading
        TopicPartition(FRAMES, 0): 6,
    }


async def test_a_restart_from_the_committed_offsets_rebuilds_the_same_points(tmp_path: Path, log: Log) -> None:
    store, publisher = MemoryStore(), MemoryPublisher()
    first = engine(settings(tmp_path), log, store, publisher)
    await first.start()
    await run_until_drained(first, Alerting(settings(tmp_path).alerting))
    stored = dict(store.points)
    for step in range(12, 16):  # more readings arrive while the worker is down
        log.append(READINGS, 0, "pump-1", reading("pump-1", 100.0 + step, 1.0))

    second = engine(settings(tmp_path), log, store, MemoryPublisher())
    await second.start()
    await run_until_drained(second, Alerting(settings(tmp_path).alerting))
    assert store.series("sensor_scores,asset=pump-1") == [103_000, 107_000, 111_000, 115_000]
    assert {key: store.points[key] for key in stored} == stored  # nothing rewritten differently
    assert log.committed[TopicPartition(READINGS, 0)] == 17


async def test_a_revoked_partition_is_committed_and_forgotten(tmp_path: Path, log: Log) -> None:
    store, publisher = MemoryStore(), MemoryPublisher()
    worker = engine(settings(tmp_path), log, store, publisher)
    await worker.start()
    await run_until_drained(worker, Alerting(settings(tmp_path).alerting))
    source = worker.source
    assert isinstance(source, MemorySource)
    lane = worker.lanes[READINGS]
    assert isinstance(lane, SensorLane)
    assert lane.buffered_offsets(TopicPartition(READINGS, 0)) == [13]
    await source.revoke(TopicPartition(READINGS, 0))
    assert lane.buffered_offsets(TopicPartition(READINGS, 0)) == []
    assert lane.windower.oldest_ref("pump-1") is None
    assert TopicPartition(READINGS, 0) not in worker.ledger.next_offset
    assert lane.buffered_offsets(TopicPartition(READINGS, 1)) == [3]  # the other partition keeps its state


async def test_a_quiet_stream_stops_pinning_and_a_reading_from_the_future_is_refused(tmp_path: Path) -> None:
    log, store, publisher = Log(), MemoryStore(), MemoryPublisher()
    log.append(READINGS, 0, "pump-quiet", reading("pump-quiet", 100.0, 1.0))  # one reading, then silence
    for step in range(20):
        log.append(READINGS, 0, "pump-1", reading("pump-1", 100.0 + step, 1.0))
        if step == 5:
            log.append(READINGS, 0, "pump-1", reading("pump-1", 5e9, 1.0))  # in the year 2128
    worker = engine(settings(tmp_path), log, store, publisher)
    await worker.start()
    await run_until_drained(worker, Alerting(settings(tmp_path).alerting))
    await asyncio.sleep(0)
    # The future reading is a dead letter and pump-1 goes on: windows ending at 103 ... 119 s, none lost.
    letters = [body for _, body in publisher.sent["diffsentry.dead-letter"]]
    assert [(body["offset"], "ahead of the clock" in body["reason"]) for body in letters] == [(7, True)]
    assert store.series("sensor_scores,asset=pump-1") == [103_000, 107_000, 111_000, 115_000, 119_000]
    # pump-quiet's lone reading (too few for a window: skipped) no longer holds the partition at offset 0.
    assert store.series("sensor_scores,asset=pump-quiet") == []
    assert log.committed[TopicPartition(READINGS, 0)] == 21  # pump-1's newest reading seeds its next window


async def test_an_admitted_asset_the_model_does_not_know_scores_without_alerts_while_it_learns(tmp_path: Path) -> None:
    config = settings(tmp_path)
    config = config.model_copy(
        update={"sensors": config.sensors.model_copy(update={"assets": ["*"], "learning_windows": 3})}
    )
    log, store, publisher = Log(), MemoryStore(), MemoryPublisher()
    for step in range(24):  # six windows, all far above the pooled threshold (5.0): the asset's own level
        log.append(READINGS, 0, "pump-new", reading("pump-new", 100.0 + step, 9.0 if step < 20 else 30.0))
    worker = engine(config, log, store, publisher, known=("pump-1",))
    await worker.start()
    await run_until_drained(worker, Alerting(config.alerting))
    scores = [(body["event_time"], body["is_anomaly"]) for _, body in publisher.sent["diffsentry.scores"]]
    # Three learning windows (written, never anomalous), then its own threshold: 9.0 is normal, 30.0 is not.
    assert scores == [(103.0, False), (107.0, False), (111.0, False), (115.0, False), (119.0, False), (123.0, True)]
    fired = [body["state"] for _, body in publisher.sent.get("diffsentry.alerts", [])]
    assert fired == ["firing"]  # only once it knows the asset


def test_a_jump_is_refused_alone_and_accepted_when_the_next_reading_confirms_it() -> None:
    jumps = ClockJumps(max_jump_s=3600.0)
    jumps.check("pump-1", 1000.0, newest=None)
    with pytest.raises(ContractError, match="after the stream's newest"):
        jumps.check("pump-1", 1e6, newest=1000.0)  # an outlier from the future ...
    jumps.check("pump-1", 1001.0, newest=1000.0)  # ... and the stream goes on
    with pytest.raises(ContractError):
        jumps.check("pump-1", 9e5, newest=1001.0)  # back after ten days: the first reading is refused,
    jumps.check("pump-1", 9e5 + 1, newest=1001.0)  # the second confirms it and is accepted
