"""Bearer-token authentication: the user behind a request, or a 401.

The token is hashed here (sha256, as token_hash_v1 in SQL, so every issued token works) and
looked up by its hash: the plaintext never reaches PostgreSQL, so no server log, no
pg_stat_activity row and no statement error can show it. The same statement sets the
request's user for row-level security (sql/v2/roles.sql), transaction-local, so it lasts
exactly as long as the request's transaction and a pooled connection forgets it.
"""

from __future__ import annotations

import hashlib

from flask import g, request

from notifications.api import database
from notifications.api.errors import ApiError
from notifications.queries import query

_MAX_TOKEN = 512


def _refused(message: str = "invalid or revoked token") -> ApiError:
    return ApiError(401, "unauthorized", message)


def token_hash(token: str) -> bytes:
    """What api_tokens.token_hash holds for a token: sha256 of its UTF-8 bytes."""
    return hashlib.sha256(token.encode("utf-8")).digest()


def authenticate() -> int:
    """The user id of the request's bearer token (looked up by authenticate_token_v2)."""
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise _refused("missing bearer token (Authorization: Bearer <token>)")
    # A token is short printable ASCII; anything else cannot match.
    if len(token) > _MAX_TOKEN or not (token.isascii() and token.isprintable()):
        raise _refused()
    row = database.execute(query("authenticate"), {"token_hash": token_hash(token)}).fetchone()
    if row is None:
        raise _refused()
    g.token_id = int(row["token_id"])
    return int(row["user_id"])


def current_token_id() -> int:
    """The id of the token this request authenticated with (after authenticate())."""
    return int(g.token_id)
