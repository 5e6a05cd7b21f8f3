"""Bearer tokens as both sides of `serve` read them: the Flask API (api/auth.py) and the
stream (stream/endpoint.py), so that a token either accepts the other accepts too.

The token is hashed here (sha256, as token_hash_v1 in SQL, so every issued token works) and
looked up by its hash: the plaintext never reaches PostgreSQL.
"""

from __future__ import annotations

import hashlib

MAX_TOKEN = 512


def bearer_token(authorization: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` header; None when there is none."""
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def well_formed(token: str) -> bool:
    """A token is short printable ASCII; anything else cannot match one we issued."""
    return len(token) <= MAX_TOKEN and token.isascii() and token.isprintable()


def token_hash(token: str) -> bytes:
    """What api_tokens.token_hash holds for a token: sha256 of its UTF-8 bytes."""
    return hashlib.sha256(token.encode("utf-8")).digest()
