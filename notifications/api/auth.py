"""Bearer-token authentication: the user behind a request, or a 401."""

from __future__ import annotations

from flask import request

from notifications.api import database
from notifications.api.errors import ApiError
from notifications.queries import query

_MAX_TOKEN = 512


def _refused(message: str = "invalid or revoked token") -> ApiError:
    return ApiError(401, "unauthorized", message)


def authenticate() -> int:
    """The user id of the request's bearer token (checked by authenticate_token_v1)."""
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise _refused("missing bearer token (Authorization: Bearer <token>)")
    # A token is short printable ASCII; anything else cannot match and must not reach SQL.
    if len(token) > _MAX_TOKEN or not (token.isascii() and token.isprintable()):
        raise _refused()
    row = database.execute(query("authenticate"), {"token": token}).fetchone()
    if row is None or row["user_id"] is None:
        raise _refused()
    return int(row["user_id"])
