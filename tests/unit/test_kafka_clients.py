"""Every Kafka client of the project is built by infra/kafka.py, so security settings reach all of them."""

import ast
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from core.settings import KafkaSettings
from infra import kafka

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient"}
SASL = KafkaSettings(
    bootstrap_servers="broker:9093",
    security_protocol="SASL_PLAINTEXT",
    sasl_mechanism="SCRAM-SHA-512",
    sasl_username="diffsentry",
    sasl_password="secret",
)


def test_no_production_module_builds_a_kafka_client_itself() -> None:
    builders = []
    for package in ("pipeline", "operators", "infra", "core", "triton_models", "benchmarks"):
        for path in (ROOT / package).rglob("*.py"):
            if path == ROOT / "infra" / "kafka.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) in CLIENTS:
                    builders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert builders == []


@pytest.mark.parametrize("suffix", ["video-ingest", "ingest", "worker"])
async def test_the_producers_of_both_ingesters_and_the_worker_carry_the_security_settings(suffix: str) -> None:
    producer = kafka.producer(SASL, suffix, linger_ms=5)
    client = producer.client
    assert isinstance(producer, AIOKafkaProducer)
    assert client._security_protocol == "SASL_PLAINTEXT"
    assert client._sasl_mechanism == "SCRAM-SHA-512"
    assert (client._sasl_plain_username, client._sasl_plain_password) == ("diffsentry", "secret")
    assert client._client_id == f"diffsentry-{suffix}"


def test_ssl_gets_a_context_and_plaintext_none() -> None:
    assert "ssl_context" in kafka.connection_options(SASL.model_copy(update={"security_protocol": "SASL_SSL"}))
    assert "ssl_context" not in kafka.connection_options(KafkaSettings())
    assert "sasl_mechanism" not in kafka.connection_options(KafkaSettings())
