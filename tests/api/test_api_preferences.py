"""Preferences are personal: each user's choices, per event type."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg

from tests.api.conftest import Caller, error_of

DEFAULTS = [
    {
        "event_type": "scenario.created",
        "description": "A test scenario was created",
        "enabled": True,
        "channels": {"email": False, "webhook": True},
    },
    {
        "event_type": "scenario.deleted",
        "description": "A test scenario was deleted",
        "enabled": True,
        "channels": {"email": False, "webhook": True},
    },
    {
        "event_type": "scenario.executed",
        "description": "A test scenario was executed",
        "enabled": True,
        "channels": {"email": False, "webhook": True},
    },
]


def test_every_event_type_with_its_default(alice: Caller, db: psycopg.Connection[Any]) -> None:
    assert alice.get("/api/v1/preferences").get_json() == {"items": DEFAULTS}
    db.execute("UPDATE event_types SET default_enabled = false WHERE name = 'scenario.created'")
    items = alice.get("/api/v1/preferences").get_json()["items"]
    assert [i["enabled"] for i in items] == [False, True, True]


def test_put_sets_and_returns_the_item(alice: Caller, db: psycopg.Connection[Any]) -> None:
    response = alice.put("/api/v1/preferences/scenario.executed", json={"enabled": False})
    assert response.status_code == 200
    assert response.get_json() == {**DEFAULTS[2], "enabled": False}
    assert alice.get("/api/v1/preferences").get_json()["items"][2]["enabled"] is False
    # A user's choice outlives a later change of the default.
    db.execute("UPDATE event_types SET default_enabled = true")
    assert alice.get("/api/v1/preferences").get_json()["items"][2]["enabled"] is False
    again = alice.put("/api/v1/preferences/scenario.executed", json={"enabled": True})
    assert again.get_json()["enabled"] is True
    rows = db.execute("SELECT user_id, event_type, enabled FROM subscriptions").fetchall()
    assert rows == [(alice.id, "scenario.executed", True)]


def test_unknown_event_type_is_404(alice: Caller) -> None:
    response = alice.put("/api/v1/preferences/scenario.renamed", json={"enabled": True})
    assert error_of(response, 404) == "not_found"


def test_preferences_are_personal(
    alice: Caller, bob: Caller, caller: Callable[..., Caller], fan_out: Callable[[], int]
) -> None:
    alice.put("/api/v1/preferences/scenario.created", json={"enabled": False})
    assert bob.get("/api/v1/preferences").get_json() == {"items": DEFAULTS}
    assert alice.get("/api/v1/preferences").get_json()["items"][0]["enabled"] is False
    # And the pipeline honours it: carol's new scenario reaches bob only.
    carol = caller("carol")
    carol.post("/api/v1/scenarios", json={"name": "New"})
    fan_out()
    assert alice.get("/api/v1/notifications/unread-count").get_json() == {"unread": 0}
    assert bob.get("/api/v1/notifications/unread-count").get_json() == {"unread": 1}


def test_me(alice: Caller, bob: Caller) -> None:
    assert alice.get("/api/v1/me").get_json() == {
        "id": alice.id,
        "name": "alice",
        "email": None,
        "is_admin": False,
    }
    assert bob.get("/api/v1/me").get_json() == {
        "id": bob.id,
        "name": "bob",
        "email": None,
        "is_admin": False,
    }
