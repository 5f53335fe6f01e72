"""Sensor readings -> per-asset sliding windows in event time.

Policy (what happens to time, gaps and late data):

- Time is discretised on an absolute grid: a reading at event time ``t`` fills slot ``round(t / period)``, where
  ``period`` is the model card's ``sample_period_s``. Windows cover ``window`` consecutive slots and start on slots
  that are multiples of ``stride``. Because the grid is absolute, the same readings always give the same windows,
  whichever offset a restarted worker resumes from; scores of re-delivered windows therefore land on the same
  timestamps and overwrite themselves in the store.
- The first window of an asset starts at the first grid start at or after its first reading. The state remembers
  the newest reading before the window being built (the "seed": it fills leading gaps); :meth:`oldest_ref` and
  each window's ``oldest_ref`` include it, so a worker resuming from a committed offset re-reads the seed first,
  which aligns its first window with the one that was being built, and rebuilds identical windows.
- A window is emitted as soon as every slot holds a reading, or when the asset's event-time watermark (the newest
  slot seen minus ``allowed_lateness`` slots) has passed the window's end. Emission never waits on wall-clock time.
- Missing samples (empty slots when a window is emitted) are marked ``observed = False`` and their values are
  filled by linear interpolation in time per channel (constant at the edges, seeded with the last value seen before
  the window), so the model always receives finite raw values. Windows with fewer than ``min_observed_fraction``
  observed slots are not emitted (counted in ``skipped_windows``); a silence longer than a window jumps ahead
  instead of producing a run of empty windows.
- Late samples: a reading for a slot inside the window being built (out of order) is placed in its slot. A reading
  older than the start of the window being built can no longer change anything emitted: it only replaces the seed
  if it is newer than it, otherwise it is dropped and counted in ``late_readings`` (its slot stays unobserved).
  Two readings for one slot: the later one wins (re-delivery).
- A reading must carry exactly the model card's channels, each value within the float32 range the model computes
  in, and leave room for its window before ``MAX_EVENT_TIME``; anything else is a :class:`ContractError`.

Each slot remembers an opaque, ordered ``ref`` (the Kafka offset) so the worker can tell which offsets are still
needed to rebuild the state: :meth:`SensorWindower.oldest_ref`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from core.contracts import MAX_EVENT_TIME, ContractError, SensorReading, SensorWindow

FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class EmittedWindow:
    asset: str
    start_time: float
    end_time: float  # event time of the last slot: the timestamp of the window's score
    channels: tuple[str, ...]
    values: np.ndarray  # float32 [L, C], channels in model-card order, gaps filled
    observed: np.ndarray  # bool [L, C]
    oldest_ref: int | None  # smallest ref a restart must re-read to rebuild this window

    @cached_property
    def window(self) -> SensorWindow:
        """The window as its wire contract (built only when needed, e.g. for a dead letter)."""
        return SensorWindow(
            asset=self.asset,
            start_time=self.start_time,
            end_time=self.end_time,
            channels=list(self.channels),
            values=self.values.tolist(),
            observed=self.observed.tolist(),
        )


@dataclass
class _AssetState:
    start: int
    slots: dict[int, tuple[np.ndarray, int | None]] = field(default_factory=dict)
    newest_slot: int = -(2**62)
    # The newest reading before ``start``: (slot, values, ref). It seeds the fill of leading gaps, and a restart
    # that re-reads from it rebuilds the same window grid (its slot aligns the first window to ``start``).
    seed: tuple[int, np.ndarray, int | None] | None = None


class SensorWindower:
    def __init__(
        self,
        channels: Sequence[str],
        window: int,
        stride: int,
        sample_period_s: float,
        allowed_lateness: int = 0,
        min_observed_fraction: float = 0.5,
    ) -> None:
        if not 0 < stride <= window:
            raise ValueError(f"stride must be in 1..window, got {stride} for window {window}")
        self.channels = tuple(channels)
        self._channel_set = frozenset(self.channels)
        self.window = window
        self.stride = stride
        self.period = sample_period_s
        self.allowed_lateness = allowed_lateness
        self.min_observed = math.ceil(min_observed_fraction * window)
        self._assets: dict[str, _AssetState] = {}
        self.late_readings = 0
        self.skipped_windows = 0

    def _row(self, reading: SensorReading) -> np.ndarray:
        if reading.values.keys() != self._channel_set:
            missing = sorted(self._channel_set - reading.values.keys())
            unexpected = sorted(reading.values.keys() - self._channel_set)
            raise ContractError(
                f"asset {reading.asset!r}: expected the {len(self.channels)} model channels; "
                f"missing {missing}, unexpected {unexpected}"
            )
        row = np.array([reading.values[name] for name in self.channels], dtype=np.float64)
        if np.abs(row).max() > FLOAT32_MAX:  # windows hold float32: such a value would reach the model as inf
            too_large = [name for name, value in zip(self.channels, row, strict=True) if abs(value) > FLOAT32_MAX]
            raise ContractError(f"asset {reading.asset!r}: {too_large} beyond the float32 range of the model")
        return row

    def add(self, reading: SensorReading, ref: int | None = None) -> list[EmittedWindow]:
        """Add one reading; returns the windows it completed (usually zero or one)."""
        row = self._row(reading)
        slot = round(reading.event_time / self.period)
        if (slot + self.stride + self.window) * self.period > MAX_EVENT_TIME:
            # Its window would end past the latest event time a SensorWindow (and the store) takes.
            raise ContractError(
                f"asset {reading.asset!r}: event time {reading.event_time} leaves no room for a window before 2200"
            )
        state = self._assets.get(reading.asset)
        if state is None:
            state = self._assets[reading.asset] = _AssetState(start=-(-slot // self.stride) * self.stride)
        if slot < state.start:
            if state.seed is None or slot > state.seed[0]:
                state.seed = (slot, row, ref)  # e.g. the first reading a resumed worker re-reads
            else:
                self.late_readings += 1
            return []
        state.slots[slot] = (row, ref)
        state.newest_slot = max(state.newest_slot, slot)
        emitted = []
        while True:
            end = state.start + self.window
            in_window = [s for s in state.slots if s < end]
            watermark = state.newest_slot - self.allowed_lateness
            if len(in_window) < self.window and watermark < end:
                return emitted
            if len(in_window) >= self.min_observed:
                emitted.append(self._build(reading.asset, state, in_window))
            else:
                self.skipped_windows += 1
            self._advance(state)

    def _build(self, asset: str, state: _AssetState, in_window: list[int]) -> EmittedWindow:
        length, width = self.window, len(self.channels)
        refs = [ref for s in in_window if (ref := state.slots[s][1]) is not None]
        if state.seed is not None and state.seed[2] is not None:
            refs.append(state.seed[2])
        if len(in_window) == length:  # complete: no gap to fill
            values = np.stack([state.slots[state.start + step][0] for step in range(length)]).astype(np.float32)
            observed = np.ones((length, width), dtype=bool)
        else:
            values, observed = self._fill_gaps(state, in_window)
        return EmittedWindow(
            asset=asset,
            start_time=state.start * self.period,
            end_time=(state.start + length - 1) * self.period,
            channels=self.channels,
            values=values,
            observed=observed,
            oldest_ref=min(refs) if refs else None,
        )

    def _fill_gaps(self, state: _AssetState, in_window: list[int]) -> tuple[np.ndarray, np.ndarray]:
        length, width = self.window, len(self.channels)
        observed_steps = np.array(sorted(s - state.start for s in in_window))
        known = np.stack([state.slots[state.start + int(step)][0] for step in observed_steps])
        if state.seed is not None and observed_steps[0] > 0:
            observed_steps = np.concatenate([[-1], observed_steps])
            known = np.vstack([state.seed[1], known])
        steps = np.arange(length)
        values = np.empty((length, width), dtype=np.float32)
        for channel in range(width):
            values[:, channel] = np.interp(steps, observed_steps, known[:, channel])
        observed = np.zeros((length, width), dtype=bool)
        observed[observed_steps[observed_steps >= 0]] = True
        return values, observed

    def _advance(self, state: _AssetState) -> None:
        new_start = state.start + self.stride
        for slot in sorted(s for s in state.slots if s < new_start):
            row, ref = state.slots.pop(slot)
            state.seed = (slot, row, ref)
        if state.slots:
            oldest = min(state.slots)
            if oldest >= new_start + self.window:
                # A silence longer than a window: jump to the first window that holds the oldest buffered slot.
                new_start = -(-(oldest - self.window + 1) // self.stride) * self.stride
        state.start = new_start

    def flush(self, asset: str) -> list[EmittedWindow]:
        """An asset that went quiet: its buffered windows as if its watermark had passed them, then its state is
        dropped, so it pins no offset. (The grid is absolute: a later reading starts the same windows again.)"""
        state = self._assets.pop(asset, None)
        emitted = []
        while state is not None and state.slots:
            in_window = [s for s in state.slots if s < state.start + self.window]
            if len(in_window) >= self.min_observed:
                emitted.append(self._build(asset, state, in_window))
            elif in_window:
                self.skipped_windows += 1
            self._advance(state)
        return emitted

    def oldest_ref(self, asset: str) -> int | None:
        """Smallest ref still buffered for the asset (what a restart must re-read), or None."""
        state = self._assets.get(asset)
        if state is None:
            return None
        refs = [ref for _, ref in state.slots.values() if ref is not None]
        if state.seed is not None and state.seed[2] is not None:
            refs.append(state.seed[2])
        return min(refs) if refs else None

    def forget(self, asset: str) -> None:
        """Drop an asset's state (its partition moved to another worker)."""
        self._assets.pop(asset, None)
