"""Settings: defaults < running local stack < YAML file (DIFFSENTRY_CONFIG) < DIFFSENTRY_* environment < init."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.settings import STATE_PATHS, Settings, TopicSettings
from core.stack_state import KAFKA, TRITON, VICTORIA_METRICS, ServiceRecord, StackState


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No DIFFSENTRY_* variables of the caller, and a state dir without a stack."""
    for key in [k for k in os.environ if k.startswith("DIFFSENTRY_")]:
        monkeypatch.delenv(key)
    state_dir = tmp_path / "state"
    monkeypatch.setenv("DIFFSENTRY_STATE_DIR", str(state_dir))
    return state_dir


def _own_executable() -> str:
    """What /proc says this test process runs: a record with it and our pid counts as a running service."""
    return Path(f"/proc/{os.getpid()}/cmdline").read_bytes().split(b"\0", 1)[0].decode()


def _write_stack(state_dir: Path, pid: int, executable: str) -> None:
    records = {
        KAFKA: ServiceRecord(KAFKA, pid, executable, {"kafka": 19092}, "kafka.log"),
        TRITON: ServiceRecord(TRITON, pid, executable, {"http": 18000, "grpc": 18001, "metrics": 18002}, "t.log"),
        VICTORIA_METRICS: ServiceRecord(VICTORIA_METRICS, pid, executable, {"http": 18428}, "vm.log"),
    }
    StackState(services=records).save(state_dir)


def _write_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    path = tmp_path / "diffsentry.yaml"
    path.write_text(text)
    monkeypatch.setenv("DIFFSENTRY_CONFIG", str(path))


def test_defaults_without_any_configuration() -> None:
    settings = Settings()
    assert settings.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert settings.triton.grpc_urls == ["127.0.0.1:8001"]
    assert settings.influx.flavor == "auto"
    assert settings.topics.partitions == 4
    assert settings.stack.kafka_port == 0


def test_environment_overrides_nested_and_top_level_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFFSENTRY_KAFKA__BOOTSTRAP_SERVERS", "broker-1:9092,broker-2:9092")
    monkeypatch.setenv("DIFFSENTRY_TOPICS__PARTITIONS", "12")
    monkeypatch.setenv("DIFFSENTRY_INFLUX__FLAVOR", "influxdb")
    monkeypatch.setenv("DIFFSENTRY_MODEL_REPOSITORY", "/srv/models")
    settings = Settings()
    assert settings.kafka.bootstrap_servers == "broker-1:9092,broker-2:9092"
    assert settings.kafka.client_id == "diffsentry"  # the rest of the sub-model keeps its defaults
    assert settings.topics.partitions == 12
    assert settings.influx.flavor == "influxdb"
    assert settings.model_repository == Path("/srv/models")


def test_invalid_environment_values_are_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFFSENTRY_INFLUX__FLAVOR", "graphite")
    with pytest.raises(ValueError, match="flavor"):
        Settings()


def test_yaml_file_sets_nested_fields(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_yaml(tmp_path, monkeypatch, "kafka:\n  consumer_group: plant-7\ntopics:\n  scores: plant7.scores\n")
    settings = Settings()
    assert settings.kafka.consumer_group == "plant-7"
    assert settings.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert settings.topics.scores == "plant7.scores"


def test_yaml_file_must_hold_a_mapping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_yaml(tmp_path, monkeypatch, "- just\n- a list\n")
    with pytest.raises(ValueError, match="mapping"):
        Settings()


def test_environment_wins_over_yaml_per_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_yaml(tmp_path, monkeypatch, "kafka:\n  bootstrap_servers: yaml:9092\n  client_id: from-yaml\n")
    monkeypatch.setenv("DIFFSENTRY_KAFKA__BOOTSTRAP_SERVERS", "env:9092")
    settings = Settings()
    assert settings.kafka.bootstrap_servers == "env:9092"
    assert settings.kafka.client_id == "from-yaml"


def test_init_values_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFFSENTRY_KAFKA__BOOTSTRAP_SERVERS", "env:9092")
    assert Settings(kafka={"bootstrap_servers": "init:9092"}).kafka.bootstrap_servers == "init:9092"


def test_a_running_local_stack_replaces_the_default_addresses(isolated_environment: Path) -> None:
    _write_stack(isolated_environment, os.getpid(), _own_executable())
    settings = Settings()
    assert settings.kafka.bootstrap_servers == "127.0.0.1:19092"
    assert settings.triton.http_url == "127.0.0.1:18000"
    assert settings.triton.grpc_urls == ["127.0.0.1:18001"]
    assert settings.influx.url == "http://127.0.0.1:18428"
    assert settings.influx.flavor == "victoriametrics"
    assert settings.influx.bucket == "diffsentry"


def test_explicit_configuration_wins_over_a_running_local_stack(
    isolated_environment: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_stack(isolated_environment, os.getpid(), _own_executable())
    _write_yaml(tmp_path, monkeypatch, "influx:\n  url: http://influx.plant:8086\n")
    monkeypatch.setenv("DIFFSENTRY_KAFKA__BOOTSTRAP_SERVERS", "kafka.plant:9092")
    settings = Settings()
    assert settings.kafka.bootstrap_servers == "kafka.plant:9092"
    assert settings.influx.url == "http://influx.plant:8086"
    assert settings.triton.grpc_urls == ["127.0.0.1:18001"]


def test_a_stack_whose_processes_are_gone_is_ignored(isolated_environment: Path) -> None:
    # A reused pid running something else does not count either.
    _write_stack(isolated_environment, os.getpid(), "/usr/bin/not-the-recorded-binary")
    assert Settings().kafka.bootstrap_servers == "127.0.0.1:9092"


def test_the_stack_is_looked_up_in_the_configured_state_dir(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    _write_stack(elsewhere, os.getpid(), _own_executable())
    assert Settings().kafka.bootstrap_servers == "127.0.0.1:9092"
    assert Settings(state_dir=elsewhere).kafka.bootstrap_servers == "127.0.0.1:19092"


def _path_fields() -> list[str]:
    return [name for name, field in Settings.model_fields.items() if field.annotation in (Path, "Path")]


def test_paths_not_set_explicitly_lie_under_the_state_dir(isolated_environment: Path, tmp_path: Path) -> None:
    """One rule for where state goes: every path setting but the (read-only) data dir derives from state_dir."""
    assert set(_path_fields()) == {"state_dir", "data_dir", *STATE_PATHS}
    for settings in (Settings(), Settings(state_dir=tmp_path / "other")):
        for name in STATE_PATHS:
            assert getattr(settings, name) == settings.state_dir / STATE_PATHS[name]
    assert Settings().model_repository == isolated_environment / "model_repository"  # DIFFSENTRY_STATE_DIR
    assert Settings(state_dir=tmp_path).model_repository == tmp_path / "model_repository"


def test_the_default_state_dir_holds_the_model_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DIFFSENTRY_STATE_DIR")
    assert Settings().state_dir == Path(".diffsentry")
    assert Settings().model_repository == Path(".diffsentry/model_repository")


def test_a_yaml_state_dir_moves_the_derived_paths_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DIFFSENTRY_STATE_DIR")
    _write_yaml(tmp_path, monkeypatch, f"state_dir: {tmp_path / 'from-yaml'}\n")
    assert Settings().model_repository == tmp_path / "from-yaml" / "model_repository"


def test_an_explicit_path_wins_and_an_empty_one_is_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(model_repository=tmp_path / "models").model_repository == tmp_path / "models"
    monkeypatch.setenv("DIFFSENTRY_MODEL_REPOSITORY", "/srv/models")
    assert Settings(state_dir=tmp_path).model_repository == Path("/srv/models")
    monkeypatch.setenv("DIFFSENTRY_MODEL_REPOSITORY", "")
    assert Settings(state_dir=tmp_path).model_repository == tmp_path / "model_repository"


def test_triton_replicas_are_a_list_and_the_single_url_setting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFFSENTRY_TRITON__GRPC_URLS", '["triton-1:8001", "triton-2:8001"]')
    monkeypatch.setenv("DIFFSENTRY_TRITON__INSTANCE_COUNT", "3")
    settings = Settings()
    assert settings.triton.grpc_urls == ["triton-1:8001", "triton-2:8001"]
    assert settings.triton.instance_count == 3
    monkeypatch.setenv("DIFFSENTRY_TRITON__GRPC_URL", "triton:8001")
    with pytest.raises(ValueError, match=r"triton\.grpc_url is gone: list the servers in triton\.grpc_urls"):
        Settings()
    monkeypatch.delenv("DIFFSENTRY_TRITON__GRPC_URL")
    monkeypatch.setenv("DIFFSENTRY_TRITON__GRPC_URLS", "[]")
    with pytest.raises(ValueError, match="at least 1 item"):
        Settings()


def test_suffixed_topics_rename_every_topic_and_keep_the_rest() -> None:
    base = TopicSettings(partitions=3)
    run = base.suffixed("run7", partitions=2)
    names = ("sensor_readings", "video_frames", "scores", "alerts", "dead_letter")
    assert all(getattr(run, name) == f"{getattr(base, name)}-run7" for name in names)
    assert len({getattr(run, name) for name in names}) == len(names)
    assert (run.partitions, run.replication_factor) == (2, base.replication_factor)
    assert base.suffixed("a").sensor_readings != base.suffixed("b").sensor_readings
