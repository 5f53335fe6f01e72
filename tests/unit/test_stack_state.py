"""The state file keeps the broker's storage mode across `stack down`, and lists the store only in durable mode."""

from __future__ import annotations

import json
from pathlib import Path

from core.stack_state import KAFKA, OBJECT_STORE, POSTGRES, SERVICES, ServiceRecord, StackState, stack_services


def test_mode_round_trips_and_defaults_to_memory_for_old_state_files(tmp_path: Path) -> None:
    assert StackState.load(tmp_path).durable is False
    StackState(durable=True).save(tmp_path)
    assert StackState.load(tmp_path).durable is True
    (tmp_path / "stack.json").write_text(json.dumps({"services": {}}))  # written before durable mode existed
    assert StackState.load(tmp_path).durable is False


def test_the_object_store_is_a_fourth_service_only_in_durable_mode() -> None:
    assert stack_services(durable=False) == SERVICES
    assert stack_services(durable=True) == (*SERVICES, OBJECT_STORE)


def test_the_object_store_gives_settings_nothing_and_its_url_is_the_s3_api() -> None:
    store = ServiceRecord(OBJECT_STORE, 1, "weed", {"s3.port": 18333, "master.port": 19333}, "store.log")
    assert store.url == "http://127.0.0.1:18333"
    assert store.settings_values() == {}
    assert ServiceRecord(KAFKA, 1, "tansu", {"kafka": 19092}, "k.log").settings_values() == {
        "kafka": {"bootstrap_servers": "127.0.0.1:19092", "broker": "tansu"}
    }


def test_attached_processes_round_trip_and_give_settings_nothing(tmp_path: Path) -> None:
    worker = ServiceRecord("demo-worker-1", 42, "/usr/bin/python3", {"metrics": 19464, "api": 18088}, "worker.log")
    StackState(attached={worker.name: worker}).save(tmp_path)
    loaded = StackState.load(tmp_path)
    assert loaded.attached == {worker.name: worker}
    assert loaded.services == {}
    (tmp_path / "stack.json").write_text(json.dumps({"services": {}}))  # written before attached processes existed
    assert StackState.load(tmp_path).attached == {}


def test_postgresql_is_listed_when_asked_for_kept_across_down_and_gives_the_database_url(tmp_path: Path) -> None:
    assert stack_services(durable=False, postgres=True) == (*SERVICES, POSTGRES)
    assert stack_services(durable=True, postgres=True) == (*SERVICES, OBJECT_STORE, POSTGRES)
    StackState(postgres=True).save(tmp_path)
    assert StackState.load(tmp_path).postgres is True
    (tmp_path / "stack.json").write_text(json.dumps({"services": {}}))  # written before PostgreSQL was a service
    assert StackState.load(tmp_path).postgres is False
    server = ServiceRecord(POSTGRES, 1, "/usr/lib/postgresql/15/bin/postgres", {"postgres": 15432}, "pg.log")
    assert server.settings_values() == {"database": {"url": "postgresql+psycopg://diffsentry@127.0.0.1:15432/postgres"}}
