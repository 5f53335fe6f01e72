"""docker-compose.yml (production) cannot run on these machines: check its structure and its settings here."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
INTERPOLATION = re.compile(r"\$\{([A-Z_]+):-([^}]*)\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _diffsentry_env(service: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in (service.get("environment") or {}).items() if k.startswith("DIFFSENTRY_")}


def _field_path(env_name: str) -> list[str]:
    return env_name.removeprefix("DIFFSENTRY_").lower().split("__")


ROLES = ("scoring", "alerting", "api")
KAFKA_BROKERS = ("kafka-1", "kafka-2", "kafka-3")
TRITONS = ("triton-1", "triton-2")


def test_the_services_and_their_images(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {*KAFKA_BROKERS, *TRITONS, "postgres", "influxdb", "topics", *ROLES, "grafana"}
    assert {services[broker]["image"] for broker in KAFKA_BROKERS} == {"apache/kafka:3.8.1"}
    assert re.fullmatch(r"grafana/grafana-oss:11\.\d+\.\d+", services["grafana"]["image"])  # pinned, not latest
    assert services["influxdb"]["image"].startswith("influxdb:2.")
    assert re.fullmatch(r"postgres:\d+", services["postgres"]["image"])
    assert {services[name]["build"]["dockerfile"] for name in TRITONS} == {"infra/Dockerfile.triton"}
    assert services["topics"]["build"]["dockerfile"] == "infra/Dockerfile.worker"
    assert {services[role]["image"] for role in ROLES} == {services["topics"]["image"]}
    triton_base = (ROOT / "infra/Dockerfile.triton").read_text()
    assert re.search(r"^FROM nvcr\.io/nvidia/tritonserver:24\.\d\d-py3$", triton_base, re.MULTILINE)


def test_kafka_is_three_kraft_brokers_that_keep_every_record_on_all_three(compose: dict[str, Any]) -> None:
    envs = [compose["services"][broker]["environment"] for broker in KAFKA_BROKERS]
    assert sorted(env["KAFKA_NODE_ID"] for env in envs) == [1, 2, 3]
    assert len({env["CLUSTER_ID"] for env in envs}) == 1
    for broker, env in zip(KAFKA_BROKERS, envs, strict=True):
        assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
        voters = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
        assert voters == [f"{n}@{name}:9093" for n, name in enumerate(KAFKA_BROKERS, 1)]
        assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
        assert f"PLAINTEXT://{broker}:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == 3
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == 2
        assert f"{broker}-data:/var/lib/kafka/data" in compose["services"][broker]["volumes"]


def test_published_ports(compose: dict[str, Any]) -> None:
    ports = {name: {p.split(":")[0] for p in s.get("ports", [])} for name, s in compose["services"].items()}
    assert [ports[broker] for broker in KAFKA_BROKERS] == [{"9094"}, {"9095"}, {"9096"}]
    assert ports["triton-1"] == {"8000", "8001", "8002"} and ports["triton-2"] == set()
    assert ports["influxdb"] == {"8086"}
    assert ports["grafana"] == {"3000"}
    assert ports["api"] == {"8088-8089"}  # one host port per API instance
    assert ports["scoring"] == ports["alerting"] == ports["postgres"] == set()


def test_long_running_services_have_health_checks(compose: dict[str, Any]) -> None:
    for name in (*KAFKA_BROKERS, *TRITONS, "postgres", "influxdb", *ROLES, "grafana"):
        check = compose["services"][name]["healthcheck"]
        assert check["test"][0] in ("CMD", "CMD-SHELL")
        assert check["retries"] >= 3
    for name in TRITONS:
        assert "diffsentry_ping" in " ".join(compose["services"][name]["healthcheck"]["test"])
    for role in ROLES:
        assert "/healthz" in " ".join(compose["services"][role]["healthcheck"]["test"])


def test_the_roles_and_how_many_of_each(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for role in ROLES:
        assert services[role]["command"] == ["diffsentry", "run", "--role", role]
    assert INTERPOLATION.fullmatch(str(services["scoring"]["deploy"]["replicas"])).groups() == ("SCORING_WORKERS", "3")
    assert services["alerting"]["deploy"]["replicas"] == services["api"]["deploy"]["replicas"] == 2
    env = _diffsentry_env(services["topics"])
    assert int(env["DIFFSENTRY_TOPICS__PARTITIONS"]) >= 3 * 2  # room to double the default scoring workers
    assert int(env["DIFFSENTRY_TOPICS__REPLICATION_FACTOR"]) == len(KAFKA_BROKERS)


def test_start_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    kafka = {broker: {"condition": "service_healthy"} for broker in KAFKA_BROKERS}
    assert services["topics"]["command"] == ["diffsentry", "topics", "create"]
    assert services["topics"]["depends_on"] == kafka
    ready = {"influxdb": {"condition": "service_healthy"}, "topics": {"condition": "service_completed_successfully"}}
    tritons = {name: {"condition": "service_healthy"} for name in TRITONS}
    assert services["scoring"]["depends_on"] == {**kafka, **tritons, **ready}
    for role in ("alerting", "api"):
        assert services[role]["depends_on"] == {**kafka, "postgres": {"condition": "service_healthy"}, **ready}


def test_triton_replicas_and_the_scoring_workers_share_the_model_repository(compose: dict[str, Any]) -> None:
    services = compose["services"]
    model_repository = _diffsentry_env(services["scoring"])["DIFFSENTRY_MODEL_REPOSITORY"]
    assert f"models:{model_repository}" in services["scoring"]["volumes"]
    for name in TRITONS:
        assert f"models:{model_repository}" in services[name]["volumes"]
        assert f"--model-repository={model_repository}" in services[name]["command"]
        assert "--model-control-mode=explicit" in services[name]["command"]
    assert services["triton-1"]["command"] == services["triton-2"]["command"]


def test_every_diffsentry_variable_is_a_settings_field(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for env_name in _diffsentry_env(service):
            model: type[BaseModel] = Settings
            path = _field_path(env_name)
            for depth, part in enumerate(path):
                assert part in model.model_fields, f"{name}: {env_name} names no Settings field ({part!r})"
                annotation = model.model_fields[part].annotation
                if depth < len(path) - 1:
                    assert isinstance(annotation, type) and issubclass(annotation, BaseModel), env_name
                    model = annotation


def _role_settings(compose: dict[str, Any], role: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key in [k for k in os.environ if k.startswith("DIFFSENTRY_")]:
        monkeypatch.delenv(key)
    for env_name, value in _diffsentry_env(compose["services"][role]).items():
        monkeypatch.setenv(env_name, INTERPOLATION.sub(lambda m: m.group(2), value))
    return Settings()


@pytest.mark.parametrize("role", ROLES)
def test_each_role_environment_yields_valid_settings_that_point_at_the_services(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch, role: str
) -> None:
    settings = _role_settings(compose, role, monkeypatch)
    influx_env = compose["services"]["influxdb"]["environment"]
    assert settings.kafka.bootstrap_servers == "kafka-1:9092,kafka-2:9092,kafka-3:9092"
    assert settings.triton.grpc_urls == ["triton-1:8001", "triton-2:8001"]
    assert settings.influx.url == "http://influxdb:8086"
    assert settings.influx.flavor == "influxdb"
    assert settings.influx.org == influx_env["DOCKER_INFLUXDB_INIT_ORG"]
    assert settings.influx.bucket == influx_env["DOCKER_INFLUXDB_INIT_BUCKET"]
    admin_token = INTERPOLATION.sub(lambda m: m.group(2), influx_env["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"])
    assert settings.influx.token == admin_token
    assert settings.stream.metrics_host == "0.0.0.0"  # the health check and Prometheus reach /healthz, /metrics
    database_url = _diffsentry_env(compose["services"][role])["DIFFSENTRY_DATABASE__URL"]
    postgres = compose["services"]["postgres"]["environment"]
    password = INTERPOLATION.sub(lambda m: m.group(2), postgres["POSTGRES_PASSWORD"])
    assert INTERPOLATION.sub(lambda m: m.group(2), database_url) == (
        f"postgresql+psycopg://{postgres['POSTGRES_USER']}:{password}@postgres:5432/{postgres['POSTGRES_DB']}"
    )


def test_only_the_api_listens_beyond_its_container(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    assert _role_settings(compose, "api", monkeypatch).api.host == "0.0.0.0"
    assert _role_settings(compose, "scoring", monkeypatch).api.host == "127.0.0.1"


def _env_file_names(path: Path) -> list[str]:
    """The variables an env file sets, or shows commented out as options."""
    lines = [line.removeprefix("# ").strip() for line in path.read_text().splitlines()]
    return [line.split("=", 1)[0] for line in lines if re.fullmatch(r"DIFFSENTRY_[A-Z_]+=.*", line)]


def test_the_api_token_and_the_shared_secrets_key_come_from_an_env_file_kept_out_of_git(
    compose: dict[str, Any],
) -> None:
    for role in ROLES:
        assert compose["services"][role]["env_file"] == ["diffsentry.env"]
    for name, service in compose["services"].items():
        assert "DIFFSENTRY_API__TOKEN" not in _diffsentry_env(service), f"{name}: the token belongs in the env file"
    assert "diffsentry.env" in (ROOT / ".gitignore").read_text().splitlines()
    example = ROOT / "diffsentry.env.example"
    names = _env_file_names(example)
    assert "DIFFSENTRY_API__TOKEN" in names
    assert "DIFFSENTRY_API__TOKEN=\n" in example.read_text()  # no token to copy: each deployment makes its own
    # Several instances share subscriptions in one database: one key for all, not a key file per container.
    assert "DIFFSENTRY_DELIVERY__SECRETS_KEY=\n" in example.read_text()
    for env_name in names:
        model: type[BaseModel] = Settings
        *parents, leaf = _field_path(env_name)
        for part in parents:
            model = model.model_fields[part].annotation  # type: ignore[assignment]
        assert leaf in model.model_fields, f"{env_name} names no Settings field"
