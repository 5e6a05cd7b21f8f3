"""Thin wrappers over the admin SQL functions, for the CLI and the demo seed.

The logic lives in SQL (sql/v1/admin.sql) so that psql and the CLI behave the same.
"""

from __future__ import annotations

from typing import Any

import psycopg


def create_user(conn: psycopg.Connection[Any], name: str) -> int:
    row = conn.execute("SELECT create_user(%s)", [name]).fetchone()
    assert row is not None
    return int(row[0])


def issue_token(conn: psycopg.Connection[Any], user_id: int) -> str:
    row = conn.execute("SELECT issue_token(%s)", [user_id]).fetchone()
    assert row is not None
    return str(row[0])


def revoke_tokens(conn: psycopg.Connection[Any], user_id: int) -> int:
    row = conn.execute("SELECT revoke_tokens(%s)", [user_id]).fetchone()
    assert row is not None
    return int(row[0])


def set_subscription(conn: psycopg.Connection[Any], user_id: int, event_type: str, enabled: bool) -> None:
    conn.execute("SELECT set_subscription(%s, %s, %s)", [user_id, event_type, enabled])


def purge_read_notifications(conn: psycopg.Connection[Any], older_than: str) -> int:
    row = conn.execute("SELECT purge_read_notifications(%s::interval)", [older_than]).fetchone()
    assert row is not None
    return int(row[0])


def user_id_by_name(conn: psycopg.Connection[Any], name: str) -> int | None:
    row = conn.execute("SELECT id FROM users WHERE name = %s", [name]).fetchone()
    return None if row is None else int(row[0])
