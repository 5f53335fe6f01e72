"""The shared state's database: subscriptions, the delivery journal, silences, acknowledgements, the alert registry.

One schema (SQLAlchemy Core tables below), two back ends: a sqlite file (the default, ``<state_dir>/state.sqlite``,
one instance) or PostgreSQL (``database.url = postgresql+psycopg://...``) that several API and alerting instances
share. The schema changes only through the alembic migrations in ``operators/migrations``; :func:`migrate` runs them
to head when a database is opened, so every instance brings the schema it needs.

The engine is synchronous on purpose: every query here is one short statement on an indexed table (microseconds on
sqlite, one round trip on a local PostgreSQL), so the event loop calls the stores directly, as it did with sqlite3,
and no query needs a thread hop or an async driver.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url

from operators.sqlite_store import open_database

MIGRATIONS = Path(__file__).with_name("migrations")
SQLITE_FILE = "state.sqlite"
# Any constant: the key of the PostgreSQL advisory lock that makes instances starting together migrate one at a time.
_MIGRATION_LOCK = 0x6466_7374

metadata = MetaData()

# Integer ``seq`` keys keep insertion order on both back ends (sqlite's rowid is not portable).
subscriptions = Table(
    "subscriptions",
    metadata,
    Column("id", Text, primary_key=True),
    Column("spec", Text, nullable=False),  # the spec without its write-only fields
    Column("secret", Text),  # encrypted
    Column("apprise_urls", Text),  # encrypted JSON list
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)
state_meta = Table(
    "state_meta",
    metadata,
    Column("name", Text, primary_key=True),
    Column("value", Text, nullable=False),
)
notification_deliveries = Table(
    "notification_deliveries",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("subscription_id", Text, nullable=False),
    Column("notification_id", Text, nullable=False),
    Column("channel", Text, nullable=False),
    Column("grp", Text, nullable=False),  # the notification's group: with subscription and channel, an ordered lane
    Column("payload", Text, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("outcome", Text, nullable=False, server_default="pending"),
    Column("last_error", Text),
    Column("updated_at", Float, nullable=False),
    Column("claimed_by", Text, nullable=False),  # the instance that sends it...
    Column("lease_until", Float, nullable=False),  # ...while it renews this; after it, any instance may take it
    UniqueConstraint("subscription_id", "notification_id", "channel", name="notification_deliveries_once"),
    Index("notification_deliveries_by_time", "updated_at"),
    Index("notification_deliveries_pending", "outcome", "lease_until"),
    Index("notification_deliveries_by_lane", "subscription_id", "channel", "grp", "seq"),
)
silences = Table(
    "silences",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", Text, nullable=False, unique=True),
    Column("body", Text, nullable=False),
    Column("ends_at", Float, nullable=False),
    Column("expiry_announced", Integer, nullable=False, server_default="0"),
)
maintenance_windows = Table(
    "maintenance_windows",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", Text, nullable=False, unique=True),
    Column("body", Text, nullable=False),
)
acknowledgements = Table(
    "acknowledgements",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("alert_id", Text, nullable=False, unique=True),
    Column("body", Text, nullable=False),
)
alert_registry = Table(
    "alert_registry",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("alert_id", Text, nullable=False, unique=True),
    Column("alert", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("notified_at", Float),
    Column("repeat_count", Integer, nullable=False, server_default="0"),
)
handled_transitions = Table(
    "handled_transitions",
    metadata,
    Column("key", Text, primary_key=True),
    Column("at", Float, nullable=False),
)
pending_notifications = Table(
    "pending_notifications",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("alert_id", Text, nullable=False, unique=True),
    Column("grp", Text, nullable=False),
    Column("alert", Text, nullable=False),
    Column("since", Float, nullable=False),
)
alert_events = Table(
    "alert_events",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("event_id", Text, nullable=False, unique=True),
    Column("at", Float, nullable=False),
    Column("alert_id", Text),
    Column("body", Text, nullable=False),
    Index("alert_events_by_alert", "alert_id", "seq"),
)


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def state_database_url(url: str | None, state_dir: Path) -> str:
    """``database.url`` when set, else the sqlite file in the state dir."""
    return url or sqlite_url(state_dir / SQLITE_FILE)


class StateDatabase:
    """An engine on a migrated database; the stores share one (its connection pool, and a thread's transaction)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._local = threading.local()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """The thread's open transaction when there is one (what runs here joins it: the Notifier's handling of a
        transition and the journal rows of its notification commit together), else a new one, committed at the end.
        """
        current: Connection | None = getattr(self._local, "connection", None)
        if current is not None:
            yield current
            return
        with self.engine.begin() as connection:
            self._local.connection = connection
            try:
                yield connection
            finally:
                self._local.connection = None

    @classmethod
    def open(cls, url: str) -> StateDatabase:
        """The database at ``url`` with its schema migrated to head (a sqlite file is created, private, if new)."""
        engine = _engine(url)
        migrate(engine)
        return cls(engine)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def insert(self, table: Table) -> Any:
        """An INSERT of this dialect, for its ``on_conflict_do_nothing``/``on_conflict_do_update`` (same on both)."""
        return (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(table)

    def insert_new(self, connection: Connection, statement: Any) -> bool:
        """Runs an INSERT of ``insert`` as ON CONFLICT DO NOTHING; True when it added the row. Asked with RETURNING,
        not rowcount: through SQLAlchemy, psycopg reports a rowcount of -1 for it."""
        key = statement.on_conflict_do_nothing().returning(*statement.table.primary_key.columns)
        return connection.execute(key).first() is not None

    def close(self) -> None:
        self.engine.dispose()


def _engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        # pool_pre_ping: a connection the server dropped (a restart) is replaced instead of failing a request.
        return create_engine(url, pool_pre_ping=True)
    if not parsed.database:
        raise ValueError(f"database.url {url!r}: a sqlite URL names a file (sqlite:///path/state.sqlite)")
    path = Path(parsed.database)
    # The one way sqlite files are opened (WAL, private, autocommit: transactions are begun below, not by the driver).
    engine = create_engine(url, creator=lambda: open_database(path))

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        # IMMEDIATE takes the write lock at the start: two writers queue instead of one failing to upgrade its lock.
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def migrate(target: str | Engine) -> None:
    """``alembic upgrade head`` on the database at ``target`` (a URL or an engine); a no-op when it is at head."""
    engine = _engine(target) if isinstance(target, str) else target
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    if isinstance(target, str):
        engine.dispose()
