"""Per-stream calibration: every stream judged against its own held-out normal windows, unknown streams pooled."""

from __future__ import annotations

import numpy as np
import pytest

from triton_models.timeseries.detector import ModeCalibration
from triton_models.timeseries.training import CHANNEL_SCALE_FLOOR, MIN_STREAM_WINDOWS, calibrate_mode


def _errors(seed: int, windows: int, scale: list[float]) -> np.ndarray:
    return np.abs(np.random.default_rng(seed).normal(size=(windows, 8, len(scale)))) * np.asarray(scale)


def test_loud_and_quiet_streams_get_thresholds_in_proportion_and_the_same_served_scores() -> None:
    quiet = _errors(0, 200, [1.0, 2.0])
    held_out = {"quiet": quiet, "loud": 100 * quiet}
    calibration, served = calibrate_mode(held_out, risk=1e-2, threshold_factor=1.5)
    assert calibration.stream("loud").threshold == pytest.approx(calibration.stream("quiet").threshold)
    quiet_scale = np.asarray(calibration.stream("quiet").channel_scale)
    np.testing.assert_allclose(calibration.stream("loud").channel_scale, 100 * quiet_scale, rtol=1e-6)
    # the channel scale is the mean absolute error: sqrt(2 / pi) s for |N(0, s^2)|
    np.testing.assert_allclose(quiet_scale, np.asarray([1.0, 2.0]) * np.sqrt(2 / np.pi), rtol=0.05)
    np.testing.assert_allclose(served[:200], served[200:], rtol=1e-6)
    # the loudest held-out window sits exactly 1 / factor below the alarm level of its stream
    assert served.max() == pytest.approx(1 / 1.5)


def test_a_noisy_channel_does_not_dominate_its_stream() -> None:
    errors = _errors(1, 100, [1.0, 5.0])
    calibration, _ = calibrate_mode({"pump": errors}, risk=1e-2)
    scaled = errors / np.asarray(calibration.stream("pump").channel_scale)
    assert scaled[..., 0].mean() == pytest.approx(1.0) and scaled[..., 1].mean() == pytest.approx(1.0)


def test_unknown_and_short_streams_use_the_pooled_default() -> None:
    held_out = {"long": _errors(2, 300, [1.0, 1.0]), "short": _errors(3, MIN_STREAM_WINDOWS - 1, [5.0, 5.0])}
    calibration, _ = calibrate_mode(held_out, risk=1e-2)
    assert set(calibration.streams) == {"default", "long"}
    assert calibration.stream("short") is calibration.stream("never-seen") is calibration.streams["default"]
    assert calibration.default_threshold.value == calibration.streams["default"].threshold


def test_a_channel_flat_in_the_held_out_tail_keeps_a_floor_scale() -> None:
    flat = _errors(4, 100, [1.0, 1.0])
    flat[..., 1] = 0.0
    calibration, _ = calibrate_mode({"flat": flat}, risk=1e-2)
    scale = calibration.stream("flat").channel_scale
    assert scale[1] == pytest.approx(CHANNEL_SCALE_FLOOR * (scale[0] + 0.0) / 2)


def test_calibration_survives_json() -> None:
    calibration, _ = calibrate_mode({"a": _errors(6, 50, [1.0, 3.0])}, risk=1e-2)
    restored = ModeCalibration.from_json(calibration.to_json())
    assert restored.to_json() == calibration.to_json()
    assert restored.served_threshold()["value"] == 1.0
