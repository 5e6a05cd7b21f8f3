"""The /api/v1 routes. Scenarios are team data; notifications and preferences are personal,
so every query on them is scoped to the authenticated user."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from flask import Blueprint
from sqlalchemy import RowMapping, text

from app.api import models
from app.api.registry import Api, Operation
from app.database import session
from app.errors import ApiError

bp = Blueprint("api_v1", __name__, url_prefix="/api/v1")
api = Api(bp, "/api/v1", title="Notifications API", version="1")

SCENARIO_COLUMNS = "id, name, description, created_by, created_at, last_executed_at, last_status"
FEED_COLUMNS = (
    "id, event_type, scenario_id, scenario_name, actor_id, actor_name, message, created_at, read_at"
)
FEED_FILTERS = {"all": "", "unread": " AND read_at IS NULL", "read": " AND read_at IS NOT NULL"}
# Counted on user_notifications alone: an index-only scan of the partial unread index.
UNREAD_COUNT_SQL = "SELECT count(*) FROM user_notifications WHERE user_id = :me AND read_at IS NULL"
PREFERENCES_SQL = """
SELECT t.name AS event_type, t.description, coalesce(s.enabled, t.default_enabled) AS enabled
FROM event_types t
LEFT JOIN subscriptions s ON s.user_id = :me AND s.event_type = t.name
"""


def feed_sql(status: str, after_cursor: bool) -> str:
    """A page of the feed, newest first: a backward range scan of (user_id, event_id) on the
    primary key, or on the partial unread index for the unread feed."""
    cursor = " AND id < :before" if after_cursor else ""
    return (
        f"SELECT {FEED_COLUMNS} FROM notification_feed"
        f" WHERE user_id = :me{FEED_FILTERS[status]}{cursor}"
        " ORDER BY id DESC LIMIT :limit"
    )


def _one(sql: str, **params: Any) -> RowMapping | None:
    return session().execute(text(sql), params).mappings().first()


def _act_as(me: int) -> None:
    # Transaction-local, so the triggers name the actor and a pooled connection forgets it.
    session().execute(
        text("SELECT set_config('notifications.actor_id', :uid, true)"), {"uid": str(me)}
    )


def _not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"no such {what}")


# Me


@api.route("GET", "/me", summary="The authenticated user", tag="me", response=models.Me)
def get_me(me: int) -> models.Me:
    row = _one("SELECT id, name FROM users WHERE id = :me", me=me)
    if row is None:  # the token's user was deleted between the two statements
        raise ApiError(401, "unauthorized", "invalid or revoked token")
    return models.Me.model_validate(dict(row))


# Scenarios (shared by the team)

_SCENARIO_LINKS = {
    "GetScenario": ("get_scenario", {"id": "$response.body#/id"}),
    "ExecuteScenario": ("execute_scenario", {"id": "$response.body#/id"}),
    "DeleteScenario": ("delete_scenario", {"id": "$response.body#/id"}),
}


def _scenario(row: RowMapping | None) -> models.Scenario:
    if row is None:
        raise _not_found("scenario")
    return models.Scenario.model_validate(dict(row))


@api.route(
    "GET", "/scenarios", summary="Live scenarios", tag="scenarios", response=models.ScenarioList
)
def list_scenarios(me: int) -> models.ScenarioList:
    rows = session().execute(
        text(f"SELECT {SCENARIO_COLUMNS} FROM test_scenarios WHERE deleted_at IS NULL ORDER BY id")
    )
    return models.ScenarioList(items=[_scenario(r) for r in rows.mappings()])


@api.route(
    "POST",
    "/scenarios",
    summary="Create a scenario",
    tag="scenarios",
    body=models.ScenarioCreate,
    response=models.Scenario,
    status=201,
    links=_SCENARIO_LINKS,
)
def create_scenario(me: int, body: models.ScenarioCreate) -> models.Scenario:
    _act_as(me)
    row = _one(
        "INSERT INTO test_scenarios (name, description, created_by)"
        f" VALUES (:name, :description, :me) RETURNING {SCENARIO_COLUMNS}",
        name=body.name,
        description=body.description,
        me=me,
    )
    return _scenario(row)


@api.route(
    "GET",
    "/scenarios/{id}",
    summary="A live scenario",
    tag="scenarios",
    params={"id": "id"},
    response=models.Scenario,
)
def get_scenario(me: int, id: int) -> models.Scenario:
    return _scenario(
        _one(
            f"SELECT {SCENARIO_COLUMNS} FROM test_scenarios WHERE id = :id AND deleted_at IS NULL",
            id=id,
        )
    )


@api.route(
    "POST",
    "/scenarios/{id}/executions",
    summary="Record an execution of a scenario",
    tag="scenarios",
    params={"id": "id"},
    body=models.ExecutionCreate,
    response=models.Scenario,
    status=201,
)
def execute_scenario(me: int, id: int, body: models.ExecutionCreate) -> models.Scenario:
    _act_as(me)
    return _scenario(
        _one(
            "UPDATE test_scenarios SET last_executed_at = clock_timestamp(), last_status = :status"
            f" WHERE id = :id AND deleted_at IS NULL RETURNING {SCENARIO_COLUMNS}",
            id=id,
            status=body.status,
        )
    )


@api.route(
    "DELETE",
    "/scenarios/{id}",
    summary="Delete a scenario (its notifications stay readable)",
    tag="scenarios",
    params={"id": "id"},
    status=204,
)
def delete_scenario(me: int, id: int) -> None:
    _act_as(me)
    if (
        _one(
            "UPDATE test_scenarios SET deleted_at = now()"
            " WHERE id = :id AND deleted_at IS NULL RETURNING id",
            id=id,
        )
        is None
    ):
        raise _not_found("scenario")


# Notifications (personal)


def encode_cursor(last_id: int) -> str:
    raw = json.dumps({"before": last_id}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    invalid = ApiError(422, "invalid", "cursor: not a cursor from this API")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError, RecursionError):
        raise invalid from None
    before = data.get("before") if isinstance(data, dict) else None
    if type(before) is not int or not 1 <= before <= models.BIGINT_MAX:
        raise invalid
    return before


def _notification(row: RowMapping | None) -> models.Notification:
    if row is None:
        raise _not_found("notification")
    actor = None
    if row["actor_id"] is not None and row["actor_name"] is not None:
        actor = models.Ref(id=row["actor_id"], name=row["actor_name"])
    return models.Notification(
        id=row["id"],
        event_type=row["event_type"],
        scenario=models.Ref(id=row["scenario_id"], name=row["scenario_name"]),
        actor=actor,
        message=row["message"],
        created_at=row["created_at"],
        read_at=row["read_at"],
    )


def _feed_item(me: int, id: int) -> models.Notification:
    return _notification(
        _one(
            f"SELECT {FEED_COLUMNS} FROM notification_feed WHERE user_id = :me AND id = :id",
            me=me,
            id=id,
        )
    )


_NOTIFICATION_LINKS = {
    "MarkFirstRead": ("mark_read", {"id": "$response.body#/items/0/id"}),
    "MarkFirstUnread": ("mark_unread", {"id": "$response.body#/items/0/id"}),
}


@api.route(
    "GET",
    "/notifications",
    summary="The feed, newest first, a page at a time",
    tag="notifications",
    query=models.FeedQuery,
    response=models.NotificationPage,
    links=_NOTIFICATION_LINKS,
)
def list_notifications(me: int, query: models.FeedQuery) -> models.NotificationPage:
    params: dict[str, Any] = {"me": me, "limit": query.limit + 1}
    if query.cursor:
        params["before"] = decode_cursor(query.cursor)
    rows = session().execute(text(feed_sql(query.status, "before" in params)), params)
    items = [_notification(r) for r in rows.mappings()]
    next_cursor = None
    if len(items) > query.limit:
        items = items[: query.limit]
        next_cursor = encode_cursor(items[-1].id)
    return models.NotificationPage(items=items, next_cursor=next_cursor)


@api.route(
    "GET",
    "/notifications/unread-count",
    summary="How many notifications are unread",
    tag="notifications",
    response=models.UnreadCount,
)
def unread_count(me: int) -> models.UnreadCount:
    count = session().execute(text(UNREAD_COUNT_SQL), {"me": me}).scalar_one()
    return models.UnreadCount(unread=count)


@api.route(
    "POST",
    "/notifications/{id}/read",
    summary="Mark a notification read (keeps the first read_at)",
    tag="notifications",
    params={"id": "id"},
    response=models.Notification,
)
def mark_read(me: int, id: int) -> models.Notification:
    session().execute(
        text(
            "UPDATE user_notifications SET read_at = now()"
            " WHERE user_id = :me AND event_id = :id AND read_at IS NULL"
        ),
        {"me": me, "id": id},
    )
    return _feed_item(me, id)


@api.route(
    "POST",
    "/notifications/{id}/unread",
    summary="Mark a notification unread",
    tag="notifications",
    params={"id": "id"},
    response=models.Notification,
)
def mark_unread(me: int, id: int) -> models.Notification:
    session().execute(
        text(
            "UPDATE user_notifications SET read_at = NULL"
            " WHERE user_id = :me AND event_id = :id AND read_at IS NOT NULL"
        ),
        {"me": me, "id": id},
    )
    return _feed_item(me, id)


@api.route(
    "POST",
    "/notifications/read-all",
    summary="Mark every unread notification read, or those up to an id",
    tag="notifications",
    body=models.ReadAll,
    body_required=False,
    response=models.Updated,
)
def mark_all_read(me: int, body: models.ReadAll) -> models.Updated:
    bound = " AND event_id <= :up_to" if body.up_to is not None else ""
    result = session().execute(
        text(
            "UPDATE user_notifications SET read_at = now()"
            f" WHERE user_id = :me AND read_at IS NULL{bound}"
        ),
        {"me": me, "up_to": body.up_to},
    )
    return models.Updated(updated=result.rowcount)  # type: ignore[attr-defined]


# Preferences (personal)


@api.route(
    "GET",
    "/preferences",
    summary="Every event type and whether you receive it",
    tag="preferences",
    response=models.PreferenceList,
)
def list_preferences(me: int) -> models.PreferenceList:
    rows = session().execute(text(PREFERENCES_SQL + " ORDER BY t.name"), {"me": me})
    return models.PreferenceList(
        items=[models.Preference.model_validate(dict(r)) for r in rows.mappings()]
    )


@api.route(
    "PUT",
    "/preferences/{event_type}",
    summary="Choose whether you receive an event type",
    tag="preferences",
    params={"event_type": "name"},
    examples={"event_type": "scenario.executed"},
    body=models.PreferenceUpdate,
    response=models.Preference,
)
def set_preference(me: int, event_type: str, body: models.PreferenceUpdate) -> models.Preference:
    where = " WHERE t.name = :event_type"
    if _one(PREFERENCES_SQL + where, me=me, event_type=event_type) is None:
        raise _not_found("event type")
    session().execute(
        text("SELECT set_subscription(:me, :event_type, :enabled)"),
        {"me": me, "event_type": event_type, "enabled": body.enabled},
    )
    row = _one(PREFERENCES_SQL + where, me=me, event_type=event_type)
    return models.Preference.model_validate(dict(row or {}))


# The document itself, and the health routes it describes (served by app.health)


@api.route(
    "GET",
    "/openapi.json",
    summary="This OpenAPI document",
    tag="meta",
    auth=False,
)
def openapi() -> dict[str, Any]:
    return api.spec()


api.document(
    Operation(
        "GET",
        "/healthz",
        "healthz",
        "200 while the process runs",
        "health",
        response=models.Health,
        auth=False,
    )
)
api.document(
    Operation(
        "GET",
        "/readyz",
        "readyz",
        "200 when the database answers and is migrated",
        "health",
        response=models.Readiness,
        other_statuses={503: models.Readiness},
        auth=False,
    )
)
api.document(
    Operation(
        "GET",
        "/metrics",
        "metrics",
        "Prometheus text format",
        "health",
        media_type="text/plain",
        auth=False,
    )
)
