"""Thin wrappers over the admin SQL functions, for the CLI and the demo seed.

The logic lives in SQL (sql/v1/admin.sql) so that psql and the CLI behave the same; the
calls themselves are named queries (sql/queries.sql).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

from notifications.queries import query

Conn = psycopg.Connection[Any]


def _value(conn: Conn, query_name: str, /, **params: Any) -> Any:
    row = conn.execute(query(query_name), params).fetchone()
    return None if row is None else row[0]


def create_user(conn: Conn, name: str, email: str | None = None, is_admin: bool = False) -> int:
    return int(_value(conn, "create_user", name=name, email=email, is_admin=is_admin))


def issue_token(conn: Conn, user_id: int, valid_for: str | None = None) -> str:
    """A new token; with valid_for (a PostgreSQL interval) it expires after that long."""
    if valid_for is None:
        return str(_value(conn, "issue_token", user_id=user_id))
    return str(_value(conn, "issue_expiring_token", user_id=user_id, valid_for=valid_for))


def revoke_tokens(conn: Conn, user_id: int) -> int:
    return int(_value(conn, "revoke_tokens", user_id=user_id))


def set_subscription(conn: Conn, user_id: int, event_type: str, enabled: bool) -> None:
    conn.execute(
        query("set_subscription"),
        {"user_id": user_id, "event_type": event_type, "enabled": enabled},
    )


def purge_read_notifications(conn: Conn, older_than: str) -> int:
    return int(_value(conn, "purge_read_notifications", older_than=older_than))


def purge_processed_events(conn: Conn, older_than: str) -> int:
    return int(_value(conn, "purge_processed_events", older_than=older_than))


def purge_deleted_scenarios(conn: Conn, older_than: str) -> int:
    return int(_value(conn, "purge_deleted_scenarios", older_than=older_than))


def purge_unread_notifications(
    conn: Conn, older_than: str | None, keep_per_user: int | None
) -> int:
    return int(
        _value(
            conn,
            "purge_unread_notifications",
            older_than=older_than,
            keep_per_user=keep_per_user,
        )
    )


def finish_user_deletions(conn: Conn) -> int:
    return int(_value(conn, "finish_user_deletions"))


def redeliver_event(conn: Conn, event_id: int) -> None:
    conn.execute(query("redeliver_event"), {"event_id": event_id})


def retry_delivery(conn: Conn, delivery_id: int) -> None:
    conn.execute(query("retry_delivery"), {"id": delivery_id})


def replay_endpoint_deliveries(
    conn: Conn, endpoint_id: int, since: datetime, until: datetime
) -> int:
    return int(
        _value(
            conn,
            "replay_endpoint_deliveries",
            endpoint_id=endpoint_id,
            since=since,
            until=until,
        )
    )


def delete_user(conn: Conn, user_id: int) -> None:
    conn.execute(query("delete_user"), {"user_id": user_id})


def backlog(conn: Conn) -> dict[str, Any]:
    """The notification_backlog view as JSON-ready values (ages in seconds)."""
    row = conn.execute(query("backlog")).fetchone()
    assert row is not None  # an aggregate always has a row
    unprocessed, oldest_id, oldest_at, oldest_age, set_aside, failing = row
    return {
        "unprocessed_events": int(unprocessed),
        "oldest_event_id": oldest_id,
        "oldest_occurred_at": oldest_at.isoformat() if oldest_at is not None else None,
        "oldest_age_seconds": round(float(oldest_age), 3),
        "set_aside_events": int(set_aside),
        "failing_events": failing,
    }


def listeners(conn: Conn) -> list[dict[str, Any]]:
    """One entry per listener process connected to this database (the listener_activity view)."""
    found: dict[Any, dict[str, Any]] = {}
    for listener_pid, connection, pid, addr, started, state, last_query in conn.execute(
        query("listeners")
    ):
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


def user_id_by_name(conn: Conn, name: str) -> int | None:
    user_id = _value(conn, "user_id_by_name", name=name)
    return None if user_id is None else int(user_id)
