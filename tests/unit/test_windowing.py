import numpy as np
import pytest

from core.contracts import MAX_EVENT_TIME, ContractError, SensorReading
from operators.windowing import SensorWindower

CHANNELS = ("b", "a")


def reading(t: float, value: float, asset: str = "pump") -> SensorReading:
    return SensorReading(asset=asset, event_time=t, values={"a": value, "b": -value})


def feed(windower: SensorWindower, times: list[float]) -> list:
    out = []
    for offset, t in enumerate(times):
        out += windower.add(reading(t, t), ref=offset)
    return out


def test_in_order_readings_give_every_window_once_with_channels_in_card_order() -> None:
    windower = SensorWindower(CHANNELS, window=4, stride=2, sample_period_s=1.0)
    emitted = feed(windower, [float(t) for t in range(10)])
    assert [w.start_time for w in emitted] == [0.0, 2.0, 4.0, 6.0]
    first = emitted[0]
    assert first.values.shape == (4, 2) and first.observed.all()
    np.testing.assert_array_equal(first.values[:, 1], [0, 1, 2, 3])  # "a"
    np.testing.assert_array_equal(first.values[:, 0], [0, -1, -2, -3])  # "b" comes first, as in the card
    assert first.window.end_time == 3.0 and first.window.channels == ["b", "a"]


def test_grid_is_absolute_so_a_late_start_aligns_to_the_next_stride() -> None:
    windower = SensorWindower(CHANNELS, window=4, stride=2, sample_period_s=1.0)
    emitted = feed(windower, [float(t) for t in range(3, 12)])
    assert [w.start_time for w in emitted] == [4.0, 6.0, 8.0]


def test_gap_is_masked_and_interpolated() -> None:
    windower = SensorWindower(CHANNELS, window=4, stride=4, sample_period_s=1.0)
    emitted = feed(windower, [0.0, 1.0, 3.0, 4.0])  # slot 2 missing
    assert len(emitted) == 1
    window = emitted[0]
    assert window.observed[:, 0].tolist() == [True, True, False, True]
    assert window.window.observed[2] == [False, False]
    assert window.values[2, 1] == pytest.approx(2.0)  # linear interpolation between 1 and 3


def test_out_of_order_reading_inside_the_window_is_placed_in_its_slot() -> None:
    windower = SensorWindower(CHANNELS, window=4, stride=4, sample_period_s=1.0, allowed_lateness=1)
    emitted = feed(windower, [0.0, 2.0, 1.0, 3.0])
    assert len(emitted) == 1 and emitted[0].observed.all()
    np.testing.assert_array_equal(emitted[0].values[:, 1], [0, 1, 2, 3])


def test_reading_older_than_the_window_being_built_is_dropped_as_late() -> None:
    windower = SensorWindower(CHANNELS, window=4, stride=4, sample_period_s=1.0)
    feed(windower, [0.0, 1.0, 2.0, 3.0, 4.0])
    assert windower.add(reading(2.0, 99.0)) == []
    assert windower.late_readings == 1


def test_watermark_emits_incomplete_window_when_time_moves_past_it() -> None:
    windower = SensorWindower(CHANNELS, window=4, stride=4, sample_period_s=1.0, allowed_lateness=2)
    assert feed(windower, [0.0, 1.0, 2.0, 5.0]) == []  # slot 3 missing, watermark 3 not past end 4
    emitted = windower.add(reading(6.0, 6.0))
    assert len(emitted) == 1 and emitted[0].observed[:, 0].tolist() == [True, True, True, False]


def test_long_silence_jumps_ahead_instead_of_emitting_empty_windows() -> None:
    windower = SensorWindower(CHANNELS, window=4, stride=2, sample_period_s=1.0, min_observed_fraction=0.5)
    emitted = feed(windower, [0.0, 1.0, 2.0, 3.0, 100.0, 101.0, 102.0, 103.0, 104.0])
    starts = [w.start_time for w in emitted]
    assert starts[0] == 0.0 and 100.0 in starts
    assert all(s in (0.0, 2.0) or s >= 98.0 for s in starts)
    assert windower.skipped_windows <= 2


def test_wrong_channels_are_a_contract_error() -> None:
    windower = SensorWindower(CHANNELS, window=4, stride=4, sample_period_s=1.0)
    with pytest.raises(ContractError, match="missing \\['b'\\], unexpected \\['c'\\]"):
        windower.add(SensorReading(asset="x", event_time=0.0, values={"a": 1.0, "c": 2.0}))


def test_oldest_ref_includes_the_seed_before_the_window_being_built() -> None:
    windower = SensorWindower(CHANNELS, window=4, stride=2, sample_period_s=1.0)
    emitted = feed(windower, [float(t) for t in range(7)])
    assert [w.start_time for w in emitted] == [0.0, 2.0]
    assert windower.oldest_ref("pump") == 3  # slots 4..6 are buffered; slot 3 is the seed before start 4
    assert emitted[1].oldest_ref == 1  # window 2..5 needs its seed, slot 1, to be rebuilt


def test_resuming_from_any_committed_position_rebuilds_identical_windows() -> None:
    rng = np.random.default_rng(7)
    times = [float(t) for t in range(200) if rng.random() > 0.15]  # about 15 % of the samples missing

    def run(windower: SensorWindower, start: int) -> list:
        out = []
        for offset in range(start, len(times)):
            out += [(offset, w) for w in windower.add(reading(times[offset], times[offset] ** 0.5), ref=offset)]
        return out

    full = SensorWindower(CHANNELS, window=8, stride=3, sample_period_s=1.0)
    reference = run(full, 0)
    by_end = {w.end_time: w for _, w in reference}
    for crash_after in range(20, len(times) - 20, 7):
        # What a worker that processed offsets < crash_after would have committed: the smallest offset its
        # windowing state still needs, or that a window emitted at its last step still needs.
        partial = SensorWindower(CHANNELS, window=8, stride=3, sample_period_s=1.0)
        emitted = [w for offset, w in reference if offset < crash_after]
        for offset in range(crash_after):
            partial.add(reading(times[offset], times[offset] ** 0.5), ref=offset)
        in_flight = emitted[-2:]  # the newest windows may not be written yet
        committed = min([partial.oldest_ref("pump"), *(w.oldest_ref for w in in_flight)])
        resumed = run(SensorWindower(CHANNELS, window=8, stride=3, sample_period_s=1.0), committed)
        assert resumed, "resuming produced nothing"
        for _, window in resumed:
            original = by_end[window.end_time]  # never a window the uninterrupted run did not emit
            np.testing.assert_array_equal(window.observed, original.observed)
            np.testing.assert_allclose(window.values, original.values)
        must_rebuild = {end for end in by_end if end >= in_flight[0].end_time}
        assert must_rebuild <= {w.end_time for _, w in resumed}  # no window is lost


def test_assets_are_independent() -> None:
    windower = SensorWindower(CHANNELS, window=2, stride=2, sample_period_s=1.0)
    out = []
    for t in range(4):
        out += windower.add(reading(float(t), 1.0, "p1"))
        if t < 2:
            out += windower.add(reading(float(t), 2.0, "p2"))
    assert sorted((w.window.asset, w.start_time) for w in out) == [("p1", 0.0), ("p1", 2.0), ("p2", 0.0)]


def test_a_value_beyond_float32_is_a_contract_error() -> None:
    windower = SensorWindower(CHANNELS, window=4, stride=2, sample_period_s=1.0)
    with pytest.raises(ContractError, match=r"\['a'\] beyond the float32 range"):
        windower.add(SensorReading(asset="pump", event_time=0.0, values={"a": 1e39, "b": 0.0}))
    assert windower.add(SensorReading(asset="pump", event_time=0.0, values={"a": 3e38, "b": -3e38})) == []


def test_a_reading_too_close_to_2200_for_a_whole_window_is_a_contract_error() -> None:
    windower = SensorWindower(CHANNELS, window=4, stride=2, sample_period_s=1.0)
    with pytest.raises(ContractError, match="no room for a window before 2200"):
        windower.add(reading(MAX_EVENT_TIME - 5, 1.0))
    assert windower.add(reading(MAX_EVENT_TIME - 7, 1.0)) == []
