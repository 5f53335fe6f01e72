"""``diffsentry generate ts``: anomalies inpainted into a plant's held-out normal rows, the benchmark they make, and
an acceptance report that ``diffsentry evaluate ts --model`` reproduces."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from pipeline.cli import app
from triton_models.timeseries.data import LabelledAnomaly, read_benchmark, read_manifest, read_table, write_table
from triton_models.timeseries.detector import ModelConfig, TimeSeriesDetector
from triton_models.timeseries.evaluation import anomaly_type_metrics
from triton_models.timeseries.generation import GenerationSettings, generate_benchmark
from triton_models.timeseries.normalization import StreamNormalizer
from triton_models.timeseries.training import HOLDOUT_FRACTION, split_holdout

CHANNELS = ["flow", "pressure", "current"]


def _plant(rows: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    steps = np.arange(rows)
    flow = np.sin(steps / 7)
    return np.stack([flow, 0.8 * flow + 0.1, np.cos(steps / 11)], axis=1) + 0.05 * rng.normal(size=(rows, 3))


def _untrained_detector(values: np.ndarray, window: int = 8) -> TimeSeriesDetector:
    config = ModelConfig(channels=CHANNELS, window=window)
    torch.manual_seed(0)
    normalizer = StreamNormalizer.fit({"plant": values})
    return TimeSeriesDetector(config, TimeSeriesDetector.build_network(config), normalizer)


def _table(values: np.ndarray):
    from triton_models.timeseries.data import SensorTable

    return SensorTable([str(i) for i in range(len(values))], CHANNELS, values.astype(np.float32), None)


def test_generated_anomalies_change_only_their_sensor_and_rows(tmp_path: Path) -> None:
    values = _plant(1200, 0)
    detector = _untrained_detector(values)
    settings = GenerationSettings(kinds=("level_shift", "stuck", "correlation"), sizes=(4.0,), duration=20)
    manifest = generate_benchmark(detector, {"plant": _table(values)}, tmp_path, settings)
    cut = split_holdout(values, HOLDOUT_FRACTION)
    series = {s.name: s for s in read_benchmark(tmp_path)}
    assert set(series) == {"plant__level_shift_4", "plant__stuck_held", "plant__correlation_4"}
    assert set(manifest.streams.values()) == {"plant"}
    scale = detector.normalizer.params("plant")[1]
    for name, s in series.items():
        np.testing.assert_allclose(s.train.values, values[:cut], rtol=1e-6)
        mine = [a for a in manifest.anomalies if a.series == name]
        assert len(mine) >= 3 and int(s.test.labels.sum()) == 20 * len(mine)
        changed = np.abs(s.test.values - values[cut:]) > 1e-4
        outside = changed.copy()
        for anomaly in mine:
            channel = CHANNELS.index(anomaly.channel)
            rows = slice(anomaly.start, anomaly.stop)
            assert s.test.labels[rows].all()
            outside[rows] = False
            delta = (s.test.values[rows, channel] - values[cut:][rows, channel]) / scale[channel]
            if anomaly.kind == "level_shift":
                np.testing.assert_allclose(np.abs(delta), 4.0, atol=1e-3)
                assert changed[rows].sum(axis=0).tolist() == [20 if c == channel else 0 for c in range(3)]
            elif anomaly.kind == "stuck":
                assert np.ptp(s.test.values[rows, channel]) == 0
            else:  # correlation: the forced sensor shifted, the others redrawn by the model
                np.testing.assert_allclose(np.abs(delta), 4.0, atol=1e-3)
                others = [c for c in range(3) if c != channel]
                assert changed[rows][:, others].all()
        assert not outside.any(), name  # nothing changes outside the labelled rows


def test_anomaly_type_metrics_count_alarms_until_the_window_has_passed() -> None:
    anomalies = [
        LabelledAnomaly("a", "spike", 4.0, "flow", 10, 11),
        LabelledAnomaly("a", "spike", 4.0, "flow", 40, 41),
        LabelledAnomaly("a", "stuck", None, "flow", 70, 80),
    ]
    scores = np.zeros(100)
    scores[14] = 2.0  # 4 rows after the first spike: still in a window of 8
    scores[50] = 2.0  # 10 rows after the second: the window has passed
    scores[75] = 2.0
    result = anomaly_type_metrics(anomalies, {"a": scores}, 1.0, window=8)
    assert result["spike"]["4"] == {
        "anomalies": 2,
        "detected": 1,
        "recall": 0.5,
        "mean_delay_rows": 4.0,
        "median_delay_rows": 4.0,
    }
    assert result["stuck"]["held"]["detected"] == 1 and result["stuck"]["held"]["mean_delay_rows"] == 5.0


@pytest.mark.slow
def test_generate_ts_report_is_reproduced_by_evaluate_ts(tmp_path: Path) -> None:
    csv = tmp_path / "plant.csv"
    values = _plant(1600, 1)
    write_table(csv, [str(i) for i in range(len(values))], CHANNELS, values)
    repo, bench = tmp_path / "repo", tmp_path / "bench"
    runner = CliRunner()
    trained = runner.invoke(
        app, ["train", "ts", "--data", str(csv), "--out", str(repo), "--window", "8", "--epochs", "2"]
    )
    assert trained.exit_code == 0, trained.output
    args = ["generate", "ts", "--model", str(repo), "--data", str(csv), "--out", str(bench)]
    generated = runner.invoke(app, [*args, "--sizes", "3,12", "--duration", "16"])
    assert generated.exit_code == 0, generated.output
    report = json.loads((bench / "acceptance.json").read_text())
    assert (bench / "acceptance.png").stat().st_size > 10_000
    manifest = read_manifest(bench)
    assert set(report["anomaly_types"]) == {"spike", "level_shift", "drift", "stuck", "noise", "correlation"}
    assert set(report["anomaly_types"]["level_shift"]) == {"3", "12"}
    assert sum(v["anomalies"] for s in report["anomaly_types"].values() for v in s.values()) == len(manifest.anomalies)
    # a shift of 12 training standard deviations is caught every time, at the deployed threshold
    assert report["anomaly_types"]["level_shift"]["12"]["recall"] == 1.0
    assert read_table(bench / "plant__spike_3" / "test.csv").labels.sum() == len(
        [a for a in manifest.anomalies if a.series == "plant__spike_3"]
    )
    results_path = tmp_path / "results.json"
    evaluated = runner.invoke(app, ["evaluate", "ts", str(bench), "--model", str(repo), "--out", str(results_path)])
    assert evaluated.exit_code == 0, evaluated.output
    results = json.loads(results_path.read_text())
    assert results["modes"][report["mode"]]["anomaly_types"] == report["anomaly_types"]
    assert results["modes"][report["mode"]]["pooled"]["clean_normal_alarm_rate"] == report["normal_alarm_rate"]


def test_clean_normal_rows_exclude_anomalies_and_the_window_after_them() -> None:
    from triton_models.timeseries.evaluation import clean_normal_rows

    labels = np.zeros(20, dtype=int)
    labels[5:8] = 1
    clean = clean_normal_rows(labels, window=4)
    assert clean.tolist() == [True] * 5 + [False] * 6 + [True] * 9
