"""The local stack's state file: which process runs which service, on which ports, logging where.

``<state_dir>/stack.json`` is written by ``diffsentry stack up`` and read by every command through
:class:`core.settings.Settings`, which takes the addresses of the services that are still running.
A record only counts while its pid is alive and still runs the recorded executable, so a stale file
(after a reboot, or a crash) is harmless.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATE_FILE = "stack.json"

KAFKA = "kafka"
TRITON = "triton"
VICTORIA_METRICS = "victoria-metrics"
# The S3 store (SeaweedFS) that keeps the broker's data in durable mode; in memory mode the stack has no such service.
OBJECT_STORE = "object-store"
# PostgreSQL for the shared state of several instances (`stack up --with-postgres`); without it, sqlite in state_dir.
POSTGRES = "postgres"
POSTGRES_ROLE = "diffsentry"
SERVICES = (KAFKA, TRITON, VICTORIA_METRICS)


def stack_services(durable: bool, postgres: bool = False) -> tuple[str, ...]:
    """The services of a stack in this mode, in the order they are listed."""
    return (*SERVICES, *((OBJECT_STORE,) if durable else ()), *((POSTGRES,) if postgres else ()))


@dataclass(frozen=True)
class ServiceRecord:
    name: str
    pid: int
    executable: str
    ports: dict[str, int]
    log: str
    data_dir: str | None = None

    @property
    def url(self) -> str:
        """The address clients use: a bootstrap server for Kafka, an HTTP base URL for the others."""
        if self.name == KAFKA:
            return f"127.0.0.1:{self.ports['kafka']}"
        if self.name == OBJECT_STORE:
            return f"http://127.0.0.1:{self.ports['s3.port']}"
        if self.name == POSTGRES:
            return f"postgresql+psycopg://{POSTGRES_ROLE}@127.0.0.1:{self.ports['postgres']}/postgres"
        return f"http://127.0.0.1:{self.ports['http']}"

    def settings_values(self) -> dict[str, Any]:
        """The part of the Settings this service provides, as nested field values."""
        if self.name == OBJECT_STORE:
            return {}  # only the broker talks to it
        if self.name == KAFKA:
            return {"kafka": {"bootstrap_servers": self.url, "broker": "tansu"}}
        if self.name == POSTGRES:
            return {"database": {"url": self.url}}
        if self.name == TRITON:
            return {
                "triton": {
                    "http_url": f"127.0.0.1:{self.ports['http']}",
                    "grpc_urls": [f"127.0.0.1:{self.ports['grpc']}"],
                }
            }
        return {"influx": {"url": self.url, "flavor": "victoriametrics"}}


@dataclass
class StackState:
    services: dict[str, ServiceRecord] = field(default_factory=dict)
    # The broker's storage mode; it outlives `stack down`, so a stack started durable restarts durable.
    durable: bool = False
    # Whether the stack runs PostgreSQL; like ``durable`` it outlives `stack down`.
    postgres: bool = False
    # Processes that run against the stack and stop with it (`diffsentry demo --keep` leaves its worker here):
    # `stack down` stops them first. They provide no settings.
    attached: dict[str, ServiceRecord] = field(default_factory=dict)

    @classmethod
    def load(cls, state_dir: Path) -> StackState:
        path = state_dir / STATE_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return cls()
        return cls(
            services={name: ServiceRecord(**record) for name, record in data.get("services", {}).items()},
            durable=data.get("durable", False),
            postgres=data.get("postgres", False),
            attached={name: ServiceRecord(**record) for name, record in data.get("attached", {}).items()},
        )

    def save(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        path = state_dir / STATE_FILE
        tmp = path.with_suffix(".tmp")
        payload = {
            "durable": self.durable,
            "postgres": self.postgres,
            "services": {name: asdict(r) for name, r in self.services.items()},
            "attached": {name: asdict(r) for name, r in self.attached.items()},
        }
        tmp.write_text(json.dumps(payload, indent=2) + "\n")
        tmp.replace(path)  # atomic: a reader never sees half a file

    def running(self) -> dict[str, ServiceRecord]:
        return {name: record for name, record in self.services.items() if process_runs(record.pid, record.executable)}


def process_runs(pid: int, executable: str) -> bool:
    """Whether ``pid`` is a live (not zombie) process running ``executable``; guards against reused pids."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    process_state = stat.rsplit(")", 1)[1].split()[0]
    if process_state in ("Z", "X"):
        return False
    return os.path.realpath(cmdline.split(b"\0", 1)[0].decode(errors="replace")) == os.path.realpath(executable)


def running_stack_addresses(state_dir: Path) -> dict[str, Any]:
    """Nested Settings values for the services of the stack in ``state_dir`` that are running now."""
    values: dict[str, Any] = {}
    for record in StackState.load(state_dir).running().values():
        values.update(record.settings_values())
    return values
