"""The stream end to end against a live server: a notification arrives, once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg

from tests.stream.conftest import Live, StreamClient


def token(db: psycopg.Connection[Any], user_id: int) -> str:
    row = db.execute("SELECT issue_token(%s)", [user_id]).fetchone()
    assert row is not None
    return str(row[0])


def test_a_notification_arrives(
    live: Live, db: psycopg.Connection[Any], make_user: Callable[..., int], start_listener: Any
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    start_listener()
    stream = StreamClient(live.url, token(db, bob)).start()
    try:
        first = stream.next("unread")
        assert first.data == {"unread": 0}
        db.execute("SELECT set_config('notifications.actor_id', %s, false)", [str(alice)])
        db.execute("INSERT INTO test_scenarios (name, created_by) VALUES ('Checkout', %s)", [alice])
        note = stream.next("notification")
        assert note.data["event_type"] == "scenario.created"
        assert note.data["scenario"]["name"] == "Checkout"
        assert stream.next("unread").data == {"unread": 1}
    finally:
        stream.stop()
