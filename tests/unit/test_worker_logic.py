from pathlib import Path

import pytest
from aiokafka import ConsumerRecord, TopicPartition

from core.contracts import ContractError
from operators.lanes import AssetRegistry, check_key
from operators.offsets import OffsetLedger
from pipeline.ingest_sensors import read_sensor_csv, readings

TP = TopicPartition("readings", 0)


def test_committable_offset_is_the_oldest_still_needed() -> None:
    ledger = OffsetLedger()
    for offset in range(10):
        ledger.consumed(TP, offset)
    assert ledger.committable(TP, buffered=[]) == 10  # nothing needed: everything read is done
    ledger.hold(TP, 4)  # a window fed by offsets >= 4 is being scored
    ledger.hold(TP, 4)  # a second window needs the same offset
    assert ledger.committable(TP, buffered=[7]) == 4
    ledger.release(TP, 4)
    assert ledger.committable(TP, buffered=[7]) == 4  # still held once
    ledger.release(TP, 4)
    assert ledger.committable(TP, buffered=[7]) == 7  # the windowing state still needs 7 to rebuild
    assert ledger.committable(TopicPartition("readings", 1), buffered=[]) is None  # nothing read there


def test_forgotten_partition_tolerates_late_releases() -> None:
    ledger = OffsetLedger()
    ledger.consumed(TP, 3)
    ledger.hold(TP, 3)
    ledger.forget(TP)
    ledger.release(TP, 3)  # the in-flight window finished after the partition was revoked
    assert ledger.committable(TP, buffered=[]) is None


def test_asset_registry_uses_patterns_then_card_streams_then_everything() -> None:
    assert AssetRegistry(["pump-*"], ("valve-1",)).admits("pump-7")
    assert not AssetRegistry(["pump-*"], ("valve-1",)).admits("valve-1")
    assert AssetRegistry([], ("valve-1",)).admits("valve-1")
    assert not AssetRegistry([], ("valve-1",)).admits("valve-2")
    assert AssetRegistry([], ()).admits("anything")


def record(key: bytes | None) -> ConsumerRecord:
    return ConsumerRecord("readings", 0, 5, 0, 0, key, b"{}", None, 0, 2, [])


def test_messages_must_be_keyed_by_their_stream() -> None:
    check_key(record(b"pump-1"), "pump-1")
    with pytest.raises(ContractError, match="keyed 'pump-2'"):
        check_key(record(b"pump-2"), "pump-1")
    with pytest.raises(ContractError, match="keyed None"):
        check_key(record(None), "pump-1")


def test_skab_csv_drops_labels_and_reads_utc_times(tmp_path: Path) -> None:
    path = tmp_path / "skab.csv"
    path.write_text(
        "datetime;Current;Volume Flow RateRMS;anomaly;changepoint\n"
        "2020-03-09 10:14:33;1.5;32.0;0.0;0.0\n"
        "2020-03-09 10:14:34;1.6;33.0;1.0;0.0\n"
    )
    table = read_sensor_csv(path)
    assert table.channels == ["Current", "Volume Flow RateRMS"]
    assert table.times == [1583748873.0, 1583748874.0]
    assert table.rows[1] == [1.6, 33.0]


def test_benchmark_layout_and_looping_moves_event_time_on(tmp_path: Path) -> None:
    path = tmp_path / "bench.csv"
    path.write_text("timestamp,a,b,label\n100,1,2,0\n101,3,4,1\n")
    table = read_sensor_csv(path)
    assert table.channels == ["a", "b"]
    replay = readings(table, "pump", loop=True)
    times = [next(replay).event_time for _ in range(5)]
    assert times == [100.0, 101.0, 102.0, 103.0, 104.0]
    assert next(readings(table, "pump", loop=False)).values == {"a": 1.0, "b": 2.0}


def test_csv_without_a_time_column_says_so(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="no time column"):
        read_sensor_csv(path)
