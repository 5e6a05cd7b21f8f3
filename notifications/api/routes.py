"""The /api/v1 routes. Scenarios are team data; notifications and preferences are personal,
so every query on them is scoped to the authenticated user."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, LiteralString

import psycopg
from flask import Blueprint
from psycopg.rows import DictRow

from notifications import positions
from notifications.api import models
from notifications.api.database import execute
from notifications.api.errors import ApiError, forbidden, invalid, not_found
from notifications.api.routing import Api, Operation
from notifications.queries import query

bp = Blueprint("api_v1", __name__, url_prefix="/api/v1")
api = Api(bp, "/api/v1", title="Notifications API", version="1")

FEED_PAGE = {"all": "feed_page_all", "unread": "feed_page_unread", "read": "feed_page_read"}


def feed_page_sql(status: str) -> LiteralString:
    """A page of the feed, newest first (see queries.sql)."""
    return query(FEED_PAGE[status])


def _one(query_name: str, /, **params: Any) -> DictRow | None:
    return execute(query(query_name), params).fetchone()


def _act_as(me: int) -> None:
    execute(query("act_as"), {"me": me})


# Me


@api.route("GET", "/me", summary="The authenticated user", tag="me", response=models.Me)
def get_me(me: int) -> models.Me:
    row = _one("me", me=me)
    if row is None:  # the token's user was deleted between the two statements
        raise ApiError(401, "unauthorized", "invalid or revoked token")
    return models.Me.model_validate(row)


@api.route(
    "PUT",
    "/me",
    summary="Set or clear your e-mail address",
    tag="me",
    body=models.MeUpdate,
    response=models.Me,
)
def update_me(me: int, body: models.MeUpdate) -> models.Me:
    try:
        _one("me_set_email", me=me, email=body.email)
    except psycopg.errors.InvalidParameterValue:
        raise invalid(
            "email: not an e-mail address (local@domain, at most 254 characters)"
        ) from None
    return get_me(me)


# Scenarios (shared by the team)

_SCENARIO_LINKS = {
    "GetScenario": ("get_scenario", {"id": "$response.body#/id"}),
    "ExecuteScenario": ("execute_scenario", {"id": "$response.body#/id"}),
    "DeleteScenario": ("delete_scenario", {"id": "$response.body#/id"}),
}


def _scenario(row: DictRow | None) -> models.Scenario:
    if row is None:
        raise not_found("scenario")
    return models.Scenario.model_validate(row)


@api.route(
    "GET", "/scenarios", summary="Live scenarios", tag="scenarios", response=models.ScenarioList
)
def list_scenarios(me: int) -> models.ScenarioList:
    rows = execute(query("scenario_list"))
    return models.ScenarioList(items=[_scenario(r) for r in rows])


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
    return _scenario(_one("scenario_create", name=body.name, description=body.description, me=me))


@api.route(
    "GET",
    "/scenarios/{id}",
    summary="A live scenario",
    tag="scenarios",
    params={"id": "id"},
    response=models.Scenario,
)
def get_scenario(me: int, id: int) -> models.Scenario:
    return _scenario(_one("scenario_get", id=id))


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
    return _scenario(_one("scenario_execute", id=id, status=body.status))


@api.route(
    "DELETE",
    "/scenarios/{id}",
    summary="Delete a scenario you created, or any as an admin (its notifications stay readable)",
    tag="scenarios",
    params={"id": "id"},
    status=204,
    errors=(403,),
)
def delete_scenario(me: int, id: int) -> None:
    _act_as(me)
    check = _one("scenario_delete_check", id=id, me=me)
    if check is None:
        raise not_found("scenario")
    if not check["allowed"]:
        raise forbidden("only the scenario's creator or an admin may delete it")
    _one("scenario_delete", id=id)


# Notifications (personal)


def encode_cursor(last_id: int) -> str:
    raw = json.dumps({"before": last_id}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_watermark(watermark: str) -> str:
    """A watermark's snapshot (notifications/positions.py), or a 422."""
    try:
        return positions.decode_watermark(watermark)
    except positions.BadPosition:
        raise invalid("watermark: not a watermark from this API") from None


def decode_cursor(cursor: str) -> int:
    refused = invalid("cursor: not a cursor from this API")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError, RecursionError):
        raise refused from None
    before = data.get("before") if isinstance(data, dict) else None
    if type(before) is not int or not 1 <= before <= models.BIGINT_MAX:
        raise refused
    return before


def _notification(row: DictRow | None) -> models.Notification:
    if row is None:
        raise not_found("notification")
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
    return _notification(_one("feed_item", me=me, id=id))


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
    before = decode_cursor(query.cursor) if query.cursor else None
    snapshot = _one("feed_watermark")
    assert snapshot is not None
    rows = execute(
        feed_page_sql(query.status), {"me": me, "before": before, "limit": query.limit + 1}
    )
    items = [_notification(r) for r in rows]
    next_cursor = None
    if len(items) > query.limit:
        items = items[: query.limit]
        next_cursor = encode_cursor(items[-1].id)
    return models.NotificationPage(
        items=items,
        next_cursor=next_cursor,
        watermark=positions.encode_watermark(snapshot["snapshot"]),
    )


@api.route(
    "GET",
    "/notifications/unread-count",
    summary="How many notifications are unread",
    tag="notifications",
    response=models.UnreadCount,
)
def unread_count(me: int) -> models.UnreadCount:
    row = _one("unread_count", me=me)
    return models.UnreadCount(unread=row["unread"] if row else 0)


def _mark_route(state: str, summary: str) -> None:
    """POST /notifications/{id}/read and .../unread: one shape, two queries."""

    def mark(me: int, id: int) -> models.Notification:
        execute(query(f"mark_{state}"), {"me": me, "id": id})
        return _feed_item(me, id)

    mark.__name__ = f"mark_{state}"  # the operationId the links name
    api.route(
        "POST",
        f"/notifications/{{id}}/{state}",
        summary=summary,
        tag="notifications",
        params={"id": "id"},
        response=models.Notification,
    )(mark)


_mark_route("read", "Mark a notification read (keeps the first read_at)")
_mark_route("unread", "Mark a notification unread")


@api.route(
    "POST",
    "/notifications/read-all",
    summary=(
        "Mark every unread notification read, or only those a feed page could see"
        " (watermark) and up to an id"
    ),
    tag="notifications",
    body=models.ReadAll,
    body_required=False,
    response=models.Updated,
)
def mark_all_read(me: int, body: models.ReadAll) -> models.Updated:
    if body.watermark is None:
        result = execute(query("mark_all_read"), {"me": me, "up_to": body.up_to})
    else:
        snapshot = decode_watermark(body.watermark)
        result = execute(
            query("mark_all_read_watermark"),
            {"me": me, "up_to": body.up_to, "snapshot": snapshot},
        )
    return models.Updated(updated=result.rowcount)


# Preferences (personal)


def _preference(row: DictRow | None) -> models.Preference:
    if row is None:
        raise not_found("event type")
    return models.Preference(
        event_type=row["event_type"],
        description=row["description"],
        enabled=row["enabled"],
        channels=models.Channels(email=row["email"], webhook=row["webhook"]),
    )


@api.route(
    "GET",
    "/preferences",
    summary="Every event type and whether you receive it",
    tag="preferences",
    response=models.PreferenceList,
)
def list_preferences(me: int) -> models.PreferenceList:
    rows = execute(query("preference_list"), {"me": me})
    return models.PreferenceList(items=[_preference(r) for r in rows])


@api.route(
    "PUT",
    "/preferences/{event_type}",
    summary="Choose whether you receive an event type, in the feed and on each channel",
    tag="preferences",
    params={"event_type": "name"},
    examples={"event_type": "scenario.executed"},
    body=models.PreferenceUpdate,
    response=models.Preference,
)
def set_preference(me: int, event_type: str, body: models.PreferenceUpdate) -> models.Preference:
    if _one("preference_get", me=me, event_type=event_type) is None:
        raise not_found("event type")
    if "enabled" in body.model_fields_set:
        _one("preference_set", me=me, event_type=event_type, enabled=body.enabled)
    if "channels" in body.model_fields_set:
        for channel, enabled in sorted(body.channels.items()):
            _one(
                "channel_preference_set",
                me=me,
                event_type=event_type,
                channel=channel,
                enabled=enabled,
            )
    return _preference(_one("preference_get", me=me, event_type=event_type))


# The document itself, and the health routes it describes (served by health.py)


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
