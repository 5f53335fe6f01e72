"""Alembic's entry point: runs the migrations on the connection :func:`operators.state_db.migrate` passes in."""

from __future__ import annotations

from alembic import context

from operators.state_db import metadata

context.configure(connection=context.config.attributes["connection"], target_metadata=metadata)
with context.begin_transaction():
    context.run_migrations()
