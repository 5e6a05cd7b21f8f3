"""Signed unsubscribe tokens: who, which event type, which channel. Shared by the deliverer
(it writes them into e-mails) and the API (it honours them at /unsubscribe/TOKEN).

The token carries no expiry: a mail read a year later must still unsubscribe (RFC 8058).
It cannot be forged or altered without UNSUBSCRIBE_SECRET.
"""

from __future__ import annotations

from dataclasses import dataclass

from itsdangerous import BadData, URLSafeSerializer

_SALT = "notifications.unsubscribe.v1"
CHANNELS = ("email", "webhook")


@dataclass(frozen=True)
class Unsubscribe:
    user_id: int
    event_type: str
    channel: str


def make_token(secret: str, user_id: int, event_type: str, channel: str = "email") -> str:
    serializer = URLSafeSerializer(secret, salt=_SALT)
    return str(serializer.dumps([user_id, event_type, channel]))


def read_token(secret: str, token: str) -> Unsubscribe | None:
    """The token's content, or None for anything forged, altered or malformed."""
    try:
        value = URLSafeSerializer(secret, salt=_SALT).loads(token)
    except (BadData, UnicodeError, ValueError):
        return None
    if not (isinstance(value, list) and len(value) == 3):
        return None
    user_id, event_type, channel = value
    if (
        not isinstance(user_id, int)
        or isinstance(user_id, bool)
        or not 0 < user_id < 2**63
        or not isinstance(event_type, str)
        or channel not in CHANNELS
    ):
        return None
    return Unsubscribe(user_id, event_type, channel)
