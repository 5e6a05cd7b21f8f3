"""Bearer-token authentication: the user behind a request, or a 401.

The token is hashed (notifications/bearer.py) and looked up by its hash: the plaintext never
reaches PostgreSQL, so no server log, no pg_stat_activity row and no statement error can
show it. The same statement sets the request's user for row-level security
(sql/v2/roles.sql), transaction-local, so it lasts exactly as long as the request's
transaction and a pooled connection forgets it.
"""

from __future__ import annotations

from flask import g, request

from notifications.api import database
from notifications.api.errors import ApiError
from notifications.bearer import bearer_token, token_hash, well_formed
from notifications.queries import query


def _refused(message: str = "invalid or revoked token") -> ApiError:
    return ApiError(401, "unauthorized", message)


def authenticate() -> int:
    """The user id of the request's bearer token (looked up by authenticate_token_v2)."""
    token = bearer_token(request.headers.get("Authorization", ""))
    if token is None:
        raise _refused("missing bearer token (Authorization: Bearer <token>)")
    if not well_formed(token):
        raise _refused()
    row = database.execute(query("authenticate"), {"token_hash": token_hash(token)}).fetchone()
    if row is None:
        raise _refused()
    g.token_id = int(row["token_id"])
    return int(row["user_id"])


def current_token_id() -> int:
    """The id of the token this request authenticated with (after authenticate())."""
    return int(g.token_id)
