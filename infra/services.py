"""How each service of the local stack starts: command line, ports, environment, data directory."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import sysconfig
import tempfile
import time
import venv
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from core.settings import Settings
from core.stack_state import (
    KAFKA,
    OBJECT_STORE,
    POSTGRES,
    TRITON,
    VICTORIA_METRICS,
    ServiceRecord,
    StackState,
    process_runs,
)
from infra.health import record_healthy
from infra.postgres import postgres_bin_dir, postgres_data_dir, prepare_cluster, server_command
from infra.processes import (
    BROKER_BUCKET,
    HEALTH_POLL_S,
    LOCAL_EXTRA_INSTALL,
    StackError,
    allocate_ports,
    hold_free_port,
    hold_port,
    log_tail,
    spawn,
    stop_process,
    tansu_binary,
    tritonserver_dir,
    victoria_metrics_binary,
    weed_binary,
)
from triton_models.paths import SOURCE_ROOT, TEMPLATE_REPOSITORY

# --- the services ---------------------------------------------------------------------------------------------


def _remembered(state: StackState, name: str) -> dict[str, int]:
    """The ports a service had in its last start (its record outlives its process until ``stack down``)."""
    record = state.services.get(name)
    return dict(record.ports) if record is not None else {}


def _start_kafka(settings: Settings, state: StackState, state_dir: Path) -> ServiceRecord:
    ports = allocate_ports({"kafka": settings.stack.kafka_port}, _remembered(state, KAFKA))
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
    return spawn(KAFKA, command, ports, state_dir, env=env)


# weed's maintenance worker dials the admin server at its HTTP port + 10000, whatever -admin.port.grpc says.
WEED_ADMIN_GRPC_OFFSET = 10000
SOCKET_RELEASE_S = 3.0  # how long a stopped weed's sockets may stay bound before they are left alone


def _weed_admin_ports(held: ExitStack) -> tuple[int, int]:
    """A free HTTP port whose +10000 is free too, both held by ``held``."""
    for _ in range(100):
        http = hold_free_port(held)
        grpc = http + WEED_ADMIN_GRPC_OFFSET
        if grpc <= 65535 and hold_port(held, grpc):
            return http, grpc
    raise StackError("object-store: found no free pair of ports (p, p + 10000) for its admin server")


def _start_object_store(settings: Settings, state: StackState, state_dir: Path) -> ServiceRecord:
    data_dir = (state_dir / "object-store").resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as held:
        admin_http, admin_grpc = _weed_admin_ports(held)
        # Every listener of `weed mini` gets a free port (keyed by its flag), so stacks side by side never collide.
        servers = ("s3", "master", "volume", "filer")
        ports = allocate_ports(
            {f"{s}.port{grpc}": 0 for s in servers for grpc in ("", ".grpc")}
            | {"s3.port": settings.stack.object_store_port}
        )  # new ports each start: the broker, which alone talks to it, restarts with it
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
    return spawn(OBJECT_STORE, command, ports, state_dir, env=env, data_dir=data_dir)


def remove_weed_sockets(record: ServiceRecord) -> None:
    """weed leaves unix sockets in /tmp (``seaweedfs-<server>[-grpc]-<port>.sock``), even when stopped by SIGTERM:
    remove those named after the record's ports that no live process is bound to (another weed may use the port now).
    """
    # A socket can stay bound a moment after the stop (weed's own children exit last): wait a little for it.
    deadline = time.monotonic() + SOCKET_RELEASE_S
    while True:
        bound = {fields[-1] for fields in map(str.split, Path("/proc/net/unix").read_text().splitlines()[1:])}
        held = []
        for port in record.ports.values():
            for path in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                if str(path) in bound:
                    held.append(path)
                else:
                    path.unlink(missing_ok=True)
        if not held or time.monotonic() > deadline:
            return
        time.sleep(0.1)


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


def _spawn_triton(
    model_repository: Path, configured_ports: dict[str, int], state_dir: Path, remembered: dict[str, int]
) -> ServiceRecord:
    server_dir = tritonserver_dir()
    ports = allocate_ports(configured_ports, remembered)
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
    return spawn(TRITON, command, ports, state_dir, env=env)


def _start_triton(settings: Settings, state: StackState, state_dir: Path) -> ServiceRecord:
    ports = {
        "http": settings.stack.triton_http_port,
        "grpc": settings.stack.triton_grpc_port,
        "metrics": settings.stack.triton_metrics_port,
    }
    return _spawn_triton(settings.model_repository, ports, state_dir, _remembered(state, TRITON))


def start_triton_replica(model_repository: Path, state_dir: Path, timeout_s: float = 180.0) -> ServiceRecord:
    """One more tritonserver like the stack's, on free ports, serving ``model_repository`` (and the template
    repository); its log and python environment in ``state_dir`` (one per replica), healthy when this returns.
    Not recorded in any stack state: the caller stops it (:func:`stop_service`). Another Triton replica for
    ``triton.grpc_urls`` on one machine (the benchmark and the failover tests), or a Triton alone."""
    record = _spawn_triton(model_repository, {"http": 0, "grpc": 0, "metrics": 0}, state_dir, {})
    try:
        wait_healthy([record], timeout_s)
    except BaseException:
        stop_service(record, 10.0)
        raise
    return record


def grpc_url(record: ServiceRecord) -> str:
    """The gRPC address (``127.0.0.1:port``) of a Triton record."""
    return f"127.0.0.1:{record.ports['grpc']}"


@contextmanager
def triton_only(model_repository: Path, timeout_s: float = 180.0, stop_timeout_s: float = 20.0) -> Iterator[str]:
    """The stack's Triton alone, on free ports, serving ``model_repository`` (and the template repository) from a
    temporary state dir until the block ends; yields its gRPC address (``127.0.0.1:port``).

    For commands that measure a model they have just written (``evaluate video``) without touching, or needing,
    a running stack."""
    with tempfile.TemporaryDirectory(prefix="diffsentry-triton-") as tmp:
        record = start_triton_replica(model_repository, Path(tmp), timeout_s)
        try:
            yield grpc_url(record)
        finally:
            stop_service(record, stop_timeout_s)


def _start_victoria_metrics(settings: Settings, state: StackState, state_dir: Path) -> ServiceRecord:
    ports = allocate_ports({"http": settings.stack.victoria_metrics_port}, _remembered(state, VICTORIA_METRICS))
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
        # One point per series and millisecond, as InfluxDB keeps one per series and timestamp: a window scored again
        # after a restart replaces its score instead of adding a second point (exports and queries included).
        "-dedup.minScrapeInterval=1ms",
    ]
    return spawn(VICTORIA_METRICS, command, ports, state_dir, data_dir=data_dir)


def _start_postgres(settings: Settings, state: StackState, state_dir: Path) -> ServiceRecord:
    ports = allocate_ports({"postgres": settings.stack.postgres_port}, _remembered(state, POSTGRES))
    return start_postgres(state_dir, ports["postgres"])


def start_postgres(state_dir: Path, port: int) -> ServiceRecord:
    """PostgreSQL with the cluster of ``state_dir`` (initialised on first start) on 127.0.0.1:``port``."""
    data_dir = postgres_data_dir(state_dir)
    user = prepare_cluster(data_dir)
    return spawn(POSTGRES, server_command(data_dir, port), {"postgres": port}, state_dir, data_dir=data_dir, user=user)


STARTERS: dict[str, Callable[[Settings, StackState, Path], ServiceRecord]] = {
    KAFKA: _start_kafka,
    TRITON: _start_triton,
    VICTORIA_METRICS: _start_victoria_metrics,
    OBJECT_STORE: _start_object_store,
    POSTGRES: _start_postgres,
}
BINARIES: dict[str, Callable[[], Path]] = {
    KAFKA: tansu_binary,
    TRITON: tritonserver_dir,
    VICTORIA_METRICS: victoria_metrics_binary,
    OBJECT_STORE: weed_binary,
    POSTGRES: postgres_bin_dir,
}
# The broker last: in durable mode it needs the store's address, and Triton's slower start overlaps the store's.
START_ORDER = (OBJECT_STORE, POSTGRES, TRITON, VICTORIA_METRICS, KAFKA)
# Triton first: its models may still talk to the others while they drain; the store after the broker that uses it.
STOP_ORDER = (TRITON, KAFKA, VICTORIA_METRICS, OBJECT_STORE, POSTGRES)
# PostgreSQL's SIGTERM waits for every client to disconnect; SIGINT ("fast") ends their sessions and stops cleanly.
STOP_SIGNALS = {POSTGRES: signal.SIGINT}


def wait_healthy(records: list[ServiceRecord], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    waiting = list(records)
    while waiting:
        for record in list(waiting):
            if not process_runs(record.pid, record.executable):
                raise StackError(f"{record.name} exited during start; log {record.log}:\n{log_tail(record)}")
            if record_healthy(record):
                waiting.remove(record)
        if waiting and time.monotonic() > deadline:
            names = ", ".join(r.name for r in waiting)
            tails = "\n".join(f"--- {r.log}\n{log_tail(r)}" for r in waiting)
            raise StackError(f"not healthy after {timeout_s:.0f} s: {names}\n{tails}")
        if waiting:
            time.sleep(HEALTH_POLL_S)


def stop_service(record: ServiceRecord, timeout_s: float) -> None:
    stop_process(record.pid, record.executable, timeout_s, STOP_SIGNALS.get(record.name, signal.SIGTERM))
    if record.name == OBJECT_STORE:
        remove_weed_sockets(record)
