import hashlib
import json

from aiokafka import ConsumerRecord

from core.contracts import ContractError, DeadLetter, decode
from operators.dead_letters import record_dead_letter


def record(value: bytes) -> ConsumerRecord:
    return ConsumerRecord("readings", 0, 7, 0, 0, b"pump-1", value, None, 1, len(value), ())


def test_a_huge_payload_is_cut_to_fit_with_its_size_and_hash() -> None:
    value = b'{"asset": "pump-1", "values": [' + b"1.5, " * 400_000 + b"]}"  # 2 MB
    letter = record_dead_letter(record(value), ContractError("too big"), max_payload=65536)
    wire = letter.to_json()
    assert len(wire) < 70_000
    back = decode(DeadLetter, wire)
    assert back.payload_truncated and back.payload_bytes == len(value)
    assert back.payload_sha256 == hashlib.sha256(value).hexdigest()
    assert value.decode().startswith(back.payload)


def test_a_small_binary_payload_travels_whole_as_base64() -> None:
    letter = record_dead_letter(record(b"\xff\xd8 not text"), ContractError("corrupt"), max_payload=65536)
    body = json.loads(letter.to_json())
    assert body["payload_encoding"] == "base64" and not body["payload_truncated"] and body["payload_bytes"] is None
