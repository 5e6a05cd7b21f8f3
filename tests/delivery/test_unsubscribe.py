"""/unsubscribe/TOKEN, served by the API as its restricted role."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
from flask import Flask

from notifications.unsubscribe import make_token
from tests.delivery.conftest import SECRET


def _email_pref(db: psycopg.Connection[Any], user_id: int) -> list[tuple[str, bool]]:
    return [
        (t, e)
        for t, e in db.execute(
            "SELECT event_type, enabled FROM channel_preferences"
            " WHERE user_id = %s AND channel = 'email' ORDER BY event_type",
            [user_id],
        ).fetchall()
    ]


def _app(make_app: Callable[..., Flask], as_role: Callable[[str], str]) -> Flask:
    return make_app(as_role("notifications_api"), api_pool_size=2, unsubscribe_secret=SECRET)


def test_one_click_post_turns_that_email_preference_off(
    db: psycopg.Connection[Any],
    make_user: Callable[..., int],
    make_app: Callable[..., Flask],
    as_role: Callable[[str], str],
) -> None:
    bob = make_user("bob")
    db.execute(
        "INSERT INTO channel_preferences (user_id, event_type, channel, enabled)"
        " VALUES (%s, 'scenario.executed', 'email', true), (%s, 'scenario.created', 'email', true)",
        [bob, bob],
    )
    client = _app(make_app, as_role).test_client()
    token = make_token(SECRET, bob, "scenario.executed", "email")
    page = client.get(f"/unsubscribe/{token}")
    assert page.status_code == 200 and b'<form method="post">' in page.data
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert _email_pref(db, bob) == [("scenario.created", True), ("scenario.executed", True)]
    # RFC 8058: the mail client posts List-Unsubscribe=One-Click, without any credentials.
    answer = client.post(
        f"/unsubscribe/{token}",
        data="List-Unsubscribe=One-Click",
        content_type="application/x-www-form-urlencoded",
    )
    assert answer.status_code == 200, answer.data
    assert answer.json == {"unsubscribed": {"event_type": "scenario.executed", "channel": "email"}}
    assert _email_pref(db, bob) == [("scenario.created", True), ("scenario.executed", False)]
    # Again: still off, still fine.
    assert client.post(f"/unsubscribe/{token}").status_code == 200


def test_forged_or_altered_tokens_are_400_and_change_nothing(
    db: psycopg.Connection[Any],
    make_user: Callable[..., int],
    make_app: Callable[..., Flask],
    as_role: Callable[[str], str],
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    db.execute(
        "INSERT INTO channel_preferences (user_id, event_type, channel, enabled)"
        " VALUES (%s, 'scenario.executed', 'email', true)",
        [bob],
    )
    client = _app(make_app, as_role).test_client()
    good = make_token(SECRET, alice, "scenario.executed", "email")
    payload, _, _signature = good.rpartition(".")
    forged_user = make_token(SECRET + "x", bob, "scenario.executed", "email")
    altered = make_token(SECRET, bob, "scenario.executed", "email")[:-2] + "AA"
    for token in (forged_user, altered, payload + ".", "nonsense", good[:-1], "a" * 2000):
        answer = client.post(f"/unsubscribe/{token}")
        assert answer.status_code == 400, token
        assert answer.json is not None and answer.json["error"]["code"] == "invalid_token"
        page = client.get(f"/unsubscribe/{token}")
        assert page.status_code == 400 and page.mimetype == "text/html"
    assert _email_pref(db, bob) == [("scenario.executed", True)]
    assert _email_pref(db, alice) == []
