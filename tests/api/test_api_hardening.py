"""API hardening (issue 11): who may delete a scenario, conflicts retried then a 503, the
headers of every answer, names that cannot forge what others read, a user deleted while
their request runs."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from notifications.api import routing
from tests.api.conftest import Caller, error_of
from tests.conftest import wait_until

# -- item 11: deletion is for the creator or an admin -------------------------------------------


def test_me_says_email_and_admin(alice: Caller, db: psycopg.Connection[Any]) -> None:
    assert alice.get("/api/v1/me").get_json() == {
        "id": alice.id,
        "name": "alice",
        "email": None,
        "is_admin": False,
    }
    db.execute(
        "UPDATE users SET email = 'alice@example.com', is_admin = true WHERE id = %s", [alice.id]
    )
    me = alice.get("/api/v1/me").get_json()
    assert (me["email"], me["is_admin"]) == ("alice@example.com", True)


def test_only_the_creator_or_an_admin_deletes(
    alice: Caller, bob: Caller, caller: Callable[..., Caller], db: psycopg.Connection[Any]
) -> None:
    sid = alice.post("/api/v1/scenarios", json={"name": "Checkout"}).get_json()["id"]

    response = bob.delete(f"/api/v1/scenarios/{sid}")
    assert error_of(response, 403) == "forbidden"
    assert alice.get(f"/api/v1/scenarios/{sid}").status_code == 200
    # Executing stays open to everyone.
    assert (
        bob.post(f"/api/v1/scenarios/{sid}/executions", json={"status": "passed"}).status_code
        == 201
    )
    # Absent is still 404, for anyone.
    assert error_of(bob.delete("/api/v1/scenarios/999999"), 404) == "not_found"

    assert alice.delete(f"/api/v1/scenarios/{sid}").status_code == 204
    assert error_of(alice.delete(f"/api/v1/scenarios/{sid}"), 404) == "not_found"

    # An admin deletes anyone's, and a scenario written from psql with no creator.
    carol = caller("carol")
    db.execute("UPDATE users SET is_admin = true WHERE id = %s", [carol.id])
    other = alice.post("/api/v1/scenarios", json={"name": "Other"}).get_json()["id"]
    (orphan,) = db.execute(
        "INSERT INTO test_scenarios (name) VALUES ('psql') RETURNING id"
    ).fetchone() or (None,)
    assert error_of(alice.delete(f"/api/v1/scenarios/{orphan}"), 403) == "forbidden"
    assert carol.delete(f"/api/v1/scenarios/{other}").status_code == 204
    assert carol.delete(f"/api/v1/scenarios/{orphan}").status_code == 204
    deleted = db.execute(
        "SELECT actor_id FROM scenario_events WHERE event_type = 'scenario.deleted' ORDER BY id"
    ).fetchall()
    assert deleted == [(alice.id,), (carol.id,), (carol.id,)]


# -- item 7: conflicts are retried, then a 503 -------------------------------------------------

LOCK_PAIR = """
CREATE SEQUENCE test_attempts;
GRANT ALL ON SEQUENCE test_attempts TO PUBLIC;
CREATE FUNCTION test_lock_pair() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM nextval('test_attempts');
    PERFORM pg_advisory_xact_lock(101);
    PERFORM pg_advisory_xact_lock(102);
    RETURN NEW;
END $$;
CREATE TRIGGER test_lock_pair BEFORE INSERT ON test_scenarios
    FOR EACH ROW EXECUTE FUNCTION test_lock_pair();
"""


def _in_thread(call: Callable[[], TestResponse]) -> tuple[threading.Thread, list[TestResponse]]:
    result: list[TestResponse] = []
    thread = threading.Thread(target=lambda: result.append(call()), daemon=True)
    thread.start()
    return thread, result


def _waiting_on(db: psycopg.Connection[Any], locktype: str) -> bool:
    row = db.execute(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE NOT l.granted AND l.locktype = %s"
        " AND a.application_name = 'notifications-api'",
        [locktype],
    ).fetchone()
    return bool(row and row[0])


def test_a_deadlocked_write_is_retried(
    alice: Caller, db: psycopg.Connection[Any], database_url: str
) -> None:
    db.execute(LOCK_PAIR)
    with psycopg.connect(database_url) as holder:
        # The request must be the one the deadlock detector aborts: it waits first and
        # checks after the server's deadlock_timeout; this session checks much later.
        holder.execute("SET deadlock_timeout = '60s'")
        holder.execute("SELECT pg_advisory_xact_lock(102)")
        thread, result = _in_thread(
            lambda: alice.post("/api/v1/scenarios", json={"name": "Deadlocked"})
        )
        wait_until(lambda: _waiting_on(db, "advisory"), timeout=30)
        # Lock 101 is the request's: a real deadlock (40P01), resolved by aborting it.
        holder.execute("SELECT pg_advisory_xact_lock(101)")
        holder.commit()
        thread.join(60)
    response = result[0]
    assert response.status_code == 201, response.get_data(as_text=True)
    assert db.execute("SELECT last_value FROM test_attempts").fetchone() == (2,)
    assert db.execute("SELECT count(*) FROM test_scenarios").fetchone() == (1,)
    assert db.execute("SELECT count(*) FROM scenario_events").fetchone() == (1,)


def test_conflicts_on_every_try_are_a_503(alice: Caller, db: psycopg.Connection[Any]) -> None:
    db.execute(
        """
        CREATE SEQUENCE test_attempts;
        GRANT ALL ON SEQUENCE test_attempts TO PUBLIC;
        CREATE FUNCTION test_conflict() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM nextval('test_attempts');
            RAISE EXCEPTION 'could not serialize access (test)'
                USING ERRCODE = 'serialization_failure';
        END $$;
        CREATE TRIGGER test_conflict BEFORE INSERT ON test_scenarios
            FOR EACH ROW EXECUTE FUNCTION test_conflict();
        """
    )
    response = alice.post("/api/v1/scenarios", json={"name": "Never"})
    assert error_of(response, 503) == "unavailable"
    assert response.headers["Retry-After"]
    assert db.execute("SELECT last_value FROM test_attempts").fetchone() == (routing.ATTEMPTS,)
    assert db.execute("SELECT count(*) FROM test_scenarios").fetchone() == (0,)
    # The connection went back to the pool clean: the next request works.
    assert alice.get("/api/v1/scenarios").status_code == 200


# -- item 12: headers --------------------------------------------------------------------------


def test_every_html_page_carries_the_security_headers(client: FlaskClient) -> None:
    for path in ["/", "/static/index.html"]:
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.mimetype == "text/html"
        csp = response.headers.get("Content-Security-Policy", "")
        assert "frame-ancestors 'none'" in csp, path
        assert "default-src 'none'" in csp, path
        assert response.headers.get("X-Frame-Options") == "DENY", path
        assert response.headers.get("Referrer-Policy") == "no-referrer", path
        response.close()  # a static file is streamed from an open file


def test_every_api_answer_is_no_store(app: Flask, client: FlaskClient, alice: Caller) -> None:
    created = alice.post("/api/v1/scenarios", json={"name": "S"})
    big = b'{"name": "' + b"x" * app.config["MAX_CONTENT_LENGTH"] + b'"}'
    responses = {
        201: created,
        200: alice.get("/api/v1/notifications"),
        204: alice.delete(f"/api/v1/scenarios/{created.get_json()['id']}"),
        401: client.get("/api/v1/me"),
        404: client.get("/api/v1/no-such-route"),
        405: client.delete("/api/v1/me"),
        413: alice.post(
            "/api/v1/scenarios", data=big, headers={"Content-Type": "application/json"}
        ),
        415: alice.post("/api/v1/scenarios", data="name=S"),
        422: alice.post("/api/v1/scenarios", json={"name": ""}),
    }
    for status, response in responses.items():
        assert response.status_code == status
        assert response.headers.get("Cache-Control") == "no-store", status
    assert client.get("/api/v1/openapi.json").headers.get("Cache-Control") == "no-store"


# -- item 12: names that cannot forge what others read ------------------------------------------

REFUSED_NAMES = [
    "\u202eevil",  # right-to-left override
    "a\u2066b",  # left-to-right isolate
    "\u200b",  # zero-width space alone
    "\u200b\u200c\u200d",  # zero-width only
    "x\u200by",
    "\ufeffname",  # byte order mark
    "line\nbreak",
    "tab\there",
    "del\x7f",
    "next\x85line",  # NEL, a C1 control
    "\U000e0041tag",  # a tag character
]


@pytest.mark.parametrize("name", REFUSED_NAMES)
def test_control_and_format_characters_in_a_name_are_422(alice: Caller, name: str) -> None:
    response = alice.post("/api/v1/scenarios", json={"name": name})
    assert error_of(response, 422) == "invalid"
    assert "control or format character" in response.get_json()["error"]["message"]


def test_description_keeps_line_breaks_and_tabs_only(alice: Caller) -> None:
    ok = alice.post("/api/v1/scenarios", json={"name": "D", "description": "one\n\ttwo"})
    assert ok.status_code == 201
    assert ok.get_json()["description"] == "one\n\ttwo"
    for bad in ["\u202e", "a\u200bb", "bell\x07", "cr\r"]:
        response = alice.post("/api/v1/scenarios", json={"name": "D", "description": bad})
        assert error_of(response, 422) == "invalid", repr(bad)
    # Ordinary text, accents and emoji stay fine.
    assert alice.post("/api/v1/scenarios", json={"name": "Café ✓ 🚀"}).status_code == 201


def test_a_name_cannot_forge_the_sentence(
    alice: Caller, bob: Caller, db: psycopg.Connection[Any], fan_out: Callable[[], int]
) -> None:
    forged = "Checkout': passed"
    sid = alice.post("/api/v1/scenarios", json={"name": forged}).get_json()["id"]
    alice.post(f"/api/v1/scenarios/{sid}/executions", json={"status": "failed"})
    # psql writers are not validated: their control characters are shown, not obeyed.
    db.execute("INSERT INTO test_scenarios (name) VALUES (%s)", ["a\u202eb\\c\nd"])
    fan_out()
    messages = [n["message"] for n in bob.get("/api/v1/notifications").get_json()["items"]]
    assert messages == [
        "Someone created scenario 'a\ufffdb\\\\c\ufffdd'",
        "alice executed scenario 'Checkout\\': passed': failed",
        "alice created scenario 'Checkout\\': passed'",
    ]
    # Ordinary names read as before.
    alice.post("/api/v1/scenarios", json={"name": "Login"})
    fan_out()
    assert bob.get("/api/v1/notifications").get_json()["items"][0]["message"] == (
        "alice created scenario 'Login'"
    )


# -- item 14: a user deleted while their request runs -------------------------------------------


def test_user_deleted_mid_request_is_401(
    alice: Caller, db: psycopg.Connection[Any], database_url: str
) -> None:
    """The token authenticates; the user row is gone before the route's own statement."""
    cases: list[tuple[str, str, Callable[[], TestResponse]]] = [
        # The INSERT names the user as creator: a foreign key failure, once a 422.
        (
            "test_scenarios",
            "SHARE",
            lambda: alice.post("/api/v1/scenarios", json={"name": "Late"}),
        ),
        # The preference lookup finds no user: once a 404.
        (
            "subscriptions",
            "ACCESS EXCLUSIVE",
            lambda: alice.put("/api/v1/preferences/scenario.created", json={"enabled": False}),
        ),
    ]
    for table, mode, call in cases:
        db.execute("DELETE FROM users WHERE id = %s", [alice.id])
        db.execute(
            "INSERT INTO users (id, name) OVERRIDING SYSTEM VALUE VALUES (%s, 'alice')",
            [alice.id],
        )
        row = db.execute("SELECT issue_token(%s)", [alice.id]).fetchone()
        assert row is not None
        alice.token = row[0]
        with psycopg.connect(database_url) as holder:
            holder.execute(f"LOCK TABLE {table} IN {mode} MODE")
            thread, result = _in_thread(call)
            wait_until(lambda: _waiting_on(db, "relation"), timeout=30)
            holder.execute("DELETE FROM users WHERE id = %s", [alice.id])
            holder.commit()
            thread.join(60)
        assert error_of(result[0], 401) == "unauthorized", table
