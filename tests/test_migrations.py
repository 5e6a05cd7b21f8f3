"""Migrations: up, down, up again; one head; the schema is what the code expects."""

from __future__ import annotations

from typing import Any

import psycopg
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, pool

from notifications import migrate, sqlfiles
from notifications.db import sqlalchemy_url
from notifications.schema import metadata

CONTRACT_FUNCTIONS = {
    "create_user",
    "issue_token",
    "revoke_tokens",
    "set_subscription",
    "purge_read_notifications",
}
CONTRACT_TABLES = {
    "users",
    "event_types",
    "test_scenarios",
    "subscriptions",
    "scenario_events",
    "user_notifications",
}


def _objects(url: str) -> dict[str, set[str]]:
    with psycopg.connect(url) as conn:
        tables = {
            r[0]
            for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
        views = {
            r[0] for r in conn.execute("SELECT viewname FROM pg_views WHERE schemaname = 'public'")
        }
        functions = {
            r[0]
            for r in conn.execute(
                "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
                " WHERE n.nspname = 'public'"
            )
        }
        triggers = {
            r[0] for r in conn.execute("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")
        }
    return {"tables": tables, "views": views, "functions": functions, "triggers": triggers}


def test_upgrade_downgrade_upgrade(empty_database_url: str) -> None:
    url = empty_database_url
    migrate.upgrade(url)
    first = _objects(url)
    assert first["tables"] >= CONTRACT_TABLES
    assert first["functions"] >= CONTRACT_FUNCTIONS
    assert "notification_backlog" in first["views"]
    assert migrate.current_revision(url) == migrate.head_revision()

    migrate.downgrade(url, "base")
    empty = _objects(url)
    assert empty["tables"] <= {"alembic_version"}
    assert not empty["views"]
    assert not empty["functions"]
    assert not empty["triggers"]

    migrate.upgrade(url)
    assert _objects(url) == first


def test_single_head() -> None:
    script = ScriptDirectory.from_config(migrate.alembic_config("postgresql://localhost/x"))
    assert len(script.get_heads()) == 1


def test_migrated_schema_matches_code(database_url: str) -> None:
    engine = create_engine(sqlalchemy_url(database_url), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": False}
            )
            diff: list[Any] = compare_metadata(ctx, metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_released_sql_files_are_frozen() -> None:
    """A released migration never changes meaning: its SQL files are byte-for-byte frozen."""
    released = sqlfiles.released()
    assert released, "sql/RELEASED lists the files applied by released revisions"
    changed = {path for path, sha in released.items() if sqlfiles.digest(path) != sha}
    assert not changed, f"released SQL files were edited; add a new version instead: {changed}"
