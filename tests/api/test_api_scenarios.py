"""Scenarios: team data. Any user sees and changes any live scenario, and every change is
recorded as that user's action."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import psycopg
from flask import Flask

from notifications.api import database
from tests.api.conftest import Caller, error_of

SCENARIO_KEYS = {
    "id",
    "name",
    "description",
    "created_by",
    "created_at",
    "last_executed_at",
    "last_status",
}


def events(db: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return db.execute(
        "SELECT event_type, scenario_id, actor_id, status FROM scenario_events ORDER BY id"
    ).fetchall()


def test_create_returns_201_and_the_scenario(alice: Caller, db: psycopg.Connection[Any]) -> None:
    response = alice.post("/api/v1/scenarios", json={"name": "Checkout", "description": "pay"})
    assert response.status_code == 201
    scenario = response.get_json()
    assert set(scenario) == SCENARIO_KEYS
    assert scenario["name"] == "Checkout"
    assert scenario["description"] == "pay"
    assert scenario["created_by"] == alice.id
    assert scenario["last_executed_at"] is None
    assert scenario["last_status"] is None
    assert datetime.fromisoformat(scenario["created_at"]).tzinfo is not None
    assert events(db) == [("scenario.created", scenario["id"], alice.id, None)]


def test_description_is_optional(alice: Caller) -> None:
    scenario = alice.post("/api/v1/scenarios", json={"name": "Login"}).get_json()
    assert scenario["description"] == ""


def test_list_get_and_limits(alice: Caller, db: psycopg.Connection[Any]) -> None:
    assert alice.get("/api/v1/scenarios").get_json() == {"items": []}
    first = alice.post("/api/v1/scenarios", json={"name": "a" * 200}).get_json()
    second = alice.post("/api/v1/scenarios", json={"name": "B", "description": "d" * 5000})
    assert second.status_code == 201
    # A scenario written from psql, by no one, is listed like the others.
    psql_id = db.execute(
        "INSERT INTO test_scenarios (name) VALUES ('psql') RETURNING id"
    ).fetchone()
    assert psql_id is not None
    items = alice.get("/api/v1/scenarios").get_json()["items"]
    assert [s["id"] for s in items] == [first["id"], second.get_json()["id"], psql_id[0]]
    assert items[2]["created_by"] is None
    assert alice.get(f"/api/v1/scenarios/{first['id']}").get_json() == first


def test_execution_returns_201_and_records_the_status(
    alice: Caller, db: psycopg.Connection[Any]
) -> None:
    sid = alice.post("/api/v1/scenarios", json={"name": "Checkout"}).get_json()["id"]
    response = alice.post(f"/api/v1/scenarios/{sid}/executions", json={"status": "failed"})
    assert response.status_code == 201
    scenario = response.get_json()
    assert scenario["last_status"] == "failed"
    assert datetime.fromisoformat(scenario["last_executed_at"]) >= datetime.fromisoformat(
        scenario["created_at"]
    )
    again = alice.post(f"/api/v1/scenarios/{sid}/executions", json={"status": "passed"})
    assert again.get_json()["last_status"] == "passed"
    assert alice.get(f"/api/v1/scenarios/{sid}").get_json() == again.get_json()
    assert events(db)[1:] == [
        ("scenario.executed", sid, alice.id, "failed"),
        ("scenario.executed", sid, alice.id, "passed"),
    ]


def test_delete_is_soft_and_final(alice: Caller, db: psycopg.Connection[Any]) -> None:
    sid = alice.post("/api/v1/scenarios", json={"name": "Gone"}).get_json()["id"]
    response = alice.delete(f"/api/v1/scenarios/{sid}")
    assert response.status_code == 204
    assert response.get_data() == b""
    assert error_of(alice.get(f"/api/v1/scenarios/{sid}"), 404) == "not_found"
    assert error_of(alice.delete(f"/api/v1/scenarios/{sid}"), 404) == "not_found"
    execution = alice.post(f"/api/v1/scenarios/{sid}/executions", json={"status": "passed"})
    assert error_of(execution, 404) == "not_found"
    assert alice.get("/api/v1/scenarios").get_json() == {"items": []}
    row = db.execute("SELECT deleted_at IS NOT NULL FROM test_scenarios WHERE id = %s", [sid])
    assert row.fetchone() == (True,)
    assert [e[0] for e in events(db)] == ["scenario.created", "scenario.deleted"]


def test_scenarios_are_shared_and_actions_are_the_callers(
    alice: Caller, bob: Caller, db: psycopg.Connection[Any], fan_out: Callable[[], int]
) -> None:
    sid = alice.post("/api/v1/scenarios", json={"name": "Checkout"}).get_json()["id"]
    # An admin may delete what others created (tests/api/test_api_hardening.py).
    db.execute("UPDATE users SET is_admin = true WHERE id = %s", [bob.id])
    # bob sees, executes and deletes alice's scenario: the events name bob, not alice.
    assert [s["id"] for s in bob.get("/api/v1/scenarios").get_json()["items"]] == [sid]
    assert bob.get(f"/api/v1/scenarios/{sid}").get_json()["created_by"] == alice.id
    assert bob.post(f"/api/v1/scenarios/{sid}/executions", json={"status": "failed"}).status_code
    assert bob.delete(f"/api/v1/scenarios/{sid}").status_code == 204
    assert events(db) == [
        ("scenario.created", sid, alice.id, None),
        ("scenario.executed", sid, bob.id, "failed"),
        ("scenario.deleted", sid, bob.id, None),
    ]
    fan_out()
    # Each hears about the other's actions only, and the deleted scenario stays readable.
    alice_feed = alice.get("/api/v1/notifications").get_json()["items"]
    assert [n["message"] for n in alice_feed] == [
        "bob deleted scenario 'Checkout'",
        "bob executed scenario 'Checkout': failed",
    ]
    assert [n["message"] for n in bob.get("/api/v1/notifications").get_json()["items"]] == [
        "alice created scenario 'Checkout'"
    ]


def test_actor_setting_does_not_leak_between_requests(
    database_url: str,
    caller: Callable[..., Caller],
    db: psycopg.Connection[Any],
    make_app: Callable[..., Flask],
) -> None:
    # One pooled connection, so every request and the check below share it: the actor set
    # for alice's request must end with that request's transaction.
    app = make_app(database_url, api_pool_size=1)
    alice = caller("alice")
    alice.client = app.test_client()
    sid = alice.post("/api/v1/scenarios", json={"name": "One"}).get_json()["id"]
    alice.delete(f"/api/v1/scenarios/{sid}")
    with database.pool(app).connection() as conn, conn.transaction():
        assert conn.execute("SELECT current_actor_v1() AS actor").fetchone() == {"actor": None}
        conn.execute("INSERT INTO test_scenarios (name) VALUES ('by psql')")
    assert events(db)[-1][2] is None
