"""State files that hold secrets are 0600, whatever the umask, and files an earlier version left open are closed."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.private_files import write_private_text
from operators.sqlite_store import open_database


@pytest.fixture
def open_umask() -> Iterator[None]:
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("open_umask")
def test_written_files_are_private_from_the_start(tmp_path: Path) -> None:
    path = tmp_path / "worker.yaml"
    write_private_text(path, "api:\n  token: t\n")
    assert mode(path) == 0o600 and path.read_text() == "api:\n  token: t\n"
    path.chmod(0o644)
    write_private_text(path, "short\n")
    assert mode(path) == 0o600 and path.read_text() == "short\n"


@pytest.mark.usefixtures("open_umask")
def test_sqlite_stores_are_private_with_their_journal_files(tmp_path: Path) -> None:
    earlier = tmp_path / "alerts.sqlite"
    earlier.touch(mode=0o644)
    db = open_database(earlier)
    db.execute("CREATE TABLE t (x)")
    db.execute("INSERT INTO t VALUES (1)")
    assert {path.name: mode(path) for path in tmp_path.iterdir()} == {
        "alerts.sqlite": 0o600,
        "alerts.sqlite-wal": 0o600,
        "alerts.sqlite-shm": 0o600,
    }
    db.close()
