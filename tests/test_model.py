"""Property-based: random sequences of user actions, checked against a small model.

The model holds the product's rules in a few lines of Python: who gets a notification
(subscriptions at the time of the event, never the actor), read state (idempotent),
read-all up to an id. After every step the API and the database must agree with it.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

USERS = ("alice", "bob", "carol")
EVENT_TYPES = ("scenario.created", "scenario.executed", "scenario.deleted")


@dataclass
class World:
    db: psycopg.Connection[Any]
    client: FlaskClient
    ids: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)


@pytest.fixture
def world(
    database_url: str, db: psycopg.Connection[Any], make_app: Callable[..., Flask]
) -> Iterator[World]:
    app = make_app(database_url)
    w = World(db=db, client=app.test_client())
    for name in USERS:
        user_id = db.execute("SELECT create_user(%s)", [name]).fetchone()
        assert user_id is not None
        w.ids[name] = user_id[0]
        token = db.execute("SELECT issue_token(%s)", [user_id[0]]).fetchone()
        assert token is not None
        w.tokens[name] = token[0]
    yield w


class Model(RuleBasedStateMachine):
    world: World

    def __init__(self) -> None:
        super().__init__()
        self.scenarios: dict[int, bool] = {}  # id -> live
        self.creators: dict[int, str] = {}  # only they may delete (no admin here)
        self.prefs = {(u, t): True for u in USERS for t in EVENT_TYPES}
        self.inbox: dict[str, dict[int, bool]] = {u: {} for u in USERS}  # id -> read
        self.read_at: dict[tuple[str, int], str] = {}

    @initialize()
    def reset(self) -> None:
        db = self.world.db
        # test_scenarios first: its TRUNCATE trigger writes events, cleared just after.
        db.execute("TRUNCATE test_scenarios")
        db.execute("TRUNCATE user_notifications, scenario_events, subscriptions")

    # -- helpers --------------------------------------------------------------------------

    def call(self, user: str, method: str, path: str, body: Any = None) -> Any:
        return self.world.client.open(
            "/api/v1" + path,
            method=method,
            json=body,
            headers={"Authorization": f"Bearer {self.world.tokens[user]}"},
        )

    def fan_out_and_expect(self, event_type: str, actor: str) -> None:
        db = self.world.db
        while db.execute("SELECT * FROM fan_out_events_v2(100)").fetchall():
            pass
        row = db.execute("SELECT max(id) FROM scenario_events").fetchone()
        assert row is not None
        event_id = row[0]
        for user in USERS:
            if user != actor and self.prefs[(user, event_type)]:
                self.inbox[user][event_id] = False

    # -- rules ----------------------------------------------------------------------------

    @rule(actor=st.sampled_from(USERS), name=st.text(min_size=1, max_size=20))
    def create(self, actor: str, name: str) -> None:
        response = self.call(actor, "POST", "/scenarios", {"name": name})
        if any(unicodedata.category(c) in ("Cc", "Cf") for c in name):
            # Control and format characters could forge what others read.
            assert response.status_code == 422
            return
        if not name.strip():
            assert response.status_code == 422 or response.status_code == 201
            if response.status_code == 422:
                return
        assert response.status_code == 201, response.get_json()
        self.scenarios[response.get_json()["id"]] = True
        self.creators[response.get_json()["id"]] = actor
        self.fan_out_and_expect("scenario.created", actor)

    @precondition(lambda self: bool(self.scenarios))
    @rule(
        actor=st.sampled_from(USERS),
        pick=st.integers(0, 50),
        status=st.sampled_from(["passed", "failed"]),
    )
    def execute(self, actor: str, pick: int, status: str) -> None:
        sid = sorted(self.scenarios)[pick % len(self.scenarios)]
        response = self.call(actor, "POST", f"/scenarios/{sid}/executions", {"status": status})
        if not self.scenarios[sid]:
            assert response.status_code == 404
            return
        assert response.status_code == 201, response.get_json()
        assert response.get_json()["last_status"] == status
        self.fan_out_and_expect("scenario.executed", actor)

    @precondition(lambda self: bool(self.scenarios))
    @rule(actor=st.sampled_from(USERS), pick=st.integers(0, 50))
    def delete(self, actor: str, pick: int) -> None:
        sid = sorted(self.scenarios)[pick % len(self.scenarios)]
        response = self.call(actor, "DELETE", f"/scenarios/{sid}")
        if not self.scenarios[sid]:
            assert response.status_code == 404
            return
        if actor != self.creators[sid]:
            assert response.status_code == 403
            return
        assert response.status_code == 204
        self.scenarios[sid] = False
        self.fan_out_and_expect("scenario.deleted", actor)

    @rule(
        user=st.sampled_from(USERS), event_type=st.sampled_from(EVENT_TYPES), enabled=st.booleans()
    )
    def set_preference(self, user: str, event_type: str, enabled: bool) -> None:
        response = self.call(user, "PUT", f"/preferences/{event_type}", {"enabled": enabled})
        assert response.status_code == 200
        assert response.get_json()["enabled"] is enabled
        self.prefs[(user, event_type)] = enabled

    @rule(user=st.sampled_from(USERS), pick=st.integers(0, 50), other=st.sampled_from(USERS))
    def read(self, user: str, pick: int, other: str) -> None:
        # Somebody else's notification id (or a missing one) is a 404 and changes nothing.
        candidates = sorted(self.inbox[other])
        if not candidates:
            return
        nid = candidates[pick % len(candidates)]
        response = self.call(user, "POST", f"/notifications/{nid}/read")
        if nid not in self.inbox[user]:
            assert response.status_code == 404
            return
        assert response.status_code == 200
        read_at = response.get_json()["read_at"]
        assert read_at is not None
        if self.inbox[user][nid] and (user, nid) in self.read_at:
            assert read_at == self.read_at[(user, nid)], "read is idempotent"
        self.inbox[user][nid] = True
        self.read_at[(user, nid)] = read_at

    @rule(user=st.sampled_from(USERS), pick=st.integers(0, 50))
    def unread(self, user: str, pick: int) -> None:
        candidates = sorted(self.inbox[user])
        if not candidates:
            return
        nid = candidates[pick % len(candidates)]
        response = self.call(user, "POST", f"/notifications/{nid}/unread")
        assert response.status_code == 200
        assert response.get_json()["read_at"] is None
        self.inbox[user][nid] = False
        self.read_at.pop((user, nid), None)

    @rule(user=st.sampled_from(USERS), up_to=st.one_of(st.none(), st.integers(1, 60)))
    def read_all(self, user: str, up_to: int | None) -> None:
        body = None if up_to is None else {"up_to": up_to}
        response = self.call(user, "POST", "/notifications/read-all", body)
        assert response.status_code == 200, response.get_json()
        expected = [
            nid
            for nid, is_read in self.inbox[user].items()
            if not is_read and (up_to is None or nid <= up_to)
        ]
        assert response.get_json() == {"updated": len(expected)}
        for nid in expected:
            self.inbox[user][nid] = True
            self.read_at.pop((user, nid), None)

    # -- invariants -----------------------------------------------------------------------

    @invariant()
    def api_agrees(self) -> None:
        for user in USERS:
            seen: dict[int, bool] = {}
            cursor = None
            while True:
                query = "/notifications?status=all&limit=7" + (
                    f"&cursor={cursor}" if cursor else ""
                )
                page = self.call(user, "GET", query).get_json()
                ids = [item["id"] for item in page["items"]]
                assert ids == sorted(ids, reverse=True), "newest first"
                for item in page["items"]:
                    seen[item["id"]] = item["read_at"] is not None
                cursor = page["next_cursor"]
                if cursor is None:
                    break
            assert seen == self.inbox[user]
            count = self.call(user, "GET", "/notifications/unread-count").get_json()
            assert count == {"unread": sum(not r for r in self.inbox[user].values())}

    @invariant()
    def database_agrees(self) -> None:
        rows = self.world.db.execute(
            "SELECT u.name, n.event_id, n.read_at IS NOT NULL FROM user_notifications n"
            " JOIN users u ON u.id = n.user_id"
        ).fetchall()
        actual: dict[str, dict[int, bool]] = {u: {} for u in USERS}
        for name, event_id, is_read in rows:
            actual[name][event_id] = is_read
        assert actual == self.inbox
        backlog = self.world.db.execute(
            "SELECT unprocessed_events FROM notification_backlog"
        ).fetchone()
        assert backlog == (0,)


@pytest.mark.slow
def test_api_and_database_follow_the_model(world: World) -> None:
    Model.world = world
    run_state_machine_as_test(
        Model,
        settings=settings(
            max_examples=25,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )
