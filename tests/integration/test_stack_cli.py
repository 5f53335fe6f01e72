"""`diffsentry stack up/status/down` and `diffsentry doctor` as a user runs them, on a stack of their own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.state import StackState, process_runs
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
    code, status = _status(cli_env)
    assert code != 0
    assert [s["healthy"] for s in status] == [True, True, False]

    # `up` again restarts only what is gone.
    assert _cli(cli_env, "stack", "up").returncode == 0
    code, status = _status(cli_env)
    assert code == 0
    restarted = {s["name"]: s["pid"] for s in status}
    assert restarted["kafka"] == pids["kafka"] and restarted["triton"] == pids["triton"]
    assert restarted["victoria-metrics"] != pids["victoria-metrics"]
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
