"""Migrations: up, down, up again; one head; the schema is what the code expects."""

from __future__ import annotations

import psycopg
from alembic.script import ScriptDirectory

from notifications import migrate, sqlfiles

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


# Personal tables, keyed by user_id first so that they distribute (and colocate) by user.
PERSONAL_TABLES = {"subscriptions", "user_notifications", "api_tokens"}


def test_personal_tables_lead_with_user_id(database_url: str) -> None:
    """Replaces the old comparison with a SQLAlchemy model (notifications/schema.py, gone):
    the migrated schema itself is checked for the property the code relies on."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT c.relname, a.attname"
            " FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid"
            " JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = i.indkey[0]"
            " WHERE i.indisprimary AND c.relname = ANY(%s)",
            [sorted(PERSONAL_TABLES - {"api_tokens"})],
        ).fetchall()
        columns = {
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.columns"
                " WHERE column_name = 'user_id' AND table_name = ANY(%s)",
                [sorted(PERSONAL_TABLES)],
            )
        }
    assert dict(rows) == {"subscriptions": "user_id", "user_notifications": "user_id"}
    assert columns == PERSONAL_TABLES


def test_released_sql_files_are_frozen() -> None:
    """A released migration never changes meaning: its SQL files are byte-for-byte frozen."""
    released = sqlfiles.released()
    assert released, "sql/RELEASED lists the files applied by released revisions"
    changed = {path for path, sha in released.items() if sqlfiles.digest(path) != sha}
    assert not changed, f"released SQL files were edited; add a new version instead: {changed}"
