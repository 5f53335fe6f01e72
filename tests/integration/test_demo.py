"""``diffsentry demo --keep`` in a fresh state dir, as ``DIFFSENTRY_STATE_DIR=$(mktemp -d) make demo`` runs it:

- exit 0, its output (training included: the state dir is new) short and ending with the summary;
- nothing written inside the checkout (ignored files included);
- every URL it printed answers from here too, and ``stack down`` then stops the kept worker with the stack.

It trains the two small models (~1.5 min on 2 cores) and replays SKAB and Ped2: about 3 minutes.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from core.settings import Settings
from core.stack_state import StackState, process_runs
from pipeline.demo_models import data_dir
from triton_models.paths import SOURCE_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Not part of the checkout's files: git's own and the environment `make` creates.
OUTSIDE = {".git", ".venv"}
OUTPUT_LIMIT = 5_000


def checkout_files(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``root`` (ignored ones included) with its mtime and size."""
    found = {}
    for directory, folders, files in os.walk(root):
        folders[:] = [f for f in folders if not (Path(directory) == root and f in OUTSIDE)]
        for name in folders + files:
            path = Path(directory, name)
            stat = path.lstat()
            found[str(path.relative_to(root))] = (stat.st_mtime_ns, stat.st_size if path.is_file() else 0)
    return found


def demo_environment(tmp_path: Path) -> dict[str, str]:
    """What `DIFFSENTRY_STATE_DIR=$(mktemp -d) make demo` gives the demo: the Makefile's bytecode prefix (under the
    venv there), this source tree, no other DIFFSENTRY_* settings; bytecode is written, as on a fresh machine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIFFSENTRY_") and k != "PYTHONDONTWRITEBYTECODE"}
    env["DIFFSENTRY_STATE_DIR"] = str(tmp_path / "state")
    env["PYTHONPYCACHEPREFIX"] = str(tmp_path / "pycache")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SOURCE_ROOT), os.environ.get("PYTHONPATH")) if p)
    return env


def test_demo_in_a_fresh_state_dir_writes_nothing_into_the_checkout_and_its_urls_answer(tmp_path: Path) -> None:
    if not (data_dir(Settings()) / "skab").is_dir() or not (data_dir(Settings()) / "ped2").is_dir():
        pytest.skip("SKAB/Ped2 not found (set DIFFSENTRY_DATA_DIR or place them at ../shared/data)")
    env = demo_environment(tmp_path)
    state_dir = Path(env["DIFFSENTRY_STATE_DIR"])
    before = checkout_files(SOURCE_ROOT)
    cli = [sys.executable, "-m", "pipeline.cli"]
    try:
        demo = subprocess.run(
            [*cli, "demo", "--keep"],
            cwd=SOURCE_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=540,
        )
        output = demo.stdout
        (tmp_path / "demo.log").write_text(output)
        assert demo.returncode == 0, f"exit {demo.returncode}; output in {tmp_path / 'demo.log'}:\n{output[-3000:]}"
        assert len(output.encode()) < OUTPUT_LIMIT, output
        assert "\r" not in output, "progress on a pipe is plain lines, not a redrawn bar"
        lines = output.rstrip().splitlines()
        assert lines[-1].startswith("demo finished in ") and "alerts reached the subscriber" in lines[-1]
        assert any(line.startswith("Summary (") for line in lines[-25:]), output

        console = r"^console: http://\S+/console/ \(log in with the API token [0-9a-f]+\), up after the summary"
        assert re.search(console, output, re.MULTILINE), "the console is announced once the worker is up"
        printed = re.findall(r"^ {4}[\w ]+: +(http://\S+)(?: \(([^)]*)\))?  answers$", output, re.MULTILINE)
        labels = re.findall(r"^ {4}([\w ]+): +http://", output, re.MULTILINE)
        expected = {"console", "sensor scores", "PromQL", "video scores", "alerts", "Triton", "metrics", "API"}
        assert expected <= set(labels)
        assert len(printed) == len(labels), "every printed URL answered the demo"
        token = re.search(r"API token ([0-9a-f]+)", output)
        assert token is not None
        for url, note in printed:
            headers = {"Authorization": f"Bearer {token.group(1)}"} if note == "bearer token" else {}
            assert httpx.get(url, headers=headers, timeout=10, follow_redirects=True).is_success, url
        attached = StackState.load(state_dir).attached
        assert len(attached) == 1 and all(process_runs(r.pid, r.executable) for r in attached.values())
    finally:
        down = subprocess.run([*cli, "stack", "down"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert down.returncode == 0, down.stderr
    assert "demo-worker-" in down.stdout, down.stdout
    assert not any(process_runs(r.pid, r.executable) for r in attached.values())
    after = checkout_files(SOURCE_ROOT)
    written = sorted(path for path in after if after[path] != before.get(path))
    assert written == [], f"written inside the checkout: {written[:20]}"
    assert (state_dir / "model_repository" / "ts_diffusion" / "model_card.json").exists()
