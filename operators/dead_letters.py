"""Dead letters: a record that broke its contract, or an item that could not be scored, with the reason."""

from __future__ import annotations

import base64
import time

from aiokafka import ConsumerRecord

from core.contracts import DeadLetter, Modality


def _key(record: ConsumerRecord) -> str | None:
    return record.key.decode("utf-8", "replace") if record.key else None


def record_dead_letter(record: ConsumerRecord, error: Exception) -> DeadLetter:
    """The record as it came, text if it is UTF-8, else base64."""
    value: bytes = record.value or b""
    try:
        payload, encoding = value.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        payload, encoding = base64.b64encode(value).decode(), "base64"
    return DeadLetter(
        source_topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=_key(record),
        reason=str(error),
        error_type=type(error).__name__,
        payload=payload,
        payload_encoding=encoding,
        ts=time.time(),
    )


def item_dead_letter(
    trigger: ConsumerRecord, modality: Modality, stream: str, description: str, error: Exception
) -> DeadLetter:
    """A window or frame stack that cannot be scored, described by its lane, at the record that completed it."""
    return DeadLetter(
        source_topic=trigger.topic,
        partition=trigger.partition,
        offset=trigger.offset,
        key=stream,
        reason=f"{modality} {stream}: {error}",
        error_type=type(error).__name__,
        payload=description,
        ts=time.time(),
    )
