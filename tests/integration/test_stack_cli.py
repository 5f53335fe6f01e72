"""`diffsentry stack up/status/down` and `diffsentry doctor` as a user runs them, on a stack of their own."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from core.settings import KafkaSettings
from core.stack_state import OBJECT_STORE, ServiceRecord, StackState, process_runs
from infra.kafka import high_watermarks
from triton_models.paths import SOURCE_ROOT

pytestmark = pytest.mark.integration

SERVICES = ["kafka", "triton", "victoria-metrics"]


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if text.encode() in cmdline and process_runs(int(entry.name), cmdline.split(b"\0", 1)[0].decode()):
            pids.append(int(entry.name))
    return pids


@pytest.fixture
def cli_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A user's environment with a state dir of its own; whatever the test leaves running is stopped after it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIFFSENTRY_")}
    env["DIFFSENTRY_STATE_DIR"] = str(tmp_path / "state")
    env["DIFFSENTRY_MODEL_REPOSITORY"] = str(tmp_path / "models")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SOURCE_ROOT), os.environ.get("PYTHONPATH")) if p)
    yield env
    _cli(env, "stack", "down")


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args], env=env, capture_output=True, text=True, timeout=180
    )


def _status(env: dict[str, str]) -> tuple[int, list[dict]]:
    result = _cli(env, "stack", "status", "--json")
    return result.returncode, json.loads(result.stdout)


def test_stack_lifecycle_doctor_and_a_stopped_service(cli_env: dict[str, str]) -> None:
    state_dir = cli_env["DIFFSENTRY_STATE_DIR"]
    up = _cli(cli_env, "stack", "up")
    assert up.returncode == 0, up.stderr

    code, status = _status(cli_env)
    assert code == 0
    assert [s["name"] for s in status] == SERVICES
    assert all(s["healthy"] and isinstance(s["pid"], int) for s in status), status
    pids = {s["name"]: s["pid"] for s in status}
    urls = {s["name"]: s["url"] for s in status}

    again = _cli(cli_env, "stack", "up")
    assert again.returncode == 0, again.stderr
    assert {s["name"]: s["pid"] for s in _status(cli_env)[1]} == pids
    # One VictoriaMetrics and one tritonserver (plus its python stub) for this state dir, not two.
    assert _processes_mentioning(f"{state_dir}/victoria-metrics-data") == [pids["victoria-metrics"]]
    assert len(_processes_mentioning(f"{state_dir}/triton-backends")) == 2

    doctor = _cli(cli_env, "doctor")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert [line.split()[:2] for line in doctor.stdout.splitlines()] == [
        ["kafka", "OK"],
        ["triton", "OK"],
        ["influx", "OK"],
    ]

    os.kill(pids["victoria-metrics"], signal.SIGTERM)
    record = StackState.load(Path(state_dir)).services["victoria-metrics"]
    while process_runs(record.pid, record.executable):
        time.sleep(0.1)
    failing = _cli(cli_env, "doctor")
    assert failing.returncode != 0
    verdicts = {line.split()[0]: line.split()[1] for line in failing.stdout.splitlines()}
    assert verdicts == {"kafka": "OK", "triton": "OK", "influx": "FAIL"}
    assert "failing: influx" in failing.stderr
    influx_line = next(line for line in failing.stdout.splitlines() if line.startswith("influx"))
    assert urls["victoria-metrics"] in influx_line  # tested where it was, not at the default address
    code, status = _status(cli_env)
    assert code != 0
    assert [s["healthy"] for s in status] == [True, True, False]
    assert [s["url"] for s in status] == list(urls.values())  # the stopped store where it was, not the default

    # `up` again restarts only what is gone.
    assert _cli(cli_env, "stack", "up").returncode == 0
    code, status = _status(cli_env)
    assert code == 0
    restarted = {s["name"]: s["pid"] for s in status}
    assert restarted["kafka"] == pids["kafka"] and restarted["triton"] == pids["triton"]
    assert restarted["victoria-metrics"] != pids["victoria-metrics"]
    # On the port it had: clients that resolved its address at their start (a running worker) find it again.
    assert {s["name"]: s["url"] for s in status} == urls
    pids["victoria-metrics"] = restarted["victoria-metrics"]

    down = _cli(cli_env, "stack", "down")
    assert down.returncode == 0, down.stderr
    records = StackState.load(Path(state_dir)).services
    assert records == {}
    for name, pid in pids.items():
        assert not _alive(pid), f"{name} (pid {pid}) still runs after down"
    assert _processes_mentioning(state_dir) == []


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


DURABLE_TOPIC = "durable-check"
DURABLE_GROUP = "durable-check-group"
RECORDS = 60
COMMITTED = 42  # neither 0 nor the end, so a lost or reset offset shows


def _listening_addresses(pid: int) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket ``pid`` listens on, from /proc (IPv6 addresses as /proc writes them)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    listening = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                address, port = fields[1].split(":")
                if table == "tcp":
                    address = socket.inet_ntoa(bytes.fromhex(address)[::-1])
                listening.append((address, int(port, 16)))
    return listening


def _sockets_in_tmp(store: ServiceRecord) -> list[Path]:
    return [path for port in store.ports.values() for path in Path("/tmp").glob(f"seaweedfs-*-{port}.sock")]


async def _write_records_and_commit(bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(DURABLE_TOPIC, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(RECORDS):
            await producer.send_and_wait(DURABLE_TOPIC, f"record-{i}".encode(), partition=0)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=DURABLE_GROUP, enable_auto_commit=False)
    await consumer.start()
    try:
        partition = TopicPartition(DURABLE_TOPIC, 0)
        consumer.assign([partition])
        await consumer.commit({partition: COMMITTED})
    finally:
        await consumer.stop()


async def _read_back(bootstrap: str) -> tuple[list[str], int | None, int]:
    """All records of the topic, the group's committed offset, and the partition's high watermark."""
    partition = TopicPartition(DURABLE_TOPIC, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=DURABLE_GROUP, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([partition])
        committed = await consumer.committed(partition)
        await consumer.seek_to_beginning(partition)
        values: list[str] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while len(values) < RECORDS and loop.time() < deadline:
            batches = await consumer.getmany(partition, timeout_ms=500)
            values.extend(record.value.decode() for record in batches.get(partition, []))
    finally:
        await consumer.stop()
    ends = await high_watermarks(KafkaSettings(bootstrap_servers=bootstrap), [partition])
    return values, committed, ends[partition]


def test_durable_stack_keeps_topics_records_and_offsets_across_down_and_up(cli_env: dict[str, str]) -> None:
    state_dir = cli_env["DIFFSENTRY_STATE_DIR"]
    up = _cli(cli_env, "stack", "up", "--durable")
    assert up.returncode == 0, up.stderr
    code, status = _status(cli_env)
    assert code == 0
    assert [s["name"] for s in status] == [*SERVICES, OBJECT_STORE]
    assert all(s["healthy"] for s in status), status
    pids = {s["name"]: s["pid"] for s in status}
    # Every listener of the store is on 127.0.0.1, on a port the stack chose and recorded (none of weed's defaults).
    store = StackState.load(Path(state_dir)).services[OBJECT_STORE]
    listening = _listening_addresses(pids[OBJECT_STORE])
    assert {address for address, _ in listening} == {"127.0.0.1"}, listening
    assert {port for _, port in listening} == set(store.ports.values())
    assert _listening_addresses(pids["kafka"]) == [("127.0.0.1", int(status[0]["url"].rsplit(":", 1)[1]))]

    asyncio.run(_write_records_and_commit(status[0]["url"]))

    # The broker's storage cannot change under a running stack.
    switch = _cli(cli_env, "stack", "up", "--memory")
    assert switch.returncode != 0
    assert "stack down" in switch.stderr

    down = _cli(cli_env, "stack", "down")
    assert down.returncode == 0, down.stderr
    assert "object-store" in down.stdout
    for name, pid in pids.items():
        assert not _alive(pid), f"{name} (pid {pid}) still runs after down"
    assert _processes_mentioning(state_dir) == []
    assert _sockets_in_tmp(store) == []

    # Without --durable: the state dir remembers the mode.
    again = _cli(cli_env, "stack", "up")
    assert again.returncode == 0, again.stderr
    code, status = _status(cli_env)
    assert code == 0
    assert [s["name"] for s in status] == [*SERVICES, OBJECT_STORE]
    values, committed, end = asyncio.run(_read_back(status[0]["url"]))
    assert values == [f"record-{i}" for i in range(RECORDS)]
    assert committed == COMMITTED
    assert end == RECORDS

    # A store that stopped alone comes back on new ports: `up` restarts the broker with it, data intact.
    pids = {s["name"]: s["pid"] for s in status}
    store = StackState.load(Path(state_dir)).services[OBJECT_STORE]
    os.kill(pids[OBJECT_STORE], signal.SIGTERM)
    while _alive(pids[OBJECT_STORE]):
        time.sleep(0.1)
    assert _cli(cli_env, "stack", "up").returncode == 0
    assert _sockets_in_tmp(store) == []  # the stopped store's, left by weed itself
    code, status = _status(cli_env)
    assert code == 0
    restarted = {s["name"]: s["pid"] for s in status}
    assert restarted["kafka"] != pids["kafka"] and restarted[OBJECT_STORE] != pids[OBJECT_STORE]
    assert restarted["triton"] == pids["triton"]
    values, committed, end = asyncio.run(_read_back(status[0]["url"]))
    assert (len(values), committed, end) == (RECORDS, COMMITTED, RECORDS)
