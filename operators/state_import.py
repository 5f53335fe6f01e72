"""The sqlite files of the version before the state database (``subscriptions.sqlite``: subscriptions and the
delivery journal; ``lifecycle.sqlite``: silences, windows, acknowledgements, the alert registry and event log),
imported once into it, so an upgrade loses no subscription and no pending delivery.

The rows are copied as they are (secrets stay encrypted with the same key), in the order they were written; a file
imported is renamed ``<name>.imported``, so the next start does not import it again.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from sqlalchemy import Table

from operators.sqlite_store import open_database
from operators.state_db import (
    StateDatabase,
    acknowledgements,
    alert_events,
    alert_registry,
    handled_transitions,
    maintenance_windows,
    notification_deliveries,
    pending_notifications,
    silences,
    subscriptions,
)

LEGACY_FILES: dict[str, tuple[Table, ...]] = {
    "subscriptions.sqlite": (subscriptions, notification_deliveries),
    "lifecycle.sqlite": (
        silences,
        maintenance_windows,
        acknowledgements,
        alert_registry,
        handled_transitions,
        pending_notifications,
        alert_events,
    ),
}


def import_legacy_files(state_dir: Path, database: StateDatabase, instance_id: str) -> list[str]:
    """Imports the legacy files found in ``state_dir``; returns their names. Their pending deliveries are claimed
    by ``instance_id`` (the instance that ran them)."""
    imported = []
    for name, tables in LEGACY_FILES.items():
        path = state_dir / name
        if not path.is_file():
            continue
        legacy = open_database(path)
        try:
            with database.transaction() as db:
                for table in tables:
                    rows = _legacy_rows(legacy, table, instance_id)
                    if rows:
                        db.execute(database.insert(table).on_conflict_do_nothing(), rows)
        finally:
            legacy.close()
        for suffix in ("", "-wal", "-shm"):
            source = path.with_name(name + suffix)
            if source.exists():
                source.rename(path.with_name(f"{name}.imported{suffix}"))
        imported.append(name)
    return imported


def _legacy_rows(legacy: sqlite3.Connection, table: Table, instance_id: str) -> list[dict[str, object]]:
    present = {row[1] for row in legacy.execute(f"PRAGMA table_info({table.name})")}
    if not present:
        return []
    columns = [column.name for column in table.columns if column.name in present and column.name != "seq"]
    order = "seq" if "seq" in present else "rowid"
    cursor = legacy.execute(f"SELECT {', '.join(columns)} FROM {table.name} ORDER BY {order}")
    rows = [dict(zip(columns, values, strict=True)) for values in cursor]
    if table is notification_deliveries:
        for row in rows:  # columns the journal did not have: the lane's group, the claim
            row.update(grp=json.loads(str(row["payload"]))["group"], claimed_by=instance_id, lease_until=0.0)
    return rows
