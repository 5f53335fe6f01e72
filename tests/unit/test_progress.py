"""Progress suits its sink: bars on a terminal, a plain line every few seconds (and a last one) on a file or pipe."""

from __future__ import annotations

import io

import pytest
from tqdm import tqdm

from triton_models.progress import MODE_VARIABLE, LineProgress, choose_mode, progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def no_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MODE_VARIABLE, raising=False)


def test_bars_on_a_terminal_lines_on_a_file_or_pipe() -> None:
    assert choose_mode(Terminal()) == "bars"
    assert choose_mode(io.StringIO()) == "lines"
    assert choose_mode(None) == "lines"
    assert isinstance(progress_bar(range(3), file=Terminal()), tqdm)
    assert isinstance(progress_bar(range(3), file=io.StringIO()), LineProgress)


def test_the_environment_forces_a_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MODE_VARIABLE, "lines")
    assert choose_mode(Terminal()) == "lines"
    monkeypatch.setenv(MODE_VARIABLE, "bars")
    assert choose_mode(io.StringIO()) == "bars"
    monkeypatch.setenv(MODE_VARIABLE, "auto")
    assert choose_mode(Terminal()) == "bars"
    monkeypatch.setenv(MODE_VARIABLE, "sometimes")
    with pytest.raises(ValueError, match=MODE_VARIABLE):
        choose_mode(Terminal())


def test_off_and_disable_write_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    sink = io.StringIO()
    assert list(progress_bar(range(3), desc="quiet", file=sink, disable=True)) == [0, 1, 2]
    monkeypatch.setenv(MODE_VARIABLE, "off")
    assert list(progress_bar(range(3), desc="quiet", file=sink)) == [0, 1, 2]
    assert sink.getvalue() == ""


def test_a_line_at_most_every_interval_and_a_last_one() -> None:
    sink, clock = io.StringIO(), Clock()
    bar = LineProgress(desc="train", total=10, unit="step", interval_s=5.0, file=sink, clock=clock)
    for step in range(10):
        clock.now = step * 2.0  # updates at 0, 2, ..., 18 s: lines when 5 s passed since the last one
        bar.update()
    bar.set_postfix(loss="0.12")
    bar.close()
    bar.close()  # once only
    lines = sink.getvalue().splitlines()
    assert lines == [
        "train: 4/10 step (40 %), 6 s",
        "train: 7/10 step (70 %), 12 s",
        "train: 10/10 step (100 %), 18 s (done) | loss=0.12",  # no periodic line once complete: the last one says it
    ]


def test_iteration_counts_items_and_closes_at_the_end() -> None:
    sink, clock = io.StringIO(), Clock()
    items = []
    for item in LineProgress(["a", "b", "c"], desc="clips", file=sink, clock=clock, interval_s=60):
        items.append(item)
    assert items == ["a", "b", "c"]
    assert sink.getvalue() == "clips: 3/3 it (100 %), 0 s (done)\n"


def test_inner_loops_without_leave_write_no_last_line_and_a_short_run_is_flagged() -> None:
    sink = io.StringIO()
    list(LineProgress(range(4), desc="inner", leave=False, file=sink))
    assert sink.getvalue() == ""
    with LineProgress(desc="scored", total=5, file=sink, clock=Clock()) as bar:
        bar.update(3)
        bar.set_postfix_str("sensor 3")
    assert sink.getvalue() == "scored: 3/5 it (60 %), 0 s (stopped) | sensor 3\n"


def test_without_a_total_the_count_alone() -> None:
    sink = io.StringIO()
    with LineProgress(desc="ingest cam", unit="frame", file=sink, clock=Clock()) as bar:
        bar.update(7)
    assert sink.getvalue() == "ingest cam: 7 frame, 0 s (done)\n"
