"""The mixture plants of the cross-plant suite (``benchmarks/synthetic_plant.py``) are what their docstring says."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.synthetic_plant import COMMANDS, MIXTURE_ANOMALIES, MIXTURE_TEST_ROWS, write_plant
from triton_models.timeseries.data import read_benchmark


def test_binary_plant_has_binary_flags_and_labelled_anomalies(tmp_path: Path) -> None:
    write_plant("binary", tmp_path)
    series = read_benchmark(tmp_path)
    assert [s.name for s in series] == ["binary-0", "binary-1"]
    for s in series:
        assert s.train.values.shape == (6_000, 10) and s.test.values.shape == (MIXTURE_TEST_ROWS, 10)
        assert set(np.unique(s.train.values[:, 4:])) == {0.0, 1.0}
        starts = np.flatnonzero(np.diff(np.concatenate([[0], s.test.labels])) == 1)
        assert len(starts) == MIXTURE_ANOMALIES


def test_drift_plant_moves_its_normal_level_in_the_test_period(tmp_path: Path) -> None:
    write_plant("drift", tmp_path)
    s = read_benchmark(tmp_path)[0]
    normal_end = s.test.values[-200:][s.test.labels[-200:] == 0]
    shift = np.abs(normal_end.mean(axis=0) - s.train.values.mean(axis=0)) / s.train.values.std(axis=0)
    assert np.median(shift) > 0.3  # up to 0.5 sd by the end: normal operation moved on
    assert s.train.values.shape == (6_000, 8)


def test_few_rows_and_wide_plants(tmp_path: Path) -> None:
    write_plant("few_rows", tmp_path / "few")
    write_plant("wide", tmp_path / "wide")
    write_plant("wide_few", tmp_path / "wide_few")
    assert read_benchmark(tmp_path / "few")[0].train.values.shape == (500, 8)
    assert read_benchmark(tmp_path / "wide_few")[0].train.values.shape == (500, 52)
    wide = read_benchmark(tmp_path / "wide")[0].train.values
    assert wide.shape == (4_000, 60)
    assert np.abs(np.corrcoef(wide.T)[np.triu_indices(60, 1)]).mean() > 0.3  # sensors share 3 latent signals


def test_suite_normal_only_set_is_the_second_half_of_the_anomaly_free_run(tmp_path: Path) -> None:
    from benchmarks.ts_suite import build
    from triton_models.timeseries.data import write_table

    values = np.random.default_rng(0).normal(size=(101, 2))
    write_table(
        tmp_path / "skab" / "anomaly-free" / "anomaly-free.csv", [str(i) for i in range(101)], ["a", "b"], values
    )
    bench = build("skab_normal", tmp_path / "skab", tmp_path / "data")
    (series,) = read_benchmark(bench)
    np.testing.assert_allclose(series.train.values, values[:50], rtol=1e-6)
    np.testing.assert_allclose(series.test.values, values[50:], rtol=1e-6)
    assert series.test.labels.sum() == 0


def test_commands_plant_has_rare_flags_some_silent_in_training_and_analog_anomalies(tmp_path: Path) -> None:
    write_plant("commands", tmp_path)
    series = read_benchmark(tmp_path)
    flags, dormant, train_rows, test_rows, _ = COMMANDS
    assert len(series) == 3
    for s in series:
        assert s.train.values.shape == (train_rows, 1 + flags) and s.test.values.shape == (test_rows, 1 + flags)
        train_flags, test_flags = s.train.values[:, 1:], s.test.values[:, 1:]
        assert set(np.unique(train_flags)) <= {0.0, 1.0} and set(np.unique(test_flags)) <= {0.0, 1.0}
        assert not train_flags[:, :dormant].any() and test_flags[:, :dormant].any()  # new commands after training
        assert train_flags.mean() < 0.1  # off but for rare bursts
        normal = s.test.labels == 0
        assert test_flags[normal].any()  # firing commands are normal operation, not labelled
        starts = np.flatnonzero(np.diff(np.concatenate([[0], s.test.labels])) == 1)
        assert len(starts) == MIXTURE_ANOMALIES
