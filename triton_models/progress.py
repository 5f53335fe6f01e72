"""Progress that suits its sink: a tqdm bar on a terminal, a plain line every few seconds on a file or pipe.

Every long-running command (training, evaluation, replay, the demo) reports through :func:`progress`, which takes
tqdm's arguments and returns an object with tqdm's interface (iteration, ``update``, ``set_postfix``,
``set_postfix_str``, ``close``, ``n``, a context manager). Where the output is not a terminal (``make demo > log``,
CI), a redrawn bar would fill the file with carriage-return frames; :class:`LineProgress` instead writes one line
when at least ``interval_s`` passed since the last one (updates are the milestones it can report at), and a last
line when it closes. A bar closed with ``leave=False`` (an inner loop) writes no last line.

``DIFFSENTRY_PROGRESS`` overrides the choice: ``bars``, ``lines`` or ``off`` (default ``auto``: bars on a TTY).
It lives here, below every other layer, because the model code (``triton_models``) reports progress too.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, Literal

from tqdm import tqdm

Mode = Literal["bars", "lines", "off"]
MODE_VARIABLE = "DIFFSENTRY_PROGRESS"
INTERVAL_S = 10.0


def choose_mode(stream: IO[str] | None, requested: str | None = None) -> Mode:
    """``bars`` when ``stream`` is a terminal, ``lines`` otherwise; ``requested`` (``DIFFSENTRY_PROGRESS`` by
    default) forces one of them unless it is ``auto`` or empty."""
    requested = (os.environ.get(MODE_VARIABLE, "") if requested is None else requested).strip().lower()
    if requested in ("bars", "lines", "off"):
        return requested  # type: ignore[return-value]
    if requested not in ("", "auto"):
        raise ValueError(f"{MODE_VARIABLE} must be auto, bars, lines or off, got {requested!r}")
    isatty = getattr(stream, "isatty", None)
    return "bars" if isatty is not None and isatty() else "lines"


class LineProgress:
    """tqdm's interface, written as a plain line at most every ``interval_s`` and once more at the end."""

    def __init__(
        self,
        iterable: Iterable[Any] | None = None,
        desc: str = "",
        total: float | None = None,
        unit: str = "it",
        leave: bool = True,
        interval_s: float = INTERVAL_S,
        file: IO[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.iterable = iterable
        self.desc = desc
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total = total
        self.unit = unit
        self.leave = leave
        self.interval_s = interval_s
        self.file = file
        self.clock = clock
        self.n: float = 0
        self.postfix = ""
        self.started = self.last = clock()
        self.closed = False

    def __iter__(self) -> Iterator[Any]:
        assert self.iterable is not None, "nothing to iterate: give an iterable"
        try:
            for item in self.iterable:
                yield item
                self.update()
        finally:
            self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        self.n += n
        self._maybe_write()

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = s
        self._maybe_write()

    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, refresh: bool = True, **kwargs: Any) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.set_postfix_str(", ".join(f"{k}={v}" for k, v in items.items()), refresh)

    def write(self, message: str) -> None:
        print(message, file=self.file or sys.stderr, flush=True)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.leave:
            self.write(self.line(final=True))

    def line(self, final: bool = False) -> str:
        elapsed = self.clock() - self.started
        done = f"{self.n:g}/{self.total:g}" if self.total else f"{self.n:g}"
        percent = f" ({100 * self.n / self.total:.0f} %)" if self.total else ""
        text = f"{self.desc}: {done} {self.unit}{percent}, {elapsed:.0f} s"
        if final:
            text += " (done)" if self.total is None or self.n >= self.total else " (stopped)"
        return f"{text} | {self.postfix}" if self.postfix else text

    def _maybe_write(self) -> None:
        now = self.clock()
        if self.closed or now - self.last < self.interval_s:
            return
        if self.leave and self.total and self.n >= self.total:
            return  # complete: the last line, written at close, says so
        self.last = now
        self.write(self.line())


def progress_bar(
    iterable: Iterable[Any] | None = None,
    desc: str = "",
    total: float | None = None,
    unit: str = "it",
    leave: bool = True,
    disable: bool = False,
    file: IO[str] | None = None,
    interval_s: float = INTERVAL_S,
    **bar_options: Any,
) -> tqdm | LineProgress:
    """A tqdm bar if the sink (``file``, default stderr) is a terminal, else a :class:`LineProgress`.

    ``bar_options`` (``mininterval``, ``dynamic_ncols``, ...) are tqdm's and only shape the bar."""
    sink = file or sys.stderr
    mode = "off" if disable else choose_mode(sink)
    if mode == "lines":
        return LineProgress(iterable, desc, total, unit, leave, interval_s, file=sink)
    off = mode == "off"
    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=leave, disable=off, file=sink, **bar_options)


def write(message: str, file: IO[str] | None = None) -> None:
    """A message that does not break a bar on the terminal (``tqdm.write``; plain ``print`` elsewhere)."""
    tqdm.write(message, file=file or sys.stderr)
