"""Which offsets of each partition are still needed, and the order in which one stream's scores move on.

The committable offset of a partition is the smallest offset still buffered by a lane (window or frame state), still
in flight (scoring, store, dead-letter produce), else the next unread one: committing it can lose nothing, and a
restart re-reads from it.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field

from aiokafka import TopicPartition


class OffsetLedger:
    def __init__(self) -> None:
        self.next_offset: dict[TopicPartition, int] = {}
        self.in_flight: dict[TopicPartition, Counter[int]] = {}
        self.committed: dict[TopicPartition, int] = {}

    def consumed(self, tp: TopicPartition, offset: int) -> None:
        self.next_offset[tp] = max(self.next_offset.get(tp, 0), offset + 1)

    def hold(self, tp: TopicPartition, offset: int) -> None:
        self.in_flight.setdefault(tp, Counter())[offset] += 1

    def release(self, tp: TopicPartition, offset: int) -> None:
        held = self.in_flight.get(tp)
        if held is None:  # the partition was revoked meanwhile
            return
        held[offset] -= 1
        if held[offset] <= 0:
            del held[offset]

    def committable(self, tp: TopicPartition, buffered: list[int]) -> int | None:
        if tp not in self.next_offset:
            return None
        return min([self.next_offset[tp], *buffered, *self.in_flight.get(tp, ())])

    def to_commit(self, buffered: dict[TopicPartition, list[int]]) -> dict[TopicPartition, int]:
        """The committable offsets that moved past the last commit, for the partitions in ``buffered``."""
        offsets = {}
        for tp, refs in buffered.items():
            offset = self.committable(tp, refs)
            if offset is not None and offset > self.committed.get(tp, -1):
                offsets[tp] = offset
        return offsets

    def forget(self, tp: TopicPartition) -> None:
        self.next_offset.pop(tp, None)
        self.in_flight.pop(tp, None)
        self.committed.pop(tp, None)


@dataclass
class StreamOrder:
    """Scores of one stream pass thresholding and alerting in emission order, whatever order Triton answers in."""

    tails: dict[str, asyncio.Future[None]] = field(default_factory=dict)

    def enter(self, stream: str) -> tuple[asyncio.Future[None] | None, asyncio.Future[None]]:
        previous = self.tails.get(stream)
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.tails[stream] = mine
        return previous, mine

    def leave(self, stream: str, mine: asyncio.Future[None]) -> None:
        if not mine.done():
            mine.set_result(None)
        if self.tails.get(stream) is mine:
            del self.tails[stream]
