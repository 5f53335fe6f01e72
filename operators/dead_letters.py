"""Dead letters: a record that broke its contract, or an item that could not be scored, with the reason.

A dead letter must always fit the broker, or its offset could never be committed honestly: a payload longer than
``stream.dead_letter_max_payload`` characters is cut to that length and carries the original's size and SHA-256.
"""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Any

from aiokafka import ConsumerRecord

from core.contracts import DeadLetter, Modality


def _key(record: ConsumerRecord) -> str | None:
    return record.key.decode("utf-8", "replace")[:200] if record.key else None


def _payload(raw: bytes, text: str, max_payload: int) -> dict[str, Any]:
    if len(text) <= max_payload:
        return {"payload": text}
    return {
        "payload": text[:max_payload],
        "payload_truncated": True,
        "payload_bytes": len(raw),
        "payload_sha256": hashlib.sha256(raw).hexdigest(),
    }


def record_dead_letter(record: ConsumerRecord, error: Exception, max_payload: int) -> DeadLetter:
    """The record as it came, text if it is UTF-8, else base64."""
    value: bytes = record.value or b""
    try:
        text, encoding = value.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(value).decode(), "base64"
    return DeadLetter(
        source_topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=_key(record),
        reason=str(error)[:max_payload],
        error_type=type(error).__name__,
        payload_encoding=encoding,
        created_at=time.time(),
        **_payload(value, text, max_payload),
    )


def item_dead_letter(
    trigger: ConsumerRecord, modality: Modality, stream: str, description: str, error: Exception, max_payload: int
) -> DeadLetter:
    """A window or frame stack that cannot be scored, described by its lane, at the record that completed it."""
    return DeadLetter(
        source_topic=trigger.topic,
        partition=trigger.partition,
        offset=trigger.offset,
        key=stream,
        reason=f"{modality} {stream}: {error}"[:max_payload],
        error_type=type(error).__name__,
        created_at=time.time(),
        **_payload(description.encode(), description, max_payload),
    )
