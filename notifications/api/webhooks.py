"""/api/v1/webhooks: a user's webhook endpoints and their delivery log (personal data).

An endpoint's secret is made here, returned once in the creation's answer, and never read
back (the API's role has no SELECT on it). A URL must be http(s), carry no credentials and,
unless WEBHOOK_ALLOW_PRIVATE=1, resolve to public addresses only; the deliverer checks the
address again at every send (notifications/netguard.py), since a name may move.
"""

from __future__ import annotations

import base64
import ipaddress
import secrets
import socket
from typing import Any
from urllib.parse import urlsplit

from flask import current_app
from psycopg.rows import DictRow

from notifications.api import models
from notifications.api.database import execute
from notifications.api.errors import invalid, not_found
from notifications.api.routes import api, decode_cursor, encode_cursor
from notifications.netguard import refuse_private
from notifications.queries import query as named

# 32 random bytes: the Standard Webhooks specification asks for 24 to 64.
SECRET_BYTES = 32


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def refuse_url(url: str, allow_private: bool) -> str | None:
    """Why `url` cannot be a webhook endpoint, or None."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "not a valid URL"
    if parts.scheme not in ("http", "https"):
        return "must be an http:// or https:// URL"
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        return "must not contain credentials (user:password@)"
    host = parts.hostname
    if not host:
        return "has no host"
    if allow_private:
        return None
    reason = refuse_private(host)
    if reason is not None:
        return f"points to {reason}"
    try:
        ipaddress.ip_address(host)
        return None  # a public address literal: nothing to resolve
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(
            host, port or (443 if parts.scheme == "https" else 80), type=socket.SOCK_STREAM
        )
    except (OSError, UnicodeError):
        return f"host {host!r} does not resolve"
    for info in infos:
        reason = refuse_private(str(info[4][0]))
        if reason is not None:
            return f"host {host!r} resolves to {reason}"
    return None


def _endpoint(row: DictRow | None) -> models.Endpoint:
    if row is None:
        raise not_found("webhook endpoint")
    return models.Endpoint.model_validate(row)


def _one(query_name: str, /, **params: Any) -> DictRow | None:
    return execute(named(query_name), params).fetchone()


_WEBHOOK_LINKS = {
    "DeleteWebhook": ("delete_webhook", {"id": "$response.body#/id"}),
    "WebhookDeliveries": ("webhook_deliveries", {"id": "$response.body#/id"}),
}


@api.route(
    "POST",
    "/webhooks",
    summary="Register a webhook endpoint; the answer holds its signing secret, shown only once",
    tag="webhooks",
    body=models.WebhookCreate,
    response=models.EndpointCreated,
    status=201,
    links=_WEBHOOK_LINKS,
)
def create_webhook(me: int, body: models.WebhookCreate) -> models.EndpointCreated:
    allow_private = bool(current_app.config["SETTINGS"].webhook_allow_private)
    reason = refuse_url(body.url, allow_private)
    if reason is not None:
        raise invalid(f"url: {reason}")
    event_types = None
    if body.event_types is not None:
        event_types = sorted(set(body.event_types))
        row = _one("unknown_event_types", names=event_types)
        unknown = row["unknown"] if row else []
        if unknown:
            raise invalid("event_types: unknown event type(s): " + ", ".join(unknown))
    secret = new_secret()
    created = _endpoint(
        _one("webhook_create", me=me, url=body.url, secret=secret, event_types=event_types)
    )
    return models.EndpointCreated(**created.model_dump(), secret=secret)


@api.route(
    "GET",
    "/webhooks",
    summary="Your webhook endpoints (without their secrets)",
    tag="webhooks",
    response=models.EndpointList,
)
def list_webhooks(me: int) -> models.EndpointList:
    rows = execute(named("webhook_list"), {"me": me})
    return models.EndpointList(items=[_endpoint(r) for r in rows])


@api.route(
    "DELETE",
    "/webhooks/{id}",
    summary="Delete a webhook endpoint (its pending deliveries go with it)",
    tag="webhooks",
    params={"id": "id"},
    status=204,
)
def delete_webhook(me: int, id: int) -> None:
    if _one("webhook_delete", me=me, id=id) is None:
        raise not_found("webhook endpoint")


@api.route(
    "GET",
    "/webhooks/{id}/deliveries",
    summary="An endpoint's deliveries, newest first, a page at a time",
    tag="webhooks",
    params={"id": "id"},
    query=models.DeliveryQuery,
    response=models.DeliveryPage,
)
def webhook_deliveries(me: int, id: int, query: models.DeliveryQuery) -> models.DeliveryPage:
    if _one("webhook_get", me=me, id=id) is None:
        raise not_found("webhook endpoint")
    before = decode_cursor(query.cursor) if query.cursor else None
    rows = execute(
        named("webhook_deliveries_page"),
        {"me": me, "id": id, "before": before, "limit": query.limit + 1},
    )
    items = [models.Delivery.model_validate(r) for r in rows]
    next_cursor = None
    if len(items) > query.limit:
        items = items[: query.limit]
        next_cursor = encode_cursor(items[-1].id)
    return models.DeliveryPage(items=items, next_cursor=next_cursor)
