"""``diffsentry datasets skab``, ``train ts`` and ``evaluate ts`` end to end on small synthetic tables."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from triton_models.model_card import TsCard
from triton_models.names import IMPUTATION, TS_MODES
from triton_models.timeseries.data import read_table, write_table

CHANNELS = ["Accelerometer1RMS", "Current", "Pressure"]


def _write_skab_file(path: Path, rows: int, seed: int, anomaly: tuple[int, int] | None) -> None:
    rng = np.random.default_rng(seed)
    steps = np.arange(rows)[:, None]
    values = np.sin(steps / 6 + np.arange(3)) + 0.05 * rng.normal(size=(rows, 3))
    labels = np.zeros(rows, dtype=int)
    if anomaly:
        values[anomaly[0] : anomaly[1], 1] += 2.5
        labels[anomaly[0] : anomaly[1]] = 1
    path.parent.mkdir(parents=True, exist_ok=True)
    header = ["datetime", *CHANNELS] + (["anomaly", "changepoint"] if anomaly else [])
    lines = [";".join(header)]
    for i in range(rows):
        stamp = f"2020-03-09 10:{i // 60:02d}:{i % 60:02d}"
        extra = [f"{float(labels[i])}", "0.0"] if anomaly else []
        lines.append(";".join([stamp, *(f"{v:.6f}" for v in values[i]), *extra]))
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def skab_dir(tmp_path: Path) -> Path:
    root = tmp_path / "skab"
    _write_skab_file(root / "valve1" / "0.csv", 560, 0, (480, 530))
    _write_skab_file(root / "other" / "1.csv", 520, 1, (450, 500))
    _write_skab_file(root / "anomaly-free" / "anomaly-free.csv", 300, 2, None)
    return root


def test_datasets_skab_splits_first_400_rows(skab_dir: Path, tmp_path: Path) -> None:
    bench = tmp_path / "bench"
    result = CliRunner().invoke(app, ["datasets", "skab", str(skab_dir), "--out", str(bench)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in bench.iterdir()) == ["anomaly-free-anomaly-free", "other-1", "valve1-0"]
    train, test = read_table(bench / "valve1-0" / "train.csv"), read_table(bench / "valve1-0" / "test.csv")
    assert len(train.values) == 400 and len(test.values) == 160
    assert train.channels == CHANNELS and train.labels is None
    assert test.labels.sum() == 50 and test.labels[80] == 1
    assert not (bench / "anomaly-free-anomaly-free" / "test.csv").exists()


def test_train_ts_writes_a_triton_model(skab_dir: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    args = ["train", "ts", "--data", str(skab_dir / "anomaly-free" / "anomaly-free.csv"), "--out", str(repo)]
    result = CliRunner().invoke(app, [*args, "--window", "8", "--epochs", "2", "--channels", "Current,Pressure"])
    assert result.exit_code == 0, result.output
    model = repo / "ts_diffusion"
    for name in ("config.pbtxt", "model_card.json", "loss.png", "1/model.py", "1/weights.pt", "1/detector.json"):
        assert (model / name).is_file(), name
    card = TsCard.from_json((model / "model_card.json").read_text())
    assert card.channels == ["Current", "Pressure"] and card.window == 8
    assert set(card.slow_channels) <= set(card.channels)
    assert set(card.modes) == set(TS_MODES)
    assert card.modes[IMPUTATION].threshold.value == 1.0  # scores are served per-stream calibrated
    assert card.training.data["source"] == "anomaly-free.csv" and card.training.settings == {"epochs": 2}
    config = (model / "config.pbtxt").read_text()
    assert 'backend: "python"' in config and "dims: [ 8, 2 ]" in config and "dynamic_batching" in config


def test_train_ts_is_deterministic_with_a_seed(skab_dir: Path, tmp_path: Path) -> None:
    cards = []
    for run in ("a", "b"):
        args = ["train", "ts", "--data", str(skab_dir / "valve1" / "0.csv"), "--out", str(tmp_path / run)]
        result = CliRunner().invoke(app, [*args, "--window", "8", "--epochs", "1", "--seed", "3", "--threads", "1"])
        assert result.exit_code == 0, result.output
        cards.append(json.loads((tmp_path / run / "ts_diffusion" / "model_card.json").read_text()))
    assert cards[0]["modes"] == cards[1]["modes"]
    assert cards[0]["training"]["final_loss"] == cards[1]["training"]["final_loss"]


def test_evaluate_ts_reports_modes_baselines_and_throughput(skab_dir: Path, tmp_path: Path) -> None:
    bench, out, plots = tmp_path / "bench", tmp_path / "results.json", tmp_path / "plots"
    assert CliRunner().invoke(app, ["datasets", "skab", str(skab_dir), "--out", str(bench)]).exit_code == 0
    args = ["evaluate", "ts", str(bench), "--out", str(out), "--plots", str(plots), "--window", "8", "--epochs", "1"]
    args += ["--summary-png", str(tmp_path / "summary.png")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    results = json.loads(out.read_text())
    assert set(results["modes"]) == {"imputation", "reconstruction"}
    assert set(results["baselines"]) == {"pca", "pca_per_stream", "level", "random"}
    variants = {f"{m}_{rule}" for m in TS_MODES for rule in ("block_conformal", "drift_adapted")}
    assert set(results["threshold_variants"]) == variants
    conformal = results["threshold_variants"]["reconstruction_block_conformal"]["pooled"]["threshold"]
    assert conformal["method"] == "block_conformal" and conformal["risk"] >= 1 / (conformal["blocks"] + 1)
    best = results["best"]
    assert best["mode"] in results["modes"]
    assert {"f1", "far", "mar"} <= set(best["skab"]) and 0 <= best["auprc"] <= 1
    assert results["data"]["test_rows"] == 160 + 120 and results["data"]["test_anomalous_rows"] == 100
    assert set(results["modes"]["imputation"]["series"]) == {"valve1-0", "other-1"}
    assert results["throughput"]["imputation"]["windows_per_s"] > 0
    assert (plots / "valve1-0.png").is_file() and (plots / "loss.png").is_file()
    assert (tmp_path / "summary.png").is_file()


def test_evaluate_ts_takes_gaps_a_constant_channel_and_any_column_order(tmp_path: Path) -> None:
    """Data from another plant: readings missing here and there, a sensor that never moves, and one series whose
    columns come in another order; every test row still gets a finite score."""
    rng = np.random.default_rng(0)
    bench, columns = tmp_path / "bench", ["flow", "pressure", "setpoint", "vibration"]
    for index, name in enumerate(["pump-a", "pump-b"]):
        rows = np.sin(np.arange(500)[:, None] / 5 + np.arange(4)) + 0.05 * rng.normal(size=(500, 4))
        rows[:, 2] = 7.0
        rows[rng.random(rows.shape) < 0.03] = np.nan
        labels = np.zeros(200, dtype=int)
        labels[120:160] = 1
        rows[300 + 120 : 300 + 160, 0] += 3.0
        order = [3, 2, 1, 0] if index else [0, 1, 2, 3]
        names, stamps = [columns[c] for c in order], [str(i) for i in range(500)]
        write_table(bench / name / "train.csv", stamps[:300], names, rows[:300, order])  # NaN reads as missing
        write_table(bench / name / "test.csv", stamps[300:], names, rows[300:, order], labels)
    out = tmp_path / "results.json"
    args = ["evaluate", "ts", str(bench), "--out", str(out), "--window", "8", "--epochs", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    results = json.loads(out.read_text())
    assert results["data"]["channels"] == columns and results["data"]["test_rows"] == 400
    for mode in results["modes"].values():
        pooled = mode["pooled"]
        assert 0 <= pooled["auroc"] <= 1 and 0 <= pooled["auprc"] <= 1
        assert sum(pooled["counts"].values()) == 400
