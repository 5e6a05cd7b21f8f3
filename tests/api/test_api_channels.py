"""PUT /api/v1/me (the e-mail address) and the channel switches of /api/v1/preferences."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.api.conftest import Caller, error_of


def test_put_me_sets_and_clears_the_email(alice: Caller) -> None:
    r = alice.put("/api/v1/me", json={"email": "alice@example.com"})
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.get_json() == {
        "id": alice.id,
        "name": "alice",
        "email": "alice@example.com",
        "is_admin": False,
    }
    assert alice.get("/api/v1/me").get_json()["email"] == "alice@example.com"
    assert alice.put("/api/v1/me", json={"email": None}).get_json()["email"] is None


@pytest.mark.parametrize(
    "body",
    [
        {"email": "not an address"},
        {"email": "a@"},
        {"email": "@example.com"},
        {"email": "a@b@example.com"},
        {"email": "x" * 250 + "@example.com"},
        {"email": 5},
        {"email": True},
        {},
        {"email": "a@example.com", "name": "mallory"},
    ],
)
def test_put_me_bad_input(alice: Caller, body: dict[str, Any]) -> None:
    assert error_of(alice.put("/api/v1/me", json=body), 422)
    assert alice.get("/api/v1/me").get_json()["email"] is None


def test_preferences_carry_channels_with_defaults(alice: Caller) -> None:
    items = alice.get("/api/v1/preferences").get_json()["items"]
    assert [i["event_type"] for i in items] == [
        "scenario.created",
        "scenario.deleted",
        "scenario.executed",
    ]
    assert all(i["channels"] == {"email": False, "webhook": True} for i in items)


def test_channels_switch_and_persist(alice: Caller, db: psycopg.Connection[Any]) -> None:
    url = "/api/v1/preferences/scenario.executed"
    r = alice.put(url, json={"channels": {"email": True}})
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.get_json()["channels"] == {"email": True, "webhook": True}
    assert r.get_json()["enabled"] is True
    r = alice.put(url, json={"enabled": False, "channels": {"webhook": False}})
    assert r.get_json()["enabled"] is False
    assert r.get_json()["channels"] == {"email": True, "webhook": False}
    items = {i["event_type"]: i for i in alice.get("/api/v1/preferences").get_json()["items"]}
    assert items["scenario.executed"]["channels"] == {"email": True, "webhook": False}
    assert items["scenario.created"]["channels"] == {"email": False, "webhook": True}
    rows = db.execute(
        "SELECT channel, enabled FROM channel_preferences WHERE user_id = %s ORDER BY channel",
        [alice.id],
    ).fetchall()
    assert rows == [("email", True), ("webhook", False)]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"channels": {}},
        {"enabled": None},
        {"channels": None},
        {"channels": {"email": None}},
        {"channels": {"email": "true"}},
        {"channels": {"sms": True}},
        {"enabled": "false"},
        {"enabled": True, "channels": {"email": 1}},
    ],
)
def test_preference_bad_input(alice: Caller, body: dict[str, Any]) -> None:
    assert error_of(alice.put("/api/v1/preferences/scenario.created", json=body), 422)


def test_unknown_event_type_is_404(alice: Caller) -> None:
    r = alice.put("/api/v1/preferences/scenario.nope", json={"channels": {"email": True}})
    assert error_of(r, 404)


def test_channel_switches_are_personal(alice: Caller, bob: Caller) -> None:
    alice.put("/api/v1/preferences/scenario.created", json={"channels": {"email": True}})
    items = bob.get("/api/v1/preferences").get_json()["items"]
    assert all(i["channels"]["email"] is False for i in items)
