"""Reading benchmark tables from other sources: missing values, column order, and large training sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from triton_models.diffusion import NoiseSchedule
from triton_models.timeseries.data import fill_missing, read_benchmark, read_table, training_tables
from triton_models.timeseries.detector import ModelConfig, TimeSeriesDetector
from triton_models.timeseries.training import train_denoiser

nan = np.nan


def _write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_missing_value_is_an_error_unless_allowed(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.csv", ["timestamp,a,b", "0,1.0,2.0", "1,,NaN", "2,null,4.0"])
    with pytest.raises(ValueError, match=r"t\.csv:3"):
        read_table(path)
    values = read_table(path, allow_missing=True).values
    assert np.isnan(values[1]).all() and np.isnan(values[2, 0]) and values[2, 1] == 4.0


def test_gaps_take_the_last_earlier_value_and_never_a_later_one() -> None:
    history = np.array([[nan, 1.0, nan], [2.0, nan, nan], [nan, 3.0, nan]])
    rows = np.array([[nan, nan, nan], [5.0, 6.0, nan]])
    filled_history, filled_rows = fill_missing(history, rows)
    # leading gap: the first value; later gaps: the last value before them; a channel with no value: 0
    np.testing.assert_array_equal(filled_history, [[2.0, 1.0, 0.0], [2.0, 1.0, 0.0], [2.0, 3.0, 0.0]])
    np.testing.assert_array_equal(filled_rows, [[2.0, 3.0, 0.0], [5.0, 6.0, 0.0]])
    complete = np.ones((3, 2))
    assert fill_missing(complete)[0] is complete


def test_benchmark_series_are_aligned_to_one_channel_order(tmp_path: Path) -> None:
    _write(tmp_path / "a" / "train.csv", ["timestamp,x,y", "0,1,10", "1,2,20"])
    _write(tmp_path / "b" / "train.csv", ["timestamp,y,x", "0,30,3", "1,,4"])
    _write(tmp_path / "b" / "test.csv", ["timestamp,label,x,y", "2,0,5,", "3,1,NaN,50"])
    a, b = read_benchmark(tmp_path)
    assert a.train.channels == b.train.channels == b.test.channels == ["x", "y"]
    np.testing.assert_array_equal(b.train.values, [[3, 30], [4, 30]])
    np.testing.assert_array_equal(b.test.values, [[5, 30], [5, 50]])
    assert b.test.labels.tolist() == [0, 1]
    _write(tmp_path / "c" / "train.csv", ["timestamp,x,z", "0,1,2"])
    with pytest.raises(ValueError, match=r"channels \['y'\] not in columns"):
        read_benchmark(tmp_path)


def test_a_folder_of_csv_files_trains_on_one_channel_order(tmp_path: Path) -> None:
    _write(tmp_path / "one.csv", ["timestamp,x,y", "0,1,10"])
    _write(tmp_path / "two.csv", ["timestamp,y,x", "0,,2", "1,40,3"])
    tables = training_tables(tmp_path)
    np.testing.assert_array_equal(tables["two"].values, [[2, 40], [3, 40]])


def test_an_epoch_draws_at_most_epoch_windows() -> None:
    config = ModelConfig(channels=["a", "b"], window=8, hidden=8, dilations=(1, 2))
    network = TimeSeriesDetector.build_network(config)
    windows = np.random.default_rng(0).normal(size=(300, 8, 2)).astype(np.float32)
    steps = []
    network.register_forward_hook(lambda *_: steps.append(1))
    train_denoiser(
        network, NoiseSchedule(20), windows, epochs=2, seed=0, batch_size=32, progress=False, epoch_windows=64
    )
    assert len(steps) == 2 * 2  # 64 windows of 300 per epoch: two batches of 32
    assert all(torch.isfinite(p).all() for p in network.parameters())
