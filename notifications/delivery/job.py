"""One claimed delivery, what its send needs, and what came of it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

Outcome = Literal["delivered", "retry", "dead", "gone"]


def iso(value: datetime) -> str:
    """As the API writes timestamps (notifications/api/models.py)."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Job:
    user_id: int
    id: int
    event_id: int
    channel: str
    endpoint_id: int | None
    attempts: int
    row: dict[str, Any]  # the claim's row: notification_feed, endpoint, address

    @property
    def found(self) -> bool:
        return bool(self.row["found"])

    @property
    def event_type(self) -> str:
        return str(self.row["event_type"])

    def notification(self) -> dict[str, Any]:
        """The notification JSON exactly as the API renders it."""
        r = self.row
        actor = None
        if r["actor_id"] is not None and r["actor_name"] is not None:
            actor = {"id": r["actor_id"], "name": r["actor_name"]}
        return {
            "id": r["event_id"],
            "event_type": r["event_type"],
            "scenario": {"id": r["scenario_id"], "name": r["scenario_name"]},
            "actor": actor,
            "message": r["message"],
            "created_at": iso(r["created_at"]),
            "read_at": iso(r["read_at"]) if r["read_at"] is not None else None,
        }


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    error: str | None = None
    http_status: int | None = None
    smtp_reply: str | None = None
    retry_after: float | None = None
