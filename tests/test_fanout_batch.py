"""fan_out_events_v2's set-based path: runs of small events fanned out together.

An event is small when its type has at most min(1000, row_budget / batch_size) possible
recipients; a batch fans out each run of consecutive small events with one statement per
table, and each big event alone. Every test here checks the rows against what the contract
says, computed in Python from plain reads, not by the fan-out's SQL.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import psycopg

TYPES = ("scenario.created", "scenario.executed", "scenario.deleted")
SECRET = "whsec_" + "B" * 32

Pair = tuple[int, int]


def expected_pairs(db: psycopg.Connection[Any]) -> set[Pair]:
    """(user, event) for every processed event: subscribed (own row, else the type's
    default), not the actor."""
    defaults = dict(db.execute("SELECT name, default_enabled FROM event_types").fetchall())
    own = {
        (r[0], r[1]): r[2]
        for r in db.execute("SELECT user_id, event_type, enabled FROM subscriptions")
    }
    users = [r[0] for r in db.execute("SELECT id FROM users")]
    events = db.execute(
        "SELECT id, event_type, actor_id FROM scenario_events WHERE processed_at IS NOT NULL"
    ).fetchall()
    return {
        (u, e)
        for e, t, actor in events
        for u in users
        if u != actor and own.get((u, t), defaults.get(t, False))
    }


def stored_pairs(db: psycopg.Connection[Any]) -> list[Pair]:
    return [(r[0], r[1]) for r in db.execute("SELECT user_id, event_id FROM user_notifications")]


def per_event_counts(db: psycopg.Connection[Any]) -> tuple[dict[int, int], dict[int, int]]:
    """(fanout_count per event, rows stored per event)."""
    counts = dict(db.execute("SELECT id, fanout_count FROM scenario_events").fetchall())
    rows = dict(
        db.execute(
            "SELECT e.id, count(n.user_id) FROM scenario_events e"
            " LEFT JOIN user_notifications n ON n.event_id = e.id GROUP BY e.id"
        ).fetchall()
    )
    return counts, rows


def write_events(db: psycopg.Connection[Any], actors: list[int | None], kinds: list[str]) -> None:
    """One scenario per (actor, kind): created, or created then executed / deleted in the
    same transaction (so each kind adds its event right after the creation's)."""
    for actor, kind in zip(actors, kinds, strict=True):
        with db.transaction():
            if actor is not None:
                db.execute("SELECT set_config('notifications.actor_id', %s, true)", [str(actor)])
            row = db.execute(
                "INSERT INTO test_scenarios (name, created_by) VALUES ('S', %s) RETURNING id",
                [actor],
            ).fetchone()
            assert row is not None
            if kind == "executed":
                db.execute(
                    "UPDATE test_scenarios SET last_executed_at = now(), last_status = 'passed'"
                    " WHERE id = %s",
                    [row[0]],
                )
            elif kind == "deleted":
                db.execute("UPDATE test_scenarios SET deleted_at = now() WHERE id = %s", [row[0]])


def drain(db: psycopg.Connection[Any], batch: int, budget: int) -> list[list[tuple[int, int]]]:
    """Calls the fan-out until it finds nothing; each call's (event, notifications) rows."""
    calls = []
    while rows := db.execute(
        "SELECT event_id, notifications FROM fan_out_events_v2(%s, %s)", [batch, budget]
    ).fetchall():
        calls.append([(r[0], r[1]) for r in rows])
    return calls


def test_a_batch_of_small_events_each_fanned_out_exactly(
    db: psycopg.Connection[Any], make_user: Callable[..., int]
) -> None:
    users = [make_user(f"u{i}") for i in range(6)]
    make_user("quiet", created=False, executed=False, deleted=False)
    make_user("exec_only", created=False, executed=True, deleted=False)
    rng = random.Random(14)
    actors: list[int | None] = [rng.choice([*users, None]) for _ in range(250)]
    write_events(db, actors, ["created"] * 250)
    calls = drain(db, 100, 500_000)
    # Batches of 100 events in id order, one row per event, nothing left.
    assert [len(c) for c in calls] == [100, 100, 50]
    ids = [e for c in calls for e, _ in c]
    assert ids == sorted(ids) and len(set(ids)) == 250
    stored = stored_pairs(db)
    assert len(stored) == len(set(stored))
    assert set(stored) == expected_pairs(db)
    # The rows returned and the events' counts are each event's own.
    counts, rows = per_event_counts(db)
    returned = {e: n for c in calls for e, n in c}
    assert counts == rows == returned
    assert set(counts.values()) == {5, 6}  # 6 subscribers, minus the actor when one of them
    assert db.execute(
        "SELECT count(*) FROM scenario_events WHERE processed_at IS NULL"
        " OR fanout_xid IS NULL OR fanout_attempts <> 0 OR fanout_error IS NOT NULL"
    ).fetchone() == (0,)
    # A first fan-out's rows carry no xid of their own (the event's is theirs).
    assert db.execute(
        "SELECT count(*) FROM user_notifications WHERE fanout_xid IS NOT NULL"
    ).fetchone() == (0,)


def test_events_of_one_batch_share_its_transaction_and_are_all_or_nothing(
    db: psycopg.Connection[Any], make_user: Callable[..., int]
) -> None:
    for i in range(3):
        make_user(f"u{i}")
    write_events(db, [None] * 20, ["created"] * 20)
    with db.transaction():
        rows = db.execute("SELECT * FROM fan_out_events_v2(100)").fetchall()
        assert len(rows) == 20
        xid = db.execute("SELECT pg_current_xact_id()::text").fetchone()
    assert db.execute(
        "SELECT count(DISTINCT fanout_xid::text), min(fanout_xid::text) FROM scenario_events"
    ).fetchone() == (1, xid[0] if xid else None)

    write_events(db, [None] * 20, ["created"] * 20)
    try:
        with db.transaction():
            assert len(db.execute("SELECT * FROM fan_out_events_v2(100)").fetchall()) == 20
            raise RuntimeError("rolled back")
    except RuntimeError:
        pass
    assert db.execute(
        "SELECT count(*) FILTER (WHERE processed_at IS NULL),"
        " (SELECT count(*) FROM user_notifications) FROM scenario_events"
    ).fetchone() == (20, 60)


def one_event(db: psycopg.Connection[Any], sql: str, *params: Any) -> None:
    """One statement in its own transaction: one event (no actor)."""
    with db.transaction():
        db.execute(sql, list(params))


def scenario(db: psycopg.Connection[Any]) -> int:
    """A new scenario (its creation is one event)."""
    row = db.execute("INSERT INTO test_scenarios (name) VALUES ('S') RETURNING id").fetchone()
    assert row is not None
    return int(row[0])


def execute(db: psycopg.Connection[Any], scenario_id: int, times: int = 1) -> None:
    for _ in range(times):
        one_event(
            db,
            "UPDATE test_scenarios SET last_executed_at = clock_timestamp(),"
            " last_status = 'passed' WHERE id = %s",
            scenario_id,
        )


def test_mixed_batch_big_events_alone_in_id_order_within_the_budget(
    db: psycopg.Connection[Any], make_user: Callable[..., int]
) -> None:
    """batch 10, budget 30: small means at most 3 recipients. Created reaches 5 users (big),
    executed 2 (small), deleted none (small)."""
    for i in range(5):
        make_user(f"c{i}", executed=i < 2, deleted=False)
    make_user("x", created=False, executed=False, deleted=False)
    # Runs of small events between the big ones, in id order.
    a = scenario(db)
    execute(db, a, 3)
    b = scenario(db)
    execute(db, b, 5)
    c = scenario(db)
    d = scenario(db)
    execute(db, c, 2)
    one_event(db, "UPDATE test_scenarios SET deleted_at = now() WHERE id = %s", d)
    execute(db, a, 12)
    events = db.execute("SELECT id, event_type FROM scenario_events ORDER BY id").fetchall()
    assert len(events) == 27
    calls = drain(db, 10, 30)
    ids = [e for c in calls for e, _ in c]
    assert ids == [e for e, _ in events]  # every event once, in id order across calls
    # A call ends at 10 events, or once it wrote the budget (a big event may cross it), or
    # earlier when the next small events could use up what is left (at most 3 rows each).
    for call in calls:
        written = sum(n for _, n in call)
        assert len(call) <= 10 and written <= 30 + 5
        assert call is calls[-1] or len(call) == 10 or written >= 30 - 10
    assert len(calls[0]) == 10 and [n for _, n in calls[0]] == [5, 2, 2, 2, 5, 2, 2, 2, 2, 2]
    stored = stored_pairs(db)
    assert len(stored) == len(set(stored))
    assert set(stored) == expected_pairs(db)
    counts, rows = per_event_counts(db)
    assert counts == rows == {e: n for c in calls for e, n in c}
    kind_of = dict(events)
    assert {counts[e] for e, t in kind_of.items() if t == "scenario.created"} == {5}
    assert {counts[e] for e, t in kind_of.items() if t == "scenario.executed"} == {2}
    assert {counts[e] for e, t in kind_of.items() if t == "scenario.deleted"} == {0}


def test_a_batch_stopped_by_the_budget_holds_no_event_it_did_not_fan_out(
    database_url: str, db: psycopg.Connection[Any], make_user: Callable[..., int]
) -> None:
    for i in range(10):
        make_user(f"u{i}", executed=i < 2)
    for _ in range(12):
        scenario(db)
    # batch 4, budget 8: small_max 2, so every creation (10 recipients) is big; the budget
    # ends the batch after its first event, and the 11 others stay claimable meanwhile.
    with db.transaction():
        first = db.execute("SELECT * FROM fan_out_events_v2(4, 8)").fetchall()
        assert [n for _, n, _ in first] == [10]
        with psycopg.connect(database_url, autocommit=True) as other:
            rest = other.execute("SELECT * FROM fan_out_events_v2(100)").fetchall()
            assert len(rest) == 11
    # batch 10, budget 30: small_max 3. A creation (10 rows, big) then executions (2 rows,
    # small): after the big one 20 rows are left, so the run stops claiming at 7 events
    # (7 x 3 >= 20), before the batch is full; the rest is not held either.
    s = scenario(db)
    execute(db, s, 12)
    with db.transaction():
        first = db.execute("SELECT * FROM fan_out_events_v2(10, 30)").fetchall()
        assert [n for _, n, _ in first] == [10] + [2] * 7
        with psycopg.connect(database_url, autocommit=True) as other:
            rest = other.execute("SELECT * FROM fan_out_events_v2(100)").fetchall()
            assert [n for _, n, _ in rest] == [2] * 5
    assert db.execute(
        "SELECT count(*) FROM scenario_events WHERE processed_at IS NULL"
    ).fetchone() == (0,)


def test_redelivered_events_in_a_set_based_batch_write_only_missing_rows(
    db: psycopg.Connection[Any], make_user: Callable[..., int]
) -> None:
    bob = make_user("bob")
    carol = make_user("carol", created=False)
    dave = make_user("dave")
    write_events(db, [None] * 6, ["created"] * 6)
    assert [len(c) for c in drain(db, 100, 500_000)] == [6]
    first_xids = dict(db.execute("SELECT id, fanout_xid::text FROM scenario_events").fetchall())
    db.execute("UPDATE user_notifications SET read_at = now() WHERE user_id = %s", [bob])
    # Carol subscribes; dave's rows of two events are purged; three events are redelivered
    # and travel in one batch with three new ones.
    db.execute("SELECT set_subscription(%s, 'scenario.created', true)", [carol])
    ids = sorted(first_xids)
    db.execute(
        "DELETE FROM user_notifications WHERE user_id = %s AND event_id = ANY(%s)",
        [dave, ids[1:3]],
    )
    for e in ids[:3]:
        db.execute("SELECT redeliver_event(%s)", [e])
    write_events(db, [bob, None, None], ["created"] * 3)
    with db.transaction():
        rows = db.execute("SELECT event_id, notifications FROM fan_out_events_v2(100)").fetchall()
        xid = db.execute("SELECT pg_current_xact_id()::text").fetchone()
    assert xid is not None
    new_ids = [
        r[0]
        for r in db.execute(
            "SELECT id FROM scenario_events WHERE id <> ALL(%s) ORDER BY id", [ids]
        ).fetchall()
    ]
    # Redelivered: carol's row (and dave's where purged); new: everyone but the actor.
    want_rows = [(ids[0], 1), (ids[1], 2), (ids[2], 2)]
    want_rows += list(zip(new_ids, [2, 3, 3], strict=True))
    assert rows == want_rows
    stored = stored_pairs(db)
    assert len(stored) == len(set(stored))
    # Events not redelivered keep only their first rows; the redelivered have everyone.
    want = expected_pairs(db) - {(carol, e) for e in ids[3:]}
    assert set(stored) == want
    # The rows a redelivery adds carry its transaction; the events keep their first one.
    marked = db.execute(
        "SELECT user_id, event_id, fanout_xid::text FROM user_notifications"
        " WHERE fanout_xid IS NOT NULL ORDER BY 2, 1"
    ).fetchall()
    assert marked == [
        (carol, ids[0], xid[0]),
        (carol, ids[1], xid[0]),
        (dave, ids[1], xid[0]),
        (carol, ids[2], xid[0]),
        (dave, ids[2], xid[0]),
    ]
    now_xids = dict(db.execute("SELECT id, fanout_xid::text FROM scenario_events").fetchall())
    assert all(now_xids[e] == first_xids[e] for e in ids)
    assert all(now_xids[e] == xid[0] for e in new_ids)
    # fanout_count adds up what each fan-out wrote; bob's read state survived.
    counts = dict(db.execute("SELECT id, fanout_count FROM scenario_events").fetchall())
    assert [counts[e] for e in ids] == [3, 4, 4, 2, 2, 2]
    assert db.execute(
        "SELECT count(*) FROM user_notifications WHERE user_id = %s AND read_at IS NOT NULL",
        [bob],
    ).fetchone() == (6,)


def _endpoint(db: psycopg.Connection[Any], user_id: int, types: list[str] | None) -> int:
    row = db.execute(
        "INSERT INTO webhook_endpoints (user_id, url, secret, event_types)"
        " VALUES (%s, 'https://hooks.example.com/y', %s, %s) RETURNING id",
        [user_id, SECRET, types],
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_deliveries_of_a_set_based_batch_follow_the_channel_rules(
    database_url: str, db: psycopg.Connection[Any], make_user: Callable[..., int]
) -> None:
    from tests.test_delivery_outbox import deliveries, expected

    alice = make_user("alice")
    bob = make_user("bob")
    carol = make_user("carol")
    dave = make_user("dave", executed=False)
    erin = make_user("erin")
    db.execute("SELECT set_user_email(%s, 'bob@example.com')", [bob])
    db.execute("SELECT set_user_email(%s, 'dave@example.com')", [dave])
    db.execute("SELECT set_channel_preference(%s, 'scenario.executed', 'email', true)", [bob])
    for t in TYPES:
        db.execute("SELECT set_channel_preference(%s, %s, 'email', true)", [carol, t])
        db.execute("SELECT set_channel_preference(%s, %s, 'email', true)", [dave, t])
    db.execute("SELECT set_channel_preference(%s, 'scenario.created', 'webhook', false)", [erin])
    _endpoint(db, bob, None)
    _endpoint(db, carol, ["scenario.deleted"])
    _endpoint(db, erin, None)
    _endpoint(db, erin, ["scenario.created", "scenario.executed"])
    dead = _endpoint(db, erin, None)
    db.execute("UPDATE webhook_endpoints SET disabled_at = now() WHERE id = %s", [dead])
    _endpoint(db, alice, None)
    rng = random.Random(4)
    kinds = [rng.choice(["created", "executed", "deleted"]) for _ in range(40)]
    actors = [rng.choice([alice, bob, None]) for _ in range(40)]
    write_events(db, actors, kinds)

    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute("LISTEN deliveries")
        with db.transaction():
            rows = db.execute("SELECT * FROM fan_out_events_v2(100)").fetchall()
        assert (len(rows),) == db.execute("SELECT count(*) FROM scenario_events").fetchone()
        hints = list(listener.notifies(timeout=2, stop_after=1))
        assert [n.channel for n in hints] == ["deliveries"]
    got = deliveries(db)
    assert got and got == expected(db)
    assert len(got) == len(set(got))
    assert {c for *_, c, _ in got} == {"email", "webhook"}

    # A redelivery of the whole batch adds nothing; a new endpoint's rows only.
    later = _endpoint(db, bob, None)
    for (e,) in db.execute("SELECT id FROM scenario_events").fetchall():
        db.execute("SELECT redeliver_event(%s)", [e])
    drain(db, 100, 500_000)
    again = deliveries(db)
    assert len(again) == len(set(again))
    added = set(again) - set(got)
    assert added and all(ep == later for *_, ep in added)
    assert again == expected(db)
