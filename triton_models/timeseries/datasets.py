"""Conversion of public data sets to the benchmark layout ``<bench>/<series>/{train,test}.csv``."""

from __future__ import annotations

from pathlib import Path

from triton_models.progress import progress_bar
from triton_models.timeseries.data import read_table, write_table

SKAB_TRAIN_ROWS = 400


def convert_skab(skab: Path, out: Path, train_rows: int = SKAB_TRAIN_ROWS) -> list[str]:
    """SKAB leaderboard protocol: each labelled file -> first ``train_rows`` rows train.csv, the rest test.csv;
    files without labels (anomaly-free) -> a train-only series. Series are named ``<folder>-<file stem>``."""
    names = []
    for path in progress_bar(sorted(Path(skab).rglob("*.csv")), desc="convert SKAB"):
        table = read_table(path)
        name = f"{path.parent.name}-{path.stem}"
        target = Path(out) / name
        if table.labels is None:
            write_table(target / "train.csv", table.timestamps, table.channels, table.values)
        else:
            head, tail = slice(0, train_rows), slice(train_rows, None)
            write_table(target / "train.csv", table.timestamps[head], table.channels, table.values[head])
            write_table(
                target / "test.csv", table.timestamps[tail], table.channels, table.values[tail], table.labels[tail]
            )
        names.append(name)
    if not names:
        raise FileNotFoundError(f"no csv files under {skab}")
    return names
