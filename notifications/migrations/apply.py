"""Runs frozen SQL files inside the migration's transaction."""

from __future__ import annotations

from alembic import op

from notifications.sqlfiles import read_sql


def apply_sql(*paths: str) -> None:
    # The raw psycopg connection: SQLAlchemy's text() would read ':' and '%' in the SQL
    # as bind parameters. Same connection, same transaction as the rest of the revision.
    raw = op.get_bind().connection.driver_connection
    for path in paths:
        raw.execute(read_sql(path))  # type: ignore[union-attr]
