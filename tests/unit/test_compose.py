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


def test_the_services_and_their_images(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"kafka", "triton", "influxdb", "topics", "worker", "grafana"}
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert re.fullmatch(r"grafana/grafana-oss:11\.\d+\.\d+", services["grafana"]["image"])  # pinned, not latest
    assert services["influxdb"]["image"].startswith("influxdb:2.")
    assert services["triton"]["build"]["dockerfile"] == "infra/Dockerfile.triton"
    assert services["topics"]["build"]["dockerfile"] == "infra/Dockerfile.worker"
    assert services["worker"]["image"] == services["topics"]["image"]
    triton_base = (ROOT / "infra/Dockerfile.triton").read_text()
    assert re.search(r"^FROM nvcr\.io/nvidia/tritonserver:24\.\d\d-py3$", triton_base, re.MULTILINE)


def test_kafka_runs_kraft_without_auto_created_topics(compose: dict[str, Any]) -> None:
    env = compose["services"]["kafka"]["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]


def test_published_ports(compose: dict[str, Any]) -> None:
    ports = {name: {p.split(":")[-1] for p in s.get("ports", [])} for name, s in compose["services"].items()}
    assert ports["kafka"] == {"9094"}
    assert ports["triton"] == {"8000", "8001", "8002"}
    assert ports["influxdb"] == {"8086"}
    assert ports["grafana"] == {"3000"}


def test_long_running_services_have_health_checks(compose: dict[str, Any]) -> None:
    for name in ("kafka", "triton", "influxdb", "grafana"):
        check = compose["services"][name]["healthcheck"]
        assert check["test"][0] in ("CMD", "CMD-SHELL")
        assert check["retries"] >= 3
    assert "diffsentry_ping" in " ".join(compose["services"]["triton"]["healthcheck"]["test"])


def test_start_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["topics"]["command"] == ["diffsentry", "topics", "create"]
    assert services["topics"]["depends_on"] == {"kafka": {"condition": "service_healthy"}}
    assert services["worker"]["command"] == ["diffsentry", "run"]
    assert services["worker"]["depends_on"] == {
        "kafka": {"condition": "service_healthy"},
        "triton": {"condition": "service_healthy"},
        "influxdb": {"condition": "service_healthy"},
        "topics": {"condition": "service_completed_successfully"},
    }


def test_triton_and_the_worker_share_the_model_repository(compose: dict[str, Any]) -> None:
    services = compose["services"]
    model_repository = _diffsentry_env(services["worker"])["DIFFSENTRY_MODEL_REPOSITORY"]
    assert f"models:{model_repository}" in services["worker"]["volumes"]
    assert f"models:{model_repository}" in services["triton"]["volumes"]
    assert f"--model-repository={model_repository}" in services["triton"]["command"]
    assert "--model-control-mode=explicit" in services["triton"]["command"]


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


def test_the_worker_environment_yields_valid_settings_that_point_at_the_services(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in [k for k in os.environ if k.startswith("DIFFSENTRY_")]:
        monkeypatch.delenv(key)
    for env_name, value in _diffsentry_env(compose["services"]["worker"]).items():
        monkeypatch.setenv(env_name, INTERPOLATION.sub(lambda m: m.group(2), value))
    settings = Settings()
    influx_env = compose["services"]["influxdb"]["environment"]
    assert settings.kafka.bootstrap_servers == "kafka:9092"
    assert settings.triton.grpc_url == "triton:8001"
    assert settings.influx.url == "http://influxdb:8086"
    assert settings.influx.flavor == "influxdb"
    assert settings.influx.org == influx_env["DOCKER_INFLUXDB_INIT_ORG"]
    assert settings.influx.bucket == influx_env["DOCKER_INFLUXDB_INIT_BUCKET"]
    admin_token = INTERPOLATION.sub(lambda m: m.group(2), influx_env["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"])
    assert settings.influx.token == admin_token


def _env_file_names(path: Path) -> list[str]:
    """The variables an env file sets, or shows commented out as options."""
    lines = [line.removeprefix("# ").strip() for line in path.read_text().splitlines()]
    return [line.split("=", 1)[0] for line in lines if re.fullmatch(r"DIFFSENTRY_[A-Z_]+=.*", line)]


def test_the_api_token_comes_from_an_env_file_kept_out_of_git(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    assert worker["env_file"] == ["diffsentry.env"]
    for name, service in compose["services"].items():
        assert "DIFFSENTRY_API__TOKEN" not in _diffsentry_env(service), f"{name}: the token belongs in the env file"
    assert "diffsentry.env" in (ROOT / ".gitignore").read_text().splitlines()
    example = ROOT / "diffsentry.env.example"
    names = _env_file_names(example)
    assert "DIFFSENTRY_API__TOKEN" in names
    assert "DIFFSENTRY_API__TOKEN=\n" in example.read_text()  # no token to copy: each deployment makes its own
    for env_name in names:
        model: type[BaseModel] = Settings
        *parents, leaf = _field_path(env_name)
        for part in parents:
            model = model.model_fields[part].annotation  # type: ignore[assignment]
        assert leaf in model.model_fields, f"{env_name} names no Settings field"
