"""Alert state in a faust Table: the ``AlertStateStore`` of the alerting tier (``pipeline/alerting_tier.py``).

Each stream's value holds its ``StreamState`` and its outbox (alerts emitted but not yet published). Every write
goes to the table's changelog topic in the partition of the score being processed (faust writes a table key to
the partition of the current event), and the scores topic is keyed by stream, so a stream's state lives in the same
partition number as its scores: whichever instance is assigned that partition is restored exactly that state.

Writes are only valid inside the agent processing a score of that stream (faust refuses table writes outside an
agent, and would put them in the wrong partition from another stream's event): so ``acknowledge`` is called there,
after publishing, and a stream's leftover outbox (a previous owner died before publishing) is read per stream with
:meth:`outbox`, when its scores are re-delivered, not swept across partitions with ``unpublished``.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from core.contracts import Alert, decode
from operators.alerting import StreamState, idempotency_key, stream_key


class TableAlertStateStore:
    def __init__(self, table: MutableMapping[str, Any]) -> None:
        self._table = table

    def load(self, key: str) -> StreamState | None:
        value = self._table.get(key)
        return StreamState.from_json(value["state"]) if value else None

    def save(self, key: str, state: StreamState, emitted: list[Alert]) -> None:
        outbox = dict(self._value(key)["outbox"])
        for alert in emitted:
            outbox.setdefault(idempotency_key(alert), alert.to_json().decode())
        self._table[key] = {"state": state.to_json(), "outbox": outbox}  # one changelog record: both or neither

    def outbox(self, key: str) -> list[Alert]:
        """The stream's alerts not acknowledged yet, oldest first."""
        return [decode(Alert, raw) for raw in self._value(key)["outbox"].values()]

    def unpublished(self) -> list[Alert]:
        """Always empty: leftovers are taken per stream (:meth:`outbox`) when its scores come back; see above."""
        return []

    def acknowledge(self, alert: Alert) -> None:
        key = stream_key(alert.modality, alert.stream)
        value = self._value(key)
        if idempotency_key(alert) in value["outbox"]:
            outbox = {k: v for k, v in value["outbox"].items() if k != idempotency_key(alert)}
            self._table[key] = {**value, "outbox": outbox}

    def _value(self, key: str) -> dict[str, Any]:
        value = self._table.get(key)
        return value if value else {"state": StreamState().to_json(), "outbox": {}}
