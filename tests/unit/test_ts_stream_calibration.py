"""Per-stream calibration: every stream judged against its own held-out normal windows, unknown streams pooled."""

from __future__ import annotations

import numpy as np
import pytest

from triton_models.timeseries.baselines import level_scores
from triton_models.timeseries.calibration import stream_thresholds
from triton_models.timeseries.detector import (
    ModeCalibration,
    guard_levels,
    guard_spreads,
    level_envelope,
    spread_limits,
    unpredictable_flags,
    window_levels,
    window_scores,
    window_spreads,
)
from triton_models.timeseries.training import (
    CHANNEL_SCALE_FLOOR,
    MIN_STREAM_WINDOWS,
    NormalWindows,
    calibrate_mode,
)


def _errors(seed: int, windows: int, scale: list[float]) -> np.ndarray:
    return np.abs(np.random.default_rng(seed).normal(size=(windows, 8, len(scale)))) * np.asarray(scale)


def _windows(errors: dict[str, np.ndarray]) -> dict[str, NormalWindows]:
    """Windows sitting at their training level (only the errors count) that move as much as each other (no channel
    is held)."""
    return {
        name: NormalWindows(
            e, np.zeros((len(e), e.shape[2]), dtype=np.float32), np.ones((len(e), e.shape[2]), dtype=np.float32)
        )
        for name, e in errors.items()
    }


def test_loud_and_quiet_streams_get_thresholds_in_proportion_and_the_same_served_scores() -> None:
    quiet = _errors(0, 200, [1.0, 2.0])
    held_out = {"quiet": quiet, "loud": 100 * quiet}
    calibration, served = calibrate_mode(_windows(held_out), risk=1e-2)
    assert calibration.stream("loud").threshold == pytest.approx(calibration.stream("quiet").threshold)
    quiet_scale = np.asarray(calibration.stream("quiet").channel_scale)
    np.testing.assert_allclose(calibration.stream("loud").channel_scale, 100 * quiet_scale, rtol=1e-6)
    # the channel scale is the mean absolute error: sqrt(2 / pi) s for |N(0, s^2)|
    np.testing.assert_allclose(quiet_scale, np.asarray([1.0, 2.0]) * np.sqrt(2 / np.pi), rtol=0.05)
    np.testing.assert_allclose(served["quiet"], served["loud"], rtol=1e-6, atol=1e-6)
    # served scale: 0 at the stream's median held-out window, 1.0 at its threshold, which about the target risk of
    # the held-out windows exceed
    assert np.median(served["quiet"]) == pytest.approx(0.0, abs=1e-6)
    assert 0 < (np.concatenate(list(served.values())) > 1).mean() <= 0.03


def test_a_noisy_channel_does_not_dominate_its_stream() -> None:
    errors = _errors(1, 100, [1.0, 5.0])
    calibration, _ = calibrate_mode(_windows({"pump": errors}), risk=1e-2)
    scaled = errors / np.asarray(calibration.stream("pump").channel_scale)
    assert scaled[..., 0].mean() == pytest.approx(1.0) and scaled[..., 1].mean() == pytest.approx(1.0)


def test_unknown_and_short_streams_use_the_pooled_default() -> None:
    held_out = {"long": _errors(2, 300, [1.0, 1.0]), "short": _errors(3, MIN_STREAM_WINDOWS - 1, [5.0, 5.0])}
    calibration, _ = calibrate_mode(_windows(held_out), risk=1e-2)
    assert set(calibration.streams) == {"default", "long"}
    assert calibration.stream("short") is calibration.stream("never-seen") is calibration.streams["default"]
    assert calibration.default_threshold.value == calibration.streams["default"].threshold


def test_a_channel_flat_in_the_held_out_tail_keeps_a_floor_scale() -> None:
    flat = _errors(4, 100, [1.0, 1.0])
    flat[..., 1] = 0.0
    calibration, _ = calibrate_mode(_windows({"flat": flat}), risk=1e-2)
    scale = calibration.stream("flat").channel_scale
    assert scale[1] == pytest.approx(CHANNEL_SCALE_FLOOR * (scale[0] + 0.0) / 2)


def test_calibration_survives_json() -> None:
    held_out = {"a": _errors(6, 50, [1.0, 3.0])}
    calibration, _ = calibrate_mode(_windows(held_out), risk=1e-2)
    restored = ModeCalibration.from_json(calibration.to_json())
    assert restored.to_json() == calibration.to_json()
    assert restored.served_threshold().value == 1.0


def test_fit_windows_that_score_higher_raise_the_threshold_and_never_lower_it() -> None:
    held_out = {"a": _errors(8, 100, [1.0, 1.0]), "b": _errors(9, 100, [1.0, 1.0])}
    base, base_served = calibrate_mode(_windows(held_out), risk=1e-2)
    # stream a's fit rows reached operating points its short held-out tail did not: its errors there spread wider
    wider = {"a": _errors(10, 300, [1.0, 1.0]) * np.random.default_rng(11).uniform(0.5, 3.0, (300, 1, 1))}
    wider["b"] = 0.5 * _errors(12, 300, [1.0, 1.0])  # b's fit errors are in-sample, smaller: they change nothing
    raised, served = calibrate_mode(_windows(held_out), risk=1e-2, fit=_windows(wider))
    assert raised.stream("a").threshold > 1.2 * base.stream("a").threshold
    assert raised.stream("b").threshold == base.stream("b").threshold
    assert raised.stream("a").location == base.stream("a").location  # the served 0 stays the held-out median
    assert raised.default_threshold.value >= base.default_threshold.value
    # the held-out windows keep their order on a scale whose 1.0 has moved up
    assert served["a"].max() < base_served["a"].max()
    assert np.array_equal(np.argsort(served["a"]), np.argsort(base_served["a"]))


def test_stream_thresholds_share_one_tail_across_score_levels() -> None:
    rng = np.random.default_rng(7)
    scores = {"quiet": rng.normal(10, 1, 5000), "loud": rng.normal(1000, 100, 5000)}
    fitted = stream_thresholds(scores, risk=1e-2)
    z_quiet = fitted.thresholds["quiet"] - 10
    z_loud = (fitted.thresholds["loud"] - 1000) / 100
    assert z_quiet == pytest.approx(z_loud, rel=0.1)
    assert 2.0 < z_quiet < 2.7  # the 99 % quantile of a standard normal is 2.33
    assert fitted.tail.value == pytest.approx(z_quiet, rel=0.1)
    constant = stream_thresholds({"flat": np.full(100, 5.0), "other": rng.normal(0, 1, 100)}, risk=1e-2)
    assert np.isfinite(constant.thresholds["flat"]) and constant.thresholds["flat"] > 5.0


def test_level_baseline_sees_a_sustained_shift_that_only_moves_the_mean() -> None:
    rng = np.random.default_rng(0)
    normal = rng.normal(size=(50, 16, 3)).astype(np.float32)
    shifted = normal.copy()
    shifted[:, :, 1] -= 4.0  # a closing valve: flow drops and stays down, its shape unchanged
    shifted[:, :, 2] += 9.0  # a slow channel far away: ignored when it is not a level channel
    assert level_scores(shifted, [0, 1]).min() > level_scores(normal, [0, 1]).max()
    np.testing.assert_allclose(
        level_scores(shifted, [0, 1]), np.maximum(*np.abs(shifted[:, :, :2].mean(1)).T), rtol=1e-5
    )


def test_a_one_sensor_fault_scores_the_same_however_many_healthy_channels_surround_it() -> None:
    rng = np.random.default_rng(0)
    for channels in (3, 30):
        scaled = rng.uniform(0.0, 1.0, size=(5, 16, channels)).astype(np.float32)
        scaled[:, 8:, 1] = 6.0  # the faulty sensor, in multiples of its normal error
        scores = window_scores(scaled)
        np.testing.assert_allclose(scores["SCORE"], scaled[:, :, 1].mean(1), rtol=1e-6)
        np.testing.assert_allclose(scores["STEP_SCORES"], scaled[:, :, 1])
        assert np.array_equal(scores["CHANNEL_SCORES"].argmax(1), np.full(5, 1))


def test_a_channel_is_at_least_as_anomalous_as_it_is_far_beyond_its_normal_envelope() -> None:
    rng = np.random.default_rng(0)
    normalised = rng.normal(0.0, 0.3, size=(2, 16, 3)).astype(np.float32)
    normalised[1, :, 0] += 4.0  # a shift spanning the whole window: imputation from its context reproduces it
    normalised[1, :, 2] += 9.0  # the same on a slow channel: judged by shape only
    levels = window_levels(normalised, slow_channels=[2])
    np.testing.assert_allclose(levels[:, :2], np.abs(normalised[:, :, :2].mean(1)), rtol=1e-6)
    assert levels[1, 0] > 3.5 and (levels[:, 2] == 0).all()
    scaled = rng.uniform(0.5, 1.5, size=(2, 16, 3)).astype(np.float32)
    envelope = 1.5
    guarded = guard_levels(scaled, levels, envelope)
    # the shifted channel's mean is raised to its level beyond the envelope, its per-step shape kept; means above
    # it stay
    assert guarded[1, :, 0].mean() == pytest.approx(levels[1, 0] - envelope, rel=1e-5)
    np.testing.assert_allclose(np.diff(guarded[1, :, 0]), np.diff(scaled[1, :, 0]), atol=1e-5)
    np.testing.assert_array_equal(guarded[0], scaled[0])
    np.testing.assert_array_equal(guarded[1, :, 1:], scaled[1, :, 1:])
    assert window_scores(guarded)["CHANNEL_SCORES"][1].argmax() == 0
    # a level inside the envelope is normal for the stream: nothing is raised
    np.testing.assert_array_equal(guard_levels(scaled, levels, levels.max() + 0.1), scaled)


def test_the_level_envelope_is_the_high_quantile_of_the_largest_scored_channel_level() -> None:
    levels = np.stack([np.linspace(0.0, 2.0, 1001), np.linspace(0.0, 1.0, 1001)], axis=1)
    assert level_envelope(levels, 1e-3, unscored=[]) == pytest.approx(np.quantile(levels[:, 0], 0.999))
    # an unscored flag's firing does not widen the envelope of the channels that are scored
    assert level_envelope(levels, 1e-3, unscored=[0]) == pytest.approx(np.quantile(levels[:, 1], 0.999))
    assert level_envelope(np.empty((0, 2)), 1e-3, unscored=[]) == 0.0


def test_a_flag_the_model_cannot_predict_stays_out_of_the_score() -> None:
    rng = np.random.default_rng(7)
    windows = np.zeros((200, 8, 3), dtype=np.float32)
    windows[:, :, 0] = rng.normal(size=(200, 8))  # a sensor
    windows[:, :, 1] = np.where(rng.random((200, 8)) < 0.5, 1.0, -1.0)  # a flag following the plant
    windows[150:152, :, 2] = 2.0  # a command flag that fired once
    errors = np.abs(rng.normal(0, 0.1, size=windows.shape)).astype(np.float32)
    errors[:, :, 2] = np.abs(windows[:, :, 2])  # the model could not see the firing coming
    flags = np.array([False, True, True])
    assert unpredictable_flags(errors, windows, flags) == [2]
    # predicted only a hair better than by its median (0), as the flag prior predicts a flag that fires on its own
    nearly = errors.copy()
    nearly[:, :, 2] *= 0.9
    assert unpredictable_flags(nearly, windows, flags) == [2]
    windows = _windows({"s": errors})
    calibration, served = calibrate_mode(windows, 1e-2, {"s": [2]})
    stream = calibration.stream("s")
    assert stream.unscored_channels == [2] and calibration.stream("unknown").unscored_channels == [2]
    scores = window_scores(stream.serve(errors, windows["s"].levels, windows["s"].spreads))
    np.testing.assert_allclose(scores["SCORE"], served["s"], rtol=1e-6)
    assert scores["CHANNEL_SCORES"][150].argmax() != 2 and served["s"][150] < 1.0
    # scored, the firing would have been the worst channel and an alarm
    loud, loud_served = calibrate_mode(windows, 1e-2)
    assert loud.stream("s").unscored_channels == [] and loud_served["s"][150] > 1.0


def test_a_sensor_held_flatter_than_any_normal_window_alarms() -> None:
    rng = np.random.default_rng(3)
    normal = rng.normal(size=(1000, 16, 3)).astype(np.float32)
    normal[:, :, 2] = np.round(normal[:, :, 2])  # quantised: some normal windows sit still on it
    normal[:20, :, 2] = 0.0
    limits = spread_limits(window_spreads(normal), 1e-3, unscored=[])
    assert 0 < limits[0] < 0.5 * window_spreads(normal)[:, 0].mean() and limits[2] == 0.0
    assert spread_limits(window_spreads(normal), 1e-3, unscored=[1])[1] == 0.0
    held = normal[:4].copy()
    held[:, :, 0] = held[:, -1:, 0]  # sensor 0 holds its reading over the whole window
    held[:, :, 2] = 0.0  # the quantised one sits still, as it did in normal windows
    served = np.full(held.shape, 0.2, dtype=np.float32)  # the model reconstructed it all well
    guarded = guard_spreads(served, window_spreads(held), np.asarray(limits, dtype=np.float32))
    channel = window_scores(guarded)["CHANNEL_SCORES"]
    assert np.all(channel[:, 0] == pytest.approx(2.0)) and np.all(channel[:, 1:] == pytest.approx(0.2))
    # a normal window's spreads are above the limits: nothing is raised
    np.testing.assert_array_equal(guard_spreads(served, window_spreads(normal[:4]), np.asarray(limits)), served)
