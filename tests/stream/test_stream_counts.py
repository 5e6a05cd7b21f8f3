"""The streamed unread count stays exact, and a redelivery sends nothing twice.

Found by a review of the stream; each test failed on the code before its fix.

The fan-out is run by hand (no listener), so that the order of commits is the test's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import psycopg

from tests.live import Live, start_server
from tests.stream.conftest import StreamClient, create_scenarios, token
from tests.test_pgbouncer import pgbouncer  # noqa: F401  (the fixture, reused)

Conn = psycopg.Connection[Any]


def event_id(db: Conn, name: str) -> int:
    row = db.execute("SELECT id FROM scenario_events WHERE scenario_name = %s", [name]).fetchone()
    assert row is not None
    return int(row[0])


def unread(db: Conn, user: int) -> int:
    row = db.execute(
        "SELECT count(*) FROM user_notifications WHERE user_id = %s AND read_at IS NULL", [user]
    ).fetchone()
    assert row is not None
    return int(row[0])


def names(events: list[Any]) -> list[str]:
    return [e.data["scenario"]["name"] for e in events]


def test_a_stream_resuming_across_a_pending_redelivery_does_not_stop_every_stream(
    live: Live, db: Conn, make_user: Callable[..., int], fan_out: Callable[[], int]
) -> None:
    """An event put back by redeliver_event keeps its old fanout_xid while processed_at is
    NULL: a position older than its first fan-out gets its rows, with fanned_out_at NULL,
    and `_deliver`'s lag metric raises AttributeError, which ends the round task for good.
    Every stream of the process then hears nothing more (pings only)."""
    alice, bob = make_user("alice"), make_user("bob")
    # A bystander who hears executions only (not the redelivered creation).
    carol = make_user("carol", created=False)
    bob_token = token(db, bob)
    page = httpx.get(
        live.url + "/api/v1/notifications",
        headers={"Authorization": f"Bearer {bob_token}"},
        timeout=10,
    ).json()
    create_scenarios(db, alice, ["redelivered"])
    fan_out()
    # Put back in the backlog; no listener runs, so it waits there.
    db.execute("SELECT redeliver_event(%s)", [event_id(db, "redelivered")])

    bystander = StreamClient(live.url, token(db, carol)).start()
    resumed = StreamClient(live.url, bob_token, last_event_id=page["watermark"]).start()
    try:
        assert bystander.next("unread").data == {"unread": 0}
        assert names(resumed.notifications(1)) == ["redelivered"]
        db.execute("SELECT set_config('notifications.actor_id', %s, false)", [str(alice)])
        db.execute("UPDATE test_scenarios SET last_executed_at = now(), last_status = 'passed'")
        fan_out()
        got = bystander.notifications(1)
        assert [e.data["event_type"] for e in got] == ["scenario.executed"]
    finally:
        resumed.stop()
        bystander.stop()


def test_a_redelivered_event_is_not_sent_again_nor_counted_twice(
    live: Live, db: Conn, make_user: Callable[..., int], fan_out: Callable[[], int]
) -> None:
    """The redelivery's fan-out gives the event a new fanout_xid, so every stream that was
    already sent its notification is sent it again, and the unread count goes up by one
    for each, though no row was added."""
    alice, bob = make_user("alice"), make_user("bob")
    stream = StreamClient(live.url, token(db, bob)).start()
    try:
        assert stream.next("unread").data == {"unread": 0}
        create_scenarios(db, alice, ["once"])
        fan_out()
        assert names(stream.notifications(1)) == ["once"]
        assert stream.next("unread").data == {"unread": 1}
        # An operator re-runs the fan-out of that event (e.g. after a subscription fix):
        # bob holds its row already, so nothing is written for him.
        db.execute("SELECT redeliver_event(%s)", [event_id(db, "once")])
        fan_out()
        create_scenarios(db, alice, ["next"])
        fan_out()
        assert names(stream.notifications(1)) == ["next"]
        assert stream.next("unread").data == {"unread": unread(db, bob)} == {"unread": 2}
    finally:
        stream.stop()


def test_resuming_from_a_partial_position_keeps_the_count_exact(
    live: Live, db: Conn, make_user: Callable[..., int], fan_out: Callable[[], int]
) -> None:
    """A round that starts from a partial position recounts (its position is not complete)
    in its own, newer snapshot, but ends on the older `next` snapshot. The next round then
    adds the unread notifications between the two once more."""
    alice, bob = make_user("alice"), make_user("bob")
    bob_token = token(db, bob)
    first = StreamClient(live.url, bob_token).start()
    try:
        assert first.next("unread").data == {"unread": 0}
        # One fan-out transaction: both reach the stream in one round, and every
        # notification but the round's last carries a partial position.
        create_scenarios(db, alice, ["a", "b"])
        fan_out()
        a, b = first.notifications(2)
        assert names([a, b]) == ["a", "b"]
        assert a.id.startswith("p1.")
    finally:
        first.stop()

    # The connection was cut after "a"; "c" is fanned out before the client is back.
    create_scenarios(db, alice, ["c"])
    fan_out()
    resumed = StreamClient(live.url, bob_token, last_event_id=a.id).start()
    try:
        assert names(resumed.notifications(2)) == ["b", "c"]
        create_scenarios(db, alice, ["d"])
        fan_out()
        assert names(resumed.notifications(1)) == ["d"]
        assert resumed.next("unread").data == {"unread": unread(db, bob)} == {"unread": 4}
    finally:
        resumed.stop()


def test_purging_unread_notifications_updates_the_streamed_count(
    live: Live, db: Conn, make_user: Callable[..., int], fan_out: Callable[[], int]
) -> None:
    """purge_unread_notifications() deletes unread rows; the read hint fires on UPDATE only,
    so open streams keep the old count and add new notifications to it."""
    alice, bob = make_user("alice"), make_user("bob")
    stream = StreamClient(live.url, token(db, bob)).start()
    try:
        assert stream.next("unread").data == {"unread": 0}
        create_scenarios(db, alice, ["old 1", "old 2"])
        fan_out()
        stream.notifications(2)
        assert stream.next("unread").data == {"unread": 2}
        db.execute("SELECT purge_unread_notifications(NULL, 0)")
        create_scenarios(db, alice, ["new"])
        fan_out()
        assert names(stream.notifications(1)) == ["new"]
        assert stream.next("unread").data == {"unread": unread(db, bob)} == {"unread": 1}
    finally:
        stream.stop()


def test_through_a_transaction_pooler_reads_elsewhere_reach_the_count(
    pgbouncer: Callable[[str], str],  # noqa: F811
    database_url: str,
    db: Conn,
    make_user: Callable[..., int],
    fan_out: Callable[[], int],
) -> None:
    """Behind a transaction pooler the hub polls and hears no read hint, and nothing else
    asks for a recount: a read on another device never reaches the count, which then
    only grows with each new notification."""
    alice, bob = make_user("alice"), make_user("bob")
    server = start_server(pgbouncer(database_url))
    stream = StreamClient(server.url, token(db, bob)).start()
    try:
        assert stream.next("unread").data == {"unread": 0}
        assert server.app.state.hub.pooled
        create_scenarios(db, alice, ["a"])
        fan_out()
        assert names(stream.notifications(1)) == ["a"]
        assert stream.next("unread").data == {"unread": 1}
        # Read on another device.
        db.execute("UPDATE user_notifications SET read_at = now() WHERE user_id = %s", [bob])
        create_scenarios(db, alice, ["b", "c"])
        fan_out()
        assert names(stream.notifications(2)) == ["b", "c"]
        assert stream.next("unread").data == {"unread": unread(db, bob)} == {"unread": 2}
    finally:
        stream.stop()
        server.stop()
