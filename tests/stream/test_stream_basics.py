"""GET /api/v1/stream end to end against a live server: events, headers, errors, limits."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import psycopg
import pytest

from tests.live import start_server
from tests.stream.conftest import Live, StreamClient, create_scenarios, token

Conn = psycopg.Connection[Any]


def test_a_notification_and_the_count_arrive(
    live: Live, db: Conn, make_user: Callable[..., int], start_listener: Any
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    start_listener()
    stream = StreamClient(live.url, token(db, bob)).start()
    try:
        assert stream.next("unread").data == {"unread": 0}
        create_scenarios(db, alice, ["Checkout"])
        note = stream.next("notification")
        feed = db.execute(
            "SELECT id, message FROM notification_feed WHERE user_id = %s", [bob]
        ).fetchall()
        assert [(note.data["id"], note.data["message"])] == [tuple(r) for r in feed]
        assert note.data["event_type"] == "scenario.created"
        assert note.data["scenario"]["name"] == "Checkout"
        assert note.data["actor"] == {"id": alice, "name": "alice"}
        assert note.data["read_at"] is None
        assert note.id
        assert stream.next("unread").data == {"unread": 1}
        # Read elsewhere (psql here): the open stream hears the new count.
        db.execute("UPDATE user_notifications SET read_at = now() WHERE user_id = %s", [bob])
        assert stream.next("unread").data == {"unread": 0}
    finally:
        stream.stop()


def test_the_actor_and_the_unsubscribed_hear_nothing(
    live: Live, db: Conn, make_user: Callable[..., int], start_listener: Any
) -> None:
    alice = make_user("alice")
    carol = make_user("carol", created=False)
    bob = make_user("bob")
    start_listener()
    streams = {u: StreamClient(live.url, token(db, u)).start() for u in (alice, carol, bob)}
    try:
        for s in streams.values():
            s.next("unread")
        create_scenarios(db, alice, ["One"])
        db.execute("SELECT set_config('notifications.actor_id', %s, false)", [str(bob)])
        db.execute("UPDATE test_scenarios SET last_executed_at = now(), last_status = 'passed'")
        # bob: alice's creation; alice: bob's execution; carol: the execution only.
        assert streams[bob].next("notification").data["event_type"] == "scenario.created"
        assert streams[alice].next("notification").data["event_type"] == "scenario.executed"
        assert streams[carol].next("notification").data["event_type"] == "scenario.executed"
        # A sentinel carol hears: nothing else came to her before it.
        db.execute("UPDATE test_scenarios SET last_executed_at = now(), last_status = 'failed'")
        assert streams[carol].next("notification").data["message"].endswith("failed")
    finally:
        for s in streams.values():
            s.stop()


def test_headers_and_heartbeats(
    as_role: Callable[[str], str], db: Conn, make_user: Callable[..., int]
) -> None:
    server = start_server(as_role("notifications_api"), stream_heartbeat=0.2)
    try:
        bob = make_user("bob")
        headers = {"Authorization": f"Bearer {token(db, bob)}"}
        with (
            httpx.Client(timeout=10) as client,
            client.stream("GET", server.url + "/api/v1/stream", headers=headers) as response,
        ):
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["cache-control"] == "no-store"
            assert response.headers["x-accel-buffering"] == "no"
            lines = response.iter_lines()
            seen: list[str] = []
            while sum(1 for line in seen if line.startswith(": ping")) < 2:
                seen.append(next(lines))
        assert seen[0] == ": stream open"
        assert "retry: 2000" in seen
    finally:
        server.stop()


def _error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    return str(body["error"]["code"])


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer " + "x" * 600},
        {"Authorization": "Bearer ntf_\u00e9"},
    ],
    ids=["none", "unknown", "basic", "long", "non-ascii"],
)
def test_bad_tokens_are_401(live: Live, headers: dict[str, str]) -> None:
    encoded = {k: v.encode("utf-8") for k, v in headers.items()}
    response = httpx.get(live.url + "/api/v1/stream", headers=encoded, timeout=10)
    assert _error(response, 401) == "unauthorized"


@pytest.mark.parametrize(
    "position",
    ["garbage", "w1.", "w1.bm90IGEgc25hcHNob3Q", "p1.MTo1Ong", "w1." + "A" * 5000],
)
def test_a_bad_position_is_422(
    live: Live, db: Conn, make_user: Callable[..., int], position: str
) -> None:
    headers = {"Authorization": f"Bearer {token(db, make_user('bob'))}"}
    response = httpx.get(
        live.url + "/api/v1/stream", headers={**headers, "Last-Event-ID": position}, timeout=10
    )
    assert _error(response, 422) == "invalid"
    response = httpx.get(
        live.url + "/api/v1/stream",
        params={"last_event_id": position},
        headers=headers,
        timeout=10,
    )
    assert _error(response, 422) == "invalid"


def test_other_methods_are_405_json(live: Live) -> None:
    response = httpx.post(live.url + "/api/v1/stream", timeout=10)
    assert _error(response, 405) == "method_not_allowed"


def test_limits_per_user_and_per_process(
    as_role: Callable[[str], str], db: Conn, make_user: Callable[..., int]
) -> None:
    server = start_server(as_role("notifications_api"), stream_max_per_user=2, stream_max_streams=3)
    bob, carol, dave = make_user("bob"), make_user("carol"), make_user("dave")
    opened = [StreamClient(server.url, token(db, u)).start() for u in (bob, bob, carol)]
    try:
        for s in opened:
            s.next("unread")
        response = httpx.get(
            server.url + "/api/v1/stream",
            headers={"Authorization": f"Bearer {token(db, bob)}"},
            timeout=10,
        )
        assert _error(response, 503) == "too_many_streams"
        assert response.headers["retry-after"]
        opened.pop().stop()  # carol's: the process has room again
        response = httpx.get(
            server.url + "/api/v1/stream",
            headers={"Authorization": f"Bearer {token(db, bob)}"},
            timeout=10,
        )
        assert _error(response, 429) == "too_many_streams"
        # Another user still gets one.
        opened.append(StreamClient(server.url, token(db, dave)).start())
        assert opened[-1].next("unread").data == {"unread": 0}
    finally:
        for s in opened:
            s.stop()
        server.stop()


def test_a_revoked_token_ends_its_stream(
    live: Live, db: Conn, make_user: Callable[..., int]
) -> None:
    bob = make_user("bob")
    stream = StreamClient(live.url, token(db, bob)).start()
    try:
        stream.next("unread")
        db.execute("SELECT revoke_tokens(%s)", [bob])
        with pytest.raises(AssertionError, match="the stream ended"):
            stream.next(timeout=15)
    finally:
        stream.stop()
