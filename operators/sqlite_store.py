"""The one way DiffSentry opens a sqlite file: the per-stream alert state, and the state database's default
(``operators/state_db.py``: subscriptions, the delivery journal, the lifecycle)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from core.private_files import make_private


def open_database(path: Path) -> sqlite3.Connection:
    """A sqlite file in WAL mode, autocommit, shareable across threads (callers hold their own lock).

    ``synchronous=NORMAL`` in WAL mode loses nothing when the process dies, only on power loss, and keeps a
    commit per score or per delivery in microseconds (FULL fsyncs each commit, ~4 ms here).

    The file is 0600 (it holds subscriptions and alert state); sqlite gives its ``-wal`` and ``-shm`` files the
    database file's mode.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    make_private(path)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db
