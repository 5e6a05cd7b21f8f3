"""One claimed delivery, what its send needs, and what came of it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from notifications.feed import notification_json

Outcome = Literal["delivered", "retry", "dead", "gone"]


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
        return notification_json(self.row, id_column="event_id")


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    error: str | None = None
    http_status: int | None = None
    smtp_reply: str | None = None
    retry_after: float | None = None
