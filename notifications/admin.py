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


def set_subscription(
    conn: psycopg.Connection[Any], user_id: int, event_type: str, enabled: bool
) -> None:
    conn.execute("SELECT set_subscription(%s, %s, %s)", [user_id, event_type, enabled])


def purge_read_notifications(conn: psycopg.Connection[Any], older_than: str) -> int:
    row = conn.execute("SELECT purge_read_notifications(%s::interval)", [older_than]).fetchone()
    assert row is not None
    return int(row[0])


def redeliver_event(conn: psycopg.Connection[Any], event_id: int) -> None:
    conn.execute("SELECT redeliver_event(%s)", [event_id])


def delete_user(conn: psycopg.Connection[Any], user_id: int) -> None:
    conn.execute("SELECT delete_user(%s)", [user_id])


def backlog(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """The notification_backlog view as JSON-ready values (ages in seconds)."""
    row = conn.execute(
        "SELECT unprocessed_events, oldest_event_id, oldest_occurred_at,"
        " extract(epoch FROM oldest_age)::double precision"
        " FROM notification_backlog"
    ).fetchone()
    assert row is not None
    return {
        "unprocessed_events": int(row[0]),
        "oldest_event_id": row[1],
        "oldest_occurred_at": row[2].isoformat() if row[2] is not None else None,
        "oldest_age_seconds": round(float(row[3]), 3),
    }


def listeners(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    """One entry per listener process connected to this database (the listener_activity view)."""
    rows = conn.execute(
        "SELECT listener_pid, connection, pid, host(client_addr), backend_start, state,"
        " last_query_at FROM listener_activity ORDER BY listener_pid, connection"
    ).fetchall()
    found: dict[Any, dict[str, Any]] = {}
    for listener_pid, connection, pid, addr, started, state, last_query in rows:
        entry = found.setdefault(
            listener_pid, {"listener_pid": listener_pid, "client_addr": addr, "sessions": {}}
        )
        entry["sessions"][connection] = {
            "backend_pid": pid,
            "backend_start": started.isoformat() if started else None,
            "state": state,
            "last_query_at": last_query.isoformat() if last_query else None,
        }
    return list(found.values())


def user_id_by_name(conn: psycopg.Connection[Any], name: str) -> int | None:
    row = conn.execute("SELECT id FROM users WHERE name = %s", [name]).fetchone()
    return None if row is None else int(row[0])
