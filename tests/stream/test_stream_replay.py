"""Exact replay: positions are snapshots, so out-of-order commits are neither skipped nor
sent twice, live or on resume (docs/guarantees.md).

The fan-out is run by hand here (no listener), from connections the test holds open, so
that the commit order is the test's: a psql writer that inserts first and commits last,
and a fan-out of a lower event id that commits after higher ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg

from tests.stream.conftest import Live, StreamClient, create_scenarios, token

Conn = psycopg.Connection[Any]


def ids(events: list[Any]) -> list[int]:
    return [e.data["id"] for e in events]


def test_a_lower_id_fanned_out_later_reaches_a_live_stream(
    live: Live, db: Conn, database_url: str, make_user: Callable[..., int]
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    stream = StreamClient(live.url, token(db, bob)).start()
    try:
        stream.next("unread")
        create_scenarios(db, alice, ["low", "high"])
        low, high = (r[0] for r in db.execute("SELECT id FROM scenario_events ORDER BY id"))
        with psycopg.connect(database_url) as held:
            held.execute("SELECT * FROM fan_out_events_v2(1, 1000, %s)", [low]).fetchall()
            db.execute("SELECT * FROM fan_out_events_v2(1, 1000, %s)", [high]).fetchall()
            assert ids(stream.notifications(1)) == [high]
            held.commit()
        assert ids(stream.notifications(1)) == [low]
    finally:
        stream.stop()


def test_resume_after_50_commits_some_out_of_order(
    live: Live,
    db: Conn,
    database_url: str,
    make_user: Callable[..., int],
    fan_out: Callable[[], int],
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    stream = StreamClient(live.url, token(db, bob)).start()
    try:
        stream.next("unread")
        create_scenarios(db, alice, [f"before {i}" for i in range(10)])
        fan_out()
        before = ids(stream.notifications(10))
    finally:
        stream.stop()
    cut_at = stream.last_event_id
    assert cut_at is not None

    with (
        psycopg.connect(database_url) as psql_writer,
        psycopg.connect(database_url) as held_fan_out,
    ):
        # A psql transaction that inserts first and commits last: the lowest new event id.
        psql_writer.execute("SELECT set_config('notifications.actor_id', %s, false)", [str(alice)])
        psql_writer.execute(
            "INSERT INTO test_scenarios (name, created_by) VALUES ('late', %s)", [alice]
        )
        # An event whose fan-out is held open while 48 later ones are fanned out.
        create_scenarios(db, alice, ["held"])
        held_event = db.execute("SELECT max(id) FROM scenario_events").fetchone()
        assert held_event is not None
        held_fan_out.execute(
            "SELECT * FROM fan_out_events_v2(1, 1000, %s)", [held_event[0]]
        ).fetchall()
        create_scenarios(db, alice, [f"after {i}" for i in range(48)])
        fan_out()
        held_fan_out.commit()
        psql_writer.commit()
        fan_out()

    expected = [
        r[0]
        for r in db.execute(
            "SELECT event_id FROM user_notifications WHERE user_id = %s ORDER BY event_id", [bob]
        )
        if r[0] not in before
    ]
    assert len(expected) == 50
    # The psql writer's event has an id below every fanned-out-meanwhile one.
    assert min(expected) < held_event[0]

    resumed = StreamClient(live.url, stream.token, last_event_id=cut_at).start()
    try:
        got = ids(resumed.notifications(50))
        assert sorted(got) == expected
        assert len(set(got)) == 50
        # Nothing more was owed: the next notification is a new one.
        create_scenarios(db, alice, ["sentinel"])
        fan_out()
        sentinel = resumed.notifications(1)
        assert sentinel[0].data["scenario"]["name"] == "sentinel"
        assert resumed.next("unread").data == {"unread": 61}
    finally:
        resumed.stop()


def test_a_feed_watermark_starts_a_stream_after_its_page(
    live: Live, db: Conn, make_user: Callable[..., int], fan_out: Callable[[], int]
) -> None:
    """The inbox opens its stream at its first page's watermark: nothing between the two is
    missed, nothing on the page is sent again."""
    import httpx

    alice, bob = make_user("alice"), make_user("bob")
    bob_token = token(db, bob)
    create_scenarios(db, alice, ["on the page"])
    fan_out()
    page = httpx.get(
        live.url + "/api/v1/notifications",
        headers={"Authorization": f"Bearer {bob_token}"},
        timeout=10,
    ).json()
    assert len(page["items"]) == 1
    create_scenarios(db, alice, ["between page and stream"])
    fan_out()
    stream = StreamClient(live.url, bob_token, last_event_id=page["watermark"]).start()
    try:
        got = stream.notifications(1)
        assert got[0].data["scenario"]["name"] == "between page and stream"
        create_scenarios(db, alice, ["live"])
        fan_out()
        assert stream.notifications(1)[0].data["scenario"]["name"] == "live"
    finally:
        stream.stop()


def test_a_long_absence_catches_up_in_rounds(
    live: Live, db: Conn, make_user: Callable[..., int], fan_out: Callable[[], int]
) -> None:
    """More than a round's row limit (500) owed: all of it, once each, in id order."""
    from notifications.stream.hub import ROW_LIMIT

    alice, bob = make_user("alice"), make_user("bob")
    stream = StreamClient(live.url, token(db, bob)).start()
    try:
        stream.next("unread")
    finally:
        stream.stop()
    create_scenarios(db, alice, [f"s{i}" for i in range(ROW_LIMIT + 150)])
    fan_out()
    resumed = StreamClient(live.url, stream.token, last_event_id=stream.last_event_id).start()
    try:
        got, counts = [], []
        while len(got) < ROW_LIMIT + 150:
            event = resumed.next()
            if event.event == "unread":
                counts.append(event.data["unread"])
            else:
                got.append(event.data["id"])
        assert got == sorted(got) and len(set(got)) == ROW_LIMIT + 150
        # The count is the user's, not the stream's progress: right from the first round.
        assert counts == [ROW_LIMIT + 150]
    finally:
        resumed.stop()
    # A stream cut inside the catch-up resumes inside it.
    middle = StreamClient(live.url, stream.token, last_event_id=stream.last_event_id).start()
    try:
        first = ids(middle.notifications(ROW_LIMIT + 10))
    finally:
        middle.stop()
    rest = StreamClient(live.url, stream.token, last_event_id=middle.last_event_id).start()
    try:
        second = ids(rest.notifications(140))
        assert first + second == got
    finally:
        rest.stop()
