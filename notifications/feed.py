"""A notification as JSON, the one shape the API, the stream and webhooks all send."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any


def iso(value: datetime) -> str:
    """A timestamp as the API writes it: ISO 8601 in UTC, with a Z."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def notification_json(row: Mapping[str, Any], id_column: str = "id") -> dict[str, Any]:
    """The notification JSON of a notification_feed row (its id under `id_column`)."""
    actor = None
    if row["actor_id"] is not None and row["actor_name"] is not None:
        actor = {"id": row["actor_id"], "name": row["actor_name"]}
    return {
        "id": row[id_column],
        "event_type": row["event_type"],
        "scenario": {"id": row["scenario_id"], "name": row["scenario_name"]},
        "actor": actor,
        "message": row["message"],
        "created_at": iso(row["created_at"]),
        "read_at": iso(row["read_at"]) if row["read_at"] is not None else None,
    }
