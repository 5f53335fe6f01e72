"""The one way DiffSentry opens its small durable stores (alert state, subscriptions, delivery journal)."""

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
