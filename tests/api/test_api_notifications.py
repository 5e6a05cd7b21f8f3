"""Notifications: each user's own feed, read state and unread count. They come from the
real pipeline (the fan-out, or a running listener)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import psycopg

from tests.api.conftest import Caller, error_of
from tests.conftest import wait_until

NOTIFICATION_KEYS = {"id", "event_type", "scenario", "actor", "message", "created_at", "read_at"}


def feed(user: Caller, query: str = "") -> dict[str, Any]:
    response = user.get(f"/api/v1/notifications{query}")
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()  # type: ignore[no-any-return]


def ids(user: Caller, query: str = "") -> list[int]:
    return [n["id"] for n in feed(user, query)["items"]]


def unread(user: Caller) -> int:
    return int(user.get("/api/v1/notifications/unread-count").get_json()["unread"])


def scenarios(user: Caller, count: int) -> list[int]:
    return [
        user.post("/api/v1/scenarios", json={"name": f"S{i}"}).get_json()["id"]
        for i in range(count)
    ]


def test_feed_items_are_complete_and_newest_first(
    alice: Caller, bob: Caller, fan_out: Callable[[], int]
) -> None:
    (sid,) = scenarios(bob, 1)
    bob.post(f"/api/v1/scenarios/{sid}/executions", json={"status": "failed"})
    fan_out()
    page = feed(alice)
    assert page["next_cursor"] is None
    executed, created = page["items"]
    assert set(executed) == NOTIFICATION_KEYS
    assert executed["id"] > created["id"]
    assert executed["event_type"] == "scenario.executed"
    assert executed["scenario"] == {"id": sid, "name": "S0"}
    assert executed["actor"] == {"id": bob.id, "name": "bob"}
    assert executed["message"] == "bob executed scenario 'S0': failed"
    assert executed["read_at"] is None
    assert datetime.fromisoformat(executed["created_at"]).tzinfo is not None
    assert created["message"] == "bob created scenario 'S0'"
    # The actor is never told about their own actions.
    assert {k: v for k, v in feed(bob).items() if k != "watermark"} == {
        "items": [],
        "next_cursor": None,
    }


def test_actor_is_null_when_nobody_acted(
    alice: Caller, db: psycopg.Connection[Any], fan_out: Callable[[], int]
) -> None:
    db.execute("INSERT INTO test_scenarios (name) VALUES ('from psql')")
    fan_out()
    (item,) = feed(alice)["items"]
    assert item["actor"] is None
    assert item["message"] == "Someone created scenario 'from psql'"


def test_pagination_walks_every_item_once(
    alice: Caller, bob: Caller, fan_out: Callable[[], int]
) -> None:
    scenarios(bob, 25)
    fan_out()
    everything = ids(alice, "?limit=100")
    assert len(everything) == 25
    assert everything == sorted(everything, reverse=True)
    assert ids(alice) == everything[:20]  # default limit
    seen: list[int] = []
    query = "?limit=10"
    pages = 0
    while True:
        page = feed(alice, query)
        seen += [n["id"] for n in page["items"]]
        pages += 1
        if page["next_cursor"] is None:
            break
        query = f"?limit=10&cursor={page['next_cursor']}"
    assert seen == everything
    assert pages == 3
    # An exact multiple of the page size ends without an empty extra page.
    assert feed(alice, "?limit=25")["next_cursor"] is None
    assert feed(alice, "?limit=1")["next_cursor"] is not None


def test_status_filter_and_unread_count(
    alice: Caller, bob: Caller, fan_out: Callable[[], int]
) -> None:
    scenarios(bob, 5)
    fan_out()
    all_ids = ids(alice)
    assert unread(alice) == 5
    for nid in all_ids[1:3]:
        assert alice.post(f"/api/v1/notifications/{nid}/read").status_code == 200
    assert ids(alice, "?status=read") == all_ids[1:3]
    assert ids(alice, "?status=unread") == [all_ids[0], *all_ids[3:]]
    assert ids(alice, "?status=all") == all_ids
    assert unread(alice) == 3
    # The cursor pages within the filtered feed.
    first = feed(alice, "?status=unread&limit=2")
    rest = feed(alice, f"?status=unread&limit=2&cursor={first['next_cursor']}")
    assert [n["id"] for n in first["items"] + rest["items"]] == [all_ids[0], *all_ids[3:]]
    assert rest["next_cursor"] is None


def test_read_is_idempotent_and_unread_reverts(
    alice: Caller, bob: Caller, fan_out: Callable[[], int]
) -> None:
    scenarios(bob, 1)
    fan_out()
    (nid,) = ids(alice)
    first = alice.post(f"/api/v1/notifications/{nid}/read")
    assert first.status_code == 200
    read_at = first.get_json()["read_at"]
    assert read_at is not None
    assert set(first.get_json()) == NOTIFICATION_KEYS
    second = alice.post(f"/api/v1/notifications/{nid}/read")
    assert second.get_json()["read_at"] == read_at  # kept, not refreshed
    assert feed(alice)["items"][0]["read_at"] == read_at
    unread_response = alice.post(f"/api/v1/notifications/{nid}/unread")
    assert unread_response.status_code == 200
    assert unread_response.get_json()["read_at"] is None
    assert alice.post(f"/api/v1/notifications/{nid}/unread").get_json()["read_at"] is None
    assert unread(alice) == 1
    assert alice.post(f"/api/v1/notifications/{nid}/read").get_json()["read_at"] >= read_at


def test_read_all_with_and_without_bound(
    alice: Caller, bob: Caller, fan_out: Callable[[], int]
) -> None:
    scenarios(bob, 6)
    fan_out()
    all_ids = ids(alice)  # newest first
    up_to = all_ids[3]
    response = alice.post("/api/v1/notifications/read-all", json={"up_to": up_to})
    assert response.status_code == 200
    assert response.get_json() == {"updated": 3}
    assert ids(alice, "?status=unread") == all_ids[:3]
    # No body, an empty JSON body, an empty object: all mean "everything".
    assert alice.post("/api/v1/notifications/read-all").get_json() == {"updated": 3}
    assert alice.post("/api/v1/notifications/read-all").get_json() == {"updated": 0}
    alice.post(f"/api/v1/notifications/{all_ids[0]}/unread")
    empty = alice.post(
        "/api/v1/notifications/read-all",
        data=b"",
        headers=alice.headers({"Content-Type": "application/json"}),
    )
    assert empty.get_json() == {"updated": 1}
    alice.post(f"/api/v1/notifications/{all_ids[0]}/unread")
    assert alice.post("/api/v1/notifications/read-all", json={}).get_json() == {"updated": 1}
    assert alice.post("/api/v1/notifications/read-all", json={"up_to": None}).get_json() == {
        "updated": 0
    }
    assert unread(alice) == 0


def test_a_user_never_reads_or_changes_another_users_notifications(
    alice: Caller,
    bob: Caller,
    caller: Callable[..., Caller],
    db: psycopg.Connection[Any],
    fan_out: Callable[[], int],
) -> None:
    carol = caller("carol")
    (shared_sid,) = scenarios(carol, 1)  # alice and bob both get this event, same id
    (alice_only_sid,) = scenarios(bob, 1)  # only alice (and carol) hear of bob's scenario
    fan_out()
    shared, alice_only = (
        db.execute("SELECT id FROM scenario_events WHERE scenario_id = %s", [sid]).fetchone()[0]  # type: ignore[index]
        for sid in (shared_sid, alice_only_sid)
    )
    assert ids(alice) == [alice_only, shared]
    assert ids(bob) == [shared]

    # bob cannot see, read or unread alice's own notification: 404, and it stays unread.
    for action in ("read", "unread"):
        assert error_of(bob.post(f"/api/v1/notifications/{alice_only}/{action}"), 404) == (
            "not_found"
        )
    assert feed(alice)["items"][0]["read_at"] is None

    # Reading the shared event marks alice's copy only.
    alice.post(f"/api/v1/notifications/{shared}/read")
    assert ids(bob, "?status=unread") == [shared]
    assert unread(alice) == 1
    assert unread(bob) == 1
    bob.post(f"/api/v1/notifications/{shared}/read")
    alice.post(f"/api/v1/notifications/{shared}/unread")
    assert ids(bob, "?status=read") == [shared]

    # read-all is bounded to the caller, with or without up_to.
    assert bob.post("/api/v1/notifications/read-all", json={"up_to": alice_only}).get_json() == {
        "updated": 0
    }
    assert unread(alice) == 2
    assert alice.post("/api/v1/notifications/read-all").get_json() == {"updated": 2}
    bob.post(f"/api/v1/notifications/{shared}/unread")
    assert unread(bob) == 1

    # A cursor is only a position: another user's cursor pages through their own feed.
    cursor = feed(alice, "?limit=1")["next_cursor"]
    assert ids(bob, f"?cursor={cursor}") == [shared]
    rows = db.execute(
        "SELECT user_id, event_id, read_at IS NOT NULL FROM user_notifications"
        " WHERE user_id IN (%s, %s) ORDER BY user_id, event_id",
        [alice.id, bob.id],
    ).fetchall()
    assert rows == [
        (alice.id, shared, True),
        (alice.id, alice_only, True),
        (bob.id, shared, False),
    ]


def test_notifications_of_deleted_scenarios_stay_readable(
    alice: Caller, bob: Caller, fan_out: Callable[[], int]
) -> None:
    (sid,) = scenarios(bob, 1)
    bob.delete(f"/api/v1/scenarios/{sid}")
    fan_out()
    deleted, created = feed(alice)["items"]
    assert deleted["message"] == "bob deleted scenario 'S0'"
    assert created["scenario"] == {"id": sid, "name": "S0"}
    assert alice.post(f"/api/v1/notifications/{created['id']}/read").status_code == 200


def test_end_to_end_with_a_running_listener(
    alice: Caller, bob: Caller, start_listener: Callable[..., Any]
) -> None:
    start_listener()
    (sid,) = scenarios(alice, 1)
    alice.post(f"/api/v1/scenarios/{sid}/executions", json={"status": "passed"})
    wait_until(lambda: unread(bob) == 2, timeout=10)
    assert [n["event_type"] for n in feed(bob)["items"]] == [
        "scenario.executed",
        "scenario.created",
    ]
    assert unread(alice) == 0
